// Algorithm suites: the closed set of key + signature combinations fleetid can issue and sign
// with, and the policy knob that allows, prefers or deprecates each.
#ifndef FLEETID_CRYPTO_SUITE_H_
#define FLEETID_CRYPTO_SUITE_H_

#include <openssl/evp.h>

#include <array>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "common/mutex.h"
#include "crypto/handles.h"

namespace fleetid::crypto {

enum class SuiteId { kEcdsaP256Sha256, kEcdsaP384Sha384, kEd25519, kRsa3072PssSha256 };

enum class KeyType { kEc, kEd25519, kRsa };

// How the signature value is carried in X.509, CRLs and OCSP.
enum class SignatureEncoding {
  kEcdsaDer,  // ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER } (RFC 5480 §2.2 / RFC 3279)
  kRaw,       // the mechanism's output as is: Ed25519 R||S (RFC 8032), RSASSA-PSS octets
};

struct Suite {
  SuiteId id;
  std::string_view name;          // stable identifier used in config, policy and APIs
  KeyType key_type;
  int curve_nid;                  // EC curves only, else NID_undef
  int rsa_bits;                   // RSA only, else 0
  std::string_view digest_name;   // OpenSSL digest hashed before signing; empty for pure EdDSA
  std::size_t digest_size;        // 0 for pure EdDSA
  std::size_t pss_salt_length;    // RSA-PSS only (RFC 4055 recommends the digest length)
  SignatureEncoding encoding;
  // The DER AlgorithmIdentifier written in signatureAlgorithm fields (RFC 5758 §3.2 for ECDSA,
  // RFC 8410 §3 for Ed25519, RFC 4055 §3.1 for RSASSA-PSS with SHA-256, MGF1-SHA-256, salt 32).
  std::span<const std::uint8_t> signature_algorithm_der;
};

// AllSuites lists every suite fleetid knows, in a stable order.
std::span<const Suite> AllSuites();
const Suite& GetSuite(SuiteId id);

// FindSuite looks a suite up by name; kInvalidArgument naming the supported ones if unknown.
[[nodiscard]] Result<const Suite*> FindSuite(std::string_view name);

// SuiteOfPublicKey says which suite a public key belongs to (P-256 -> ecdsa-p256-sha256, ...);
// kInvalidArgument for key types or sizes fleetid does not support.
[[nodiscard]] Result<const Suite*> SuiteOfPublicKey(const EVP_PKEY* key);

// SignatureAlgorithm returns a fresh X509_ALGOR for |suite|'s signatureAlgorithm.
[[nodiscard]] Result<X509AlgorPtr> SignatureAlgorithm(const Suite& suite);

enum class SuiteStatus { kDisabled, kAllowed, kPreferred, kDeprecated };

// SuitePolicy is the registry's policy view: which suites may be used for new keys and
// certificates, which one is preferred, and which are deprecated (still verified and renewed,
// flagged for migration). Thread-safe.
class SuitePolicy {
 public:
  // The default allows every suite and prefers ecdsa-p256-sha256 (fastest in OpenSSL 3.0 and
  // accepted everywhere).
  SuitePolicy();

  void Set(SuiteId id, SuiteStatus status);
  SuiteStatus Status(SuiteId id) const;

  // CheckUsable is kPermissionDenied if |suite| is disabled by this policy.
  [[nodiscard]] Result<void> CheckUsable(const Suite& suite) const;

  // Preferred returns the suite marked preferred (the first allowed one if none is).
  const Suite& Preferred() const;

 private:
  mutable Mutex mu_;
  std::array<SuiteStatus, 4> status_ FLEETID_GUARDED_BY(mu_);
};

std::string_view SuiteStatusName(SuiteStatus status);

// EcdsaRawToDer turns a PKCS#11 CKM_ECDSA signature (r||s, each half the curve size) into the
// DER ECDSA-Sig-Value X.509 needs.
[[nodiscard]] Result<std::vector<std::uint8_t>> EcdsaRawToDer(std::span<const std::uint8_t> raw);

// VerifySignature checks |signature| over |message| with |key| under |suite|'s rules;
// kInvalidArgument if it does not verify.
[[nodiscard]] Result<void> VerifySignature(const Suite& suite, EVP_PKEY* key,
                                           std::span<const std::uint8_t> message,
                                           std::span<const std::uint8_t> signature);

}  // namespace fleetid::crypto

#endif  // FLEETID_CRYPTO_SUITE_H_
