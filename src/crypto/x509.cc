#include "crypto/x509.h"

#include <openssl/err.h>
#include <openssl/pem.h>

#include <chrono>
#include <ctime>

#include "crypto/crypto.h"

namespace fleetid::crypto {
namespace {

constexpr std::string_view kBegin = "-----BEGIN CERTIFICATE-----";
constexpr std::string_view kEnd = "-----END CERTIFICATE-----";

std::string_view SkipSpace(std::string_view s) {
  const std::size_t first = s.find_first_not_of(" \t\r\n");
  return first == std::string_view::npos ? std::string_view() : s.substr(first);
}

void FreeOpenSslString(char* p) { OPENSSL_free(p); }
using OpenSslStringPtr = std::unique_ptr<char, Deleter<&FreeOpenSslString>>;

// DecodePemBlock decodes one whole "CERTIFICATE" block (markers included) into DER.
Result<std::vector<std::uint8_t>> DecodePemBlock(std::string_view block, std::size_t index) {
  BioPtr bio(BIO_new_mem_buf(block.data(), static_cast<int>(block.size())));
  if (!bio) return MakeError(OpenSslError(ErrorCode::kInternal, "PEM buffer"));
  char* name = nullptr;
  char* header = nullptr;
  unsigned char* data = nullptr;
  long len = 0;
  const int ok = PEM_read_bio(bio.get(), &name, &header, &data, &len);
  const OpenSslStringPtr name_owner(name);
  const OpenSslStringPtr header_owner(header);
  const OpenSslBytesPtr data_owner(data);
  ERR_clear_error();
  if (ok != 1 || len <= 0) {
    return MakeError(ErrorCode::kInvalidArgument, "PEM certificate #{} is not valid base64", index);
  }
  if (header != nullptr && header[0] != '\0') {
    return MakeError(ErrorCode::kInvalidArgument, "PEM certificate #{} has headers", index);
  }
  return std::vector<std::uint8_t>(data, data + len);
}

// Days since 1970-01-01 of a proleptic Gregorian date.
std::int64_t DaysFromCivil(const std::tm& tm) {
  const std::chrono::year_month_day date{std::chrono::year{tm.tm_year + 1900},
                                         std::chrono::month{static_cast<unsigned>(tm.tm_mon + 1)},
                                         std::chrono::day{static_cast<unsigned>(tm.tm_mday)}};
  return std::chrono::sys_days(date).time_since_epoch().count();
}

}  // namespace

Result<X509Ptr> ParseCertificateDer(std::span<const std::uint8_t> der) {
  if (der.empty()) return MakeError(ErrorCode::kInvalidArgument, "empty certificate");
  if (der.size() > kMaxCertificateDer) {
    return MakeError(ErrorCode::kInvalidArgument, "certificate of {} bytes exceeds {}", der.size(),
                     kMaxCertificateDer);
  }
  const unsigned char* p = der.data();
  X509Ptr cert(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
  ERR_clear_error();
  if (!cert) return MakeError(ErrorCode::kInvalidArgument, "not a DER X.509 certificate");
  if (p != der.data() + der.size()) {
    return MakeError(ErrorCode::kInvalidArgument, "{} bytes after the DER certificate",
                     der.data() + der.size() - p);
  }
  return cert;
}

Result<std::vector<X509Ptr>> ParseCertificatesPem(std::string_view pem) {
  std::vector<X509Ptr> out;
  for (std::string_view rest = SkipSpace(pem); !rest.empty(); rest = SkipSpace(rest)) {
    const std::size_t index = out.size();
    if (index == kMaxPemCertificates) {
      return MakeError(ErrorCode::kInvalidArgument, "more than {} PEM certificates",
                       kMaxPemCertificates);
    }
    const std::size_t end = rest.find(kEnd);
    if (!rest.starts_with(kBegin) || end == std::string_view::npos) {
      return MakeError(ErrorCode::kInvalidArgument,
                       "expected a '{}' block at PEM certificate #{}", kBegin, index);
    }
    const std::size_t block_len = end + kEnd.size();
    if (block_len > 2 * kMaxCertificateDer) {
      return MakeError(ErrorCode::kInvalidArgument, "PEM certificate #{} is too long", index);
    }
    FLEETID_TRY(der, DecodePemBlock(rest.substr(0, block_len), index));
    auto cert = ParseCertificateDer(der);
    if (!cert) {
      return MakeError(ErrorCode::kInvalidArgument, "PEM certificate #{}: {}", index,
                       cert.error().message());
    }
    out.push_back(std::move(*cert));
    rest.remove_prefix(block_len);
  }
  if (out.empty()) return MakeError(ErrorCode::kInvalidArgument, "no PEM certificate");
  return out;
}

Result<std::vector<std::uint8_t>> CertificateDer(const X509* cert) {
  const int len = cert == nullptr ? -1 : i2d_X509(cert, nullptr);
  if (len <= 0) return MakeError(OpenSslError(ErrorCode::kInternal, "encoding a certificate"));
  std::vector<std::uint8_t> der(static_cast<std::size_t>(len));
  unsigned char* p = der.data();
  if (i2d_X509(cert, &p) != len) {
    return MakeError(OpenSslError(ErrorCode::kInternal, "encoding a certificate"));
  }
  return der;
}

Result<std::string> CertificatePem(const X509* cert) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || cert == nullptr || PEM_write_bio_X509(bio.get(), cert) != 1) {
    return MakeError(OpenSslError(ErrorCode::kInternal, "encoding a PEM certificate"));
  }
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);
  if (n <= 0 || data == nullptr) {
    return MakeError(ErrorCode::kInternal, "encoding a PEM certificate: empty output");
  }
  return std::string(data, static_cast<std::size_t>(n));
}

Result<std::vector<std::uint8_t>> SubjectPublicKeyInfoDer(const X509* cert) {
  unsigned char* der = nullptr;
  const int len = cert == nullptr ? -1 : i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), &der);
  const OpenSslBytesPtr owner(der);
  if (len <= 0) return MakeError(OpenSslError(ErrorCode::kInternal, "the certificate's public key"));
  return std::vector<std::uint8_t>(der, der + len);
}

Result<std::string> SerialHex(const ASN1_INTEGER* serial) {
  const BignumPtr bn(serial == nullptr ? nullptr : ASN1_INTEGER_to_BN(serial, nullptr));
  ERR_clear_error();
  if (!bn) return MakeError(ErrorCode::kInvalidArgument, "unreadable serial number");
  if (BN_is_negative(bn.get()) != 0 || BN_is_zero(bn.get()) != 0) {
    return MakeError(ErrorCode::kInvalidArgument, "the serial number is not positive");
  }
  std::vector<std::uint8_t> bytes(static_cast<std::size_t>(BN_num_bytes(bn.get())));
  BN_bn2bin(bn.get(), bytes.data());
  return Hex(bytes);
}

Result<std::int64_t> Asn1TimeToUnix(const ASN1_TIME* time) {
  std::tm tm{};
  // ASN1_TIME_to_tm reads the current time for nullptr, so that is refused here.
  if (time == nullptr || ASN1_TIME_to_tm(time, &tm) != 1) {
    ERR_clear_error();
    return MakeError(ErrorCode::kInvalidArgument, "malformed ASN.1 time");
  }
  return DaysFromCivil(tm) * 86400 + std::int64_t{tm.tm_hour} * 3600 +
         std::int64_t{tm.tm_min} * 60 + tm.tm_sec;
}

Result<void> SetAsn1Time(ASN1_TIME* time, std::int64_t seconds) {
  // 0000-01-01T00:00:00Z and 9999-12-31T23:59:59Z: GeneralizedTime has four year digits.
  constexpr std::int64_t kFirst = -62167219200;
  constexpr std::int64_t kLast = 253402300799;
  if (time == nullptr || seconds < kFirst || seconds > kLast ||
      ASN1_TIME_set(time, static_cast<time_t>(seconds)) == nullptr) {
    ERR_clear_error();
    return MakeError(ErrorCode::kInvalidArgument, "{} is outside the years 0 to 9999", seconds);
  }
  return {};
}

Result<Asn1TimePtr> UnixToAsn1Time(std::int64_t seconds) {
  Asn1TimePtr time(ASN1_TIME_new());
  if (!time) return MakeError(OpenSslError(ErrorCode::kInternal, "allocating a time"));
  FLEETID_CHECK_OK(SetAsn1Time(time.get(), seconds));
  return time;
}

}  // namespace fleetid::crypto
