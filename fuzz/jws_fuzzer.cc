// Fuzzes crypto::ParseJws, the reader of every JWS a device or factory sends (attestation
// evidence, decommissioning receipts, batch manifests), crypto::VerifyJws over what it parses,
// and the base64 decoders under both (EST bodies are base64).
//
// Invariants checked: refusals are kInvalidArgument (parsing) or kUnauthenticated
// (verification); no input verifies under keys made in this process (a forgery would); the
// decoders accept only canonical text, so what they decode encodes back to the same symbols;
// a parsed JWS's signing input is the input up to its second '.', its header a JSON object with
// a string alg and no crit.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "crypto/crypto.h"
#include "crypto/jws.h"
#include "fuzz_check.h"
#include "fuzz_keys.h"

namespace {

namespace crypto = fleetid::crypto;
using fleetid::ErrorCode;
using fleetid::fuzz::Check;
using fleetid::fuzz::CheckRefusal;

// Symbols is |text| without whitespace and padding, what Base64Encode writes it as.
std::string Symbols(std::string_view text) {
  std::string out;
  for (char c : text) {
    if (c != '\r' && c != '\n' && c != ' ' && c != '\t' && c != '=') out.push_back(c);
  }
  return out;
}

void FuzzBase64(std::string_view text) {
  const auto url = crypto::Base64UrlDecode(text);
  CheckRefusal(url);
  if (url) Check(crypto::Base64UrlEncode(*url) == text);
  const auto plain = crypto::Base64Decode(text);
  CheckRefusal(plain);
  if (plain) Check(Symbols(crypto::Base64Encode(*plain)) == Symbols(text));
}

void FuzzJws(std::string_view text) {
  const auto jws = crypto::ParseJws(text);
  CheckRefusal(jws);
  if (!jws) return;
  Check(text.starts_with(jws->signing_input) && jws->signing_input.size() < text.size() &&
        text[jws->signing_input.size()] == '.');
  Check(jws->header.is_object() && jws->header.contains("alg") && !jws->header.contains("crit"));
  const std::size_t dot = jws->signing_input.find('.');
  Check(crypto::Base64UrlEncode(crypto::AsBytes(jws->payload)) ==
        std::string_view(jws->signing_input).substr(dot + 1));
  for (const auto& key : fleetid::fuzz::VerifyKeys()) {
    const auto verified = crypto::VerifyJws(*jws, key.get());
    Check(!verified && verified.error().code() == ErrorCode::kUnauthenticated);
  }
  Check(!crypto::ParseJws(text, text.size() - 1));
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  for (const auto& key : fleetid::fuzz::VerifyKeys()) Check(key != nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text = fleetid::fuzz::Text(data, size);
  FuzzBase64(text);
  FuzzJws(text);
  return 0;
}
