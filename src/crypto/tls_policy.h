// The one TLS policy: protocol versions, TLS 1.2 cipher suites, key-exchange groups, session
// handling and peer verification, shared by the server (src/server) and the agent's client
// (src/agent/https_client.cc). Library fleetid::tls_policy, which adds libssl to fleetid::crypto.
#ifndef FLEETID_CRYPTO_TLS_POLICY_H_
#define FLEETID_CRYPTO_TLS_POLICY_H_

#include <openssl/ssl.h>

#include <memory>
#include <span>

#include "common/error.h"
#include "crypto/handles.h"

namespace fleetid::crypto {

using SslCtxPtr = std::unique_ptr<SSL_CTX, Deleter<&SSL_CTX_free>>;

// The longest certificate chain either side verifies from its peer.
inline constexpr int kMaxTlsChainDepth = 8;

enum class TlsRole : std::uint8_t { kServer, kClient };

// NewTlsContext makes an SSL_CTX for |role| with the policy applied: TLS 1.2 and 1.3 only, for
// TLS 1.2 Mozilla's "intermediate" (2023) suites (forward secrecy and AEAD; TLS 1.3 keeps
// OpenSSL's defaults), the groups X25519, P-256 and P-384, no renegotiation, compression,
// tickets or session cache. Peer verification is off until SetPeerVerification. kInternal with
// OpenSSL's reasons if a setting is refused.
[[nodiscard]] Result<SslCtxPtr> NewTlsContext(TlsRole role);

// SetPeerVerification trusts |anchors| (a duplicate is harmless), accepts a chain ending at any
// of them (X509_V_FLAG_PARTIAL_CHAIN: an intermediate may be the anchor), limits chains to
// kMaxTlsChainDepth and sets SSL_CTX_set_verify |mode|. The anchors are not owned: the store
// takes its own references.
[[nodiscard]] Result<void> SetPeerVerification(SSL_CTX* ctx, std::span<X509* const> anchors,
                                               int mode);

// AddTrustAnchor adds one anchor to |ctx|'s store; a duplicate is not an error.
[[nodiscard]] Result<void> AddTrustAnchor(SSL_CTX* ctx, X509* anchor);

}  // namespace fleetid::crypto

#endif  // FLEETID_CRYPTO_TLS_POLICY_H_
