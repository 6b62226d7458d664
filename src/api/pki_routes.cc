#include <algorithm>
#include <charconv>

#include "api/http_util.h"
#include "api/routes.h"

namespace fleetid::api {
namespace {

using internal::Binary;
using server::HttpRequest;
using server::HttpResponse;

// RFC 5019 §6.2: caching headers derived from the response's own validity.
void AddCaching(HttpResponse& r, TimePoint now, TimePoint this_update, TimePoint next_update,
                const std::string& etag) {
  const auto max_age = std::max<std::int64_t>(
      0, std::chrono::duration_cast<std::chrono::seconds>(next_update - now).count());
  r.headers.emplace_back("Cache-Control",
                         fmt::format("max-age={}, public, no-transform, must-revalidate", max_age));
  r.headers.emplace_back("Last-Modified", server::HttpDate(this_update));
  r.headers.emplace_back("Expires", server::HttpDate(next_update));
  r.headers.emplace_back("ETag", etag);
}

// Matches reports whether an If-None-Match header names |etag| (RFC 9110 §13.1.2: a list of
// entity tags, weak comparison, or "*").
bool Matches(std::string_view if_none_match, std::string_view etag) {
  while (!if_none_match.empty()) {
    const std::size_t comma = if_none_match.find(',');
    std::string_view tag = if_none_match.substr(0, comma);
    if_none_match = comma == std::string_view::npos ? "" : if_none_match.substr(comma + 1);
    while (!tag.empty() && (tag.front() == ' ' || tag.front() == '\t')) tag.remove_prefix(1);
    while (!tag.empty() && (tag.back() == ' ' || tag.back() == '\t')) tag.remove_suffix(1);
    if (tag.starts_with("W/")) tag.remove_prefix(2);
    if (tag == "*" || tag == etag) return true;
  }
  return false;
}

// Cacheable answers a GET for a cacheable body: 304 with the caching headers when the client
// already holds this entity, the body otherwise.
HttpResponse Cacheable(const HttpRequest& req, std::string content_type,
                       std::span<const std::uint8_t> body, TimePoint now, TimePoint this_update,
                       TimePoint next_update, const std::string& etag) {
  HttpResponse r;
  const std::string_view if_none_match = req.Header("If-None-Match");
  if (!if_none_match.empty() && Matches(if_none_match, etag)) {
    r.status = 304;
    r.content_type.clear();
  } else {
    r = Binary(std::move(content_type), body);
  }
  AddCaching(r, now, this_update, next_update, etag);
  return r;
}

HttpResponse OcspResponse(const pki::OcspAnswer& answer, const Clock& clock) {
  HttpResponse r = Binary("application/ocsp-response", answer.der);
  if (answer.cacheable) {
    AddCaching(r, clock.Now(), answer.this_update, answer.next_update, answer.etag);
  } else {
    r.headers.emplace_back("Cache-Control", "no-store");
  }
  return r;
}

HttpResponse NoSuch(std::string_view what) {
  return HttpResponse::FromError(Error(ErrorCode::kNotFound, fmt::format("no such {}", what)));
}

// GET /crl/{issuer}/{partition}.crl: the distribution point written into each certificate
// (a device certificate's issuance hour, or a long-lived certificate's negative partition);
// /crl/{issuer}/{partition}-delta.crl: its delta CRL (the full CRL's freshestCRL).
HttpResponse Crl(pki::Authority& authority, const Clock& clock, const HttpRequest& req) {
  std::string_view rest = std::string_view(req.path).substr(5);
  const std::size_t slash = rest.find('/');
  if (slash == std::string_view::npos || !rest.ends_with(".crl")) return NoSuch("CRL");
  rest.remove_suffix(4);
  const bool delta = rest.ends_with("-delta");
  if (delta) rest.remove_suffix(6);
  const std::string_view issuer = rest.substr(0, slash);
  const std::string_view number = rest.substr(slash + 1);
  std::int64_t partition = 0;
  auto [end, ec] = std::from_chars(number.data(), number.data() + number.size(), partition);
  // Partitions of long-lived certificates are negative; only the canonical spelling is one.
  if (number.empty() || ec != std::errc() || end != number.data() + number.size() ||
      std::to_string(partition) != number) {
    return NoSuch("CRL");
  }
  auto crl = authority.Crl(issuer, partition, delta);
  if (!crl) return HttpResponse::FromError(crl.error());
  return Cacheable(req, "application/pkix-crl", crl->der, clock.Now(), crl->this_update,
                   crl->next_update, crl->etag);
}

// GET /ca/{name}.crt: AIA caIssuers.
HttpResponse CaCertificate(pki::Authority& authority, const HttpRequest& req) {
  std::string_view name = std::string_view(req.path).substr(4);
  if (!name.ends_with(".crt")) return NoSuch("certificate");
  name.remove_suffix(4);
  auto der = authority.CaCertificate(name);
  if (!der) return HttpResponse::FromError(der.error());
  HttpResponse r = Binary("application/pkix-cert", *der);
  r.headers.emplace_back("Cache-Control", "max-age=86400, public");
  return r;
}

}  // namespace

void RegisterPkiRoutes(server::Router& router, pki::Authority& authority, const Clock& clock) {
  router.Add("POST", "/ocsp", [&authority, &clock](const HttpRequest& req) {
    // A body of another media type is not an OCSP request: refused at the HTTP layer, before
    // any parsing, so it can cost neither a parse nor a signature.
    if (!internal::IsMediaType(req.Header("Content-Type"), "application/ocsp-request")) {
      return HttpResponse::JsonError(415, "unsupported_media_type",
                                     "an OCSP request is application/ocsp-request");
    }
    return OcspResponse(authority.Ocsp(internal::BodyBytes(req)), clock);
  });
  // GET /ocsp/{url-encoding of base-64 encoding of the DER OCSPRequest} (RFC 6960 Appendix A.1).
  router.Add("GET", "/ocsp/*", [&authority, &clock](const HttpRequest& req) {
    auto der =
        internal::OcspBase64Decode(internal::PercentDecode(std::string_view(req.path).substr(6)));
    if (!der) der.emplace();  // answered as malformedRequest
    const pki::OcspAnswer answer = authority.Ocsp(*der);
    if (!answer.cacheable) return OcspResponse(answer, clock);
    return Cacheable(req, "application/ocsp-response", answer.der, clock.Now(), answer.this_update,
                     answer.next_update, answer.etag);
  });
  router.Add("GET", "/crl/*",
             [&authority, &clock](const HttpRequest& req) { return Crl(authority, clock, req); });
  router.Add("GET", "/ca/*",
             [&authority](const HttpRequest& req) { return CaCertificate(authority, req); });
}

}  // namespace fleetid::api
