// Key custody: PKCS#11 modules, tokens, and signers whose private keys never leave the token.
//
// WARNING: The trust model assumes the PKCS#11 module is the HSM vendor's (or SoftHSM2's) and
// enforces CKA_SENSITIVE / CKA_EXTRACTABLE itself. fleetid generates every private key inside the
// token as sensitive and non-extractable, refuses to sign with one that is not, and never asks a
// module for a private value.
#ifndef FLEETID_CUSTODY_CUSTODY_H_
#define FLEETID_CUSTODY_CUSTODY_H_

#include <p11-kit/pkcs11.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "common/mutex.h"
#include "common/rng.h"
#include "crypto/handles.h"
#include "crypto/secret.h"
#include "crypto/suite.h"

namespace fleetid::custody {

// Pkcs11ReturnName returns the CKR_* name of |rv| ("CKR_PIN_INCORRECT"), or its hex value.
std::string Pkcs11ReturnName(CK_RV rv);

struct TokenSummary {
  CK_SLOT_ID slot;
  std::string label;  // blank padding removed
  std::string manufacturer;
  std::string model;
  std::string serial;
  bool initialized;
  bool user_pin_initialized;
};

// Module is a loaded and initialised PKCS#11 library. A library path is loaded once per process:
// Load returns the live instance if there is one (PKCS#11 allows one C_Initialize per process).
// The module is finalised when the last reference goes. Thread-safe (CKF_OS_LOCKING_OK).
class Module {
 public:
  // Load dlopens |path| and calls C_GetFunctionList and C_Initialize. kUnavailable if the file
  // is missing or is not a PKCS#11 library, with the reason.
  [[nodiscard]] static Result<std::shared_ptr<Module>> Load(const std::filesystem::path& path);

  ~Module();
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  const std::filesystem::path& path() const { return path_; }
  // functions is the module's dispatch table, for callers that need a PKCS#11 call fleetid does
  // not wrap (tests; vendor-specific set-up). Valid for the Module's lifetime.
  CK_FUNCTION_LIST* functions() const { return fns_; }

  // ListTokens lists the slots that hold a token, initialised or not.
  [[nodiscard]] Result<std::vector<TokenSummary>> ListTokens() const;

  // FindToken returns the slot of the initialised token labelled |label|; kNotFound if none,
  // kConflict if two tokens carry the label.
  [[nodiscard]] Result<CK_SLOT_ID> FindToken(std::string_view label) const;

  // InitToken initialises the first uninitialised token as |label| with |so_pin| and sets its
  // user PIN to |user_pin|. Used by the embedded SoftHSM2 store; a production HSM is initialised
  // by its own tools. kConflict if a token already has |label|, kUnavailable if no free slot.
  [[nodiscard]] Result<CK_SLOT_ID> InitToken(std::string_view label,
                                             const crypto::SecretBuffer& so_pin,
                                             const crypto::SecretBuffer& user_pin);

 private:
  Module(std::filesystem::path path, void* handle, CK_FUNCTION_LIST* fns)
      : path_(std::move(path)), handle_(handle), fns_(fns) {}

  std::filesystem::path path_;
  void* handle_;
  CK_FUNCTION_LIST* fns_;
};

// KeyAttributes is what the token says about a private key: the evidence that it is held as
// fleetid requires (sensitive, never extractable, generated in the token, sign-only).
struct KeyAttributes {
  std::string label;
  std::vector<std::uint8_t> id;  // CKA_ID
  const crypto::Suite* suite = nullptr;
  bool token = false;              // CKA_TOKEN: persistent
  bool is_private = false;         // CKA_PRIVATE: needs login
  bool sensitive = false;          // CKA_SENSITIVE
  bool always_sensitive = false;   // CKA_ALWAYS_SENSITIVE
  bool extractable = true;         // CKA_EXTRACTABLE
  bool never_extractable = false;  // CKA_NEVER_EXTRACTABLE
  bool local = false;              // CKA_LOCAL: generated inside the token
  bool can_sign = false;           // CKA_SIGN
  bool can_decrypt = false;        // CKA_DECRYPT
  bool can_unwrap = false;         // CKA_UNWRAP
  bool can_derive = false;         // CKA_DERIVE

  // HeldInHardware is true when the key can never have left the token.
  bool HeldInHardware() const {
    return sensitive && always_sensitive && !extractable && never_extractable && local;
  }
};

// Signer signs with one key that stays inside a token. Sign takes the whole message; the signer
// hashes it as its suite requires and returns the signature in the encoding X.509, CRLs and
// OCSP carry (DER ECDSA-Sig-Value; raw Ed25519; raw RSASSA-PSS). Thread-safe.
class Signer {
 public:
  virtual ~Signer() = default;
  virtual const crypto::Suite& suite() const = 0;
  virtual std::string_view label() const = 0;
  // public_key is owned by the signer and valid for its lifetime.
  virtual EVP_PKEY* public_key() const = 0;
  [[nodiscard]] virtual Result<std::vector<std::uint8_t>> Sign(
      std::span<const std::uint8_t> message) = 0;
  // SignDigest signs a digest already computed with the suite's digest (for callers that hash
  // themselves, such as OpenSSL's EVP_PKEY_sign), in the same encoding as Sign. kInvalidArgument
  // for pure EdDSA, which has no pre-hashed form, or a digest of the wrong length.
  [[nodiscard]] virtual Result<std::vector<std::uint8_t>> SignDigest(
      std::span<const std::uint8_t> digest) = 0;
};

class Pkcs11Signer;

// Token is a logged-in token with a pool of sessions. Thread-safe: each operation borrows a
// session from the pool for its duration.
class Token : public std::enable_shared_from_this<Token> {
 public:
  // Open logs in as the user to the initialised token labelled |label|. kNotFound if there is no
  // such token; kUnauthenticated for a wrong PIN; kPermissionDenied if the PIN is locked.
  [[nodiscard]] static Result<std::shared_ptr<Token>> Open(const std::shared_ptr<Module>& module,
                                                           std::string_view label,
                                                           const crypto::SecretBuffer& pin);
  ~Token();
  Token(const Token&) = delete;
  Token& operator=(const Token&) = delete;

  const std::string& label() const { return label_; }
  const std::shared_ptr<Module>& module() const { return module_; }

  // GenerateKey makes a key pair for |suite| inside the token: the private half persistent,
  // private, sensitive, non-extractable and sign-only; the public half persistent and
  // verify-only; both labelled |label| with a fresh random CKA_ID from |rng|. kConflict if
  // |label| is taken; kInvalidArgument if the token lacks the suite's mechanism.
  [[nodiscard]] Result<KeyAttributes> GenerateKey(std::string_view label,
                                                  const crypto::Suite& suite, Rng& rng);

  // FindKey reads the attributes of the private key labelled |label|; kNotFound if none,
  // kConflict if the label is ambiguous, kInvalidArgument if its algorithm is unsupported.
  [[nodiscard]] Result<KeyAttributes> FindKey(std::string_view label);

  // ListKeys lists every private key on the token (attributes only).
  [[nodiscard]] Result<std::vector<KeyAttributes>> ListKeys();

  // PublicKey exports the public half of the key labelled |label|.
  [[nodiscard]] Result<crypto::EvpPkeyPtr> PublicKey(std::string_view label);

  // DestroyKey deletes both halves of the key labelled |label|; kNotFound if there is none.
  [[nodiscard]] Result<void> DestroyKey(std::string_view label);

  // GetSigner returns a signer for the key labelled |label|. kPermissionDenied if the key may
  // not sign (CKA_SIGN false) or could have left the token (extractable, not sensitive).
  [[nodiscard]] Result<std::unique_ptr<Signer>> GetSigner(std::string_view label);

  // ProbePrivateValue asks the token for CKA_VALUE (or CKA_PRIVATE_EXPONENT for RSA) of the
  // private key labelled |label| and returns the CK_RV it answered. A correctly held key answers
  // CKR_ATTRIBUTE_SENSITIVE; the value is never returned, even if a broken token offers it.
  [[nodiscard]] Result<CK_RV> ProbePrivateValue(std::string_view label);

 private:
  friend class Pkcs11Signer;
  class Lease;

  Token(std::shared_ptr<Module> module, CK_SLOT_ID slot, std::string label)
      : module_(std::move(module)), slot_(slot), label_(std::move(label)) {}

  [[nodiscard]] Result<Lease> Borrow();
  void Return(CK_SESSION_HANDLE session);

  std::shared_ptr<Module> module_;
  CK_SLOT_ID slot_;
  std::string label_;
  Mutex mu_;
  std::vector<CK_SESSION_HANDLE> idle_ FLEETID_GUARDED_BY(mu_);
  CK_SESSION_HANDLE login_session_ = CK_INVALID_HANDLE;  // held open so the login persists
};

}  // namespace fleetid::custody

#endif  // FLEETID_CUSTODY_CUSTODY_H_
