// fleetid::server::internal::RequestParser: the one place where bytes from a client become an
// HttpRequest. The Session feeds it whatever the socket delivered, and the fuzzer
// (fuzz/http_request_fuzzer.cc) feeds it raw bytes, so both exercise the same limits and checks.
// Internal to the server component; Boost.Beast stays inside request_parser.cc.
#ifndef FLEETID_SERVER_REQUEST_PARSER_H_
#define FLEETID_SERVER_REQUEST_PARSER_H_

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "server/http_server.h"

namespace fleetid::server::internal {

// RequestLimits bounds what one request may make the server hold (see HttpServerOptions).
struct RequestLimits {
  std::size_t max_header_bytes = std::size_t{8} * 1024;  // Request line, fields and trailers.
  std::size_t max_body_bytes = std::size_t{64} * 1024;
  std::size_t max_chunk_extension_bytes = 256;  // Per chunk-size line (RFC 9112 §7.1.1).
};

// MaxPendingBytes is what a RequestParser with |limits| may leave unconsumed at most: a header
// being received, or a chunk-size line with its extension followed by trailer fields.
std::size_t MaxPendingBytes(const RequestLimits& limits);

// ParseFailure is the answer the server sends itself before closing the connection.
struct ParseFailure {
  int status = 400;                             // 400, 413 or 431.
  std::string_view error = "invalid_argument";  // JSON "error" member.
  std::string message;                          // Safe to show; holds no client bytes.
};

// RequestParser reads one HTTP/1.0 or HTTP/1.1 request. Beyond RFC 9112 syntax (which Beast
// checks) it refuses, with 400: a Transfer-Encoding other than exactly "chunked", or more than one
// Transfer-Encoding field, or one beside Content-Length (RFC 9112 §6.3, request smuggling); an
// HTTP/1.1 request without exactly one Host field, or any request with several (RFC 9112 §3.2);
// a chunk extension over max_chunk_extension_bytes. Trailer fields count against
// max_header_bytes with the header (431); a body over max_body_bytes is 413.
//
// The caller keeps the bytes Put did not consume and passes them again, followed by new ones;
// they never exceed max_pending(), so a read buffer of max_pending() plus one read suffices.
// Not thread-safe; one parser per request.
class RequestParser {
 public:
  enum class State {
    kNeedMore,    // The header is incomplete.
    kHeaderDone,  // The header is complete and valid; body bytes are still due.
    kDone,        // The request is complete: take it with TakeRequest.
    kFailed,      // Answer failure() and close.
  };

  explicit RequestParser(const RequestLimits& limits);
  ~RequestParser();
  RequestParser(const RequestParser&) = delete;
  RequestParser& operator=(const RequestParser&) = delete;

  // Put parses a prefix of |bytes| and returns its length. It never throws: an exception from
  // Beast or from allocation fails the request with 400.
  std::size_t Put(std::string_view bytes);

  State state() const { return state_; }
  const ParseFailure& failure() const { return failure_; }
  std::size_t max_pending() const { return max_pending_; }

  // ExpectsContinue is true once the header is done when an HTTP/1.1 client asked for
  // "100-continue" (RFC 9110 §10.1.1) and the body is still due.
  bool ExpectsContinue() const;

  // Version is 10 or 11; KeepAlive says whether the connection may carry another request. Both
  // only once the header is done.
  unsigned Version() const;
  bool KeepAlive() const;

  // TakeRequest moves the request out once state() is kDone: method, target, path, query,
  // headers (names lower-cased) and body; the caller fills in the connection's fields.
  HttpRequest TakeRequest();

 private:
  class Impl;

  void Fail(int status, std::string_view error, std::string message);
  bool CheckHeader();
  void CheckPending(std::string_view pending);

  const RequestLimits limits_;
  const std::size_t max_pending_;
  std::unique_ptr<Impl> impl_;
  State state_ = State::kNeedMore;
  ParseFailure failure_;
  std::size_t header_bytes_ = 0;        // Bytes of the request line and fields.
  std::size_t header_field_bytes_ = 0;  // Their names and values, to count trailers.
  std::vector<std::pair<std::string, std::string>> headers_;  // The header's, names lowered.
};

}  // namespace fleetid::server::internal

#endif  // FLEETID_SERVER_REQUEST_PARSER_H_
