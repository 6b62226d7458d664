// "fleetid-token": an OpenSSL 3 provider, built in, whose keys are custody Signers.
//
// Keys. A key object holds a shared_ptr<Signer>. TokenPkey makes one with EVP_PKEY_fromdata on
// this provider's key manager and a single parameter, kSignerIdParam: an id into PendingSigners,
// a registry that holds the signer only while TokenPkey runs and hands it out once. An id, not a
// pointer, so that a forged parameter can never make the provider dereference memory, and the
// import refuses every other kind of key material (so OpenSSL never cross-exports a software key
// into this provider). Public questions (size, group, encoded point, n and e) are answered by the
// signer's public EVP_PKEY, which lives in the default provider; export hands out the public half
// only, which is what OpenSSL needs to compare keys (EVP_PKEY_eq, X509_check_private_key) and to
// encode SubjectPublicKeyInfo. Refusing the private half also steers EVP_DigestSignInit: its first
// attempt (the default provider's signature, after an export of the whole key) fails, and its
// second uses this provider's signature.
//
// Method order. With no property query, OpenSSL takes the first implementation of a name that was
// added to its method store, and it visits providers in reverse name order, so "fleetid-token"
// would come before "default". Load therefore fetches the default provider's key managers and
// signatures before this provider is activated: every plain fetch of "EC", "ECDSA", "RSA" or
// "ED25519" (key generation, ECDHE in TLS, verification) keeps landing in the default provider.
//
// Signatures. ECDSA, RSA (RSASSA-PSS only) and ED25519 call Signer::Sign on the whole message
// (one-shot EVP_DigestSign, X509_sign, libssl) or Signer::SignDigest on a running hash
// (EVP_DigestSignUpdate/Final) or on a caller's digest (EVP_PKEY_sign). Verification is delegated
// to the public key in the default provider.
#include "custody/provider.h"

#include <openssl/core.h>
#include <openssl/core_dispatch.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/provider.h>
#include <openssl/rsa.h>

#include <array>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>

#include "common/mutex.h"
#include "crypto/crypto.h"
#include "crypto/suite.h"

namespace fleetid::custody {
namespace {

using crypto::KeyType;
using crypto::Suite;

constexpr char kProviderName[] = "fleetid-token";
constexpr char kProviderProperty[] = "provider=fleetid-token";
constexpr char kSignerIdParam[] = "fleetid-signer-id";

// The one RSA scheme fleetid signs with (RFC 4055 §3.1 parameters; TLS 1.3 rsa_pss_rsae_sha256).
constexpr char kPssDigest[] = "SHA256";
constexpr int kPssSaltLength = 32;

// PendingSigners holds each signer that TokenPkey is turning into a key, under an id that the
// key import redeems exactly once. Thread-safe.
class PendingSigners {
 public:
  std::uint64_t Put(std::shared_ptr<Signer> signer) {
    MutexLock lock(mu_);
    const std::uint64_t id = ++last_id_;
    signers_.emplace(id, std::move(signer));
    return id;
  }

  std::shared_ptr<Signer> Take(std::uint64_t id) {
    MutexLock lock(mu_);
    auto it = signers_.find(id);
    if (it == signers_.end()) return nullptr;
    std::shared_ptr<Signer> signer = std::move(it->second);
    signers_.erase(it);
    return signer;
  }

 private:
  Mutex mu_;
  std::uint64_t last_id_ FLEETID_GUARDED_BY(mu_) = 0;
  std::map<std::uint64_t, std::shared_ptr<Signer>> signers_ FLEETID_GUARDED_BY(mu_);
};

PendingSigners& Pending() {
  static PendingSigners pending;
  return pending;
}

// RaiseError puts |message| on OpenSSL's error queue, where the caller of the OpenSSL function
// (X509_sign, SSL_do_handshake, ...) finds it.
void RaiseError(int reason, const std::string& message) {
  ERR_raise_data(ERR_LIB_PROV, reason, "%s", message.c_str());
}

using EvpKeymgmtPtr = std::unique_ptr<EVP_KEYMGMT, crypto::Deleter<&EVP_KEYMGMT_free>>;
using EvpSignaturePtr = std::unique_ptr<EVP_SIGNATURE, crypto::Deleter<&EVP_SIGNATURE_free>>;

const char* KeyTypeName(KeyType type) {
  switch (type) {
    case KeyType::kEc:
      return "EC";
    case KeyType::kEd25519:
      return "ED25519";
    case KeyType::kRsa:
      return "RSA";
  }
  return "";
}

const char* SignatureName(KeyType type) {
  switch (type) {
    case KeyType::kEc:
      return "ECDSA";
    case KeyType::kEd25519:
      return "ED25519";
    case KeyType::kRsa:
      return "RSA";
  }
  return "";
}

// DigestIs says whether the OpenSSL digest name |name| ("SHA256", "SHA2-256", an OID) names
// |expected|.
bool DigestIs(const char* name, std::string_view expected) {
  ERR_set_mark();
  crypto::EvpMdPtr md(EVP_MD_fetch(nullptr, name, nullptr));
  ERR_pop_to_mark();
  return md && EVP_MD_is_a(md.get(), std::string(expected).c_str()) == 1;
}

// --- Key management --------------------------------------------------------------------------

struct TokenKey {
  KeyType type;
  std::shared_ptr<Signer> signer;  // null until imported
};

// Ownership of a TokenKey passes to OpenSSL as a void* (KeyNew, KeyDup) and back in KeyFree.
TokenKey* AsKey(void* keydata) { return static_cast<TokenKey*>(keydata); }
const TokenKey* AsKey(const void* keydata) { return static_cast<const TokenKey*>(keydata); }

template <KeyType kType>
void* KeyNew(void* /*provctx*/) {
  return std::make_unique<TokenKey>(TokenKey{kType, nullptr}).release();
}

void KeyFree(void* keydata) { std::unique_ptr<TokenKey> owned(AsKey(keydata)); }

void* KeyDup(const void* keydata, int /*selection*/) {
  const TokenKey* key = AsKey(keydata);
  if (key == nullptr) return nullptr;
  return std::make_unique<TokenKey>(*key).release();
}

int KeyHas(const void* keydata, int selection) {
  const TokenKey* key = AsKey(keydata);
  if (key == nullptr) return 0;
  if ((selection & OSSL_KEYMGMT_SELECT_KEYPAIR) == 0) return 1;
  return key->signer != nullptr ? 1 : 0;
}

int KeyMatch(const void* keydata1, const void* keydata2, int selection) {
  const TokenKey* a = AsKey(keydata1);
  const TokenKey* b = AsKey(keydata2);
  if (a == nullptr || b == nullptr || !a->signer || !b->signer) return 0;
  if ((selection & OSSL_KEYMGMT_SELECT_KEYPAIR) != 0) {
    return EVP_PKEY_eq(a->signer->public_key(), b->signer->public_key()) == 1 ? 1 : 0;
  }
  return EVP_PKEY_parameters_eq(a->signer->public_key(), b->signer->public_key()) == 1 ? 1 : 0;
}

// KeyImport accepts only a signer handed over by TokenPkey (see the file comment).
template <KeyType kType>
int KeyImport(void* keydata, int selection, const OSSL_PARAM params[]) {
  TokenKey* key = AsKey(keydata);
  if (key == nullptr || (selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) == 0) return 0;
  const OSSL_PARAM* p = OSSL_PARAM_locate_const(params, kSignerIdParam);
  std::uint64_t id = 0;
  if (p == nullptr || OSSL_PARAM_get_uint64(p, &id) != 1) return 0;
  std::shared_ptr<Signer> signer = Pending().Take(id);
  if (!signer || signer->suite().key_type != kType) return 0;
  key->signer = std::move(signer);
  return 1;
}

const OSSL_PARAM* KeyImportTypes(int /*selection*/) {
  static const OSSL_PARAM kTypes[] = {
      OSSL_PARAM_uint64(kSignerIdParam, nullptr),
      OSSL_PARAM_END,
  };
  return kTypes;
}

// KeyExport hands out the public half and domain parameters; the private half never leaves the
// token, so a selection that includes it fails.
int KeyExport(void* keydata, int selection, OSSL_CALLBACK* param_cb, void* cbarg) {
  const TokenKey* key = AsKey(keydata);
  if (key == nullptr || !key->signer || (selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) != 0) {
    return 0;
  }
  OSSL_PARAM* raw = nullptr;
  if (EVP_PKEY_todata(key->signer->public_key(), selection, &raw) != 1) return 0;
  const crypto::OsslParamPtr params(raw);
  return param_cb(params.get(), cbarg);
}

template <KeyType kType>
const OSSL_PARAM* KeyExportTypes(int /*selection*/) {
  static const OSSL_PARAM kEc[] = {
      OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, nullptr, 0),
      OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, nullptr, 0),
      OSSL_PARAM_END,
  };
  static const OSSL_PARAM kEd25519[] = {
      OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, nullptr, 0),
      OSSL_PARAM_END,
  };
  static const OSSL_PARAM kRsa[] = {
      OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_N, nullptr, 0),
      OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_E, nullptr, 0),
      OSSL_PARAM_END,
  };
  switch (kType) {
    case KeyType::kEc:
      return kEc;
    case KeyType::kEd25519:
      return kEd25519;
    case KeyType::kRsa:
      return kRsa;
  }
  return nullptr;
}

// KeyGetParams answers from the public key (bits, security-bits, max-size, group-name,
// encoded-pub-key, n, e, mandatory-digest for Ed25519), then states the suite's digest as the
// default one.
int KeyGetParams(void* keydata, OSSL_PARAM params[]) {
  const TokenKey* key = AsKey(keydata);
  if (key == nullptr || !key->signer) return 0;
  if (EVP_PKEY_get_params(key->signer->public_key(), params) != 1) return 0;
  const Suite& suite = key->signer->suite();
  OSSL_PARAM* p = OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_DEFAULT_DIGEST);
  if (p != nullptr && !suite.digest_name.empty() &&
      OSSL_PARAM_set_utf8_string(p, std::string(suite.digest_name).c_str()) != 1) {
    return 0;
  }
  return 1;
}

template <KeyType kType>
const OSSL_PARAM* KeyGettableParams(void* /*provctx*/) {
  static const OSSL_PARAM kEc[] = {
      OSSL_PARAM_int(OSSL_PKEY_PARAM_BITS, nullptr),
      OSSL_PARAM_int(OSSL_PKEY_PARAM_SECURITY_BITS, nullptr),
      OSSL_PARAM_int(OSSL_PKEY_PARAM_MAX_SIZE, nullptr),
      OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_DEFAULT_DIGEST, nullptr, 0),
      OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, nullptr, 0),
      OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, nullptr, 0),
      OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, nullptr, 0),
      OSSL_PARAM_END,
  };
  static const OSSL_PARAM kEd25519[] = {
      OSSL_PARAM_int(OSSL_PKEY_PARAM_BITS, nullptr),
      OSSL_PARAM_int(OSSL_PKEY_PARAM_SECURITY_BITS, nullptr),
      OSSL_PARAM_int(OSSL_PKEY_PARAM_MAX_SIZE, nullptr),
      OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_MANDATORY_DIGEST, nullptr, 0),
      OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, nullptr, 0),
      OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, nullptr, 0),
      OSSL_PARAM_END,
  };
  static const OSSL_PARAM kRsa[] = {
      OSSL_PARAM_int(OSSL_PKEY_PARAM_BITS, nullptr),
      OSSL_PARAM_int(OSSL_PKEY_PARAM_SECURITY_BITS, nullptr),
      OSSL_PARAM_int(OSSL_PKEY_PARAM_MAX_SIZE, nullptr),
      OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_DEFAULT_DIGEST, nullptr, 0),
      OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_N, nullptr, 0),
      OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_E, nullptr, 0),
      OSSL_PARAM_END,
  };
  switch (kType) {
    case KeyType::kEc:
      return kEc;
    case KeyType::kEd25519:
      return kEd25519;
    case KeyType::kRsa:
      return kRsa;
  }
  return nullptr;
}

template <KeyType kType>
const char* KeyOperationName(int operation_id) {
  return operation_id == OSSL_OP_SIGNATURE ? SignatureName(kType) : nullptr;
}

// --- Signatures ------------------------------------------------------------------------------

struct SignatureCtx {
  explicit SignatureCtx(KeyType key_type) : type(key_type) {}

  KeyType type;
  std::shared_ptr<Signer> signer;  // set by the *_init calls
  crypto::EvpMdCtxPtr hash;        // digest_sign_update: the running hash of the message
  crypto::EvpMdCtxPtr verifier;    // digest_verify_*: a verifier on the public key
};

SignatureCtx* AsCtx(void* ctx) { return static_cast<SignatureCtx*>(ctx); }

template <KeyType kType>
void* CtxNew(void* /*provctx*/, const char* /*propq*/) {
  return std::make_unique<SignatureCtx>(kType).release();
}

void CtxFree(void* ctx) { std::unique_ptr<SignatureCtx> owned(AsCtx(ctx)); }

// CopyMdCtx returns a copy of |from| (null if |from| is), or sets |ok| to false.
crypto::EvpMdCtxPtr CopyMdCtx(const EVP_MD_CTX* from, bool& ok) {
  if (from == nullptr) return nullptr;
  crypto::EvpMdCtxPtr copy(EVP_MD_CTX_new());
  if (!copy || EVP_MD_CTX_copy_ex(copy.get(), from) != 1) ok = false;
  return copy;
}

void* CtxDup(void* ctx) {
  const SignatureCtx* from = AsCtx(ctx);
  if (from == nullptr) return nullptr;
  auto copy = std::make_unique<SignatureCtx>(from->type);
  copy->signer = from->signer;
  bool ok = true;
  copy->hash = CopyMdCtx(from->hash.get(), ok);
  copy->verifier = CopyMdCtx(from->verifier.get(), ok);
  return ok ? copy.release() : nullptr;
}

// CheckDigest refuses a digest other than the suite's, and any digest for pure Ed25519. A null
// or empty |mdname| means the suite's own.
bool CheckDigest(const SignatureCtx& ctx, const char* mdname) {
  if (mdname == nullptr || *mdname == '\0') return true;
  const Suite& suite = ctx.signer->suite();
  if (suite.digest_name.empty()) {
    RaiseError(ERR_R_UNSUPPORTED, fmt::format("fleetid-token: key '{}' is {}, which signs the "
                                              "message itself; digest '{}' cannot be used",
                                              ctx.signer->label(), suite.name, mdname));
    return false;
  }
  if (!DigestIs(mdname, suite.digest_name)) {
    RaiseError(ERR_R_UNSUPPORTED,
               fmt::format("fleetid-token: key '{}' ({}) signs with {} only, not {}",
                           ctx.signer->label(), suite.name, suite.digest_name, mdname));
    return false;
  }
  return true;
}

// CheckRsaParam validates one RSA parameter against fleetid's only RSA scheme.
bool CheckRsaParam(const OSSL_PARAM& p) {
  const std::string_view key = p.key;
  bool ok = false;
  std::string shown;
  if (key == OSSL_SIGNATURE_PARAM_PAD_MODE) {
    int mode = 0;
    const char* name = nullptr;
    if (p.data_type == OSSL_PARAM_UTF8_STRING && OSSL_PARAM_get_utf8_string_ptr(&p, &name) == 1) {
      ok = std::string_view(name) == OSSL_PKEY_RSA_PAD_MODE_PSS;
      shown = name;
    } else if (OSSL_PARAM_get_int(&p, &mode) == 1) {
      ok = mode == RSA_PKCS1_PSS_PADDING;
      shown = std::to_string(mode);
    }
  } else if (key == OSSL_SIGNATURE_PARAM_PSS_SALTLEN) {
    int length = 0;
    const char* name = nullptr;
    if (p.data_type == OSSL_PARAM_UTF8_STRING && OSSL_PARAM_get_utf8_string_ptr(&p, &name) == 1) {
      const std::string_view value(name);
      ok = value == OSSL_PKEY_RSA_PSS_SALT_LEN_DIGEST || value == std::to_string(kPssSaltLength);
      shown = name;
    } else if (OSSL_PARAM_get_int(&p, &length) == 1) {
      ok = length == kPssSaltLength || length == RSA_PSS_SALTLEN_DIGEST;
      shown = std::to_string(length);
    }
  } else if (key == OSSL_SIGNATURE_PARAM_MGF1_DIGEST) {
    const char* name = nullptr;
    if (OSSL_PARAM_get_utf8_string_ptr(&p, &name) == 1) {
      ok = DigestIs(name, kPssDigest);
      shown = name;
    }
  } else {
    return true;
  }
  if (!ok) {
    RaiseError(ERR_R_UNSUPPORTED,
               fmt::format("fleetid-token: RSA keys sign with RSASSA-PSS (SHA-256, MGF1-SHA-256, "
                           "salt 32) only; {} '{}' is refused",
                           key, shown));
  }
  return ok;
}

int CtxSetParams(void* vctx, const OSSL_PARAM params[]) {
  SignatureCtx* ctx = AsCtx(vctx);
  if (ctx == nullptr) return 0;
  if (params == nullptr || params->key == nullptr) return 1;
  if (!ctx->signer) {
    RaiseError(ERR_R_PASSED_INVALID_ARGUMENT, "fleetid-token: no key set");
    return 0;
  }
  for (const OSSL_PARAM* p = params; p->key != nullptr; ++p) {
    if (std::string_view(p->key) == OSSL_SIGNATURE_PARAM_DIGEST) {
      const char* name = nullptr;
      if (OSSL_PARAM_get_utf8_string_ptr(p, &name) != 1 || !CheckDigest(*ctx, name)) return 0;
    } else if (ctx->type == KeyType::kRsa && !CheckRsaParam(*p)) {
      return 0;
    }
  }
  return 1;
}

template <KeyType kType>
const OSSL_PARAM* CtxSettableParams(void* /*ctx*/, void* /*provctx*/) {
  static const OSSL_PARAM kCommon[] = {
      OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, nullptr, 0),
      OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PROPERTIES, nullptr, 0),
      OSSL_PARAM_END,
  };
  static const OSSL_PARAM kRsa[] = {
      OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, nullptr, 0),
      OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PROPERTIES, nullptr, 0),
      OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PAD_MODE, nullptr, 0),
      OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PSS_SALTLEN, nullptr, 0),
      OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_MGF1_DIGEST, nullptr, 0),
      OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_MGF1_PROPERTIES, nullptr, 0),
      OSSL_PARAM_END,
  };
  return kType == KeyType::kRsa ? kRsa : kCommon;
}

// SetNameOrInt answers |p| with |name| or |number|, whichever type the caller asked for.
bool SetNameOrInt(OSSL_PARAM* p, const char* name, int number) {
  if (p->data_type == OSSL_PARAM_UTF8_STRING) return OSSL_PARAM_set_utf8_string(p, name) == 1;
  return OSSL_PARAM_set_int(p, number) == 1;
}

int CtxGetParams(void* vctx, OSSL_PARAM params[]) {
  const SignatureCtx* ctx = AsCtx(vctx);
  if (ctx == nullptr || !ctx->signer) return 0;
  const Suite& suite = ctx->signer->suite();
  OSSL_PARAM* p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_ALGORITHM_ID);
  if (p != nullptr && OSSL_PARAM_set_octet_string(p, suite.signature_algorithm_der.data(),
                                                  suite.signature_algorithm_der.size()) != 1) {
    return 0;
  }
  p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_DIGEST);
  if (p != nullptr && !suite.digest_name.empty() &&
      OSSL_PARAM_set_utf8_string(p, std::string(suite.digest_name).c_str()) != 1) {
    return 0;
  }
  if (ctx->type != KeyType::kRsa) return 1;
  p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_PAD_MODE);
  if (p != nullptr && !SetNameOrInt(p, OSSL_PKEY_RSA_PAD_MODE_PSS, RSA_PKCS1_PSS_PADDING)) {
    return 0;
  }
  p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_PSS_SALTLEN);
  if (p != nullptr && !SetNameOrInt(p, "32", kPssSaltLength)) return 0;
  p = OSSL_PARAM_locate(params, OSSL_SIGNATURE_PARAM_MGF1_DIGEST);
  if (p != nullptr && OSSL_PARAM_set_utf8_string(p, kPssDigest) != 1) return 0;
  return 1;
}

template <KeyType kType>
const OSSL_PARAM* CtxGettableParams(void* /*ctx*/, void* /*provctx*/) {
  static const OSSL_PARAM kCommon[] = {
      OSSL_PARAM_octet_string(OSSL_SIGNATURE_PARAM_ALGORITHM_ID, nullptr, 0),
      OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, nullptr, 0),
      OSSL_PARAM_END,
  };
  static const OSSL_PARAM kRsa[] = {
      OSSL_PARAM_octet_string(OSSL_SIGNATURE_PARAM_ALGORITHM_ID, nullptr, 0),
      OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, nullptr, 0),
      OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PAD_MODE, nullptr, 0),
      OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_PSS_SALTLEN, nullptr, 0),
      OSSL_PARAM_utf8_string(OSSL_SIGNATURE_PARAM_MGF1_DIGEST, nullptr, 0),
      OSSL_PARAM_END,
  };
  return kType == KeyType::kRsa ? kRsa : kCommon;
}

// Begin takes the key of a *_init call (null on re-initialisation: the previous key stays).
bool Begin(SignatureCtx* ctx, void* provkey, const char* mdname, const OSSL_PARAM params[]) {
  if (ctx == nullptr) return false;
  const TokenKey* key = AsKey(static_cast<const void*>(provkey));
  if (key != nullptr) {
    if (!key->signer || key->type != ctx->type) {
      RaiseError(ERR_R_PASSED_INVALID_ARGUMENT, "fleetid-token: key does not fit the operation");
      return false;
    }
    ctx->signer = key->signer;
  }
  if (!ctx->signer) {
    RaiseError(ERR_R_PASSED_INVALID_ARGUMENT, "fleetid-token: no key set");
    return false;
  }
  ctx->hash.reset();
  ctx->verifier.reset();
  return CheckDigest(*ctx, mdname) && CtxSetParams(ctx, params) == 1;
}

std::size_t MaxSignatureSize(const SignatureCtx& ctx) {
  return static_cast<std::size_t>(std::max(EVP_PKEY_get_size(ctx.signer->public_key()), 0));
}

// Deliver copies a signature from the token into OpenSSL's buffer.
int Deliver(const SignatureCtx& ctx, const Result<std::vector<std::uint8_t>>& signature,
            unsigned char* sig, std::size_t* siglen, std::size_t sigsize) {
  if (!signature) {
    RaiseError(ERR_R_OPERATION_FAIL, fmt::format("fleetid-token: {}", signature.error().message()));
    return 0;
  }
  if (signature->size() > sigsize) {
    RaiseError(ERR_R_PASSED_INVALID_ARGUMENT,
               fmt::format("fleetid-token: a {}-byte signature of key '{}' does not fit {} bytes",
                           signature->size(), ctx.signer->label(), sigsize));
    return 0;
  }
  std::memcpy(sig, signature->data(), signature->size());
  *siglen = signature->size();
  return 1;
}

int SignInit(void* vctx, void* provkey, const OSSL_PARAM params[]) {
  return Begin(AsCtx(vctx), provkey, nullptr, params) ? 1 : 0;
}

// Sign signs a digest the caller computed (EVP_PKEY_sign).
int Sign(void* vctx, unsigned char* sig, std::size_t* siglen, std::size_t sigsize,
         const unsigned char* tbs, std::size_t tbslen) {
  const SignatureCtx* ctx = AsCtx(vctx);
  if (ctx == nullptr || !ctx->signer) return 0;
  if (sig == nullptr) {
    *siglen = MaxSignatureSize(*ctx);
    return 1;
  }
  return Deliver(*ctx, ctx->signer->SignDigest({tbs, tbslen}), sig, siglen, sigsize);
}

int DigestSignInit(void* vctx, const char* mdname, void* provkey, const OSSL_PARAM params[]) {
  SignatureCtx* ctx = AsCtx(vctx);
  if (!Begin(ctx, provkey, mdname, params)) return 0;
  const Suite& suite = ctx->signer->suite();
  if (suite.digest_name.empty()) return 1;  // pure EdDSA: one-shot only
  crypto::EvpMdPtr md(EVP_MD_fetch(nullptr, std::string(suite.digest_name).c_str(), nullptr));
  ctx->hash.reset(EVP_MD_CTX_new());
  return md && ctx->hash && EVP_DigestInit_ex2(ctx->hash.get(), md.get(), nullptr) == 1 ? 1 : 0;
}

int DigestSignUpdate(void* vctx, const unsigned char* data, std::size_t datalen) {
  SignatureCtx* ctx = AsCtx(vctx);
  if (ctx == nullptr || !ctx->hash) return 0;
  return EVP_DigestUpdate(ctx->hash.get(), data, datalen);
}

int DigestSignFinal(void* vctx, unsigned char* sig, std::size_t* siglen, std::size_t sigsize) {
  SignatureCtx* ctx = AsCtx(vctx);
  if (ctx == nullptr || !ctx->signer || !ctx->hash) return 0;
  if (sig == nullptr) {
    *siglen = MaxSignatureSize(*ctx);
    return 1;
  }
  std::array<std::uint8_t, EVP_MAX_MD_SIZE> digest{};
  unsigned int length = 0;
  if (EVP_DigestFinal_ex(ctx->hash.get(), digest.data(), &length) != 1) return 0;
  return Deliver(*ctx, ctx->signer->SignDigest({digest.data(), length}), sig, siglen, sigsize);
}

// DigestSign signs a whole message in one call (X509_sign, libssl, EVP_DigestSign).
int DigestSign(void* vctx, unsigned char* sig, std::size_t* siglen, std::size_t sigsize,
               const unsigned char* tbs, std::size_t tbslen) {
  const SignatureCtx* ctx = AsCtx(vctx);
  if (ctx == nullptr || !ctx->signer) return 0;
  if (sig == nullptr) {
    *siglen = MaxSignatureSize(*ctx);
    return 1;
  }
  return Deliver(*ctx, ctx->signer->Sign({tbs, tbslen}), sig, siglen, sigsize);
}

// SetPss puts fleetid's RSASSA-PSS parameters on a verification context of the public key.
bool SetPss(EVP_PKEY_CTX* pctx) {
  return EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1 &&
         EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, kPssSaltLength) == 1 &&
         EVP_PKEY_CTX_set_rsa_mgf1_md_name(pctx, kPssDigest, nullptr) == 1;
}

int VerifyInit(void* vctx, void* provkey, const OSSL_PARAM params[]) {
  return Begin(AsCtx(vctx), provkey, nullptr, params) ? 1 : 0;
}

// Verify checks a signature over a caller's digest with the public key (EVP_PKEY_verify).
int Verify(void* vctx, const unsigned char* sig, std::size_t siglen, const unsigned char* tbs,
           std::size_t tbslen) {
  const SignatureCtx* ctx = AsCtx(vctx);
  if (ctx == nullptr || !ctx->signer) return 0;
  const Suite& suite = ctx->signer->suite();
  crypto::EvpPkeyCtxPtr pctx(
      EVP_PKEY_CTX_new_from_pkey(nullptr, ctx->signer->public_key(), nullptr));
  crypto::EvpMdPtr md(EVP_MD_fetch(nullptr, std::string(suite.digest_name).c_str(), nullptr));
  if (!pctx || !md || EVP_PKEY_verify_init(pctx.get()) != 1 ||
      EVP_PKEY_CTX_set_signature_md(pctx.get(), md.get()) != 1 ||
      (ctx->type == KeyType::kRsa && !SetPss(pctx.get()))) {
    return 0;
  }
  return EVP_PKEY_verify(pctx.get(), sig, siglen, tbs, tbslen) == 1 ? 1 : 0;
}

int DigestVerifyInit(void* vctx, const char* mdname, void* provkey, const OSSL_PARAM params[]) {
  SignatureCtx* ctx = AsCtx(vctx);
  if (!Begin(ctx, provkey, mdname, params)) return 0;
  const Suite& suite = ctx->signer->suite();
  const std::string digest(suite.digest_name);
  ctx->verifier.reset(EVP_MD_CTX_new());
  EVP_PKEY_CTX* pctx = nullptr;  // owned by |verifier|
  if (!ctx->verifier ||
      EVP_DigestVerifyInit_ex(ctx->verifier.get(), &pctx, digest.empty() ? nullptr : digest.c_str(),
                              nullptr, nullptr, ctx->signer->public_key(), nullptr) != 1) {
    return 0;
  }
  return ctx->type != KeyType::kRsa || SetPss(pctx) ? 1 : 0;
}

int DigestVerifyUpdate(void* vctx, const unsigned char* data, std::size_t datalen) {
  SignatureCtx* ctx = AsCtx(vctx);
  if (ctx == nullptr || !ctx->verifier) return 0;
  return EVP_DigestVerifyUpdate(ctx->verifier.get(), data, datalen);
}

int DigestVerifyFinal(void* vctx, const unsigned char* sig, std::size_t siglen) {
  SignatureCtx* ctx = AsCtx(vctx);
  if (ctx == nullptr || !ctx->verifier) return 0;
  return EVP_DigestVerifyFinal(ctx->verifier.get(), sig, siglen) == 1 ? 1 : 0;
}

int DigestVerify(void* vctx, const unsigned char* sig, std::size_t siglen, const unsigned char* tbs,
                 std::size_t tbslen) {
  SignatureCtx* ctx = AsCtx(vctx);
  if (ctx == nullptr || !ctx->verifier) return 0;
  return EVP_DigestVerify(ctx->verifier.get(), sig, siglen, tbs, tbslen) == 1 ? 1 : 0;
}

// --- Dispatch tables ---------------------------------------------------------------------------

// Entry makes a dispatch entry; |Fn| is the OSSL_FUNC_*_fn type, so a wrong signature does not
// compile.
template <typename Fn>
OSSL_DISPATCH Entry(int id, Fn* fn) {
  return {id, reinterpret_cast<void (*)()>(fn)};
}

template <KeyType kType>
const OSSL_DISPATCH* KeyMgmtDispatch() {
  static const OSSL_DISPATCH kTable[] = {
      Entry<OSSL_FUNC_keymgmt_new_fn>(OSSL_FUNC_KEYMGMT_NEW, &KeyNew<kType>),
      Entry<OSSL_FUNC_keymgmt_free_fn>(OSSL_FUNC_KEYMGMT_FREE, &KeyFree),
      Entry<OSSL_FUNC_keymgmt_dup_fn>(OSSL_FUNC_KEYMGMT_DUP, &KeyDup),
      Entry<OSSL_FUNC_keymgmt_has_fn>(OSSL_FUNC_KEYMGMT_HAS, &KeyHas),
      Entry<OSSL_FUNC_keymgmt_match_fn>(OSSL_FUNC_KEYMGMT_MATCH, &KeyMatch),
      Entry<OSSL_FUNC_keymgmt_import_fn>(OSSL_FUNC_KEYMGMT_IMPORT, &KeyImport<kType>),
      Entry<OSSL_FUNC_keymgmt_import_types_fn>(OSSL_FUNC_KEYMGMT_IMPORT_TYPES, &KeyImportTypes),
      Entry<OSSL_FUNC_keymgmt_export_fn>(OSSL_FUNC_KEYMGMT_EXPORT, &KeyExport),
      Entry<OSSL_FUNC_keymgmt_export_types_fn>(OSSL_FUNC_KEYMGMT_EXPORT_TYPES,
                                               &KeyExportTypes<kType>),
      Entry<OSSL_FUNC_keymgmt_get_params_fn>(OSSL_FUNC_KEYMGMT_GET_PARAMS, &KeyGetParams),
      Entry<OSSL_FUNC_keymgmt_gettable_params_fn>(OSSL_FUNC_KEYMGMT_GETTABLE_PARAMS,
                                                  &KeyGettableParams<kType>),
      Entry<OSSL_FUNC_keymgmt_query_operation_name_fn>(OSSL_FUNC_KEYMGMT_QUERY_OPERATION_NAME,
                                                       &KeyOperationName<kType>),
      {0, nullptr},
  };
  return kTable;
}

template <KeyType kType>
const OSSL_DISPATCH* SignatureDispatch() {
  static const OSSL_DISPATCH kHashing[] = {
      Entry<OSSL_FUNC_signature_newctx_fn>(OSSL_FUNC_SIGNATURE_NEWCTX, &CtxNew<kType>),
      Entry<OSSL_FUNC_signature_freectx_fn>(OSSL_FUNC_SIGNATURE_FREECTX, &CtxFree),
      Entry<OSSL_FUNC_signature_dupctx_fn>(OSSL_FUNC_SIGNATURE_DUPCTX, &CtxDup),
      Entry<OSSL_FUNC_signature_sign_init_fn>(OSSL_FUNC_SIGNATURE_SIGN_INIT, &SignInit),
      Entry<OSSL_FUNC_signature_sign_fn>(OSSL_FUNC_SIGNATURE_SIGN, &Sign),
      Entry<OSSL_FUNC_signature_verify_init_fn>(OSSL_FUNC_SIGNATURE_VERIFY_INIT, &VerifyInit),
      Entry<OSSL_FUNC_signature_verify_fn>(OSSL_FUNC_SIGNATURE_VERIFY, &Verify),
      Entry<OSSL_FUNC_signature_digest_sign_init_fn>(OSSL_FUNC_SIGNATURE_DIGEST_SIGN_INIT,
                                                     &DigestSignInit),
      Entry<OSSL_FUNC_signature_digest_sign_update_fn>(OSSL_FUNC_SIGNATURE_DIGEST_SIGN_UPDATE,
                                                       &DigestSignUpdate),
      Entry<OSSL_FUNC_signature_digest_sign_final_fn>(OSSL_FUNC_SIGNATURE_DIGEST_SIGN_FINAL,
                                                      &DigestSignFinal),
      Entry<OSSL_FUNC_signature_digest_sign_fn>(OSSL_FUNC_SIGNATURE_DIGEST_SIGN, &DigestSign),
      Entry<OSSL_FUNC_signature_digest_verify_init_fn>(OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_INIT,
                                                       &DigestVerifyInit),
      Entry<OSSL_FUNC_signature_digest_verify_update_fn>(OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_UPDATE,
                                                         &DigestVerifyUpdate),
      Entry<OSSL_FUNC_signature_digest_verify_final_fn>(OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_FINAL,
                                                        &DigestVerifyFinal),
      Entry<OSSL_FUNC_signature_digest_verify_fn>(OSSL_FUNC_SIGNATURE_DIGEST_VERIFY, &DigestVerify),
      Entry<OSSL_FUNC_signature_get_ctx_params_fn>(OSSL_FUNC_SIGNATURE_GET_CTX_PARAMS,
                                                   &CtxGetParams),
      Entry<OSSL_FUNC_signature_gettable_ctx_params_fn>(OSSL_FUNC_SIGNATURE_GETTABLE_CTX_PARAMS,
                                                        &CtxGettableParams<kType>),
      Entry<OSSL_FUNC_signature_set_ctx_params_fn>(OSSL_FUNC_SIGNATURE_SET_CTX_PARAMS,
                                                   &CtxSetParams),
      Entry<OSSL_FUNC_signature_settable_ctx_params_fn>(OSSL_FUNC_SIGNATURE_SETTABLE_CTX_PARAMS,
                                                        &CtxSettableParams<kType>),
      {0, nullptr},
  };
  // Pure EdDSA has no pre-hashed or streaming form (RFC 8032 §5.1.6 hashes the message twice).
  static const OSSL_DISPATCH kOneShot[] = {
      Entry<OSSL_FUNC_signature_newctx_fn>(OSSL_FUNC_SIGNATURE_NEWCTX, &CtxNew<kType>),
      Entry<OSSL_FUNC_signature_freectx_fn>(OSSL_FUNC_SIGNATURE_FREECTX, &CtxFree),
      Entry<OSSL_FUNC_signature_dupctx_fn>(OSSL_FUNC_SIGNATURE_DUPCTX, &CtxDup),
      Entry<OSSL_FUNC_signature_digest_sign_init_fn>(OSSL_FUNC_SIGNATURE_DIGEST_SIGN_INIT,
                                                     &DigestSignInit),
      Entry<OSSL_FUNC_signature_digest_sign_fn>(OSSL_FUNC_SIGNATURE_DIGEST_SIGN, &DigestSign),
      Entry<OSSL_FUNC_signature_digest_verify_init_fn>(OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_INIT,
                                                       &DigestVerifyInit),
      Entry<OSSL_FUNC_signature_digest_verify_fn>(OSSL_FUNC_SIGNATURE_DIGEST_VERIFY, &DigestVerify),
      Entry<OSSL_FUNC_signature_get_ctx_params_fn>(OSSL_FUNC_SIGNATURE_GET_CTX_PARAMS,
                                                   &CtxGetParams),
      Entry<OSSL_FUNC_signature_gettable_ctx_params_fn>(OSSL_FUNC_SIGNATURE_GETTABLE_CTX_PARAMS,
                                                        &CtxGettableParams<kType>),
      Entry<OSSL_FUNC_signature_set_ctx_params_fn>(OSSL_FUNC_SIGNATURE_SET_CTX_PARAMS,
                                                   &CtxSetParams),
      Entry<OSSL_FUNC_signature_settable_ctx_params_fn>(OSSL_FUNC_SIGNATURE_SETTABLE_CTX_PARAMS,
                                                        &CtxSettableParams<kType>),
      {0, nullptr},
  };
  return kType == KeyType::kEd25519 ? kOneShot : kHashing;
}

// Algorithm names are the default provider's, so that EVP_PKEY_is_a, libssl's certificate slots
// and key comparison treat these keys as EC, ED25519 and RSA keys.
const OSSL_ALGORITHM* Algorithms(int operation_id) {
  static const OSSL_ALGORITHM kKeyMgmt[] = {
      {"EC:id-ecPublicKey:1.2.840.10045.2.1", kProviderProperty, KeyMgmtDispatch<KeyType::kEc>(),
       "EC key held in a fleetid token"},
      {"ED25519:1.3.101.112", kProviderProperty, KeyMgmtDispatch<KeyType::kEd25519>(),
       "Ed25519 key held in a fleetid token"},
      {"RSA:rsaEncryption:1.2.840.113549.1.1.1", kProviderProperty,
       KeyMgmtDispatch<KeyType::kRsa>(), "RSA key held in a fleetid token"},
      {nullptr, nullptr, nullptr, nullptr},
  };
  static const OSSL_ALGORITHM kSignature[] = {
      {"ECDSA", kProviderProperty, SignatureDispatch<KeyType::kEc>(), "ECDSA in a fleetid token"},
      {"ED25519:1.3.101.112", kProviderProperty, SignatureDispatch<KeyType::kEd25519>(),
       "Ed25519 in a fleetid token"},
      {"RSA:rsaEncryption:1.2.840.113549.1.1.1", kProviderProperty,
       SignatureDispatch<KeyType::kRsa>(), "RSASSA-PSS in a fleetid token"},
      {nullptr, nullptr, nullptr, nullptr},
  };
  switch (operation_id) {
    case OSSL_OP_KEYMGMT:
      return kKeyMgmt;
    case OSSL_OP_SIGNATURE:
      return kSignature;
    default:
      return nullptr;
  }
}

const OSSL_ALGORITHM* ProviderQuery(void* /*provctx*/, int operation_id, int* no_cache) {
  *no_cache = 0;
  return Algorithms(operation_id);
}

int ProviderGetParams(void* /*provctx*/, OSSL_PARAM params[]) {
  OSSL_PARAM* p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_NAME);
  if (p != nullptr && OSSL_PARAM_set_utf8_ptr(p, "fleetid token provider") != 1) return 0;
  p = OSSL_PARAM_locate(params, OSSL_PROV_PARAM_STATUS);
  if (p != nullptr && OSSL_PARAM_set_int(p, 1) != 1) return 0;
  return 1;
}

const OSSL_PARAM* ProviderGettableParams(void* /*provctx*/) {
  static const OSSL_PARAM kParams[] = {
      OSSL_PARAM_utf8_ptr(OSSL_PROV_PARAM_NAME, nullptr, 0),
      OSSL_PARAM_int(OSSL_PROV_PARAM_STATUS, nullptr),
      OSSL_PARAM_END,
  };
  return kParams;
}

// The provider keeps no state of its own; OpenSSL gets a non-null context all the same.
int provider_context_tag = 0;

int ProviderInit(const OSSL_CORE_HANDLE* /*handle*/, const OSSL_DISPATCH* /*in*/,
                 const OSSL_DISPATCH** out, void** provctx) {
  static const OSSL_DISPATCH kTable[] = {
      Entry<OSSL_FUNC_provider_query_operation_fn>(OSSL_FUNC_PROVIDER_QUERY_OPERATION,
                                                   &ProviderQuery),
      Entry<OSSL_FUNC_provider_get_params_fn>(OSSL_FUNC_PROVIDER_GET_PARAMS, &ProviderGetParams),
      Entry<OSSL_FUNC_provider_gettable_params_fn>(OSSL_FUNC_PROVIDER_GETTABLE_PARAMS,
                                                   &ProviderGettableParams),
      {0, nullptr},
  };
  *out = kTable;
  *provctx = &provider_context_tag;
  return 1;
}

// The references Load took, dropped again by UnloadAtExit.
OSSL_PROVIDER* loaded_default = nullptr;
OSSL_PROVIDER* loaded_token = nullptr;

// UnloadAtExit runs before OPENSSL_cleanup (which OpenSSL registered with atexit earlier, so it
// runs later); without it the two providers' reference counts never reach zero and their state
// outlives the library context. Keys still alive at exit keep their provider themselves.
void UnloadAtExit() {
  OSSL_PROVIDER_unload(loaded_token);
  OSSL_PROVIDER_unload(loaded_default);
}

// Load loads the default provider, registers the default provider's key managers and signatures
// in the method store ahead of this provider's (see the file comment), then loads this one.
Result<OSSL_PROVIDER*> Load() {
  // The first load also reads openssl.cnf, which may leave noise (a missing engine) on the error
  // queue; a successful load drops it again.
  ERR_set_mark();
  OSSL_PROVIDER* default_provider = OSSL_PROVIDER_load(nullptr, "default");
  if (default_provider == nullptr) {
    return MakeError(
        crypto::OpenSslError(ErrorCode::kUnavailable, "loading OpenSSL's default provider"));
  }
  for (KeyType type : {KeyType::kEc, KeyType::kEd25519, KeyType::kRsa}) {
    const EvpKeymgmtPtr keymgmt(EVP_KEYMGMT_fetch(nullptr, KeyTypeName(type), "provider=default"));
    const EvpSignaturePtr signature(
        EVP_SIGNATURE_fetch(nullptr, SignatureName(type), "provider=default"));
    if (!keymgmt || !signature) {
      OSSL_PROVIDER_unload(default_provider);
      return MakeError(crypto::OpenSslError(ErrorCode::kUnavailable,
                                            "the default provider lacks EC, Ed25519 or RSA"));
    }
  }
  if (OSSL_PROVIDER_add_builtin(nullptr, kProviderName, &ProviderInit) != 1) {
    OSSL_PROVIDER_unload(default_provider);
    return MakeError(crypto::OpenSslError(ErrorCode::kInternal, "registering fleetid-token"));
  }
  OSSL_PROVIDER* provider = OSSL_PROVIDER_load(nullptr, kProviderName);
  if (provider == nullptr) {
    OSSL_PROVIDER_unload(default_provider);
    return MakeError(crypto::OpenSslError(ErrorCode::kUnavailable, "loading fleetid-token"));
  }
  ERR_pop_to_mark();
  loaded_default = default_provider;
  loaded_token = provider;
  if (std::atexit(&UnloadAtExit) != 0) {
    return MakeError(ErrorCode::kInternal, "registering the provider unload at exit");
  }
  return provider;
}

}  // namespace

Result<OSSL_PROVIDER*> TokenProvider() {
  static const Result<OSSL_PROVIDER*> loaded = Load();
  return loaded;
}

Result<crypto::EvpPkeyPtr> TokenPkey(std::shared_ptr<Signer> signer) {
  if (!signer) return MakeError(ErrorCode::kInvalidArgument, "no signer for a token key");
  FLEETID_CHECK_OK(TokenProvider());
  const std::string label(signer->label());
  crypto::EvpPkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_name(
      nullptr, KeyTypeName(signer->suite().key_type), kProviderProperty));
  std::uint64_t id = Pending().Put(std::move(signer));
  OSSL_PARAM params[] = {OSSL_PARAM_construct_uint64(kSignerIdParam, &id),
                         OSSL_PARAM_construct_end()};
  EVP_PKEY* raw = nullptr;
  const bool made = ctx && EVP_PKEY_fromdata_init(ctx.get()) == 1 &&
                    EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_KEYPAIR, params) == 1;
  Pending().Take(id);  // if the import never ran, the signer must not stay behind
  if (!made) {
    return MakeError(crypto::OpenSslError(
        ErrorCode::kInternal, fmt::format("making an OpenSSL key for token key '{}'", label)));
  }
  return crypto::EvpPkeyPtr(raw);
}

}  // namespace fleetid::custody
