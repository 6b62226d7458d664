// The one X.509 toolkit: strict DER and PEM certificate parsing, DER and PEM encoding, the serial
// number's text form and the ASN1_TIME <-> Unix seconds conversions. Every component and app uses
// these; none calls d2i_X509, PEM_read_bio_X509 or ASN1_TIME_set on its own.
#ifndef FLEETID_CRYPTO_X509_H_
#define FLEETID_CRYPTO_X509_H_

#include <openssl/x509.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "crypto/handles.h"

namespace fleetid::crypto {

// The largest certificate the parsers accept (a DER encoding, or one decoded PEM block).
inline constexpr std::size_t kMaxCertificateDer = std::size_t{64} * 1024;
// The most certificates ParseCertificatesPem accepts in one text.
inline constexpr std::size_t kMaxPemCertificates = 32;

// ParseCertificateDer parses exactly one DER certificate: |der| must be non-empty, at most
// kMaxCertificateDer bytes and consumed entirely (no trailing bytes). Failure is kInvalidArgument;
// a caller parsing what it stored itself maps that to kInternal.
[[nodiscard]] Result<X509Ptr> ParseCertificateDer(std::span<const std::uint8_t> der);

// ParseCertificatesPem parses a text that holds one or more "CERTIFICATE" PEM blocks (RFC 7468
// §5.1) and nothing else but whitespace between and around them: no explanatory text, no PEM
// headers, no other labels. Each block is parsed with ParseCertificateDer. At most
// kMaxPemCertificates blocks. Failure is kInvalidArgument and says which block failed.
[[nodiscard]] Result<std::vector<X509Ptr>> ParseCertificatesPem(std::string_view pem);

// CertificateDer is |cert|'s DER encoding; kInternal if OpenSSL cannot encode it.
[[nodiscard]] Result<std::vector<std::uint8_t>> CertificateDer(const X509* cert);
// CertificatePem is |cert| as one "CERTIFICATE" PEM block ending in a newline.
[[nodiscard]] Result<std::string> CertificatePem(const X509* cert);
// SubjectPublicKeyInfoDer is the DER SubjectPublicKeyInfo of |cert|.
[[nodiscard]] Result<std::vector<std::uint8_t>> SubjectPublicKeyInfoDer(const X509* cert);

// SerialHex is the serial number form fleetid stores and shows: the lower-case hex of the
// serial's big-endian magnitude in its fewest whole bytes, so an even number of digits, no sign
// and no padding byte (DER 02 03 00 8f 01 is "8f01"). RFC 5280 §4.1.2.2 requires a positive
// serial; zero and negative serials are kInvalidArgument.
[[nodiscard]] Result<std::string> SerialHex(const ASN1_INTEGER* serial);

// Asn1TimeToUnix converts a UTCTime or GeneralizedTime (RFC 5280 §4.1.2.5) to seconds since the
// Unix epoch; times before 1970 are negative. kInvalidArgument for a malformed time.
[[nodiscard]] Result<std::int64_t> Asn1TimeToUnix(const ASN1_TIME* time);
// UnixToAsn1Time encodes |seconds| as RFC 5280 requires: UTCTime for the years 1950 to 2049,
// GeneralizedTime otherwise. kInvalidArgument outside the years 0 to 9999.
[[nodiscard]] Result<Asn1TimePtr> UnixToAsn1Time(std::int64_t seconds);
// SetAsn1Time is UnixToAsn1Time into an existing |time|, for loops that reuse one object.
[[nodiscard]] Result<void> SetAsn1Time(ASN1_TIME* time, std::int64_t seconds);

}  // namespace fleetid::crypto

#endif  // FLEETID_CRYPTO_X509_H_
