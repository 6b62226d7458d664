// Checks on a PKCS#10 request that cost no public-key operation, made before its signature is
// verified: the encoding is DER (X.690 §10) and the key is one the suite policy allows, with
// bounded sizes. Verifying first would let an anonymous client spend the server's CPU on keys
// chosen to be slow (an RSA public exponent of thousands of bits).
#ifndef FLEETID_ENROLL_CSR_CHECK_H_
#define FLEETID_ENROLL_CSR_CHECK_H_

#include <cstdint>
#include <span>
#include <vector>

#include "common/error.h"
#include "crypto/suite.h"

namespace fleetid::enroll {

// The largest RSA public exponent accepted: 2^32 - 1 (RFC 8017 allows any odd e >= 3; fleetid
// bounds it so that verifying costs what 65537 costs, within a few times).
inline constexpr int kMaxRsaExponentBits = 32;

struct CheckedCsr {
  std::vector<std::uint8_t> spki;  // the SubjectPublicKeyInfo, DER
  crypto::SuiteId suite = crypto::SuiteId::kEcdsaP256Sha256;
};

// CheckDer is kInvalidArgument unless |der| is one DER TLV (definite minimal lengths, primitive
// universal strings, minimal INTEGERs, canonical BOOLEAN and BIT STRING, sorted SET OF) with
// nothing after it.
[[nodiscard]] Result<void> CheckDer(std::span<const std::uint8_t> der);

// CheckCsrKey checks that |csr_der| is a DER CertificationRequest whose key belongs to a suite
// that |policy| allows: P-256 or P-384 (an uncompressed point of the curve's length), Ed25519, or
// RSA with the suite's modulus size and an odd exponent of at most kMaxRsaExponentBits bits.
// kInvalidArgument for a malformed request or key, kPermissionDenied for a suite |policy|
// disables. The signature is not looked at.
[[nodiscard]] Result<CheckedCsr> CheckCsrKey(std::span<const std::uint8_t> csr_der,
                                             const crypto::SuitePolicy& policy);

}  // namespace fleetid::enroll

#endif  // FLEETID_ENROLL_CSR_CHECK_H_
