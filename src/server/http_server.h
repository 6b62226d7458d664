// fleetid::server: the HTTP/1.1 front that OCSP, CRL, EST and the REST API plug into.
//
// A Router maps (method, path) to a synchronous Handler; HttpServer owns the listening socket, a
// thread pool and every connection, and enforces the size limits and timeouts in
// HttpServerOptions before a Handler ever sees a request. Boost.Beast and Boost.Asio are private
// to http_server.cc.
//
// WARNING: The server speaks plain HTTP. TLS (EST needs it) is terminated elsewhere for now, so
// remote_address is the peer of this socket, not necessarily the device.
#ifndef FLEETID_SERVER_HTTP_SERVER_H_
#define FLEETID_SERVER_HTTP_SERVER_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/error.h"

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

struct HttpServerOptions {
  // A numeric IPv4 or IPv6 address; no host names.
  std::string address = "127.0.0.1";
  // 0 picks a free port; read it back with HttpServer::port().
  std::uint16_t port = 8080;
  // I/O and Handler threads; at least 1.
  int threads = 2;
  // Request line plus headers; more is answered 431.
  std::size_t max_header_bytes = std::size_t{8} * 1024;
  // More is answered 413 and the connection closed.
  std::size_t max_body_bytes = std::size_t{64} * 1024;
  // Connections beyond this are closed right after accept.
  std::size_t max_connections = 1024;
  // A whole request, from its first byte, must arrive within this or the connection is dropped
  // without an answer. A new connection must complete its first request within this from accept.
  std::chrono::seconds read_timeout{10};
  // A keep-alive connection may idle this long between requests.
  std::chrono::seconds idle_timeout{30};
  // A response must be taken by the client within this.
  std::chrono::seconds write_timeout{10};
  // Stop() waits at most this for in-flight requests.
  std::chrono::seconds drain_timeout{5};
};

// HttpServer serves a Router over HTTP/1.0 and HTTP/1.1 (keep-alive, pipelining,
// Expect: 100-continue) on its own thread pool.
//
// Errors the server answers itself, all with a JSON body and Connection: close: 400 for bytes
// that are not HTTP/1.0 or HTTP/1.1 (an HTTP/2 preface included), 413 for a body over
// max_body_bytes, 431 for headers over max_header_bytes. A connection that is silent or too slow
// is closed without an answer.
//
// Thread-safety: address(), port() and Stop() may be called from any thread. Stop() and the
// destructor abort if called on a server thread (from inside a Handler), where they would deadlock.
class HttpServer {
 public:
  // Start binds |options.address|:|options.port| and starts serving |router|. kInvalidArgument
  // if the address does not parse or an option is out of range; kUnavailable if the socket cannot
  // be bound (port in use, address not local, no permission).
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

 private:
  class Impl;
  explicit HttpServer(std::unique_ptr<Impl> impl);

  std::unique_ptr<Impl> impl_;
};

}  // namespace fleetid::server

#endif  // FLEETID_SERVER_HTTP_SERVER_H_
