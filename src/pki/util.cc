#include <openssl/bn.h>
#include <openssl/sha.h>

#include <algorithm>

#include "crypto/crypto.h"
#include "pki/internal/util.h"

namespace fleetid::pki::internal {

std::int64_t ToUnix(TimePoint t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

TimePoint FromUnix(std::int64_t s) { return TimePoint(std::chrono::seconds(s)); }

std::int64_t Asn1TimeToUnix(const ASN1_TIME* t) {
  int days = 0;
  int secs = 0;
  const crypto::Asn1TimePtr epoch(ASN1_TIME_set(nullptr, 0));
  if (ASN1_TIME_diff(&days, &secs, epoch.get(), t) != 1) return 0;
  return std::int64_t{days} * 86400 + secs;
}

Error Ossl(std::string_view what) { return crypto::OpenSslError(ErrorCode::kInternal, what); }

std::vector<std::uint8_t> CertDer(X509* cert) {
  const int len = i2d_X509(cert, nullptr);
  std::vector<std::uint8_t> der(static_cast<std::size_t>(std::max(len, 0)));
  unsigned char* p = der.data();
  i2d_X509(cert, &p);
  return der;
}

Result<crypto::X509Ptr> ParseCert(std::span<const std::uint8_t> der) {
  const unsigned char* p = der.data();
  crypto::X509Ptr cert(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
  if (!cert) return MakeError(Ossl("stored CA certificate does not parse"));
  return cert;
}

Result<std::vector<std::uint8_t>> SpkiDerOf(X509* cert) {
  unsigned char* der = nullptr;
  const int len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), &der);
  const crypto::OpenSslBytesPtr owner(der);
  if (len <= 0) return MakeError(Ossl("the certificate's public key"));
  return std::vector<std::uint8_t>(der, der + len);
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

std::string SerialHex(const ASN1_INTEGER* serial) {
  crypto::BignumPtr bn(ASN1_INTEGER_to_BN(serial, nullptr));
  if (!bn || BN_is_negative(bn.get())) return {};
  std::vector<std::uint8_t> bytes(static_cast<std::size_t>(BN_num_bytes(bn.get())));
  BN_bn2bin(bn.get(), bytes.data());
  return crypto::Hex(bytes);
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
