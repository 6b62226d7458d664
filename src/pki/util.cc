#include <openssl/bn.h>
#include <openssl/sha.h>

#include <algorithm>

#include "crypto/crypto.h"
#include "crypto/x509.h"
#include "pki/internal/util.h"

namespace fleetid::pki::internal {


Error Ossl(std::string_view what) { return crypto::OpenSslError(ErrorCode::kInternal, what); }

Result<crypto::X509Ptr> ParseCert(std::span<const std::uint8_t> der) {
  auto cert = crypto::ParseCertificateDer(der);
  if (!cert) {
    return MakeError(ErrorCode::kInternal, "a stored certificate does not parse: {}",
                     cert.error().message());
  }
  return cert;
}

const EVP_MD* DigestOf(const crypto::Suite& suite) {
  return suite.digest_name.empty() ? nullptr
                                   : EVP_get_digestbyname(std::string(suite.digest_name).c_str());
}

std::string EntityTag(std::span<const std::uint8_t> der) {
  unsigned char digest[SHA_DIGEST_LENGTH];
  SHA1(der.data(), der.size(), digest);
  return "\"" + crypto::Hex(digest) + "\"";
}

std::string CacheSerial(const ASN1_INTEGER* serial) {
  unsigned char* der = nullptr;
  const int len = i2d_ASN1_INTEGER(serial, &der);
  if (len <= 0) return {};
  const crypto::OpenSslBytesPtr owner(der);
  return crypto::Hex({der, static_cast<std::size_t>(len)});
}

std::string CacheSerialOfHex(const std::string& serial_hex) {
  BIGNUM* raw = nullptr;
  if (BN_hex2bn(&raw, serial_hex.c_str()) == 0) return {};
  crypto::BignumPtr bn(raw);
  crypto::Asn1IntegerPtr serial(BN_to_ASN1_INTEGER(bn.get(), nullptr));
  return serial ? CacheSerial(serial.get()) : std::string();
}

}  // namespace fleetid::pki::internal
