// Digests, constant-time comparison, hex, the OpenSSL random source and OpenSSL error capture.
#ifndef FLEETID_CRYPTO_CRYPTO_H_
#define FLEETID_CRYPTO_CRYPTO_H_

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "common/rng.h"

namespace fleetid::crypto {

using Sha256Digest = std::array<std::uint8_t, 32>;

// Sha256 returns SHA-256(|data|).
Sha256Digest Sha256(std::span<const std::uint8_t> data);
Sha256Digest Sha256(std::string_view data);

// Digest hashes |data| with the named OpenSSL digest ("SHA256", "SHA384").
[[nodiscard]] Result<std::vector<std::uint8_t>> Digest(std::string_view md_name,
                                                       std::span<const std::uint8_t> data);

// ConstantTimeEquals compares two byte strings without a data-dependent early exit. Different
// lengths compare unequal (the length itself is not secret).
bool ConstantTimeEquals(std::span<const std::uint8_t> a, std::span<const std::uint8_t> b);

std::string Hex(std::span<const std::uint8_t> bytes);

// Unhex decodes |hex| (either case) into |out|, which must be exactly half its length; false for
// anything else. The allocating form returns kInvalidArgument.
bool Unhex(std::string_view hex, std::span<std::uint8_t> out);
[[nodiscard]] Result<std::vector<std::uint8_t>> Unhex(std::string_view hex);

inline std::span<const std::uint8_t> AsBytes(std::string_view s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

// OpenSslError drains OpenSSL's thread-local error queue into an Error with |code| whose message
// is "|what|: <first OpenSSL reason>". Never includes key material (OpenSSL reasons do not).
Error OpenSslError(ErrorCode code, std::string_view what);

// OpenSslErrorText drains this thread's OpenSSL error queue into one line, every entry's full
// text ("no OpenSSL error recorded" when empty): for TLS failures, where the whole chain of
// reasons (an alert, a verify error) is what the operator needs.
std::string OpenSslErrorText();

// OpenSslRng draws from OpenSSL's DRBG (RAND_bytes), seeded from the OS. Thread-safe.
class OpenSslRng final : public Rng {
 public:
  [[nodiscard]] Result<void> Fill(std::span<std::uint8_t> out) override;
  static OpenSslRng& Instance();
};

}  // namespace fleetid::crypto

#endif  // FLEETID_CRYPTO_CRYPTO_H_
