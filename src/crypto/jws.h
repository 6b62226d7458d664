// JSON Web Signature (RFC 7515) in its compact serialisation, and the base64 forms it and EST use.
// fleetid signs attestation evidence, decommissioning receipts and factory batch manifests as JWS;
// the signing key is usually a token key (an EVP_PKEY from custody::TokenPkey).
#ifndef FLEETID_CRYPTO_JWS_H_
#define FLEETID_CRYPTO_JWS_H_

#include <openssl/types.h>

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/error.h"

namespace fleetid::crypto {

// Base64 (RFC 4648 §4). Decode ignores CR, LF, space and tab (EST bodies are line-wrapped) and
// refuses anything else that is not in the alphabet, misplaced padding, and trailing garbage.
std::string Base64Encode(std::span<const std::uint8_t> data);
[[nodiscard]] Result<std::vector<std::uint8_t>> Base64Decode(std::string_view text);

// Base64url without padding (RFC 7515 §2). Decode is strict: no padding, no whitespace.
std::string Base64UrlEncode(std::span<const std::uint8_t> data);
[[nodiscard]] Result<std::vector<std::uint8_t>> Base64UrlDecode(std::string_view text);

// JwsAlgorithm names the one JWS "alg" fleetid uses with |key|'s suite: ES256 (P-256), ES384
// (P-384), EdDSA (Ed25519), PS256 (RSA). kInvalidArgument for other keys.
[[nodiscard]] Result<std::string_view> JwsAlgorithm(const EVP_PKEY* key);

// SignJws signs |payload| with |key| under |header| (a JSON object; "alg" is set from the key)
// and returns header.payload.signature. ECDSA signatures are the fixed-size R||S of RFC 7518
// §3.4, converted from the DER a token returns.
[[nodiscard]] Result<std::string> SignJws(EVP_PKEY* key, nlohmann::json header,
                                          std::string_view payload);

// NOLINTNEXTLINE(bugprone-exception-escape): json members; nothing here is noexcept-bound
struct Jws {
  nlohmann::json header;       // the protected header, parsed
  std::string payload;         // decoded
  std::string signing_input;   // ASCII(BASE64URL(header) || '.' || BASE64URL(payload))
  std::vector<std::uint8_t> signature;
};

inline constexpr std::size_t kMaxJwsBytes = std::size_t{64} * 1024;

// ParseJws splits and decodes a compact JWS without verifying it. kInvalidArgument for anything
// that is not three base64url parts with a JSON object header carrying a string "alg", for
// "crit" (no extension is understood), and for input over |max_bytes|.
[[nodiscard]] Result<Jws> ParseJws(std::string_view compact, std::size_t max_bytes = kMaxJwsBytes);

// VerifyJws checks |jws|'s signature with |key|. The header's alg must be exactly the one
// JwsAlgorithm(key) names ("none" and algorithm substitution are refused);
// kUnauthenticated for a wrong signature.
[[nodiscard]] Result<void> VerifyJws(const Jws& jws, EVP_PKEY* key);

}  // namespace fleetid::crypto

#endif  // FLEETID_CRYPTO_JWS_H_
