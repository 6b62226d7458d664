// fleetid::server: the HTTP/1.1 front that OCSP, CRL, EST and the REST API plug into.
//
// A Router maps (method, path) to a synchronous Handler; HttpServer owns the listening socket, a
// thread pool and every connection, and enforces the size limits and timeouts in
// HttpServerOptions before a Handler ever sees a request. A listener speaks either plain HTTP or,
// with HttpServerOptions::tls set, HTTPS only, optionally with client certificates (mutual TLS,
// as EST and the operator API need). Boost.Beast and Boost.Asio are private to http_server.cc.
//
// WARNING: remote_address is the peer of this socket, not necessarily the device: a proxy or NAT
// may stand between. Over TLS, HttpRequest::client_chain is the authenticated identity.
#ifndef FLEETID_SERVER_HTTP_SERVER_H_
#define FLEETID_SERVER_HTTP_SERVER_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "common/error.h"
#include "server/http_text.h"  // HttpDate, CurrentHttpDate

namespace fleetid::server {

// HttpRequest is one fully received request. Every field holds untrusted bytes.
struct HttpRequest {
  std::string method;  // Case-sensitive, as sent: "GET", "POST", ...
  std::string target;  // Raw request target; percent-encoding untouched.
  std::string path;    // target up to (not including) the first '?'.
  std::string query;   // target after the first '?', or empty.
  std::vector<std::pair<std::string, std::string>> headers;  // Names lower-cased, in arrival order.
  std::string body;
  std::string remote_address;  // Peer as "127.0.0.1:54321" or "[::1]:54321".

  // tls is true when the request arrived on a TLS listener.
  bool tls = false;
  // client_chain is the client certificate chain that the TLS handshake verified against
  // TlsOptions::client_trust_anchors, each certificate DER-encoded: the client's leaf first, then
  // its issuers, ending with the trust anchor that verified it. It is empty over plain HTTP and
  // when the client sent no certificate (ClientAuth::kOptional). Unlike the other fields it is not
  // attacker-chosen: every certificate in it chains to a configured anchor.
  //
  // WARNING: verification checks signatures, validity periods and the TLS client purpose
  // (extendedKeyUsage), not revocation: the Handler must check the device's status itself.
  std::vector<std::vector<std::uint8_t>> client_chain;

  // Header returns the value of the first header named |name| (compared case-insensitively), or
  // an empty view if there is none. The view points into |headers|.
  std::string_view Header(std::string_view name) const;
};

// HttpResponse is what a Handler answers. The server owns framing: it sets Content-Length,
// Connection, Server, Date and Content-Type (from content_type) itself and drops any of those, and
// Transfer-Encoding, Keep-Alive and Upgrade, found in |headers|. A header name that is not an RFC
// 9110 token, or a value containing CR, LF or NUL, turns the answer into a logged 500.
struct HttpResponse {
  int status = 200;                               // 200..599; anything else is answered as a 500.
  std::string content_type = "application/json";  // Omitted from the response when empty.
  std::vector<std::pair<std::string, std::string>> headers;  // Extra headers (Cache-Control, ETag).
  std::string body;  // Not sent for HEAD, 204 and 304; Content-Length still describes it for HEAD.

  static HttpResponse Json(int status, std::string body);

  // JsonError answers {"error":"<error_name>","message":"<message>"} with |status|. |message| may
  // contain untrusted bytes: it is JSON-escaped, and invalid UTF-8 is replaced.
  static HttpResponse JsonError(int status, std::string_view error_name, std::string_view message);

  // FromError answers fleetid::HttpStatus(error.code()) with
  // {"error":"<ErrorCodeName>","message":"<error.message()>"}.
  static HttpResponse FromError(const fleetid::Error& error);
};

// Handler answers one request. It runs on a server thread and may run concurrently with itself
// (up to HttpServerOptions::threads at once), so it must be thread-safe. An exception escaping it
// is logged and answered with a 500 that does not contain the exception text.
using Handler = std::function<HttpResponse(const HttpRequest&)>;

// Router maps a method and a path to a Handler. Add is not thread-safe; Dispatch is const and may
// be called concurrently once all routes are added (HttpServer::Start takes the Router by value).
class Router {
 public:
  // Add routes |method| requests whose path equals |pattern|, or, when |pattern| ends in "/*",
  // whose path starts with |pattern| minus the '*' ("/ocsp/*" matches "/ocsp/MEQw..." and
  // "/ocsp/", not "/ocsp"). Among matching routes an exact pattern beats any prefix and a longer
  // prefix beats a shorter one. A GET route also answers HEAD unless HEAD is routed explicitly.
  void Add(std::string method, std::string pattern, Handler handler);

  // Dispatch calls the best matching Handler and returns its answer (exceptions propagate). With
  // no route for the path it answers 404 {"error":"not_found"}; with routes for the path but none
  // for the method, 405 {"error":"method_not_allowed"} with an Allow header.
  HttpResponse Dispatch(const HttpRequest& request) const;

 private:
  struct Route {
    std::string method;
    std::string pattern;  // For a prefix route, the pattern without its trailing '*'.
    bool is_prefix = false;
    Handler handler;
  };
  std::vector<Route> routes_;
};

// OsslRef holds one reference to an OpenSSL object that counts its references. Constructing one
// from a raw pointer takes a new reference (|UpRef|), so the caller still owns, and frees, its
// own; copying takes another reference; destruction drops this one (|Free|). Null is allowed.
template <typename T, int (*UpRef)(T*), void (*Free)(T*)>
class OsslRef {
 public:
  OsslRef() = default;
  explicit OsslRef(T* ptr) : ptr_(ptr) {
    if (ptr_ != nullptr) UpRef(ptr_);
  }
  OsslRef(const OsslRef& other) : OsslRef(other.ptr_) {}
  OsslRef(OsslRef&& other) noexcept : ptr_(std::exchange(other.ptr_, nullptr)) {}
  OsslRef& operator=(const OsslRef& other) {
    if (this != &other) {
      OsslRef copy(other);
      std::swap(ptr_, copy.ptr_);
    }
    return *this;
  }
  OsslRef& operator=(OsslRef&& other) noexcept {
    std::swap(ptr_, other.ptr_);
    return *this;
  }
  ~OsslRef() {
    if (ptr_ != nullptr) Free(ptr_);
  }

  // get returns the object without a new reference; it lives at least as long as this OsslRef.
  T* get() const { return ptr_; }
  explicit operator bool() const { return ptr_ != nullptr; }

 private:
  T* ptr_ = nullptr;
};

using PkeyRef = OsslRef<EVP_PKEY, &EVP_PKEY_up_ref, &EVP_PKEY_free>;
using X509Ref = OsslRef<X509, &X509_up_ref, &X509_free>;

// TlsOptions makes a listener speak TLS: 1.2 at least, 1.3 preferred; for 1.2 only ECDHE with
// AES-GCM or ChaCha20-Poly1305. There is no session resumption: every connection runs a full
// handshake (one signature by the server key, in the token) and verifies the client's
// certificate afresh, so client_chain always comes from this connection's own verification.
//
// The server signs handshakes with the one signature scheme its key's suite uses
// (ecdsa_secp256r1_sha256 for P-256, ecdsa_secp384r1_sha384 for P-384, ecdsa_secp521r1_sha512 for
// P-521, ed25519, rsa_pss_rsae_sha256 for RSA), because a token key signs with that digest and
// padding only (see custody::TokenPkey). Client certificates may use any common scheme.
struct TlsOptions {
  enum class ClientAuth {
    kNone,      // Do not ask for a client certificate.
    kOptional,  // Ask; a client without one is served with an empty client_chain.
    kRequired,  // Ask; a client without one fails the handshake (TLS 1.3: certificate_required).
  };

  // certificate_chain is the server's certificate chain as sent to clients: its leaf first, then
  // the issuing CAs (the root may be left out).
  std::vector<X509Ref> certificate_chain;
  // private_key is the private key of the leaf. In production it is a token key from
  // custody::TokenPkey, so it never leaves the token; any EVP_PKEY works.
  PkeyRef private_key;
  // client_trust_anchors are the certificates a client chain must lead to: the fleet root and
  // issuing CAs, registered manufacturer CAs. Each is an anchor in its own right (RFC 5280 §6.1:
  // an anchor need not be self-signed), so a chain ending at a listed intermediate is accepted
  // without that intermediate's issuer. Empty exactly when client_auth is kNone. A client
  // certificate that does not chain to one of them fails the handshake, with kOptional too.
  std::vector<X509Ref> client_trust_anchors;
  ClientAuth client_auth = ClientAuth::kNone;
};

struct HttpServerOptions {
  // A numeric IPv4 or IPv6 address; no host names.
  std::string address = "127.0.0.1";
  // 0 picks a free port; read it back with HttpServer::port().
  std::uint16_t port = 8080;
  // I/O and Handler threads; at least 1. One more thread only accepts connections.
  int threads = 2;

  // What one request may make the server hold. Bytes past these are never buffered: the request
  // is answered (JSON, Connection: close) and the connection closed.
  // Request line plus header fields, and separately the chunked body's trailer fields together
  // with the header: more is answered 431. Trailer fields are read and dropped, never handed on.
  std::size_t max_header_bytes = std::size_t{8} * 1024;
  // Body bytes, however framed: more is answered 413.
  std::size_t max_body_bytes = std::size_t{64} * 1024;
  // Extensions on one chunk-size line (RFC 9112 §7.1.1: ";name=value..."), which fleetid ignores:
  // more is answered 400.
  std::size_t max_chunk_extension_bytes = 256;

  // Open connections on this listener. 0 (the default): sized from RLIMIT_NOFILE, which Start
  // raises to its hard limit: half the descriptors left after a reserve of 256, so that two
  // listeners fit in one process, but at most 4096, which bounds memory (a TLS connection in its
  // handshake holds about 130 KiB). At the limit, and at an address's share below, a new
  // connection is admitted by closing the least recently active connection that is not serving
  // a request: one in its TLS handshake, idle between requests, still sending its request, or
  // whose response the client has not read from for over a second (the address's own, for the
  // share). A connection whose Handler runs, or whose response the client is taking, is never
  // closed for another. Only when none can be closed is the new connection closed right after
  // accept.
  std::size_t max_connections = 0;
  // One remote address's share of max_connections, so that one host (or one NAT) cannot hold
  // everyone else's connections, whatever their phase. An "address" is an IPv4 address (an
  // IPv4-mapped IPv6 peer counts as its IPv4 address) or an IPv6 /64, which one host may hold
  // whole. 0 (the default): a quarter of max_connections, but not less than max_connections or
  // 64, whichever is smaller. Loopback is not exempt.
  std::size_t max_connections_per_address = 0;

  // A TLS handshake must complete within this from accept.
  std::chrono::seconds handshake_timeout{5};
  // A request's header must arrive within this from its first byte (for a connection's first
  // request: from accept, or from the end of the TLS handshake), else the connection is dropped
  // without an answer. Capped by read_timeout.
  std::chrono::seconds header_timeout{5};
  // A whole request, header and body, must arrive within this from the same start.
  std::chrono::seconds read_timeout{10};
  // A keep-alive connection may idle this long between requests (and may be closed sooner to
  // admit another, see max_connections).
  std::chrono::seconds idle_timeout{30};
  // A response must be taken by the client within this. When connections run short, one the
  // client has taken nothing of for a second may be closed sooner (see max_connections).
  std::chrono::seconds write_timeout{10};
  // Stop() waits at most this for in-flight requests.
  std::chrono::seconds drain_timeout{5};
  // Set: this listener speaks TLS only. Unset: plain HTTP.
  std::optional<TlsOptions> tls;
};

// HttpServer serves a Router over HTTP/1.0 and HTTP/1.1 (keep-alive, pipelining,
// Expect: 100-continue) on its own thread pool.
//
// Over TLS, a failed handshake (no or an untrusted client certificate, bytes that are not TLS,
// a plain HTTP request) closes the connection after whatever alert OpenSSL sends; the server
// closes a healthy TLS connection with close_notify, and waits at most a second (Stop) or the
// linger time (Connection: close) for the client's.
//
// Errors the server answers itself, all with a JSON body and Connection: close: 400 for bytes
// that are not HTTP/1.0 or HTTP/1.1 (an HTTP/2 preface included), for a framing that not every
// intermediary reads alike (RFC 9112 §6.3: a Transfer-Encoding other than exactly one
// "chunked", Transfer-Encoding with Content-Length or in HTTP/1.0), for an HTTP/1.1 request
// without exactly one Host (or any with several), and for a chunk extension over
// max_chunk_extension_bytes; 413 for a body over max_body_bytes; 431 for header or trailer
// fields over max_header_bytes. A connection that is silent or too slow is closed without an
// answer. The session's read buffer is bounded by these limits, so no client can make the
// server hold more than about max_header_bytes + max_body_bytes per connection; an exception
// from Beast or an allocation closes that connection, never the server.
//
// Connections refused or closed to admit others are not logged one by one: one "connections
// shed or refused" line with counts per reason is logged at most every 10 seconds.
//
// Thread-safety: every method may be called from any thread. Stop() and the
// destructor abort if called on a server thread (from inside a Handler), where they would deadlock.
class HttpServer {
 public:
  // Start binds |options.address|:|options.port| and starts serving |router|. kInvalidArgument
  // if the address does not parse, an option is out of range, or |options.tls| is unusable (no
  // certificate or key, a key that does not match the leaf, client_trust_anchors not matching
  // client_auth); kUnavailable if the socket cannot be bound (port in use, address not local, no
  // permission).
  [[nodiscard]] static Result<std::unique_ptr<HttpServer>> Start(HttpServerOptions options,
                                                                 Router router);

  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Stops (see Stop) and joins the server threads.
  ~HttpServer();

  std::string address() const;  // The bound address, e.g. "127.0.0.1".
  std::uint16_t port() const;   // The bound port; the real one when 0 was asked.

  // Stop stops accepting, closes connections that are reading or idle, lets requests whose
  // Handler is running or whose response is being written finish (for at most drain_timeout,
  // though a Handler that is still running is always waited for), then closes everything and
  // joins the threads. Idempotent; concurrent callers all return once the server has stopped.
  void Stop();

  // AddClientTrustAnchor adds an anchor for client certificates while the server runs (a
  // manufacturer CA registered after start): later handshakes accept chains ending at it, and
  // name its subject among the CertificateRequest's certificate_authorities (RFC 8446 §4.2.4).
  // An anchor already trusted is accepted and changes nothing. Connections already established
  // are untouched. kConflict (fleetid's "failed precondition") on a listener that does not ask
  // for client certificates; kInvalidArgument for a null anchor. Thread-safe.
  [[nodiscard]] Result<void> AddClientTrustAnchor(const X509Ref& anchor);

  // SetCertificate replaces the server certificate chain and key for new TLS handshakes;
  // connections already established keep theirs. The client trust anchors (those added by
  // AddClientTrustAnchor included) and every other TLS setting carry over. kConflict (fleetid's
  // "failed precondition") on a plain-HTTP listener; kInvalidArgument if the chain is empty or
  // holds null, or the key is null or does not match the leaf. Thread-safe.
  [[nodiscard]] Result<void> SetCertificate(std::vector<X509Ref> certificate_chain,
                                            PkeyRef private_key);

  // max_connections and max_connections_per_address as resolved at Start.
  std::size_t max_connections() const;
  std::size_t max_connections_per_address() const;

 private:
  class Impl;
  explicit HttpServer(std::unique_ptr<Impl> impl);

  std::unique_ptr<Impl> impl_;
};

}  // namespace fleetid::server

#endif  // FLEETID_SERVER_HTTP_SERVER_H_
