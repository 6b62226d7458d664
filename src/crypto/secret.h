// SecretBuffer: the only place a secret (PIN, token, passphrase) lives in memory.
#ifndef FLEETID_CRYPTO_SECRET_H_
#define FLEETID_CRYPTO_SECRET_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>

namespace fleetid::crypto {

// SecretBuffer owns a fixed-size heap buffer that is wiped with OPENSSL_cleanse when destroyed or
// moved from. It never reallocates (so no stale copy is left behind), is not copyable, has no
// conversion to std::string or to a log field, and compares in constant time.
class SecretBuffer {
 public:
  SecretBuffer() = default;
  explicit SecretBuffer(std::size_t size);
  // FromString copies |text| into a new buffer. The caller still owns and must wipe |text|'s
  // storage if it came from somewhere other than a literal.
  static SecretBuffer FromString(std::string_view text);
  ~SecretBuffer();

  SecretBuffer(SecretBuffer&& other) noexcept;
  SecretBuffer& operator=(SecretBuffer&& other) noexcept;
  SecretBuffer(const SecretBuffer&) = delete;
  SecretBuffer& operator=(const SecretBuffer&) = delete;

  std::size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  std::uint8_t* data() { return data_.get(); }
  const std::uint8_t* data() const { return data_.get(); }
  std::span<const std::uint8_t> bytes() const { return {data_.get(), size_}; }
  std::span<std::uint8_t> mutable_bytes() { return {data_.get(), size_}; }

  // Equals compares contents in constant time (for equal sizes).
  bool Equals(const SecretBuffer& other) const;

  // Wipe zeroes and releases the buffer.
  void Wipe();

 private:
  std::unique_ptr<std::uint8_t[]> data_;
  std::size_t size_ = 0;
};

}  // namespace fleetid::crypto

#endif  // FLEETID_CRYPTO_SECRET_H_
