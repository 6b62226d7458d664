// The certificate builder every fleetid certificate is made with: the authority's hierarchy,
// device and server certificates (pki), and the factory's manufacturer CA and IDevIDs (enroll).
#ifndef FLEETID_PKI_CERT_BUILDER_H_
#define FLEETID_PKI_CERT_BUILDER_H_

#include <openssl/x509.h>

#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "common/clock.h"
#include "common/error.h"
#include "common/rng.h"
#include "crypto/handles.h"

namespace fleetid::pki {

// CertSpec describes one certificate. It borrows everything it points to: the caller keeps the
// subject name and the extensions alive until BuildAndSign returns.
struct CertSpec {
  std::vector<std::uint8_t> serial{};  // positive: the first byte's top bit is clear
  X509_NAME* subject = nullptr;
  TimePoint not_before{};
  TimePoint not_after{};
  // RFC 5280 §4.1.2.5: notAfter is 99991231235959Z, "no well-defined expiration date" (an
  // IEEE 802.1AR IDevID); |not_after| is then ignored.
  bool no_expiry = false;
  std::span<const std::uint8_t> spki{};  // the subject's SubjectPublicKeyInfo (DER)
  bool refuse_compromised = false;       // refuse |spki| if in compromised_keys; false for CA keys
  std::vector<const X509_EXTENSION*> extensions{};
  const X509_EXTENSION* authority_key_id = nullptr;  // nullptr: self-signed, made from the key
  std::vector<std::pair<int, std::string>> subject_alt_names{};  // GEN_URI, GEN_DNS, GEN_IPADD
};

// RandomSerial draws 16 random bytes made positive and non-zero in the first byte (RFC 5280
// §4.1.2.2: positive, at most 20 octets).
[[nodiscard]] Result<std::vector<std::uint8_t>> RandomSerial(Rng& rng);

// BuildAndSign makes the certificate |spec| describes, issued by |issuer| (nullptr: self-signed),
// and signs it with |signing_key| (a token key) under |signing_md| (nullptr for Ed25519). After
// |spec|'s extensions it adds the subjectKeyIdentifier (RFC 5280 §4.2.1.2 method 1) and the
// authorityKeyIdentifier (|spec|'s, or for a self-signed certificate the SKI's). A failed
// signature is kUnavailable.
[[nodiscard]] Result<crypto::X509Ptr> BuildAndSign(const CertSpec& spec, X509* issuer,
                                                   EVP_PKEY* signing_key, const EVP_MD* signing_md);

// ConfExtension builds an extension from OpenSSL's configuration syntax, without a context
// (no "hash" or "keyid" values). Extensions are built once (per CA, per profile, per CRL
// partition) and copied into each certificate: parsing this syntax per certificate is most of
// the cost of a naive issuance path (RECIPES.md §8).
[[nodiscard]] Result<crypto::X509ExtensionPtr> ConfExtension(int nid, const std::string& value);

// KeyId is RFC 5280 §4.2.1.2 method (1): the SHA-1 of the subjectPublicKey bits.
std::vector<std::uint8_t> KeyId(const ASN1_BIT_STRING* key_bits);
// AuthorityKeyIdExtension is an authorityKeyIdentifier holding |key_id| only.
[[nodiscard]] Result<crypto::X509ExtensionPtr> AuthorityKeyIdExtension(
    std::span<const std::uint8_t> key_id);

}  // namespace fleetid::pki

#endif  // FLEETID_PKI_CERT_BUILDER_H_
