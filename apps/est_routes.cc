#include "apps/est_routes.h"

#include <fmt/chrono.h>
#include <nlohmann/json.hpp>

#include "crypto/jws.h"

namespace fleetid::apps {
namespace {

using Json = nlohmann::json;
using server::HttpRequest;
using server::HttpResponse;

std::int64_t Unix(TimePoint t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

// EST answers errors in text/plain (RFC 7030 §4.2.3); the status carries the meaning.
HttpResponse EstError(const Error& error) {
  HttpResponse r;
  r.status = HttpStatus(error.code());
  r.content_type = "text/plain; charset=utf-8";
  r.body = error.message() + "\n";
  return r;
}

// Base64Body is a DER body in base64 with lines of 64 characters (RFC 2045 allows 76).
std::string Base64Body(std::span<const std::uint8_t> der) {
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
  r.body = Base64Body(der);
  return r;
}

Error TlsOnly() {
  return Error(ErrorCode::kInvalidArgument, "EST and device calls are served over HTTPS only");
}

// NeedsTls refuses EST and device calls over plain HTTP: their identity is the TLS client's.
std::optional<HttpResponse> NeedsTls(const HttpRequest& req) {
  if (req.tls) return std::nullopt;
  return EstError(TlsOnly());
}

Result<std::vector<std::uint8_t>> CsrBody(const HttpRequest& req) {
  const std::string_view type = req.Header("content-type");
  if (!type.empty() && !type.starts_with("application/pkcs10")) {
    return MakeError(ErrorCode::kInvalidArgument, "the body must be application/pkcs10, not {}", type);
  }
  auto der = crypto::Base64Decode(req.body);
  if (!der) return MakeError(ErrorCode::kInvalidArgument, "the body is not base64: {}", der.error().message());
  return der;
}

HttpResponse Enrolled(Result<pki::CertificateRecord> record) {
  if (!record) return EstError(record.error());
  const std::vector<std::vector<std::uint8_t>> certs{record->der};
  auto p7 = enroll::CertsOnly(certs);
  if (!p7) return EstError(p7.error());
  return EstOk("application/pkcs7-mime; smime-type=certs-only", *p7);
}

Json RecordJson(const pki::CertificateRecord& r) {
  Json j{{"serial", r.serial},
         {"status", pki::StatusName(r.status)},
         {"not_before", Unix(r.not_before)},
         {"not_after", Unix(r.not_after)}};
  if (r.reason) j["reason"] = pki::ReasonName(*r.reason);
  return j;
}

// TooManyRequests is RFC 6585 §4's answer to a device over its rate: 429, and when to come back.
HttpResponse TooManyRequests(const Error& error, const enroll::Throttled& throttled) {
  HttpResponse r = HttpResponse::JsonError(429, "too_many_requests", error.message());
  r.headers.emplace_back("Retry-After", std::to_string(throttled.retry_after.count()));
  return r;
}

}  // namespace

void AddEstRoutes(server::Router& router, enroll::Service& service) {
  router.Add("GET", "/.well-known/est/cacerts", [&service](const HttpRequest& req) {
    if (auto refused = NeedsTls(req)) return *refused;
    auto p7 = service.CaCerts();
    if (!p7) return EstError(p7.error());
    return EstOk("application/pkcs7-mime", *p7);
  });
  router.Add("GET", "/.well-known/est/csrattrs", [](const HttpRequest& req) {
    if (auto refused = NeedsTls(req)) return *refused;
    auto attrs = enroll::Service::CsrAttrs();
    if (!attrs) return EstError(attrs.error());
    return EstOk("application/csrattrs", *attrs);
  });
  router.Add("POST", "/.well-known/est/simpleenroll", [&service](const HttpRequest& req) {
    if (auto refused = NeedsTls(req)) return *refused;
    auto csr = CsrBody(req);
    if (!csr) return EstError(csr.error());
    return Enrolled(service.Enroll(req.client_chain, *csr));
  });
  router.Add("POST", "/.well-known/est/simplereenroll", [&service](const HttpRequest& req) {
    if (auto refused = NeedsTls(req)) return *refused;
    auto csr = CsrBody(req);
    if (!csr) return EstError(csr.error());
    return Enrolled(service.Reenroll(req.client_chain, *csr));
  });

  router.Add("POST", "/attest/v1/nonce", [&service](const HttpRequest& req) {
    if (!req.tls) return HttpResponse::FromError(TlsOnly());
    const Json body = Json::parse(req.body, nullptr, false);
    if (!body.is_object() || !body.contains("purpose") || !body["purpose"].is_string()) {
      return HttpResponse::JsonError(400, "invalid_argument",
                                     R"(the body is {"purpose": "enroll" | "reenroll"})");
    }
    auto purpose = enroll::ParsePurpose(body["purpose"].get<std::string>());
    if (!purpose) return HttpResponse::FromError(purpose.error());
    enroll::Throttled throttled;
    auto nonce = service.IssueNonce(req.client_chain, *purpose, &throttled);
    if (!nonce && throttled.retry_after.count() > 0) {
      return TooManyRequests(nonce.error(), throttled);
    }
    if (!nonce) return HttpResponse::FromError(nonce.error());
    return HttpResponse::Json(200, Json{{"nonce", nonce->value},
                                        {"expires_at", Unix(nonce->expires_at)}}
                                       .dump());
  });
  router.Add("POST", "/attest/v1/evidence", [&service](const HttpRequest& req) {
    if (!req.tls) return HttpResponse::FromError(TlsOnly());
    std::string_view evidence = req.body;
    while (!evidence.empty() && (evidence.back() == '\n' || evidence.back() == '\r')) {
      evidence.remove_suffix(1);
    }
    enroll::Throttled throttled;
    auto appraisal = service.Appraise(req.client_chain, evidence, &throttled);
    if (!appraisal && throttled.retry_after.count() > 0) {
      return TooManyRequests(appraisal.error(), throttled);
    }
    if (!appraisal) return HttpResponse::FromError(appraisal.error());
    return HttpResponse::Json(200, Json{{"appraisal", appraisal->id},
                                        {"result", "pass"},
                                        {"evidence_sha256", appraisal->evidence_sha256}}
                                       .dump());
  });
  router.Add("POST", "/device/v1/rotation/confirm", [&service](const HttpRequest& req) {
    if (!req.tls) return HttpResponse::FromError(TlsOnly());
    auto record = service.Confirm(req.client_chain);
    if (!record) return HttpResponse::FromError(record.error());
    return HttpResponse::Json(200, Json{{"current", RecordJson(*record)}}.dump());
  });
  router.Add("GET", "/device/v1/status", [&service](const HttpRequest& req) {
    if (!req.tls) return HttpResponse::FromError(TlsOnly());
    auto status = service.Status(req.client_chain);
    if (!status) return HttpResponse::FromError(status.error());
    Json body{{"serial", status->device.serial},
              {"state", registry::StateName(status->device.state)},
              {"order", status->decommission_ordered ? Json("decommission") : Json(nullptr)}};
    if (!status->order_id.empty()) body["order_id"] = status->order_id;
    if (status->current) body["current"] = RecordJson(*status->current);
    return HttpResponse::Json(200, body.dump());
  });
  router.Add("POST", "/device/v1/receipt", [&service](const HttpRequest& req) {
    if (!req.tls) return HttpResponse::FromError(TlsOnly());
    std::string_view receipt = req.body;
    while (!receipt.empty() && (receipt.back() == '\n' || receipt.back() == '\r')) {
      receipt.remove_suffix(1);
    }
    auto device = service.RecordReceipt(receipt);
    if (!device) return HttpResponse::FromError(device.error());
    return HttpResponse::Json(200, Json{{"serial", device->serial},
                                        {"state", registry::StateName(device->state)}}
                                       .dump());
  });
}

}  // namespace fleetid::apps
