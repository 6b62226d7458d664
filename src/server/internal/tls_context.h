// The server's TLS context: crypto/tls_policy.h's policy plus the server's certificate, key,
// signature schemes and client-certificate verification, and reading the verified client chain.
#ifndef FLEETID_SERVER_INTERNAL_TLS_CONTEXT_H_
#define FLEETID_SERVER_INTERNAL_TLS_CONTEXT_H_

#include "server/internal/guard.h"

#include <openssl/ssl.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

// GCC 12 at -O2 reports -Wnull-dereference inside Asio (see src/server/http_server.cc).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnull-dereference"
#include <boost/asio/ssl/context.hpp>
#pragma GCC diagnostic pop

#include "common/error.h"
#include "server/http_server.h"

namespace fleetid::server::internal {

// MakeTlsContext builds the server's SSL_CTX from |tls|. kInvalidArgument names what is wrong
// with the options; kInternal if OpenSSL refuses a setting fleetid hard-codes.
[[nodiscard]] Result<std::shared_ptr<boost::asio::ssl::context>> MakeTlsContext(
    const TlsOptions& tls);

// VerifiedClientChain returns the chain the handshake on |ssl| verified, leaf first, DER; empty
// if the client sent no certificate. nullopt if a certificate was sent but is not verified,
// which SSL_VERIFY_PEER rules out, or cannot be encoded.
std::optional<std::vector<std::vector<std::uint8_t>>> VerifiedClientChain(SSL* ssl);

}  // namespace fleetid::server::internal

#endif  // FLEETID_SERVER_INTERNAL_TLS_CONTEXT_H_
