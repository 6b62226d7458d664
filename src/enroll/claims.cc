#include "enroll/claims.h"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "common/identifier.h"
#include "crypto/crypto.h"

namespace fleetid::enroll {
namespace {

using Json = nlohmann::json;

bool IsLowerHex(std::string_view s) {
  return std::ranges::all_of(
      s, [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

// A certificate serial as fleetid writes it: lower-case hex.
bool IsSerialHex(std::string_view s) { return !s.empty() && s.size() <= 64 && IsLowerHex(s); }

bool IsBase64Url(std::string_view s) {
  return std::ranges::all_of(s, [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
  });
}

// A free-text claim a device reports (hwmodel, swname, swversion, a key label): 1 to
// kMaxClaimChars printable ASCII characters from kClaimPunctuation, letters and digits.
constexpr std::string_view kClaimPunctuation = " ._-+~:/()";
bool IsClaimText(std::string_view s) {
  return !s.empty() && s.size() <= kMaxClaimChars && std::ranges::all_of(s, [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           kClaimPunctuation.find(c) != std::string_view::npos;
  });
}

// Text is |claims|[|name|] if |claims| is an object holding that string, else empty.
std::string Text(const Json& claims, const char* name) {
  if (!claims.is_object()) return {};
  const auto it = claims.find(name);
  return it != claims.end() && it->is_string() ? it->get<std::string>() : std::string();
}

Result<void> CheckEvidenceText(const Json& claims) {
  for (const char* name : {"hwmodel", "swname", "swversion"}) {
    if (!claims.contains(name)) continue;
    const Json& value = claims[name];
    if (!value.is_string() || !IsClaimText(value.get<std::string>())) {
      return MakeError(ErrorCode::kInvalidArgument, "claim {} is 1 to {} letters, digits or '{}'",
                       name, kMaxClaimChars, kClaimPunctuation);
    }
  }
  return {};
}

Result<void> CheckEvidenceClaims(const Json& claims, const EvidenceClaims& out) {
  if (Text(claims, "eat_profile") != kEvidenceProfile || out.nonce.empty() || out.serial.empty() ||
      !IsHex64(out.firmware) || !IsHex64(out.key_sha256)) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "evidence claims need eat_profile {}, eat_nonce, serial, and fw_sha256 and "
                     "key_sha256 as lower-case hex SHA-256",
                     kEvidenceProfile);
  }
  // Every claim is bounded before anything of it is stored or logged.
  if (claims.size() > kMaxClaims || out.nonce.size() != kNonceChars || !IsBase64Url(out.nonce) ||
      !CheckIdentifier("serial", out.serial)) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "evidence has at most {} claims, a {}-character base64url eat_nonce and a "
                     "serial as the registry writes it",
                     kMaxClaims, kNonceChars);
  }
  return CheckEvidenceText(claims);
}

Result<void> CheckReceiptHeader(const crypto::Jws& jws) {
  const Json& header = jws.header;
  if (Text(header, "typ") != kReceiptType || !IsSerialHex(Text(header, "kid"))) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "a receipt is a JWS of typ {} whose kid is the signing certificate's serial",
                     kReceiptType);
  }
  return {};
}

Result<void> CheckReceiptShape(const Json& claims) {
  if (!claims.is_object() || claims.size() > kMaxClaims ||
      !CheckIdentifier("serial", Text(claims, "serial")) || !IsHex64(Text(claims, "order")) ||
      !claims.contains("iat") || !claims["iat"].is_number_integer() ||
      !claims.contains("destroyed") || !claims["destroyed"].is_array() ||
      claims["destroyed"].empty() || claims["destroyed"].size() > kMaxDestroyedKeys) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "a receipt names the device, the order it answers, its time (iat) and the "
                     "1 to {} keys destroyed",
                     kMaxDestroyedKeys);
  }
  return {};
}

Result<std::vector<std::string>> DestroyedKeys(const Json& list) {
  std::vector<std::string> destroyed;
  for (const Json& k : list) {
    if (!k.is_object() || !IsClaimText(Text(k, "label")) || !IsHex64(Text(k, "key_sha256"))) {
      return MakeError(ErrorCode::kInvalidArgument,
                       R"(each destroyed key is {{"label", "key_sha256"}} (lower-case hex))");
    }
    destroyed.push_back(Text(k, "key_sha256"));
  }
  return destroyed;
}

}  // namespace

bool IsHex64(std::string_view s) { return s.size() == 64 && IsLowerHex(s); }

Result<EvidenceClaims> ParseEvidenceClaims(std::string_view evidence) {
  if (evidence.size() > kMaxEvidenceBytes) {
    return MakeError(ErrorCode::kInvalidArgument, "evidence is at most {} bytes",
                     kMaxEvidenceBytes);
  }
  FLEETID_TRY(jws, crypto::ParseJws(evidence));
  if (Text(jws.header, "typ") != kEvidenceType) {
    return MakeError(ErrorCode::kInvalidArgument, "evidence is a JWS of typ {}", kEvidenceType);
  }
  const Json claims = Json::parse(jws.payload, nullptr, false);
  EvidenceClaims out{.jws = std::move(jws),
                     .nonce = Text(claims, "eat_nonce"),
                     .serial = Text(claims, "serial"),
                     .firmware = Text(claims, "fw_sha256"),
                     .key_sha256 = Text(claims, "key_sha256"),
                     .swversion = Text(claims, "swversion"),
                     .sha256 = crypto::Hex(crypto::Sha256(evidence))};
  FLEETID_CHECK_OK(CheckEvidenceClaims(claims, out));
  return out;
}

Result<ReceiptClaims> ParseReceiptClaims(std::string_view receipt) {
  if (receipt.size() > kMaxReceiptBytes) {
    return MakeError(ErrorCode::kInvalidArgument, "a receipt is at most {} bytes",
                     kMaxReceiptBytes);
  }
  FLEETID_TRY(jws, crypto::ParseJws(receipt));
  FLEETID_CHECK_OK(CheckReceiptHeader(jws));
  const Json claims = Json::parse(jws.payload, nullptr, false);
  FLEETID_CHECK_OK(CheckReceiptShape(claims));
  FLEETID_TRY(destroyed, DestroyedKeys(claims["destroyed"]));
  ReceiptClaims out{.jws = std::move(jws),
                    .kid = {},
                    .serial = Text(claims, "serial"),
                    .order = Text(claims, "order"),
                    .iat = claims["iat"].get<std::int64_t>(),
                    .destroyed = std::move(destroyed)};
  out.kid = out.jws.header["kid"].get<std::string>();
  return out;
}

}  // namespace fleetid::enroll
