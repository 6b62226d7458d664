// The device wire contract: what the agent sends the enrollment service as attestation evidence
// and decommissioning receipts (docs/enrollment.md), and the pure parsing of both, from compact
// JWS to checked claims. Parsing verifies no signature, reads no database and no clock: the
// service does those with what it returns. Both sides include this header, so the agent writes
// what the service reads.
#ifndef FLEETID_ENROLL_CLAIMS_H_
#define FLEETID_ENROLL_CLAIMS_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "crypto/jws.h"

namespace fleetid::enroll {

inline constexpr std::string_view kEvidenceProfile = "urn:fleetid:evidence:1";
inline constexpr std::string_view kEvidenceType = "fleetid-evidence+jws";
inline constexpr std::string_view kReceiptType = "fleetid-receipt+jws";

// Sizes of what a device sends (docs/security.md).
inline constexpr std::size_t kMaxEvidenceBytes = std::size_t{8} * 1024;
inline constexpr std::size_t kMaxReceiptBytes = std::size_t{16} * 1024;
inline constexpr std::size_t kMaxClaimChars = 64;
inline constexpr std::size_t kMaxClaims = 16;
inline constexpr std::size_t kMaxDestroyedKeys = 16;
inline constexpr std::size_t kNonceChars = 43;  // base64url of 32 bytes, unpadded

// IsHex64 says whether |s| is a SHA-256 as fleetid writes it: 64 lower-case hex digits.
bool IsHex64(std::string_view s);

// The evidence's claims, checked for shape and bounds before anything of them is stored or
// logged.
// NOLINTNEXTLINE(bugprone-exception-escape): holds a Jws (json members), like crypto::Jws
struct EvidenceClaims {
  crypto::Jws jws;
  std::string nonce;
  std::string serial;
  std::string firmware;
  std::string key_sha256;
  std::string swversion;
  std::string sha256;  // hex SHA-256 of the whole JWS
};

// ParseEvidenceClaims reads attestation evidence: a JWS of typ kEvidenceType, at most
// kMaxEvidenceBytes, whose payload has eat_profile kEvidenceProfile, a kNonceChars-character
// base64url eat_nonce, a registry serial, fw_sha256 and key_sha256 (IsHex64), at most
// kMaxClaims claims, and hwmodel, swname and swversion (if present) of 1 to kMaxClaimChars
// letters, digits or common punctuation. kInvalidArgument otherwise. The signature is not
// looked at.
[[nodiscard]] Result<EvidenceClaims> ParseEvidenceClaims(std::string_view evidence);

// A decommissioning receipt's claims: {"serial", "order", "destroyed": [{"label",
// "key_sha256"}, ...], "iat"}, signed by the LDevID key whose certificate serial is kid.
// NOLINTNEXTLINE(bugprone-exception-escape): holds a Jws (json members), like crypto::Jws
struct ReceiptClaims {
  crypto::Jws jws;
  std::string kid;     // the signing certificate's serial, lower-case hex
  std::string serial;  // the device
  std::string order;   // the decommissioning order it answers (IsHex64)
  std::int64_t iat = 0;
  std::vector<std::string> destroyed;  // key_sha256 of each key named destroyed
};

// ParseReceiptClaims reads a receipt: a JWS of typ kReceiptType, at most kMaxReceiptBytes, with
// a kid, and the claims above, every field bounded (1 to kMaxDestroyedKeys keys, each label of
// 1 to kMaxClaimChars characters). kInvalidArgument otherwise. The signature is not looked at.
[[nodiscard]] Result<ReceiptClaims> ParseReceiptClaims(std::string_view receipt);

}  // namespace fleetid::enroll

#endif  // FLEETID_ENROLL_CLAIMS_H_
