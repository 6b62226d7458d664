#include "crypto/keys.h"

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/pem.h>

#include "crypto/crypto.h"

namespace fleetid::crypto {
namespace {

Result<EvpPkeyPtr> FromParams(const char* type, OSSL_PARAM_BLD* bld) {
  OsslParamPtr params(OSSL_PARAM_BLD_to_param(bld));
  EvpPkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_name(nullptr, type, nullptr));
  EVP_PKEY* raw = nullptr;
  if (!params || !ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1 ||
      EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_PUBLIC_KEY, params.get()) != 1) {
    return MakeError(OpenSslError(ErrorCode::kInvalidArgument, "invalid public key"));
  }
  return EvpPkeyPtr(raw);
}

}  // namespace

Result<EvpPkeyPtr> EcPublicKey(int curve_nid, std::span<const std::uint8_t> point) {
  const char* group = OBJ_nid2sn(curve_nid);
  if (group == nullptr) return MakeError(ErrorCode::kInvalidArgument, "unknown curve {}", curve_nid);
  OsslParamBldPtr bld(OSSL_PARAM_BLD_new());
  if (!bld ||
      OSSL_PARAM_BLD_push_utf8_string(bld.get(), OSSL_PKEY_PARAM_GROUP_NAME, group, 0) != 1 ||
      OSSL_PARAM_BLD_push_octet_string(bld.get(), OSSL_PKEY_PARAM_PUB_KEY, point.data(),
                                       point.size()) != 1) {
    return MakeError(OpenSslError(ErrorCode::kInternal, "building EC key parameters"));
  }
  FLEETID_TRY(key, FromParams("EC", bld.get()));
  // EVP_PKEY_fromdata does not check that the point is on the curve; a token (or a CSR) that
  // hands us an invalid point must be refused here, not at first use.
  EvpPkeyCtxPtr check(EVP_PKEY_CTX_new_from_pkey(nullptr, key.get(), nullptr));
  if (!check || EVP_PKEY_public_check(check.get()) != 1) {
    return MakeError(OpenSslError(ErrorCode::kInvalidArgument, "EC point is not on the curve"));
  }
  return key;
}

Result<EvpPkeyPtr> Ed25519PublicKey(std::span<const std::uint8_t> raw) {
  if (raw.size() != 32) {
    return MakeError(ErrorCode::kInvalidArgument, "Ed25519 public key must be 32 bytes, not {}",
                     raw.size());
  }
  EvpPkeyPtr key(EVP_PKEY_new_raw_public_key_ex(nullptr, "ED25519", nullptr, raw.data(),
                                                raw.size()));
  if (!key) return MakeError(OpenSslError(ErrorCode::kInvalidArgument, "invalid Ed25519 key"));
  return key;
}

Result<EvpPkeyPtr> RsaPublicKey(std::span<const std::uint8_t> modulus,
                                std::span<const std::uint8_t> exponent) {
  BignumPtr n(BN_bin2bn(modulus.data(), static_cast<int>(modulus.size()), nullptr));
  BignumPtr e(BN_bin2bn(exponent.data(), static_cast<int>(exponent.size()), nullptr));
  OsslParamBldPtr bld(OSSL_PARAM_BLD_new());
  if (!n || !e || !bld || OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_N, n.get()) != 1 ||
      OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_E, e.get()) != 1) {
    return MakeError(OpenSslError(ErrorCode::kInternal, "building RSA key parameters"));
  }
  return FromParams("RSA", bld.get());
}

Result<std::vector<std::uint8_t>> PublicKeyDer(EVP_PKEY* key) {
  const int len = i2d_PUBKEY(key, nullptr);
  if (len <= 0) return MakeError(OpenSslError(ErrorCode::kInternal, "encoding public key"));
  std::vector<std::uint8_t> der(static_cast<std::size_t>(len));
  unsigned char* p = der.data();
  if (i2d_PUBKEY(key, &p) != len) {
    return MakeError(OpenSslError(ErrorCode::kInternal, "encoding public key"));
  }
  return der;
}

Result<std::string> PublicKeyPem(EVP_PKEY* key) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PUBKEY(bio.get(), key) != 1) {
    return MakeError(OpenSslError(ErrorCode::kInternal, "encoding public key as PEM"));
  }
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<std::size_t>(len));
}

Result<EvpPkeyPtr> PublicKeyFromDer(std::span<const std::uint8_t> der) {
  const unsigned char* p = der.data();
  EvpPkeyPtr key(d2i_PUBKEY(nullptr, &p, static_cast<long>(der.size())));
  if (!key || p != der.data() + der.size()) {
    return MakeError(OpenSslError(ErrorCode::kInvalidArgument, "not a DER SubjectPublicKeyInfo"));
  }
  return key;
}

}  // namespace fleetid::crypto
