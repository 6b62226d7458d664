#include "crypto/tls_policy.h"

#include <openssl/err.h>
#include <openssl/x509_vfy.h>

#include <string_view>

#include "crypto/crypto.h"

namespace fleetid::crypto {
namespace {

constexpr const char* kTls12Ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
constexpr const char* kGroups = "X25519:P-256:P-384";

std::unexpected<Error> Refused(std::string_view what) {
  return MakeError(ErrorCode::kInternal, "{}: {}", what, OpenSslErrorText());
}

}  // namespace

Result<SslCtxPtr> NewTlsContext(TlsRole role) {
  ERR_clear_error();
  SslCtxPtr ctx(SSL_CTX_new(role == TlsRole::kServer ? TLS_server_method() : TLS_client_method()));
  if (!ctx) return Refused("SSL_CTX_new");
  SSL_CTX* raw = ctx.get();
  if (SSL_CTX_set_min_proto_version(raw, TLS1_2_VERSION) != 1) return Refused("min version");
  if (SSL_CTX_set_max_proto_version(raw, 0) != 1) return Refused("max version");
  if (SSL_CTX_set_cipher_list(raw, kTls12Ciphers) != 1) return Refused("cipher list");
  if (SSL_CTX_set1_groups_list(raw, kGroups) != 1) return Refused("groups");
  SSL_CTX_set_options(raw, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION | SSL_OP_NO_TICKET);
  SSL_CTX_set_session_cache_mode(raw, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_verify(raw, SSL_VERIFY_NONE, nullptr);
  return ctx;
}

Result<void> AddTrustAnchor(SSL_CTX* ctx, X509* anchor) {
  if (X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), anchor) != 1) {
    if (ERR_GET_REASON(ERR_peek_last_error()) != X509_R_CERT_ALREADY_IN_HASH_TABLE) {
      return Refused("adding a trust anchor");
    }
    ERR_clear_error();
  }
  return {};
}

Result<void> SetPeerVerification(SSL_CTX* ctx, std::span<X509* const> anchors, int mode) {
  for (X509* anchor : anchors) FLEETID_CHECK_OK(AddTrustAnchor(ctx, anchor));
  if (X509_VERIFY_PARAM_set_flags(SSL_CTX_get0_param(ctx), X509_V_FLAG_PARTIAL_CHAIN) != 1) {
    return Refused("verify flags");
  }
  SSL_CTX_set_verify_depth(ctx, kMaxTlsChainDepth);
  SSL_CTX_set_verify(ctx, mode, nullptr);
  return {};
}

}  // namespace fleetid::crypto
