// EVP_PKEYs whose private half is a custody Signer, so that plain OpenSSL calls (X509_sign,
// X509_REQ_sign, X509_CRL_sign, OCSP_basic_sign, EVP_DigestSign*, SSL_CTX_use_PrivateKey) sign
// inside the token. They work through "fleetid-token", an OpenSSL 3 provider built into fleetid.
#ifndef FLEETID_CUSTODY_PROVIDER_H_
#define FLEETID_CUSTODY_PROVIDER_H_

#include <openssl/types.h>

#include <memory>
#include <string_view>

#include "common/error.h"
#include "crypto/handles.h"
#include "custody/custody.h"

namespace fleetid::custody {

inline constexpr std::string_view kTokenProviderName = "fleetid-token";

// TokenPkey returns an EVP_PKEY whose private operations are performed by |signer| inside the
// token (through the in-process "fleetid-token" provider, loaded on first use into the default
// library context) and whose public operations behave like |signer->public_key()|. The EVP_PKEY
// keeps the signer alive. Signing follows the signer's suite only: another digest, or RSA
// padding other than PSS with SHA-256, MGF1-SHA-256 and a 32-byte salt, is refused. The private
// half cannot be exported (PEM_write_PrivateKey and the like fail). Thread-safe.
//
// WARNING: an RSA token key signs RSASSA-PSS even where the caller asked for no padding, because
// OpenSSL cannot say "PKCS#1 v1.5" to a provider that will not do it: TLS 1.2 negotiating
// rsa_pkcs1_* with such a key yields a signature the peer rejects. A TLS 1.2 server or client
// with an RSA token key must restrict its sigalgs to rsa_pss_rsae_sha256; TLS 1.3 never uses
// PKCS#1 v1.5 for CertificateVerify.
//
// kUnavailable if the provider cannot be loaded.
[[nodiscard]] Result<crypto::EvpPkeyPtr> TokenPkey(std::shared_ptr<Signer> signer);

// TokenProvider returns the "fleetid-token" provider, loading it (and the default provider, which
// does the public-key work and the hashing) on first use. Both stay loaded until exit, when an
// atexit handler unloads them ahead of OPENSSL_cleanup; the caller must not unload the pointer.
// Thread-safe.
[[nodiscard]] Result<OSSL_PROVIDER*> TokenProvider();

}  // namespace fleetid::custody

#endif  // FLEETID_CUSTODY_PROVIDER_H_
