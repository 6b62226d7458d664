// PKCS#10 certification requests (RFC 2986) as a CA needs them: the requested public key, proven
// by the request's own signature. Nothing else in a request is trusted: the CA writes subject,
// names and extensions itself.
#ifndef FLEETID_CRYPTO_CSR_H_
#define FLEETID_CRYPTO_CSR_H_

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "crypto/crypto.h"
#include "crypto/handles.h"

namespace fleetid::crypto {

// A request parsed and verified once; what issuance needs of it travels with it, so nothing
// downstream parses the DER again.
struct VerifiedCsr {
  EvpPkeyPtr key;                  // the requested public key
  std::vector<std::uint8_t> spki;  // its SubjectPublicKeyInfo, DER, as the requester sent it
  Sha256Digest request_sha256{};   // SHA-256 of the whole request (an issuance's evidence)
};

// VerifyCsr parses a DER PKCS#10 request and verifies its signature with the key it carries.
// Errors are kInvalidArgument and say what is wrong. ECDSA and Ed25519 requests take a fast path
// (the key built directly from its point, the signature checked over the request's own
// CertificationRequestInfo bytes) that avoids OpenSSL 3.0's per-key decoder look-ups; any other
// request goes through d2i_X509_REQ and X509_REQ_verify.
[[nodiscard]] Result<VerifiedCsr> VerifyCsr(std::span<const std::uint8_t> der);

// SetSubjectPublicKey sets |cert|'s SubjectPublicKeyInfo to |spki| (DER) without decoding the
// key again.
[[nodiscard]] Result<void> SetSubjectPublicKey(X509* cert, std::span<const std::uint8_t> spki);

// MakeCsr makes a DER PKCS#10 request for |public_key| whose subject is one attribute (|name_nid|,
// e.g. NID_commonName, with |name|), signed by |signing_key|, usually a token key
// (custody::TokenPkey) holding the private half of |public_key|. SHA-256 for ECDSA and RSA; Ed25519
// signs without a separate digest. kInternal with OpenSSL's reason if signing fails.
[[nodiscard]] Result<std::vector<std::uint8_t>> MakeCsr(EVP_PKEY* public_key, EVP_PKEY* signing_key,
                                                        int name_nid, std::string_view name);

}  // namespace fleetid::crypto

#endif  // FLEETID_CRYPTO_CSR_H_
