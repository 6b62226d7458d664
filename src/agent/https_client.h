// fleetid::agent HTTP client: the device agent's synchronous HTTP/1.1 and HTTPS client for
// talking to the authority (EST enrollment, OCSP, the REST API).
//
// ClientTls is the TLS configuration (trust anchors, optional client certificate and key, often
// a token key); Connection is one keep-alive connection that sends one request at a time. Boost.
// Beast and Boost.Asio are private to https_client.cc.
//
// WARNING: a reply is untrusted bytes from the network. Over TLS it comes from a server whose
// certificate chained to one of the configured anchors and names the host connected to; over
// plain HTTP it may come from anyone on the path.
#ifndef FLEETID_AGENT_HTTPS_CLIENT_H_
#define FLEETID_AGENT_HTTPS_CLIENT_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/error.h"
#include "crypto/handles.h"

namespace fleetid::agent {

// HttpReply is one complete response. A status other than 2xx is a reply, not an error.
struct HttpReply {
  int status = 0;
  std::string content_type;  // The Content-Type header's value as sent, or empty.
  std::string body;          // Empty for HEAD, 204 and 304.
  std::vector<std::pair<std::string, std::string>> headers;  // Names lower-cased, in order.

  // Header returns the value of the first header named |name| (compared case-insensitively), or
  // an empty string if there is none.
  std::string Header(std::string_view name) const;
};

// ClientTls is one TLS client configuration for talking to the authority: TLS 1.2 at least, 1.3
// preferred (for 1.2 only ECDHE with AES-GCM or ChaCha20-Poly1305), no session resumption (every
// connection runs a full handshake and verifies the server afresh). Immutable once made, and
// thread-safe to share between connections on any threads.
//
// The server's certificate must chain to one of the trust anchors and name the host connected to
// (a DNS name in subjectAltName, or an IP address for a numeric host). Each anchor is an anchor
// in its own right (RFC 5280 §6.1), so an issuing CA can be trusted without its root.
class ClientTls {
 public:
  // Make builds the configuration. |trust_anchors| are DER certificates, at least one.
  // |client_chain| is the client certificate chain sent to servers that ask, DER, leaf first (the
  // root may be left out), with |client_key| the leaf's private key; both or neither. The key is
  // usually a token key (custody::TokenPkey), which signs with one scheme only, so the client
  // offers only that scheme for its CertificateVerify: ecdsa_secp256r1_sha256 for P-256,
  // ecdsa_secp384r1_sha384 for P-384, ecdsa_secp521r1_sha512 for P-521, ed25519,
  // rsa_pss_rsae_sha256 for RSA. kInvalidArgument for an unparsable certificate, no anchor, a
  // chain without a key (or the reverse), or a key that does not match the leaf.
  [[nodiscard]] static Result<std::shared_ptr<ClientTls>> Make(
      const std::vector<std::vector<std::uint8_t>>& trust_anchors,
      const std::vector<std::vector<std::uint8_t>>& client_chain = {},
      crypto::EvpPkeyPtr client_key = nullptr);

  ClientTls(const ClientTls&) = delete;
  ClientTls& operator=(const ClientTls&) = delete;
  ~ClientTls();

 private:
  friend class Connection;
  struct Context;
  explicit ClientTls(std::unique_ptr<Context> context);

  std::unique_ptr<Context> context_;
};

// Connection is one keep-alive HTTP/1.1 connection to one server, plain or over TLS. Synchronous:
// each call blocks until done or timed out, and one request is in flight at a time. Not
// thread-safe; it may move between threads between calls.
class Connection {
 public:
  // Connect connects to |host|:|port| within |timeout| and, with |tls|, completes the TLS
  // handshake within the same deadline; |timeout| then bounds each Request. |host| is a numeric
  // IPv4 or IPv6 address (without brackets) or "localhost" (127.0.0.1, then ::1); the server's
  // certificate must name it, and a name is sent as SNI. Without |tls| the connection is plain
  // HTTP.
  //
  // kInvalidArgument for another host name or port 0. kUnavailable when the server cannot be
  // reached in time or the handshake fails, with OpenSSL's reason (for example "certificate
  // verify failed: hostname mismatch", or the alert the server sent).
  //
  // Over TLS 1.3 the server judges the client certificate only after the client has finished its
  // handshake, so a rejected client certificate surfaces at the first Request instead, as
  // kUnavailable with the server's alert.
  [[nodiscard]] static Result<std::unique_ptr<Connection>> Connect(
      std::string host, std::uint16_t port, std::shared_ptr<ClientTls> tls,
      std::chrono::milliseconds timeout = std::chrono::seconds(10));

  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  // Closes (see Close).
  ~Connection();

  // Request sends one request and reads the whole reply, within the timeout given to Connect.
  // |method| is a token ("GET", "POST"), |target| an origin-form target ("/est/simpleenroll").
  // Host is set to host:port, Content-Length describes |body| (omitted for an empty body on
  // methods that do not carry one), Content-Type is |content_type| unless empty, and |headers|
  // are added as given; they must not include Host, Content-Length, Transfer-Encoding or
  // Connection. A reply body over 16 MiB is an error.
  //
  // Reconnecting: after a server's "Connection: close", a failed request or Close, the next
  // Request connects anew. A request is retried on a fresh connection once, and only when the
  // kept-alive connection it was about to use turns out closed by the server before the request
  // was sent (the usual idle timeout). A connection that ends without a reply after the request
  // was sent is an error, except for idempotent methods (RFC 9110 §9.2.2: GET, HEAD, OPTIONS,
  // PUT, DELETE), which are retried then too, because the server may have closed while the
  // request was in flight.
  //
  // kInvalidArgument for a bad method, target or header; kUnavailable for a connection that
  // fails or times out, or a reply that is not HTTP/1.x or is too large.
  [[nodiscard]] Result<HttpReply> Request(
      std::string_view method, std::string_view target, std::string_view body = {},
      std::string_view content_type = {},
      const std::vector<std::pair<std::string, std::string>>& headers = {});

  // Close ends the connection: over TLS it sends close_notify and waits at most a second for the
  // server's. Idempotent; a later Request reconnects.
  void Close();

 private:
  class Impl;
  explicit Connection(std::unique_ptr<Impl> impl);

  std::unique_ptr<Impl> impl_;
};

// Url is an http or https URL split for Connect and Request.
struct Url {
  std::string scheme;      // "http" or "https", lower-cased.
  std::string host;        // A name (lower-cased) or an IP address; IPv6 without its brackets.
  std::uint16_t port = 0;  // As given, or 443 for https, 80 for http.
  std::string path;  // The path prefix without a trailing '/': "" for "https://h:1/" or no path.
};

// ParseUrl splits "https://127.0.0.1:8443/x", "http://localhost:8080" or "https://[::1]/est".
// kInvalidArgument for another scheme, a missing host, a bad port, user information, a query or
// a fragment.
[[nodiscard]] Result<Url> ParseUrl(std::string_view url);

}  // namespace fleetid::agent

#endif  // FLEETID_AGENT_HTTPS_CLIENT_H_
