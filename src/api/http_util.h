// Internal to fleetid::api: the HTTP helpers the route files share, so that an answer of one
// kind (an EST error, a base64 body, a cacheable binary) is built in one place.
#ifndef FLEETID_API_HTTP_UTIL_H_
#define FLEETID_API_HTTP_UTIL_H_

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/clock.h"
#include "common/error.h"
#include "server/http_server.h"

namespace fleetid::api::internal {

// BodyBytes views a request body as the bytes it is.
std::span<const std::uint8_t> BodyBytes(const server::HttpRequest& req);

// WithoutLineEnds is |text| without its trailing CRs and LFs (a JWS posted with curl -d @file).
std::string_view WithoutLineEnds(std::string_view text);

// IsMediaType says whether the Content-Type |content_type| names |type| (lower case),
// case-insensitively, parameters ignored (RFC 9110 §8.3.1).
bool IsMediaType(std::string_view content_type, std::string_view type);

// Binary answers 200 with |body| as |content_type|.
server::HttpResponse Binary(std::string content_type, std::span<const std::uint8_t> body);

// JsonAnswer answers 200 with |body|, or the error as HttpResponse::FromError does.
server::HttpResponse JsonAnswer(const Result<nlohmann::json>& body);

// TlsOnly is the refusal of an EST or device call that came over plain HTTP.
Error TlsOnly();

// EstError answers an EST error in text/plain (RFC 7030 §4.2.3): the status carries the meaning,
// the body is the message and a newline.
server::HttpResponse EstError(const Error& error);

// EstOk answers 200 with |der| as |content_type| in base64, as EST sends DER, with
// Content-Transfer-Encoding: base64.
server::HttpResponse EstOk(std::string_view content_type, std::span<const std::uint8_t> der);

// EstCsrBody is the DER PKCS#10 request of a simpleenroll or simplereenroll body (RFC 7030
// §4.2.1): base64, line breaks allowed, as application/pkcs10 (IsMediaType: any case, parameters
// ignored) or with no Content-Type. A refusal is kInvalidArgument.
Result<std::vector<std::uint8_t>> EstCsrBody(const server::HttpRequest& req);

// Base64Lines is |der| in base64 with lines of 64 characters ended by CRLF (RFC 2045 allows 76).
std::string Base64Lines(std::span<const std::uint8_t> der);

// PercentDecode undoes percent-encoding (RFC 3986 §2.1); a '%' not followed by two hex digits
// stays as it is.
std::string PercentDecode(std::string_view text);

// OcspBase64Decode decodes the base64 of a GET OCSP request (RFC 6960 Appendix A.1): padded,
// canonical (RFC 4648 §3.5), no whitespace, at most 16384 characters; nullopt otherwise.
std::optional<std::vector<std::uint8_t>> OcspBase64Decode(std::string_view text);

}  // namespace fleetid::api::internal

#endif  // FLEETID_API_HTTP_UTIL_H_
