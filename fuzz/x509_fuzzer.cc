// Fuzzes crypto/x509.h, the one reader of certificates that come from outside (client chains,
// trust-anchor files, EST answers): ParseCertificateDer and ParseCertificatesPem, and the serial
// and time conversions over what they parse.
//
// Invariants checked: refusals are kInvalidArgument; a parsed certificate encodes (DER and PEM)
// and its encodings parse again; a serial's text is non-empty lower-case hex of even length;
// a validity time that converts to Unix seconds converts back to the same seconds.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "crypto/x509.h"
#include "fuzz_check.h"

namespace {

namespace crypto = fleetid::crypto;
using fleetid::fuzz::Check;
using fleetid::fuzz::CheckRefusal;

void CheckTime(const ASN1_TIME* time) {
  const auto seconds = crypto::Asn1TimeToUnix(time);
  CheckRefusal(seconds);
  if (!seconds) return;
  const auto back = crypto::UnixToAsn1Time(*seconds);
  if (!back) return;  // Outside the years 0 to 9999 cannot come from a parsed time.
  const auto again = crypto::Asn1TimeToUnix(back->get());
  Check(again.has_value() && *again == *seconds);
}

void CheckCertificate(X509* cert) {
  const auto der = crypto::CertificateDer(cert);
  Check(der.has_value());
  if (der) Check(crypto::ParseCertificateDer(*der).has_value());
  const auto pem = crypto::CertificatePem(cert);
  Check(pem.has_value());
  if (pem) {
    const auto parsed = crypto::ParseCertificatesPem(*pem);
    Check(parsed.has_value() && parsed->size() == 1);
  }
  const auto serial = crypto::SerialHex(X509_get0_serialNumber(cert));
  CheckRefusal(serial);
  if (serial) {
    Check(!serial->empty() && serial->size() % 2 == 0);
    for (char c : *serial) Check((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'));
  }
  CheckTime(X509_get0_notBefore(cert));
  CheckTime(X509_get0_notAfter(cert));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto der = crypto::ParseCertificateDer(std::span(data, size));
  CheckRefusal(der);
  if (der) CheckCertificate(der->get());
  const auto pem = crypto::ParseCertificatesPem(fleetid::fuzz::Text(data, size));
  CheckRefusal(pem);
  if (pem) {
    for (const crypto::X509Ptr& cert : *pem) CheckCertificate(cert.get());
  }
  return 0;
}
