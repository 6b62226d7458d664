#include "api/http_util.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <utility>

#include "crypto/jws.h"

namespace fleetid::api::internal {

using server::HttpRequest;
using server::HttpResponse;

namespace {

constexpr std::string_view kBase64Symbols =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

}  // namespace

std::span<const std::uint8_t> BodyBytes(const HttpRequest& req) {
  const auto* data = reinterpret_cast<const std::uint8_t*>(req.body.data());
  return {data, req.body.size()};
}

std::string_view WithoutLineEnds(std::string_view text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.remove_suffix(1);
  return text;
}

bool IsMediaType(std::string_view content_type, std::string_view type) {
  content_type = content_type.substr(0, content_type.find(';'));
  while (!content_type.empty() && (content_type.back() == ' ' || content_type.back() == '\t')) {
    content_type.remove_suffix(1);
  }
  return content_type.size() == type.size() &&
         std::equal(type.begin(), type.end(), content_type.begin(), [](char a, char b) {
           return a == std::tolower(static_cast<unsigned char>(b));
         });
}

HttpResponse Binary(std::string content_type, std::span<const std::uint8_t> body) {
  HttpResponse r;
  r.status = 200;
  r.content_type = std::move(content_type);
  r.body.assign(body.begin(), body.end());
  return r;
}

HttpResponse JsonAnswer(const Result<nlohmann::json>& body) {
  if (!body) return HttpResponse::FromError(body.error());
  return HttpResponse::Json(200, body->dump());
}

Error TlsOnly() {
  return Error(ErrorCode::kInvalidArgument, "EST and device calls are served over HTTPS only");
}

HttpResponse EstError(const Error& error) {
  HttpResponse r;
  r.status = HttpStatus(error.code());
  r.content_type = "text/plain; charset=utf-8";
  r.body = error.message() + "\n";
  return r;
}

Result<std::vector<std::uint8_t>> EstCsrBody(const HttpRequest& req) {
  const std::string_view type = req.Header("content-type");
  if (!type.empty() && !IsMediaType(type, "application/pkcs10")) {
    return MakeError(ErrorCode::kInvalidArgument, "the body must be application/pkcs10, not {}",
                     type);
  }
  auto der = crypto::Base64Decode(req.body);
  if (!der)
    return MakeError(ErrorCode::kInvalidArgument, "the body is not base64: {}",
                     der.error().message());
  return der;
}

std::string Base64Lines(std::span<const std::uint8_t> der) {
  const std::string flat = crypto::Base64Encode(der);
  std::string out;
  out.reserve(flat.size() + flat.size() / 64 + 2);
  for (std::size_t i = 0; i < flat.size(); i += 64) {
    out.append(flat, i, 64);
    out.append("\r\n");
  }
  return out;
}

HttpResponse EstOk(std::string_view content_type, std::span<const std::uint8_t> der) {
  HttpResponse r;
  r.content_type = std::string(content_type);
  r.headers.emplace_back("Content-Transfer-Encoding", "base64");
  r.body = Base64Lines(der);
  return r;
}

std::string PercentDecode(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '%' && i + 2 < text.size()) {
      unsigned v = 0;
      auto [end, ec] = std::from_chars(text.data() + i + 1, text.data() + i + 3, v, 16);
      if (ec == std::errc() && end == text.data() + i + 3) {
        out.push_back(static_cast<char>(v));
        i += 2;
        continue;
      }
    }
    out.push_back(text[i]);
  }
  return out;
}

std::optional<std::vector<std::uint8_t>> OcspBase64Decode(std::string_view text) {
  if (text.empty() || text.size() % 4 != 0 || text.size() > 16384) return std::nullopt;
  // Symbols, then at most two '=': crypto::Base64Decode alone would skip whitespace, and
  // EVP_DecodeBlock also takes padding inside the text and keeps its zero bits as data.
  std::string_view symbols = text;
  for (int i = 0; i < 2 && symbols.ends_with('='); ++i) symbols.remove_suffix(1);
  if (symbols.find_first_not_of(kBase64Symbols) != std::string_view::npos) return std::nullopt;
  auto der = crypto::Base64Decode(text);
  if (!der.has_value()) return std::nullopt;
  return std::move(*der);
}

}  // namespace fleetid::api::internal
