// The certificate builder: every certificate fleetid signs (root, issuing CAs, OCSP signers,
// device and server certificates) is made by BuildAndSign from a CertSpec.
#ifndef FLEETID_PKI_INTERNAL_CERT_BUILDER_H_
#define FLEETID_PKI_INTERNAL_CERT_BUILDER_H_

#include <openssl/x509.h>

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/clock.h"
#include "common/error.h"
#include "common/rng.h"
#include "crypto/handles.h"
#include "pki/internal/guard.h"

namespace fleetid::pki::internal {

// CertSpec describes one certificate. It borrows everything it points to: the caller keeps the
// subject name and the extensions alive until BuildAndSign returns.
struct CertSpec {
  std::vector<std::uint8_t> serial;  // positive: the first byte's top bit is clear
  X509_NAME* subject = nullptr;
  TimePoint not_before;
  TimePoint not_after;
  std::span<const std::uint8_t> spki;  // the subject's SubjectPublicKeyInfo (DER)
  bool refuse_compromised = false;     // refuse |spki| if in compromised_keys; false for CA keys
  std::vector<const X509_EXTENSION*> extensions;
  const X509_EXTENSION* authority_key_id = nullptr;  // nullptr: self-signed, made from the key
  std::vector<std::pair<int, std::string>> subject_alt_names;  // GEN_URI, GEN_DNS, GEN_IPADD
};

// RandomSerial draws 16 random bytes made positive and non-zero in the first byte (RFC 5280
// §4.1.2.2: positive, at most 20 octets).
[[nodiscard]] Result<std::vector<std::uint8_t>> RandomSerial(Rng& rng);

// BuildAndSign makes the certificate |spec| describes, issued by |issuer| (nullptr: self-signed),
// and signs it with |signing_key| (a token key) under |signing_md|. It adds the
// subjectKeyIdentifier (RFC 5280 §4.2.1.2 method 1) and, for a self-signed certificate, the
// matching authorityKeyIdentifier. A failed signature is kUnavailable.
[[nodiscard]] Result<crypto::X509Ptr> BuildAndSign(const CertSpec& spec, X509* issuer,
                                                   EVP_PKEY* signing_key, const EVP_MD* signing_md);

// Extensions are built once (per CA, per profile, per CRL partition) and copied into each
// certificate: parsing OpenSSL's configuration syntax per certificate is most of the cost of a
// naive issuance path (RECIPES.md §8).
[[nodiscard]] Result<crypto::X509ExtensionPtr> ConfExtension(int nid, const std::string& value);

// KeyId is RFC 5280 §4.2.1.2 method (1): the SHA-1 of the subjectPublicKey bits.
std::vector<std::uint8_t> KeyId(const ASN1_BIT_STRING* key_bits);
[[nodiscard]] Result<crypto::X509ExtensionPtr> AuthorityKeyIdExtension(
    std::span<const std::uint8_t> key_id);

// Name is O=|organization| (left out when empty), CN=|common_name|.
crypto::X509NamePtr Name(std::string_view common_name, std::string_view organization);

// DeviceUri is the SAN URI urn:fleetid:device:<serial>. URN namespace-specific strings allow a
// limited alphabet (RFC 8141 §2); anything else in a device serial is percent-encoded, so a
// serial can never smuggle in another name.
std::string DeviceUri(std::string_view serial);

}  // namespace fleetid::pki::internal

#endif  // FLEETID_PKI_INTERNAL_CERT_BUILDER_H_
