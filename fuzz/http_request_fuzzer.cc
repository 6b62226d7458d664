// Fuzzes internal::RequestParser, the code every HTTP request passes through (Session feeds it
// the bytes the socket delivered). The input is split into reads the way a socket might, and each
// request in it is parsed in turn, as a keep-alive connection does.
//
// Invariants checked: what the parser leaves unconsumed never exceeds max_pending() (the session's
// read buffer is sized by it, so memory stays bounded); failures are 400, 413 or 431; a request
// that completes stays within the limits, has exactly one Host in HTTP/1.1 and at most one
// Transfer-Encoding, which is "chunked".
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "server/http_server.h"
#include "server/request_parser.h"

namespace {

using fleetid::server::HttpRequest;
using fleetid::server::HttpServerOptions;
using fleetid::server::internal::RequestLimits;
using fleetid::server::internal::RequestParser;

void Check(bool condition) {
  if (!condition) __builtin_trap();
}

// The limits a default HttpServerOptions gives the server, and small ones the fuzzer reaches
// quickly.
RequestLimits ServerLimits() {
  const HttpServerOptions options;
  return {.max_header_bytes = options.max_header_bytes,
          .max_body_bytes = options.max_body_bytes,
          .max_chunk_extension_bytes = options.max_chunk_extension_bytes};
}
constexpr RequestLimits kSmallLimits{
    .max_header_bytes = 512, .max_body_bytes = 1024, .max_chunk_extension_bytes = 32};

void CheckRequest(const HttpRequest& request, const RequestLimits& limits, unsigned version) {
  Check(!request.method.empty());
  Check(request.body.size() <= limits.max_body_bytes);
  std::size_t hosts = 0;
  std::size_t transfer_encodings = 0;
  std::size_t field_bytes = 0;
  for (const auto& [name, value] : request.headers) {
    Check(std::none_of(name.begin(), name.end(), [](char c) { return c >= 'A' && c <= 'Z'; }));
    field_bytes += name.size() + value.size();
    if (name == "host") ++hosts;
    if (name == "transfer-encoding") ++transfer_encodings;
  }
  Check(field_bytes <= limits.max_header_bytes);
  Check(hosts <= 1);
  Check(version != 11 || hosts == 1);
  Check(transfer_encodings <= 1);
}

// ParseConnection feeds |input| in reads of varying sizes, one request after another.
void ParseConnection(std::string_view input, const RequestLimits& limits) {
  std::uint32_t lcg = static_cast<std::uint32_t>(input.size()) * 2654435761U + 1;
  std::string pending;
  auto parser = std::make_unique<RequestParser>(limits);
  for (int requests = 0; requests < 64;) {
    if (!input.empty()) {
      lcg = lcg * 1664525U + 1013904223U;
      const std::size_t read = std::min<std::size_t>(input.size(), 1 + (lcg >> 16) % 4096);
      pending.append(input.substr(0, read));
      input.remove_prefix(read);
    }
    const std::size_t consumed = parser->Put(pending);
    Check(consumed <= pending.size());
    pending.erase(0, consumed);
    switch (parser->state()) {
      case RequestParser::State::kNeedMore:
      case RequestParser::State::kHeaderDone:
        Check(pending.size() <= parser->max_pending());
        if (input.empty()) return;  // The client stopped sending.
        break;
      case RequestParser::State::kFailed: {
        const int status = parser->failure().status;
        Check(status == 400 || status == 413 || status == 431);
        return;
      }
      case RequestParser::State::kDone: {
        const unsigned version = parser->Version();
        Check(version == 10 || version == 11);
        const bool keep_alive = parser->KeepAlive();
        const HttpRequest request = parser->TakeRequest();
        CheckRequest(request, limits, version);
        if (!keep_alive) return;
        ++requests;
        parser = std::make_unique<RequestParser>(limits);
        if (pending.empty() && input.empty()) return;
        break;
      }
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  ParseConnection(input, ServerLimits());
  ParseConnection(input, kSmallLimits);
  return 0;
}
