#include "crypto/suite.h"

#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/obj_mac.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "crypto/crypto.h"

namespace fleetid::crypto {
namespace {

// ecdsa-with-SHA256 (1.2.840.10045.4.3.2), parameters absent.
constexpr std::uint8_t kEcdsaSha256Alg[] = {0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48,
                                            0xce, 0x3d, 0x04, 0x03, 0x02};
// ecdsa-with-SHA384 (1.2.840.10045.4.3.3), parameters absent.
constexpr std::uint8_t kEcdsaSha384Alg[] = {0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48,
                                            0xce, 0x3d, 0x04, 0x03, 0x03};
// id-Ed25519 (1.3.101.112), parameters absent.
constexpr std::uint8_t kEd25519Alg[] = {0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70};
// id-RSASSA-PSS with RSASSA-PSS-params { sha256, mgf1(sha256), saltLength 32 }, exactly as
// OpenSSL 3 encodes it (suite_test.cc checks this against OpenSSL's own output).
constexpr std::uint8_t kRsaPssSha256Alg[] = {
    0x30, 0x41, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a, 0x30,
    0x34, 0xa0, 0x0f, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04,
    0x02, 0x01, 0x05, 0x00, 0xa1, 0x1c, 0x30, 0x1a, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86,
    0xf7, 0x0d, 0x01, 0x01, 0x08, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65,
    0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0xa2, 0x03, 0x02, 0x01, 0x20};

constexpr Suite kSuites[] = {
    {SuiteId::kEcdsaP256Sha256, "ecdsa-p256-sha256", KeyType::kEc, NID_X9_62_prime256v1, 0,
     "SHA256", 32, 0, SignatureEncoding::kEcdsaDer, kEcdsaSha256Alg},
    {SuiteId::kEcdsaP384Sha384, "ecdsa-p384-sha384", KeyType::kEc, NID_secp384r1, 0, "SHA384",
     48, 0, SignatureEncoding::kEcdsaDer, kEcdsaSha384Alg},
    {SuiteId::kEd25519, "ed25519", KeyType::kEd25519, NID_undef, 0, "", 0, 0,
     SignatureEncoding::kRaw, kEd25519Alg},
    {SuiteId::kRsa3072PssSha256, "rsa3072-pss-sha256", KeyType::kRsa, NID_undef, 3072, "SHA256",
     32, 32, SignatureEncoding::kRaw, kRsaPssSha256Alg},
};

std::string SupportedNames() {
  std::string names;
  for (const Suite& s : kSuites) {
    if (!names.empty()) names += ", ";
    names += s.name;
  }
  return names;
}

}  // namespace

std::span<const Suite> AllSuites() { return kSuites; }

const Suite& GetSuite(SuiteId id) {
  for (const Suite& s : kSuites) {
    if (s.id == id) return s;
  }
  std::abort();  // SuiteId is a closed enum; every value has a row above.
}

Result<const Suite*> FindSuite(std::string_view name) {
  for (const Suite& s : kSuites) {
    if (s.name == name) return &s;
  }
  return MakeError(ErrorCode::kInvalidArgument, "unsupported algorithm suite '{}' (supported: {})",
                   name, SupportedNames());
}

Result<const Suite*> SuiteOfPublicKey(const EVP_PKEY* key) {
  if (key == nullptr) return MakeError(ErrorCode::kInvalidArgument, "no public key");
  switch (EVP_PKEY_get_base_id(key)) {
    case EVP_PKEY_ED25519:
      return &GetSuite(SuiteId::kEd25519);
    case EVP_PKEY_RSA:
    case EVP_PKEY_RSA_PSS:
      if (EVP_PKEY_get_bits(key) == 3072) return &GetSuite(SuiteId::kRsa3072PssSha256);
      return MakeError(ErrorCode::kInvalidArgument, "RSA keys must be 3072 bits, not {}",
                       EVP_PKEY_get_bits(key));
    case EVP_PKEY_EC: {
      char group[64] = {};
      std::size_t len = 0;
      if (EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
                                         &len) != 1) {
        return MakeError(OpenSslError(ErrorCode::kInvalidArgument, "EC key without a named curve"));
      }
      const int nid = OBJ_sn2nid(group);
      for (const Suite& s : kSuites) {
        if (s.key_type == KeyType::kEc && s.curve_nid == nid) return &s;
      }
      return MakeError(ErrorCode::kInvalidArgument, "unsupported EC curve '{}'", group);
    }
    default:
      return MakeError(ErrorCode::kInvalidArgument, "unsupported public key type");
  }
}

Result<X509AlgorPtr> SignatureAlgorithm(const Suite& suite) {
  const unsigned char* p = suite.signature_algorithm_der.data();
  X509AlgorPtr algor(
      d2i_X509_ALGOR(nullptr, &p, static_cast<long>(suite.signature_algorithm_der.size())));
  if (!algor) return MakeError(OpenSslError(ErrorCode::kInternal, "bad AlgorithmIdentifier"));
  return algor;
}

SuitePolicy::SuitePolicy() {
  status_.fill(SuiteStatus::kAllowed);
  status_[static_cast<std::size_t>(SuiteId::kEcdsaP256Sha256)] = SuiteStatus::kPreferred;
}

void SuitePolicy::Set(SuiteId id, SuiteStatus status) {
  MutexLock lock(mu_);
  if (status == SuiteStatus::kPreferred) {
    for (auto& s : status_) {
      if (s == SuiteStatus::kPreferred) s = SuiteStatus::kAllowed;
    }
  }
  status_[static_cast<std::size_t>(id)] = status;
}

SuiteStatus SuitePolicy::Status(SuiteId id) const {
  MutexLock lock(mu_);
  return status_[static_cast<std::size_t>(id)];
}

Result<void> SuitePolicy::CheckUsable(const Suite& suite) const {
  if (Status(suite.id) == SuiteStatus::kDisabled) {
    return MakeError(ErrorCode::kPermissionDenied, "algorithm suite '{}' is disabled by policy",
                     suite.name);
  }
  return {};
}

const Suite& SuitePolicy::Preferred() const {
  MutexLock lock(mu_);
  for (const Suite& s : kSuites) {
    if (status_[static_cast<std::size_t>(s.id)] == SuiteStatus::kPreferred) return s;
  }
  for (const Suite& s : kSuites) {
    if (status_[static_cast<std::size_t>(s.id)] == SuiteStatus::kAllowed) return s;
  }
  return kSuites[0];
}

std::string_view SuiteStatusName(SuiteStatus status) {
  switch (status) {
    case SuiteStatus::kDisabled:
      return "disabled";
    case SuiteStatus::kAllowed:
      return "allowed";
    case SuiteStatus::kPreferred:
      return "preferred";
    case SuiteStatus::kDeprecated:
      return "deprecated";
  }
  return "disabled";
}

Result<std::vector<std::uint8_t>> EcdsaRawToDer(std::span<const std::uint8_t> raw) {
  if (raw.empty() || raw.size() % 2 != 0 || raw.size() > 264) {
    return MakeError(ErrorCode::kInternal, "ECDSA signature of {} bytes is not r||s", raw.size());
  }
  const int half = static_cast<int>(raw.size() / 2);
  BignumPtr r(BN_bin2bn(raw.data(), half, nullptr));
  BignumPtr s(BN_bin2bn(raw.data() + half, half, nullptr));
  EcdsaSigPtr sig(ECDSA_SIG_new());
  if (!r || !s || !sig || ECDSA_SIG_set0(sig.get(), r.get(), s.get()) != 1) {
    return MakeError(OpenSslError(ErrorCode::kInternal, "building ECDSA-Sig-Value"));
  }
  static_cast<void>(r.release());  // Both now owned by |sig|.
  static_cast<void>(s.release());
  const int len = i2d_ECDSA_SIG(sig.get(), nullptr);
  if (len <= 0) return MakeError(OpenSslError(ErrorCode::kInternal, "encoding ECDSA-Sig-Value"));
  std::vector<std::uint8_t> der(static_cast<std::size_t>(len));
  unsigned char* p = der.data();
  i2d_ECDSA_SIG(sig.get(), &p);
  return der;
}

Result<void> VerifySignature(const Suite& suite, EVP_PKEY* key,
                             std::span<const std::uint8_t> message,
                             std::span<const std::uint8_t> signature) {
  EvpMdCtxPtr ctx(EVP_MD_CTX_new());
  if (!ctx) return MakeError(ErrorCode::kInternal, "out of memory");
  EVP_PKEY_CTX* pctx = nullptr;
  const std::string md(suite.digest_name);
  if (EVP_DigestVerifyInit_ex(ctx.get(), &pctx, md.empty() ? nullptr : md.c_str(), nullptr,
                              nullptr, key, nullptr) != 1) {
    return MakeError(OpenSslError(ErrorCode::kInvalidArgument, "key does not fit the suite"));
  }
  if (suite.key_type == KeyType::kRsa) {
    if (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
        EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, static_cast<int>(suite.pss_salt_length)) != 1 ||
        EVP_PKEY_CTX_set_rsa_mgf1_md_name(pctx, md.c_str(), nullptr) != 1) {
      return MakeError(OpenSslError(ErrorCode::kInternal, "configuring RSA-PSS"));
    }
  }
  if (EVP_DigestVerify(ctx.get(), signature.data(), signature.size(), message.data(),
                       message.size()) != 1) {
    ERR_clear_error();
    return MakeError(ErrorCode::kInvalidArgument, "{} signature does not verify", suite.name);
  }
  return {};
}

}  // namespace fleetid::crypto
