// Keys the fuzz targets verify signatures with: one of each suite fleetid signs JWS with,
// generated once per process (a fuzz target never holds a key anyone else has).
#ifndef FLEETID_FUZZ_FUZZ_KEYS_H_
#define FLEETID_FUZZ_FUZZ_KEYS_H_

#include <openssl/evp.h>

#include <array>

#include "crypto/handles.h"

namespace fleetid::fuzz {

// VerifyKeys returns a P-256, a P-384, an Ed25519 and an RSA-3072 key, made on first use and
// kept for the life of the process.
inline const std::array<crypto::EvpPkeyPtr, 4>& VerifyKeys() {
  static const std::array<crypto::EvpPkeyPtr, 4> keys = {
      crypto::EvpPkeyPtr(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256")),
      crypto::EvpPkeyPtr(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-384")),
      crypto::EvpPkeyPtr(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519")),
      crypto::EvpPkeyPtr(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", std::size_t{3072})),
  };
  return keys;
}

}  // namespace fleetid::fuzz

#endif  // FLEETID_FUZZ_FUZZ_KEYS_H_
