#include "crypto/keys.h"

#include <openssl/objects.h>

#include <array>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/pem.h>

#include "crypto/crypto.h"

namespace fleetid::crypto {

const char* TlsSignatureScheme(EVP_PKEY* key) {
  switch (EVP_PKEY_get_base_id(key)) {
    case EVP_PKEY_EC: {
      std::array<char, 64> group{};
      if (EVP_PKEY_get_group_name(key, group.data(), group.size(), nullptr) != 1) return nullptr;
      switch (OBJ_txt2nid(group.data())) {
        case NID_X9_62_prime256v1:
          return "ecdsa_secp256r1_sha256";
        case NID_secp384r1:
          return "ecdsa_secp384r1_sha384";
        case NID_secp521r1:
          return "ecdsa_secp521r1_sha512";
        default:
          return nullptr;
      }
    }
    case EVP_PKEY_ED25519:
      return "ed25519";
    case EVP_PKEY_RSA:
      return "rsa_pss_rsae_sha256";
    case EVP_PKEY_RSA_PSS:
      return "rsa_pss_pss_sha256";
    default:
      return nullptr;
  }
}
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

// CurveParameters returns a parameters-only key for |curve_nid|, built once. Keys are made by
// duplicating it and setting the point: building a curve's group from its name costs about as
// much as verifying a signature, and a CA builds one key per request.
Result<const EVP_PKEY*> CurveParameters(int curve_nid) {
  struct Curve {
    int nid;
    EvpPkeyPtr params;
  };
  static const std::vector<Curve> curves = [] {
    std::vector<Curve> out;
    for (int nid : {NID_X9_62_prime256v1, NID_secp384r1}) {
      OsslParamBldPtr bld(OSSL_PARAM_BLD_new());
      if (!bld || OSSL_PARAM_BLD_push_utf8_string(bld.get(), OSSL_PKEY_PARAM_GROUP_NAME,
                                                  OBJ_nid2sn(nid), 0) != 1) {
        continue;
      }
      OsslParamPtr params(OSSL_PARAM_BLD_to_param(bld.get()));
      EvpPkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_name(nullptr, "EC", nullptr));
      EVP_PKEY* raw = nullptr;
      if (params && ctx && EVP_PKEY_fromdata_init(ctx.get()) == 1 &&
          EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_KEY_PARAMETERS, params.get()) == 1) {
        out.push_back({nid, EvpPkeyPtr(raw)});
      }
    }
    ERR_clear_error();
    return out;
  }();
  for (const Curve& c : curves) {
    if (c.nid == curve_nid) return c.params.get();
  }
  return MakeError(ErrorCode::kInvalidArgument, "unsupported curve {}", curve_nid);
}

}  // namespace

Result<EvpPkeyPtr> EcPublicKey(int curve_nid, std::span<const std::uint8_t> point) {
  FLEETID_TRY(params, CurveParameters(curve_nid));
  EvpPkeyPtr key(EVP_PKEY_dup(const_cast<EVP_PKEY*>(params)));
  if (!key || EVP_PKEY_set1_encoded_public_key(key.get(), point.data(), point.size()) != 1) {
    return MakeError(OpenSslError(ErrorCode::kInvalidArgument, "invalid EC public key"));
  }
  // EVP_PKEY_fromdata does not check that the point is on the curve; a token (or a CSR) that
  // hands us an invalid point must be refused here, not at first use. The quick check (on the
  // curve, not at infinity) is the whole check for the prime-order curves fleetid allows; the
  // full one adds a scalar multiplication by the order that only matters for cofactor > 1.
  EvpPkeyCtxPtr check(EVP_PKEY_CTX_new_from_pkey(nullptr, key.get(), nullptr));
  if (!check || EVP_PKEY_public_check_quick(check.get()) != 1) {
    return MakeError(OpenSslError(ErrorCode::kInvalidArgument, "EC point is not on the curve"));
  }
  return key;
}

Result<EvpPkeyPtr> Ed25519PublicKey(std::span<const std::uint8_t> raw) {
  if (raw.size() != 32) {
    return MakeError(ErrorCode::kInvalidArgument, "Ed25519 public key must be 32 bytes, not {}",
                     raw.size());
  }
  EvpPkeyPtr key(
      EVP_PKEY_new_raw_public_key_ex(nullptr, "ED25519", nullptr, raw.data(), raw.size()));
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

namespace {

// DerLength appends the DER length octets of |n| (X.690 §8.1.3) to |out|.
void DerLength(std::size_t n, std::vector<std::uint8_t>& out) {
  if (n < 0x80) {
    out.push_back(static_cast<std::uint8_t>(n));
    return;
  }
  std::vector<std::uint8_t> bytes;
  for (; n > 0; n >>= 8) bytes.insert(bytes.begin(), static_cast<std::uint8_t>(n & 0xff));
  out.push_back(static_cast<std::uint8_t>(0x80 | bytes.size()));
  out.insert(out.end(), bytes.begin(), bytes.end());
}

Result<std::vector<std::uint8_t>> RsaPublicKeyDer(EVP_PKEY* key) {
  std::vector<std::uint8_t> body;
  for (const char* name : {OSSL_PKEY_PARAM_RSA_N, OSSL_PKEY_PARAM_RSA_E}) {
    BIGNUM* raw = nullptr;
    if (EVP_PKEY_get_bn_param(key, name, &raw) != 1) {
      return MakeError(OpenSslError(ErrorCode::kInvalidArgument, "RSA public key parameters"));
    }
    const BignumPtr bn(raw);
    // A positive INTEGER: a leading zero octet when the top bit is set (X.690 §8.3.2).
    std::vector<std::uint8_t> value(static_cast<std::size_t>(BN_num_bytes(bn.get())) + 1);
    BN_bn2bin(bn.get(), value.data() + 1);
    const std::size_t skip = value.size() > 1 && (value[1] & 0x80) == 0 ? 1 : 0;
    body.push_back(0x02);
    DerLength(value.size() - skip, body);
    body.insert(body.end(), value.begin() + static_cast<std::ptrdiff_t>(skip), value.end());
  }
  std::vector<std::uint8_t> out{0x30};
  DerLength(body.size(), out);
  out.insert(out.end(), body.begin(), body.end());
  return out;
}

}  // namespace

Result<std::string> KeyFingerprint(std::span<const std::uint8_t> spki) {
  FLEETID_TRY(key, PublicKeyFromDer(spki));
  switch (EVP_PKEY_get_base_id(key.get())) {
    case EVP_PKEY_EC: {
      EvpPkeyPtr copy(EVP_PKEY_dup(key.get()));
      if (!copy ||
          EVP_PKEY_set_utf8_string_param(copy.get(), OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT,
                                         OSSL_PKEY_EC_POINT_CONVERSION_FORMAT_UNCOMPRESSED) != 1) {
        return MakeError(OpenSslError(ErrorCode::kInternal, "re-encoding an EC public key"));
      }
      FLEETID_TRY(der, PublicKeyDer(copy.get()));
      return Hex(Sha256(der));
    }
    case EVP_PKEY_RSA:
    case EVP_PKEY_RSA_PSS: {
      FLEETID_TRY(der, RsaPublicKeyDer(key.get()));
      return Hex(Sha256(der));
    }
    case EVP_PKEY_ED25519: {
      std::array<std::uint8_t, 32> raw{};
      std::size_t len = raw.size();
      if (EVP_PKEY_get_raw_public_key(key.get(), raw.data(), &len) != 1 || len != raw.size()) {
        return MakeError(OpenSslError(ErrorCode::kInvalidArgument, "Ed25519 public key"));
      }
      return Hex(Sha256(raw));
    }
    default: {
      FLEETID_TRY(der, PublicKeyDer(key.get()));
      return Hex(Sha256(der));
    }
  }
}

}  // namespace fleetid::crypto
