#include "server/internal/tls_context.h"

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <algorithm>

#include "crypto/crypto.h"
#include "crypto/keys.h"
#include "crypto/tls_policy.h"
#include "crypto/x509.h"

namespace fleetid::server::internal {
namespace {

namespace net = boost::asio;

using crypto::SslCtxPtr;

// What a client may sign its CertificateVerify with (the CertificateRequest's list).
constexpr const char* kClientSigalgs =
    "ECDSA+SHA256:ECDSA+SHA384:ECDSA+SHA512:ed25519:ed448:"
    "rsa_pss_rsae_sha256:rsa_pss_rsae_sha384:rsa_pss_rsae_sha512:"
    "rsa_pss_pss_sha256:rsa_pss_pss_sha384:rsa_pss_pss_sha512:RSA+SHA256:RSA+SHA384:RSA+SHA512";
constexpr std::string_view kSessionIdContext = "fleetid";

using crypto::TlsSignatureScheme;

std::string OpenSslErrors() { return crypto::OpenSslErrorText(); }

}  // namespace

Result<std::shared_ptr<net::ssl::context>> MakeTlsContext(const TlsOptions& tls) {
  using ClientAuth = TlsOptions::ClientAuth;
  if (tls.certificate_chain.empty()) {
    return MakeError(ErrorCode::kInvalidArgument, "TLS needs a server certificate");
  }
  if (std::ranges::any_of(tls.certificate_chain, [](const X509Ref& c) { return !c; }) ||
      std::ranges::any_of(tls.client_trust_anchors, [](const X509Ref& c) { return !c; })) {
    return MakeError(ErrorCode::kInvalidArgument, "TLS certificate lists must not contain null");
  }
  if (!tls.private_key) {
    return MakeError(ErrorCode::kInvalidArgument, "TLS needs the server's private key");
  }
  if (tls.client_auth == ClientAuth::kNone && !tls.client_trust_anchors.empty()) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "client_trust_anchors are set but client_auth is none: set client_auth or "
                     "drop the anchors");
  }
  if (tls.client_auth != ClientAuth::kNone && tls.client_trust_anchors.empty()) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "client certificates are asked for but there are no client_trust_anchors");
  }

  FLEETID_TRY(ctx, crypto::NewTlsContext(crypto::TlsRole::kServer));
  SSL_CTX* raw = ctx.get();
  auto internal = [](std::string_view what) {
    return MakeError(ErrorCode::kInternal, "{}: {}", what, OpenSslErrors());
  };
  // An idle connection gives its record buffers back (some 34 KiB each), so that thousands of
  // them, which shedding allows, cost less memory.
  SSL_CTX_set_mode(raw, SSL_MODE_RELEASE_BUFFERS);
  if (SSL_CTX_set_num_tickets(raw, 0) != 1) return internal("tickets");
  if (SSL_CTX_set_session_id_context(
          raw, reinterpret_cast<const unsigned char*>(kSessionIdContext.data()),
          static_cast<unsigned int>(kSessionIdContext.size())) != 1) {
    return internal("session id context");
  }

  X509* leaf = tls.certificate_chain.front().get();
  if (SSL_CTX_use_certificate(raw, leaf) != 1) {
    return MakeError(ErrorCode::kInvalidArgument, "the server certificate is unusable: {}",
                     OpenSslErrors());
  }
  for (std::size_t i = 1; i < tls.certificate_chain.size(); ++i) {
    if (SSL_CTX_add1_chain_cert(raw, tls.certificate_chain[i].get()) != 1) {
      return internal("adding a chain certificate");
    }
  }
  EVP_PKEY* key = tls.private_key.get();
  if (SSL_CTX_use_PrivateKey(raw, key) != 1 || SSL_CTX_check_private_key(raw) != 1) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "the private key does not match the server certificate: {}", OpenSslErrors());
  }
  if (const char* sigalgs = TlsSignatureScheme(key); sigalgs != nullptr) {
    if (SSL_CTX_set1_sigalgs_list(raw, sigalgs) != 1) return internal("server sigalgs");
    if (SSL_CTX_set1_client_sigalgs_list(raw, kClientSigalgs) != 1) {
      return internal("client sigalgs");
    }
  }

  if (tls.client_auth != ClientAuth::kNone) {
    std::vector<X509*> anchors;
    for (const X509Ref& anchor : tls.client_trust_anchors) {
      anchors.push_back(anchor.get());
      if (SSL_CTX_add_client_CA(raw, anchor.get()) != 1) return internal("client CA names");
    }
    int mode = SSL_VERIFY_PEER;
    if (tls.client_auth == ClientAuth::kRequired) mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
    FLEETID_CHECK_OK(crypto::SetPeerVerification(raw, anchors, mode));
  }
  // net::ssl::context takes ownership of the handle.
  return std::make_shared<net::ssl::context>(ctx.release());
}

std::optional<std::vector<std::vector<std::uint8_t>>> VerifiedClientChain(SSL* ssl) {
  std::vector<std::vector<std::uint8_t>> chain;
  if (SSL_get0_peer_certificate(ssl) == nullptr) return chain;
  if (SSL_get_verify_result(ssl) != X509_V_OK) return std::nullopt;
  STACK_OF(X509)* verified = SSL_get0_verified_chain(ssl);
  if (verified == nullptr || sk_X509_num(verified) <= 0) return std::nullopt;
  for (int i = 0; i < sk_X509_num(verified); ++i) {
    auto der = crypto::CertificateDer(sk_X509_value(verified, i));
    if (!der) return std::nullopt;
    chain.push_back(std::move(*der));
  }
  return chain;
}

}  // namespace fleetid::server::internal
