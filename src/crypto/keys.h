// Public-key objects built from the raw values a token exports, and their standard encodings.
// Nothing here ever handles a private key: those stay in the token (see custody/).
#ifndef FLEETID_CRYPTO_KEYS_H_
#define FLEETID_CRYPTO_KEYS_H_

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/error.h"
#include "crypto/handles.h"
#include "crypto/suite.h"

namespace fleetid::crypto {

// TlsSignatureScheme names the one TLS signature scheme (RFC 8446 §4.2.3) a key of this type
// signs handshakes with, or nullptr to keep OpenSSL's list (a key type fleetid has no suite for).
// A token key signs only with its suite's digest and padding (custody::TokenPkey), so servers
// and clients holding one offer exactly this: ecdsa_secp256r1_sha256 for P-256 (and the matching
// scheme for P-384 and P-521), ed25519, rsa_pss_rsae_sha256 or rsa_pss_pss_sha256.
const char* TlsSignatureScheme(EVP_PKEY* key);

// EcPublicKey builds a key on |curve_nid| from an uncompressed SEC1 point (0x04||X||Y).
[[nodiscard]] Result<EvpPkeyPtr> EcPublicKey(int curve_nid, std::span<const std::uint8_t> point);

// Ed25519PublicKey builds a key from its 32 raw bytes (RFC 8032 §5.1.5).
[[nodiscard]] Result<EvpPkeyPtr> Ed25519PublicKey(std::span<const std::uint8_t> raw);

// RsaPublicKey builds a key from big-endian modulus and public exponent.
[[nodiscard]] Result<EvpPkeyPtr> RsaPublicKey(std::span<const std::uint8_t> modulus,
                                              std::span<const std::uint8_t> exponent);

// PublicKeyDer returns the DER SubjectPublicKeyInfo of |key|; PublicKeyPem the PEM of it.
[[nodiscard]] Result<std::vector<std::uint8_t>> PublicKeyDer(EVP_PKEY* key);
[[nodiscard]] Result<std::string> PublicKeyPem(EVP_PKEY* key);

// PublicKeyFromDer parses a DER SubjectPublicKeyInfo.
[[nodiscard]] Result<EvpPkeyPtr> PublicKeyFromDer(std::span<const std::uint8_t> der);

// KeyFingerprint is the lower-case hex SHA-256 of a canonical form of the public key in |spki|
// (DER SubjectPublicKeyInfo), so one key has one fingerprint however its SPKI was encoded:
//   EC:      the SPKI re-encoded with the point uncompressed (curve OID included);
//   RSA:     the DER RSAPublicKey { n, e } alone (RFC 8017 §A.1.1), whether the SPKI names
//            rsaEncryption or id-RSASSA-PSS and whatever its parameters;
//   Ed25519: the 32 raw bytes (RFC 8410 §4);
//   other:   the SPKI as OpenSSL re-encodes it.
// The EC form is the one compromised_keys rows were recorded with before it existed.
[[nodiscard]] Result<std::string> KeyFingerprint(std::span<const std::uint8_t> spki);

}  // namespace fleetid::crypto

#endif  // FLEETID_CRYPTO_KEYS_H_
