#include "server/request_parser.h"

#include <algorithm>
#include <cstdint>
#include <exception>
#include <functional>
#include <limits>
#include <utility>

#include <fmt/core.h>
#include <boost/asio/buffer.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/field.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>

#include "server/http_text.h"

namespace fleetid::server::internal {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;

// A chunk-size line beside its extension: the previous chunk's CRLF, up to 16 hex digits (Beast
// refuses larger sizes), the line's CRLF, and slack for leading zeros.
constexpr std::size_t kChunkLineOverhead = 64;

std::string_view ToStd(beast::string_view s) { return {s.data(), s.size()}; }

std::string_view TrimOws(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool IsHexDigit(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

// StartsLastChunk says whether |pending|, the unparsed rest of a chunked body, begins with the
// last-chunk ("0" [ext] CRLF), after which only trailer fields follow (RFC 9112 §7.1).
bool StartsLastChunk(std::string_view pending) {
  if (pending.starts_with("\r\n")) pending.remove_prefix(2);
  std::size_t digits = 0;
  while (digits < pending.size() && IsHexDigit(pending[digits])) {
    if (pending[digits] != '0') return false;
    ++digits;
  }
  return digits > 0 && digits < pending.size();
}

}  // namespace

class RequestParser::Impl {
 public:
  explicit Impl(const RequestLimits& limits) : max_extension_(limits.max_chunk_extension_bytes) {
    parser.header_limit(static_cast<std::uint32_t>(
        std::min<std::size_t>(limits.max_header_bytes, std::numeric_limits<std::uint32_t>::max())));
    parser.body_limit(limits.max_body_bytes);
    on_chunk_header_ = [this](std::uint64_t, beast::string_view extensions, beast::error_code& ec) {
      if (extensions.size() > max_extension_) {
        extension_too_long = true;
        ec = http::error::bad_chunk_extension;
      }
    };
    parser.on_chunk_header(on_chunk_header_);
  }

  http::request_parser<http::string_body> parser;
  bool extension_too_long = false;

 private:
  const std::size_t max_extension_;
  std::function<void(std::uint64_t, beast::string_view, beast::error_code&)> on_chunk_header_;
};

namespace {

std::size_t FieldBytes(const http::request_parser<http::string_body>& parser) {
  std::size_t total = 0;
  for (const auto& field : parser.get().base()) {
    total += field.name_string().size() + field.value().size();
  }
  return total;
}

}  // namespace

std::size_t MaxPendingBytes(const RequestLimits& limits) {
  return limits.max_header_bytes + limits.max_chunk_extension_bytes + kChunkLineOverhead;
}

RequestParser::RequestParser(const RequestLimits& limits)
    : limits_(limits),
      max_pending_(MaxPendingBytes(limits)),
      impl_(std::make_unique<Impl>(limits)) {}

RequestParser::~RequestParser() = default;

void RequestParser::Fail(int status, std::string_view error, std::string message) {
  state_ = State::kFailed;
  failure_ = {.status = status, .error = error, .message = std::move(message)};
}

std::size_t RequestParser::Put(std::string_view bytes) {
  if (state_ == State::kDone || state_ == State::kFailed) return 0;
  auto& parser = impl_->parser;
  std::size_t consumed = 0;
  try {
    while (consumed < bytes.size() && !parser.is_done()) {
      const bool header_was_done = parser.is_header_done();
      if (!header_was_done) {
        // Beast applies its header limit to each put, and keeps the start line and the whole
        // fields it has parsed while the rest is due: the limit shrinks by what it has kept.
        parser.header_limit(static_cast<std::uint32_t>(std::min<std::size_t>(
            limits_.max_header_bytes - std::min(header_bytes_, limits_.max_header_bytes),
            std::numeric_limits<std::uint32_t>::max())));
      }
      beast::error_code ec;
      const std::size_t n = parser.put(
          boost::asio::const_buffer(bytes.data() + consumed, bytes.size() - consumed), ec);
      consumed += n;
      if (!header_was_done) header_bytes_ += n;
      if (ec == http::error::header_limit ||
          (!header_was_done && header_bytes_ > limits_.max_header_bytes)) {
        Fail(431, "header_fields_too_large",
             fmt::format("request headers exceed {} bytes", limits_.max_header_bytes));
        return consumed;
      }
      if (ec == http::error::need_more) break;
      if (ec == http::error::body_limit) {
        Fail(413, "payload_too_large",
             fmt::format("request body exceeds {} bytes", limits_.max_body_bytes));
        return consumed;
      }
      if (ec && impl_->extension_too_long) {
        Fail(400, "invalid_argument",
             fmt::format("a chunk extension exceeds {} bytes", limits_.max_chunk_extension_bytes));
        return consumed;
      }
      if (ec) {
        Fail(400, "invalid_argument", "malformed HTTP request");
        return consumed;
      }
      if (!header_was_done && parser.is_header_done()) {
        header_field_bytes_ = FieldBytes(parser);
        if (!CheckHeader()) return consumed;
        // A snapshot: Beast files a trailer field beside a header field of the same name.
        for (const auto& field : parser.get().base()) {
          std::string name(ToStd(field.name_string()));
          std::transform(name.begin(), name.end(), name.begin(),
                         [](char c) { return AsciiLower(c); });
          headers_.emplace_back(std::move(name), std::string(ToStd(field.value())));
        }
        state_ = State::kHeaderDone;
      }
      if (n == 0) break;
    }
    if (parser.is_done()) {
      // Trailer fields (RFC 9112 §7.1.2) count against the header limit.
      const std::size_t trailer_bytes = FieldBytes(parser) - header_field_bytes_;
      if (header_bytes_ + trailer_bytes > limits_.max_header_bytes) {
        Fail(431, "header_fields_too_large",
             fmt::format("request header and trailer fields exceed {} bytes",
                         limits_.max_header_bytes));
        return consumed;
      }
      state_ = State::kDone;
    } else if (parser.is_header_done()) {
      CheckPending(bytes.substr(consumed));
    } else if (header_bytes_ + (bytes.size() - consumed) > limits_.max_header_bytes) {
      Fail(431, "header_fields_too_large",
           fmt::format("request headers exceed {} bytes", limits_.max_header_bytes));
    }
  } catch (const std::exception&) {
    Fail(400, "invalid_argument", "malformed HTTP request");
  }
  return consumed;
}

bool RequestParser::CheckHeader() {
  const auto& header = impl_->parser.get().base();
  std::size_t transfer_encodings = 0;
  std::size_t hosts = 0;
  bool content_length = false;
  bool chunked_only = true;
  for (const auto& field : header) {
    switch (field.name()) {
      case http::field::transfer_encoding:
        ++transfer_encodings;
        chunked_only = chunked_only && EqualsIgnoreCase(TrimOws(ToStd(field.value())), "chunked");
        break;
      case http::field::host:
        ++hosts;
        break;
      case http::field::content_length:
        content_length = true;
        break;
      default:
        break;
    }
  }
  // RFC 9112 §6.1 and §6.3: anything but one "chunked" is a framing the server does not share
  // with every intermediary, and so a way to smuggle a second request past one.
  if (transfer_encodings > 1) {
    Fail(400, "invalid_argument", "more than one Transfer-Encoding field");
    return false;
  }
  if (transfer_encodings == 1 && !chunked_only) {
    Fail(400, "invalid_argument", "Transfer-Encoding must be exactly \"chunked\"");
    return false;
  }
  if (transfer_encodings == 1 && content_length) {
    Fail(400, "invalid_argument", "Transfer-Encoding and Content-Length together");
    return false;
  }
  if (transfer_encodings == 1 && header.version() != 11) {
    Fail(400, "invalid_argument", "Transfer-Encoding in an HTTP/1.0 request");
    return false;
  }
  // RFC 9112 §3.2: exactly one Host in HTTP/1.1, never several.
  if (hosts > 1 || (hosts == 0 && header.version() == 11)) {
    Fail(400, "invalid_argument", "an HTTP/1.1 request needs exactly one Host field");
    return false;
  }
  return true;
}

void RequestParser::CheckPending(std::string_view pending) {
  if (pending.empty()) return;
  const std::size_t max_line = limits_.max_chunk_extension_bytes + kChunkLineOverhead;
  if (!impl_->parser.chunked()) {
    if (pending.size() > max_pending_) Fail(400, "invalid_argument", "malformed HTTP request");
    return;
  }
  if (StartsLastChunk(pending)) {
    const std::size_t trailer_budget =
        limits_.max_header_bytes - std::min(header_bytes_, limits_.max_header_bytes);
    if (pending.size() > max_line + trailer_budget) {
      Fail(431, "header_fields_too_large",
           fmt::format("request header and trailer fields exceed {} bytes",
                       limits_.max_header_bytes));
    }
    return;
  }
  if (pending.size() > max_line) {
    Fail(400, "invalid_argument",
         fmt::format("a chunk extension exceeds {} bytes", limits_.max_chunk_extension_bytes));
  }
}

bool RequestParser::ExpectsContinue() const {
  const auto& parser = impl_->parser;
  if (!parser.is_header_done() || parser.is_done()) return false;
  const auto& header = parser.get();
  return header.version() == 11 &&
         EqualsIgnoreCase(TrimOws(ToStd(header[http::field::expect])), "100-continue");
}

unsigned RequestParser::Version() const { return impl_->parser.get().version(); }

bool RequestParser::KeepAlive() const { return impl_->parser.get().keep_alive(); }

HttpRequest RequestParser::TakeRequest() {
  http::request<http::string_body> message = impl_->parser.release();
  HttpRequest request;
  request.method = std::string(ToStd(message.method_string()));
  request.target = std::string(ToStd(message.target()));
  const std::size_t question = request.target.find('?');
  request.path = request.target.substr(0, question);
  if (question != std::string::npos) request.query = request.target.substr(question + 1);
  // Trailer fields were counted, not merged: a handler sees only the header's fields.
  request.headers = std::move(headers_);
  request.body = std::move(message.body());
  return request;
}

}  // namespace fleetid::server::internal
