// Rng: the injected random source. Production code uses the OpenSSL DRBG (crypto::OpenSslRng);
// tests may use FakeRng for reproducible identifiers. Never use FakeRng for key material.
#ifndef FLEETID_COMMON_RNG_H_
#define FLEETID_COMMON_RNG_H_

#include <cstdint>
#include <span>
#include <vector>

#include "common/error.h"
#include "common/mutex.h"

namespace fleetid {

class Rng {
 public:
  virtual ~Rng() = default;
  // Fill writes |out.size()| random bytes into |out|. Thread-safe in every implementation.
  [[nodiscard]] virtual Result<void> Fill(std::span<std::uint8_t> out) = 0;

  // Bytes returns |n| fresh random bytes.
  [[nodiscard]] Result<std::vector<std::uint8_t>> Bytes(std::size_t n) {
    std::vector<std::uint8_t> out(n);
    FLEETID_CHECK_OK(Fill(out));
    return out;
  }
};

// FakeRng is a deterministic generator (SplitMix64) for tests: the same seed gives the same bytes.
class FakeRng final : public Rng {
 public:
  explicit FakeRng(std::uint64_t seed) : state_(seed) {}

  Result<void> Fill(std::span<std::uint8_t> out) override {
    MutexLock lock(mu_);
    for (auto& b : out) {
      state_ += 0x9e3779b97f4a7c15ULL;
      std::uint64_t z = state_;
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
      b = static_cast<std::uint8_t>(z ^ (z >> 31));
    }
    return {};
  }

 private:
  Mutex mu_;
  std::uint64_t state_ FLEETID_GUARDED_BY(mu_);
};

}  // namespace fleetid

#endif  // FLEETID_COMMON_RNG_H_
