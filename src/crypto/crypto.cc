#include "crypto/crypto.h"

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <climits>

#include "crypto/handles.h"

namespace fleetid::crypto {

Sha256Digest Sha256(std::span<const std::uint8_t> data) {
  Sha256Digest out{};
  SHA256(data.data(), data.size(), out.data());
  return out;
}

Sha256Digest Sha256(std::string_view data) { return Sha256(AsBytes(data)); }

Result<std::vector<std::uint8_t>> Digest(std::string_view md_name,
                                         std::span<const std::uint8_t> data) {
  EvpMdPtr md(EVP_MD_fetch(nullptr, std::string(md_name).c_str(), nullptr));
  if (!md) return MakeError(OpenSslError(ErrorCode::kInvalidArgument, "unknown digest"));
  std::vector<std::uint8_t> out(static_cast<std::size_t>(EVP_MD_get_size(md.get())));
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), out.data(), &len, md.get(), nullptr) != 1) {
    return MakeError(OpenSslError(ErrorCode::kInternal, "digest failed"));
  }
  out.resize(len);
  return out;
}

bool ConstantTimeEquals(std::span<const std::uint8_t> a, std::span<const std::uint8_t> b) {
  if (a.size() != b.size()) return false;
  if (a.empty()) return true;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::string Hex(std::span<const std::uint8_t> bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (std::uint8_t b : bytes) {
    out.push_back(kDigits[b >> 4]);
    out.push_back(kDigits[b & 0xf]);
  }
  return out;
}

bool Unhex(std::string_view hex, std::span<std::uint8_t> out) {
  if (hex.size() != 2 * out.size()) return false;
  auto digit = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (std::size_t i = 0; i < out.size(); ++i) {
    const int hi = digit(hex[2 * i]);
    const int lo = digit(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    out[i] = static_cast<std::uint8_t>(hi * 16 + lo);
  }
  return true;
}

Result<std::vector<std::uint8_t>> Unhex(std::string_view hex) {
  std::vector<std::uint8_t> out(hex.size() / 2);
  if (!Unhex(hex, out)) return MakeError(ErrorCode::kInvalidArgument, "not an even number of hex digits");
  return out;
}

Error OpenSslError(ErrorCode code, std::string_view what) {
  unsigned long first = ERR_get_error();
  std::string reason;
  if (first != 0) {
    const char* r = ERR_reason_error_string(first);
    reason = r != nullptr ? r : fmt::format("error {:#x}", first);
  }
  ERR_clear_error();
  if (reason.empty()) return Error(code, std::string(what));
  return Error(code, fmt::format("{}: {}", what, reason));
}

std::string OpenSslErrorText() {
  std::string out;
  while (const unsigned long e = ERR_get_error()) {
    std::array<char, 256> text{};
    ERR_error_string_n(e, text.data(), text.size());
    if (!out.empty()) out += "; ";
    out += text.data();
  }
  return out.empty() ? std::string("no OpenSSL error recorded") : out;
}

Result<void> OpenSslRng::Fill(std::span<std::uint8_t> out) {
  std::size_t done = 0;
  while (done < out.size()) {
    const std::size_t chunk = std::min<std::size_t>(out.size() - done, INT_MAX);
    if (RAND_bytes(out.data() + done, static_cast<int>(chunk)) != 1) {
      return MakeError(OpenSslError(ErrorCode::kUnavailable, "random generator failed"));
    }
    done += chunk;
  }
  return {};
}

OpenSslRng& OpenSslRng::Instance() {
  static OpenSslRng rng;
  return rng;
}

}  // namespace fleetid::crypto
