// Fuzzes enroll::ParseEvidenceClaims and enroll::ParseReceiptClaims, the readers of what a
// device sends the enrollment service (attestation evidence, decommissioning receipts) before
// any signature, database or clock is consulted. Each input is read twice: as a compact JWS,
// and as the JSON payload of a JWS whose header is the one the agent writes, so that mutations
// reach the claims rather than dying in base64.
//
// Invariants checked: refusals are kInvalidArgument with a message; accepted evidence is within
// kMaxEvidenceBytes with a kNonceChars-character base64url nonce, a registry serial, hex
// SHA-256 measurements and the SHA-256 of the input; an accepted receipt names a hex kid, a
// registry serial, a hex order and 1 to kMaxDestroyedKeys hex key digests.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/identifier.h"
#include "crypto/crypto.h"
#include "crypto/jws.h"
#include "enroll/claims.h"
#include "fuzz_check.h"

namespace {

namespace crypto = fleetid::crypto;
namespace enroll = fleetid::enroll;
using fleetid::fuzz::Check;
using fleetid::fuzz::CheckRefusal;

bool IsLowerHex(std::string_view s) {
  return std::ranges::all_of(
      s, [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

// Wrap makes a compact JWS of |payload| under |header| (JSON text), with a 64-byte signature
// that no key made it.
std::string Wrap(std::string_view header, std::string_view payload) {
  static const std::string kSignature(64, '\x5a');
  return crypto::Base64UrlEncode(crypto::AsBytes(header)) + "." +
         crypto::Base64UrlEncode(crypto::AsBytes(payload)) + "." +
         crypto::Base64UrlEncode(crypto::AsBytes(kSignature));
}

void FuzzEvidence(std::string_view evidence) {
  const auto parsed = enroll::ParseEvidenceClaims(evidence);
  CheckRefusal(parsed);
  if (!parsed) return;
  Check(evidence.size() <= enroll::kMaxEvidenceBytes);
  Check(parsed->nonce.size() == enroll::kNonceChars);
  Check(fleetid::IsIdentifier(parsed->serial));
  Check(enroll::IsHex64(parsed->firmware) && enroll::IsHex64(parsed->key_sha256));
  Check(parsed->swversion.size() <= enroll::kMaxClaimChars);
  Check(parsed->sha256 == crypto::Hex(crypto::Sha256(evidence)));
}

void FuzzReceipt(std::string_view receipt) {
  const auto parsed = enroll::ParseReceiptClaims(receipt);
  CheckRefusal(parsed);
  if (!parsed) return;
  Check(receipt.size() <= enroll::kMaxReceiptBytes);
  Check(!parsed->kid.empty() && parsed->kid.size() <= 64 && IsLowerHex(parsed->kid));
  Check(fleetid::IsIdentifier(parsed->serial) && enroll::IsHex64(parsed->order));
  Check(!parsed->destroyed.empty() && parsed->destroyed.size() <= enroll::kMaxDestroyedKeys);
  Check(std::ranges::all_of(parsed->destroyed, enroll::IsHex64));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text = fleetid::fuzz::Text(data, size);
  FuzzEvidence(text);
  FuzzReceipt(text);
  FuzzEvidence(Wrap(R"({"alg":"ES256","typ":"fleetid-evidence+jws"})", text));
  FuzzReceipt(Wrap(R"({"alg":"ES256","kid":"1f2e3d4c","typ":"fleetid-receipt+jws"})", text));
  return 0;
}
