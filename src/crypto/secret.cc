#include "crypto/secret.h"

#include <openssl/crypto.h>

#include <algorithm>

namespace fleetid::crypto {

SecretBuffer::SecretBuffer(std::size_t size)
    : data_(std::make_unique<std::uint8_t[]>(size)), size_(size) {}

SecretBuffer SecretBuffer::FromString(std::string_view text) {
  SecretBuffer out(text.size());
  std::copy(text.begin(), text.end(), out.data_.get());
  return out;
}

SecretBuffer::~SecretBuffer() { Wipe(); }

SecretBuffer::SecretBuffer(SecretBuffer&& other) noexcept
    : data_(std::move(other.data_)), size_(other.size_) {
  other.size_ = 0;
}

SecretBuffer& SecretBuffer::operator=(SecretBuffer&& other) noexcept {
  if (this != &other) {
    Wipe();
    data_ = std::move(other.data_);
    size_ = other.size_;
    other.size_ = 0;
  }
  return *this;
}

bool SecretBuffer::Equals(const SecretBuffer& other) const {
  if (size_ != other.size_) return false;
  if (size_ == 0) return true;
  return CRYPTO_memcmp(data_.get(), other.data_.get(), size_) == 0;
}

void SecretBuffer::Wipe() {
  if (data_ != nullptr && size_ > 0) OPENSSL_cleanse(data_.get(), size_);
  data_.reset();
  size_ = 0;
}

}  // namespace fleetid::crypto
