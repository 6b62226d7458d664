#include <nlohmann/json.hpp>

#include "api/http_util.h"
#include "api/routes.h"
#include "crypto/jws.h"

namespace fleetid::api {
namespace {

using Json = nlohmann::json;
using internal::EstError;
using internal::EstOk;
using internal::TlsOnly;
using server::HttpRequest;
using server::HttpResponse;

// NeedsTls refuses EST calls over plain HTTP: their identity is the TLS client's.
std::optional<HttpResponse> NeedsTls(const HttpRequest& req) {
  if (req.tls) return std::nullopt;
  return EstError(TlsOnly());
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
         {"not_before", UnixSeconds(r.not_before)},
         {"not_after", UnixSeconds(r.not_after)}};
  if (r.reason) j["reason"] = pki::ReasonName(*r.reason);
  return j;
}

// TooManyRequests is RFC 6585 §4's answer to a device over its rate: 429, and when to come back.
HttpResponse TooManyRequests(const Error& error, const enroll::Throttled& throttled) {
  HttpResponse r = HttpResponse::JsonError(429, "too_many_requests", error.message());
  r.headers.emplace_back("Retry-After", std::to_string(throttled.retry_after.count()));
  return r;
}

HttpResponse Nonce(enroll::Service& service, const HttpRequest& req) {
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
  if (!nonce && throttled.retry_after.count() > 0) return TooManyRequests(nonce.error(), throttled);
  if (!nonce) return HttpResponse::FromError(nonce.error());
  return HttpResponse::Json(
      200, Json{{"nonce", nonce->value}, {"expires_at", UnixSeconds(nonce->expires_at)}}.dump());
}

HttpResponse Evidence(enroll::Service& service, const HttpRequest& req) {
  if (!req.tls) return HttpResponse::FromError(TlsOnly());
  enroll::Throttled throttled;
  auto appraisal =
      service.Appraise(req.client_chain, internal::WithoutLineEnds(req.body), &throttled);
  if (!appraisal && throttled.retry_after.count() > 0) {
    return TooManyRequests(appraisal.error(), throttled);
  }
  if (!appraisal) return HttpResponse::FromError(appraisal.error());
  return HttpResponse::Json(200, Json{{"appraisal", appraisal->id},
                                      {"result", "pass"},
                                      {"evidence_sha256", appraisal->evidence_sha256}}
                                     .dump());
}

HttpResponse Confirm(enroll::Service& service, const HttpRequest& req) {
  if (!req.tls) return HttpResponse::FromError(TlsOnly());
  auto record = service.Confirm(req.client_chain);
  if (!record) return HttpResponse::FromError(record.error());
  return HttpResponse::Json(200, Json{{"current", RecordJson(*record)}}.dump());
}

HttpResponse Status(enroll::Service& service, const HttpRequest& req) {
  if (!req.tls) return HttpResponse::FromError(TlsOnly());
  auto status = service.Status(req.client_chain);
  if (!status) return HttpResponse::FromError(status.error());
  const enroll::DeviceStatus& s = *status;
  Json body{{"serial", s.device.serial},
            {"state", registry::StateName(s.device.state)},
            {"order", s.decommission_ordered ? Json("decommission") : Json(nullptr)}};
  if (!s.order_id.empty()) body["order_id"] = s.order_id;
  if (s.renew_at_percent > 0) body["renew_at_percent"] = s.renew_at_percent;
  if (s.current.has_value()) body["current"] = RecordJson(*s.current);
  return HttpResponse::Json(200, body.dump());
}

HttpResponse Receipt(enroll::Service& service, const HttpRequest& req) {
  if (!req.tls) return HttpResponse::FromError(TlsOnly());
  auto device = service.RecordReceipt(internal::WithoutLineEnds(req.body));
  if (!device) return HttpResponse::FromError(device.error());
  return HttpResponse::Json(
      200, Json{{"serial", device->serial}, {"state", registry::StateName(device->state)}}.dump());
}

void AddEst(server::Router& router, enroll::Service& service) {
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
    auto csr = internal::EstCsrBody(req);
    if (!csr) return EstError(csr.error());
    return Enrolled(service.Enroll(req.client_chain, *csr));
  });
  router.Add("POST", "/.well-known/est/simplereenroll", [&service](const HttpRequest& req) {
    if (auto refused = NeedsTls(req)) return *refused;
    auto csr = internal::EstCsrBody(req);
    if (!csr) return EstError(csr.error());
    return Enrolled(service.Reenroll(req.client_chain, *csr));
  });
}

}  // namespace

void RegisterEstRoutes(server::Router& router, enroll::Service& service) {
  AddEst(router, service);
  const auto bind = [&service](HttpResponse (*handler)(enroll::Service&, const HttpRequest&)) {
    return [&service, handler](const HttpRequest& req) { return handler(service, req); };
  };
  router.Add("POST", "/attest/v1/nonce", bind(&Nonce));
  router.Add("POST", "/attest/v1/evidence", bind(&Evidence));
  router.Add("POST", "/device/v1/rotation/confirm", bind(&Confirm));
  router.Add("GET", "/device/v1/status", bind(&Status));
  router.Add("POST", "/device/v1/receipt", bind(&Receipt));
}

}  // namespace fleetid::api
