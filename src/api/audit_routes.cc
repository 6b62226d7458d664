#include <algorithm>
#include <charconv>
#include <map>
#include <nlohmann/json.hpp>

#include "api/http_util.h"
#include "api/routes.h"
#include "audit/export.h"

namespace fleetid::api {
namespace {

using Json = nlohmann::json;
using internal::JsonAnswer;
using server::HttpRequest;
using server::HttpResponse;

// Query parameters as unsigned integers; an absent, repeated, unknown or malformed one is an
// error naming it.
Result<std::map<std::string, std::uint64_t>> Numbers(
    std::string_view query, std::initializer_list<std::string_view> names) {
  std::map<std::string, std::uint64_t> out;
  while (!query.empty()) {
    const std::size_t amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    const std::size_t eq = pair.find('=');
    const std::string name(pair.substr(0, eq));
    if (std::find(names.begin(), names.end(), name) == names.end()) {
      return MakeError(ErrorCode::kInvalidArgument, "unknown query parameter");
    }
    const std::string_view text = eq == std::string_view::npos ? "" : pair.substr(eq + 1);
    std::uint64_t value = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (text.empty() || ec != std::errc() || end != text.data() + text.size() ||
        !out.emplace(name, value).second) {
      return MakeError(ErrorCode::kInvalidArgument,
                       "query parameter '{}' must be one unsigned integer", name);
    }
  }
  for (std::string_view name : names) {
    if (!out.contains(std::string(name))) {
      return MakeError(ErrorCode::kInvalidArgument, "query parameter '{}' is required", name);
    }
  }
  return out;
}

Json PathJson(const std::vector<audit::Hash>& path) {
  Json out = Json::array();
  for (const audit::Hash& h : path) out.push_back(audit::HashHex(h));
  return out;
}

Result<Json> Head(audit::Log& log) {
  FLEETID_TRY(head, log.LatestHead());
  return Json::parse(audit::HeadJson(head));
}

Result<Json> Entries(audit::Log& log, const HttpRequest& req, const AuditEntryFilter& shown) {
  FLEETID_TRY(q, Numbers(req.query, {"start", "end"}));
  FLEETID_TRY(entries, log.Entries(q["start"], q["end"]));
  Json list = Json::array();
  for (const audit::StoredEntry& e : entries) {
    Json entry{{"seq", e.seq}, {"leaf_hash", audit::HashHex(e.leaf_hash)}};
    if (!shown || shown(e)) {
      entry["body"] = e.body;
    } else {
      entry["withheld"] = true;
    }
    list.push_back(std::move(entry));
  }
  return Json{{"entries", list}};
}

Result<Json> Inclusion(audit::Log& log, const HttpRequest& req) {
  FLEETID_TRY(q, Numbers(req.query, {"seq", "size"}));
  FLEETID_TRY(path, log.InclusionProof(q["seq"], q["size"]));
  return Json{{"seq", q["seq"]}, {"size", q["size"]}, {"path", PathJson(path)}};
}

Result<Json> Consistency(audit::Log& log, const HttpRequest& req) {
  FLEETID_TRY(q, Numbers(req.query, {"first", "second"}));
  FLEETID_TRY(path, log.ConsistencyProof(q["first"], q["second"]));
  return Json{{"first", q["first"]}, {"second", q["second"]}, {"path", PathJson(path)}};
}

}  // namespace

void RegisterAuditRoutes(server::Router& router, audit::Log& log, std::string public_key_pem,
                         AuditReadGate entries_gate) {
  router.Add("GET", "/audit/v1/key", [pem = std::move(public_key_pem)](const HttpRequest&) {
    HttpResponse r;
    r.content_type = "application/x-pem-file";
    r.body = pem;
    return r;
  });
  router.Add("GET", "/audit/v1/sth", [&log](const HttpRequest&) { return JsonAnswer(Head(log)); });
  router.Add("GET", "/audit/v1/entries",
             [&log, gate = std::move(entries_gate)](const HttpRequest& req) {
               Result<AuditEntryFilter> admitted = gate(req);
               if (!admitted) return HttpResponse::FromError(admitted.error());
               return JsonAnswer(Entries(log, req, *admitted));
             });
  router.Add("GET", "/audit/v1/proof/inclusion",
             [&log](const HttpRequest& req) { return JsonAnswer(Inclusion(log, req)); });
  router.Add("GET", "/audit/v1/proof/consistency",
             [&log](const HttpRequest& req) { return JsonAnswer(Consistency(log, req)); });
}

}  // namespace fleetid::api
