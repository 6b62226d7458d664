// /api/v1: the operator API (docs/api.md).
#include "api/operator_api.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "api/http_util.h"
#include "api/openapi_document.h"
#include "common/log.h"
#include "common/time_text.h"
#include "crypto/crypto.h"
#include "crypto/x509.h"
#include "operators/approval.h"
#include "pki/record_json.h"

namespace fleetid::api {
namespace {

using Json = nlohmann::json;
using server::HttpRequest;
using server::HttpResponse;

constexpr std::string_view kPrefix = "/api/v1/";

// Answer is a route's success: a status and a JSON body.
struct Answer {
  int status = 200;
  Json body;
};

std::string NewRequestId(Rng& rng) {
  std::array<std::uint8_t, 12> bytes{};
  if (!rng.Fill(bytes)) return "unavailable";
  return crypto::Hex(bytes);
}

HttpResponse Respond(int status, const Json& body, const std::string& request_id) {
  HttpResponse r = HttpResponse::Json(status, body.dump());
  r.headers.emplace_back("X-Request-Id", request_id);
  r.headers.emplace_back("Cache-Control", "no-store");
  return r;
}

HttpResponse Refuse(const Error& error, const std::string& request_id) {
  return Respond(HttpStatus(error.code()),
                 {{"error", ErrorCodeName(error.code())},
                  {"message", error.message()},
                  {"request_id", request_id}},
                 request_id);
}

Json GrantJson(const policy::Grant& g) {
  return {{"role", g.role}, {"scope", Json::parse(policy::ScopeToJson(g.scope))}};
}

Result<std::string> Pem(std::span<const std::uint8_t> der) {
  FLEETID_TRY(cert, crypto::ParseCertificateDer(der));
  return crypto::CertificatePem(cert.get());
}

Result<Answer> IssuedAnswer(const operators::Issued& issued) {
  FLEETID_TRY(leaf, Pem(issued.certificate.der));
  Json chain = Json::array();
  for (const auto& der : issued.chain) {
    FLEETID_TRY(pem, Pem(der));
    chain.push_back(pem);
  }
  return Answer{201,
                {{"operator", issued.name},
                 {"serial", issued.certificate.serial},
                 {"not_after", Iso8601(issued.certificate.not_after)},
                 {"certificate", leaf},
                 {"chain", chain}}};
}

Json OperatorJson(const operators::OperatorInfo& info) {
  Json grants = Json::array();
  for (const operators::GrantRecord& g : info.grants) {
    Json one = GrantJson(g.grant);
    one["granted_by"] = g.granted_by;
    one["granted_at"] = Iso8601(g.granted_at);
    grants.push_back(std::move(one));
  }
  return {{"name", info.name},
          {"state", info.active ? "active" : "revoked"},
          {"created_at", Iso8601(info.created_at)},
          {"created_by", info.created_by},
          {"grants", grants}};
}

Json DeviceJson(const registry::Device& d) {
  return {{"serial", d.serial},
          {"state", registry::StateName(d.state)},
          {"version", d.version},
          {"model", d.model},
          {"manufacturer", d.manufacturer},
          {"tenant", d.tenant},
          {"region", d.region},
          {"labels", d.labels},
          {"firmware_version", d.firmware_version},
          {"batch", d.batch}};
}

policy::Resource ResourceOf(const registry::Device& d) {
  return {.tenant = d.tenant, .region = d.region, .model = d.model, .labels = d.labels};
}

Result<std::int64_t> Number(std::string_view text) {
  std::int64_t n = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec != std::errc() || end != text.data() + text.size() || n <= 0) {
    return MakeError(ErrorCode::kNotFound, "'{}' is not a number that names anything here",
                     text.substr(0, 32));
  }
  return n;
}

// ScopedAuditFilter shows an operator allowed audit.read only within a scope the entries about a
// device inside it: an entry whose subject is a device serial, or the serial of one of a device's
// certificates, judged on that device's tenant, region, model and labels under |policy|. Entries
// about anything else (operators, the policy, the CA's own certificates) stay withheld. Each
// subject is looked up once per request.
AuditEntryFilter ScopedAuditFilter(const OperatorApi& api,
                                   std::shared_ptr<const policy::Policy> policy,
                                   std::vector<policy::Grant> grants) {
  auto seen = std::make_shared<std::map<std::string, bool>>();
  return [api, policy = std::move(policy), grants = std::move(grants),
          seen](const audit::StoredEntry& entry) {
    const Json body = Json::parse(entry.body, nullptr, false);
    if (!body.is_object() || !body.contains("subject") || !body["subject"].is_string()) {
      return false;
    }
    const std::string subject = body["subject"].get<std::string>();
    if (auto it = seen->find(subject); it != seen->end()) return it->second;
    auto device = api.registry.Get(subject);
    if (!device) {
      auto certificate = api.authority.Get(subject);
      if (certificate) device = api.registry.Get(certificate->device);
    }
    const bool shown = device && policy->Decide(grants, "audit.read", ResourceOf(*device)).allowed;
    seen->emplace(subject, shown);
    return shown;
  };
}

// The device actions an operator may take through the API, with the policy action each needs.
struct DeviceAction {
  std::string_view path;
  registry::Event event;
  std::string_view action;
};
constexpr DeviceAction kDeviceActions[] = {
    {"provision", registry::Event::kProvision, "device.provision"},
    {"suspend", registry::Event::kSuspend, "device.suspend"},
    {"resume", registry::Event::kResume, "device.resume"},
    {"quarantine", registry::Event::kQuarantine, "device.quarantine"},
    {"decommission", registry::Event::kDecommission, "device.decommission"},
    {"cancel-decommission", registry::Event::kCancelDecommission, "device.cancel_decommission"},
    // Lifting a quarantine (the device enrolls afresh with a new key) is the quarantining
    // permission's: whoever may take a device out of service for a compromise may put it back.
    {"clear-quarantine", registry::Event::kClear, "device.quarantine"},
};

// Call is one request being served.
class Call {
 public:
  Call(const OperatorApi& api, const HttpRequest& req, std::string request_id)
      : api_(api), req_(req), request_id_(std::move(request_id)) {}

  HttpResponse Serve() {
    Result<Answer> answer = Route();
    if (replay_) {
      // The same request with the same Idempotency-Key was answered before: that answer again.
      log::Info("api", {{"request_id", request_id_},
                        {"method", req_.method},
                        {"path", req_.path},
                        {"operator", who_ ? policy::AuditActor(*who_) : std::string("-")},
                        {"status", replay_->status},
                        {"replayed", true}});
      HttpResponse r = HttpResponse::Json(replay_->status, replay_->body);
      r.headers.emplace_back("X-Request-Id", request_id_);
      r.headers.emplace_back("Cache-Control", "no-store");
      r.headers.emplace_back("Idempotent-Replayed", "true");
      return r;
    }
    HttpResponse response = Answered(answer);
    if (!idempotency_key_.empty() && who_) {
      const Result<void> kept = api_.operators.idempotency().Finish(
          who_->name, idempotency_key_, {.status = response.status, .body = response.body});
      if (!kept) log::Warn("api: idempotency key not recorded", {{"request_id", request_id_}});
    }
    return response;
  }

 private:
  HttpResponse Answered(Result<Answer>& answer) {
    const int status = answer ? answer->status : HttpStatus(answer.error().code());
    log::Info("api", {{"request_id", request_id_},
                      {"method", req_.method},
                      {"path", req_.path},
                      {"operator", who_ ? policy::AuditActor(*who_) : std::string("-")},
                      {"status", status}});
    if (!answer) return Refuse(answer.error(), request_id_);
    answer->body["request_id"] = request_id_;
    return Respond(answer->status, answer->body, request_id_);
  }

  Result<Answer> Route() {
    if (!req_.tls) {
      return MakeError(ErrorCode::kInvalidArgument, "the operator API is served over HTTPS only");
    }
    std::vector<std::string_view> parts;
    std::string_view rest = std::string_view(req_.path).substr(kPrefix.size());
    while (!rest.empty()) {
      const std::size_t slash = rest.find('/');
      parts.push_back(rest.substr(0, slash));
      if (slash == std::string_view::npos) break;
      rest.remove_prefix(slash + 1);
      if (rest.empty()) parts.emplace_back();  // a trailing slash names nothing
    }
    const bool post = req_.method == "POST";
    if (post) {
      FLEETID_TRY(body, ParseJsonBody(req_.body));
      body_ = std::move(body);
    }
    // The two routes that take one-time codes instead of a certificate.
    if (post && parts.size() == 2 && parts[0] == "operators" &&
        (parts[1] == "bootstrap" || parts[1] == "enroll")) {
      const bool bootstrap = parts[1] == "bootstrap";
      FLEETID_TRY(exchange, ParseCodeExchange(body_, bootstrap));
      auto issued = bootstrap
                        ? api_.operators.Bootstrap(exchange.code, exchange.name, exchange.csr_der)
                        : api_.operators.Enroll(exchange.code, exchange.csr_der);
      if (!issued) return std::unexpected(issued.error());
      return IssuedAnswer(*issued);
    }
    FLEETID_TRY(who, api_.operators.Authenticate(req_.client_chain));
    who_ = who;
    if (post && !req_.Header("Idempotency-Key").empty()) {
      const std::string_view key = req_.Header("Idempotency-Key");
      FLEETID_CHECK_OK(operators::Idempotency::CheckKey(key));
      const std::string fingerprint =
          fmt::format("{} {} {}", req_.method, req_.target,
                      crypto::Hex(crypto::Sha256(std::string_view(req_.body))));
      FLEETID_TRY(stored, api_.operators.idempotency().Begin(who.name, key, fingerprint));
      if (stored) {
        replay_ = std::move(*stored);
        return Answer{replay_->status, Json::object()};
      }
      idempotency_key_ = std::string(key);
    }
    if (parts.empty()) return NotFound();
    if (parts[0] == "whoami" && parts.size() == 1 && !post) return WhoAmI(who);
    if (parts[0] == "operators") return Operators(who, parts, post);
    if (parts[0] == "policy") return Policy(who, parts, post);
    if (parts[0] == "devices") return Devices(who, parts, post);
    if (parts[0] == "ca") return Certificates(who, parts, post);
    if (parts[0] == "manufacturers" && parts.size() == 1) return Manufacturers(who, post);
    if (parts[0] == "manifests" && parts.size() == 1 && post) return ImportManifest(who);
    if (parts[0] == "reference-values" && parts.size() == 1 && post) return AddReference(who);
    return NotFound();
  }

  // Manufacturers is /api/v1/manufacturers: the registered manufacturer CAs (manifest.read), and
  // registering one (manifest.import: a manufacturer's CA is what its batches' manifests, and
  // its devices' IDevIDs, are verified against). Both need the action everywhere.
  Result<Answer> Manufacturers(const policy::Operator& by, bool post) {
    if (!post) {
      FLEETID_TRY(allowed, api_.policy.Authorize(by, "manifest.read", {}, "manufacturers"));
      static_cast<void>(allowed);
      FLEETID_TRY(all, api_.enrollment.Manufacturers());
      Json list = Json::array();
      for (const enroll::Manufacturer& m : all) {
        list.push_back({{"name", m.name}, {"fingerprint", m.fingerprint}});
      }
      return Answer{200, Json{{"manufacturers", list}}};
    }
    FLEETID_TRY(request, ParseManufacturer(body_));
    FLEETID_TRY(allowed, api_.policy.Authorize(by, "manifest.import", {}, request.name));
    static_cast<void>(allowed);
    FLEETID_TRY(added, api_.enrollment.AddManufacturer(request.certificate_der, request.name,
                                                       policy::AuditActor(by)));
    if (api_.manufacturers_changed) api_.manufacturers_changed();
    return Answer{201, Json{{"name", added.name}, {"fingerprint", added.fingerprint}}};
  }

  // ImportManifest is POST /api/v1/manifests: a signed batch manifest, verified against the
  // registered manufacturer it names, imports its devices as manufactured (manifest.import,
  // everywhere: the devices have no tenant or region yet).
  Result<Answer> ImportManifest(const policy::Operator& by) {
    FLEETID_TRY(jws, ParseManifest(body_));
    FLEETID_TRY(allowed, api_.policy.Authorize(by, "manifest.import", {}, "manifest"));
    static_cast<void>(allowed);
    FLEETID_TRY(report, api_.enrollment.ImportManifest(jws, policy::AuditActor(by)));
    return Answer{200,
                  Json{{"imported", report.imported}, {"already_present", report.already_present}}};
  }

  // AddReference is POST /api/v1/reference-values: a firmware measurement accepted for a model
  // (reference.manage, judged on the model: an operator scoped to models manages theirs).
  Result<Answer> AddReference(const policy::Operator& by) {
    FLEETID_TRY(request, ParseReferenceValue(body_));
    policy::Resource resource;
    resource.model = request.model;
    FLEETID_TRY(allowed, api_.policy.Authorize(by, "reference.manage", resource, request.model));
    static_cast<void>(allowed);
    FLEETID_CHECK_OK(api_.enrollment.AddReferenceValue(request.model, request.firmware_sha256,
                                                       policy::AuditActor(by)));
    return Answer{201,
                  Json{{"model", request.model}, {"firmware_sha256", request.firmware_sha256}}};
  }

  // IssueCertificate is POST /api/v1/devices/{serial}/certificates: a certificate for the device
  // from a CSR, outside its enrollment (ca.issue, judged on the device), under the device's
  // credential terms (suites, lifetime).
  Result<Answer> IssueCertificate(const policy::Operator& by, const registry::Device& device) {
    FLEETID_TRY(csr_der, ParseIssue(body_));
    FLEETID_TRY(allowed, api_.policy.Authorize(by, "ca.issue", ResourceOf(device), device.serial));
    static_cast<void>(allowed);
    FLEETID_TRY(issued,
                api_.enrollment.IssueCertificate(device.serial, csr_der, policy::AuditActor(by)));
    Json out = pki::CertificateJson(issued);
    FLEETID_TRY(cert, crypto::ParseCertificateDer(issued.der));
    FLEETID_TRY(pem, crypto::CertificatePem(cert.get()));
    out["certificate"] = pem;
    return Answer{201, out};
  }

  // KnownOnlyEverywhere is asked when |subject| does not exist: only an operator allowed |action|
  // everywhere learns that (the caller's 404 follows); anyone else gets, audited, the refusal a
  // thing outside their scope gets, so a scoped operator cannot learn which names exist elsewhere.
  Result<void> KnownOnlyEverywhere(const policy::Operator& by, std::string_view action,
                                   std::string_view subject) {
    const policy::Active active = api_.policy.Current();
    const policy::Decision everywhere = active.policy->DecideWithin(by.grants, action, {});
    if (everywhere.allowed) return {};
    return std::unexpected(api_.policy.Refuse(
        by, action, subject, active.policy->Explain(everywhere, action), active.policy->Hash()));
  }

  Result<Answer> NotFound() const {
    return MakeError(ErrorCode::kNotFound, "no route {} {}", req_.method, req_.path.substr(0, 128));
  }

  Result<Answer> WhoAmI(const policy::Operator& by) const {
    Json grants = Json::array();
    for (const policy::Grant& g : by.grants) grants.push_back(GrantJson(g));
    const policy::Active active = api_.policy.Current();
    return Answer{200,
                  {{"operator", by.name},
                   {"serial", by.credential},
                   {"grants", grants},
                   {"policy", {{"version", active.number}, {"hash", active.policy->Hash()}}}}};
  }

  Result<Answer> Operators(const policy::Operator& by, const std::vector<std::string_view>& parts,
                           bool post) {
    if (!post && parts.size() == 1) {
      FLEETID_TRY(all, api_.operators.List(by));
      Json out = Json::array();
      for (const operators::OperatorInfo& info : all) out.push_back(OperatorJson(info));
      return Answer{200, {{"operators", out}}};
    }
    if (!post && parts.size() == 2) {
      FLEETID_TRY(info, api_.operators.Get(by, parts[1]));
      return Answer{200, OperatorJson(info)};
    }
    if (post && parts.size() == 2 && parts[1] == "renew") {
      FLEETID_TRY(csr, ParseRenewal(body_));
      FLEETID_TRY(issued, api_.operators.Renew(by, csr));
      return IssuedAnswer(issued);
    }
    if (post && parts.size() == 2 && parts[1] == "invitations") {
      FLEETID_TRY(request, ParseInvitation(body_));
      FLEETID_TRY(invitation,
                  api_.operators.Invite(by, request.name, request.grants, request.lifetime));
      Json grants = Json::array();
      for (const policy::Grant& g : invitation.grants) grants.push_back(GrantJson(g));
      return Answer{201,
                    {{"operator", invitation.name},
                     {"code", invitation.code},
                     {"expires_at", Iso8601(invitation.expires_at)},
                     {"grants", grants}}};
    }
    if (post && parts.size() == 3 && parts[2] == "grants") {
      FLEETID_TRY(grant, ParseGrant(body_));
      FLEETID_TRY(info, api_.operators.Grant(by, parts[1], grant));
      return Answer{201, OperatorJson(info)};
    }
    if (post && parts.size() == 3 && parts[2] == "revoke") {
      FLEETID_TRY(reason, ParseReason(body_, true));
      FLEETID_TRY(info, api_.operators.Revoke(by, parts[1], reason));
      return Answer{200, OperatorJson(info)};
    }
    return NotFound();
  }

  Result<Answer> Policy(const policy::Operator& by, const std::vector<std::string_view>& parts,
                        bool post) {
    if (!post) {
      FLEETID_TRY(allowed, api_.policy.Authorize(by, "policy.read", {}, "policy"));
      if (parts.size() == 1) {
        return Answer{200,
                      {{"version", allowed.number},
                       {"hash", allowed.policy->Hash()},
                       {"activated_at", Iso8601(allowed.activated_at)},
                       {"activated_by", allowed.activated_by},
                       {"document", Json::parse(allowed.policy->Canonical())}}};
      }
      if (parts.size() == 2 && parts[1] == "versions") {
        FLEETID_TRY(all, api_.policy.List());
        Json out = Json::array();
        for (const policy::VersionInfo& v : all) {
          out.push_back({{"version", v.number},
                         {"hash", v.hash},
                         {"created_at", Iso8601(v.created_at)},
                         {"created_by", v.created_by},
                         {"active", v.number == allowed.number}});
        }
        return Answer{200, {{"versions", out}}};
      }
      if (parts.size() == 3 && parts[1] == "versions") {
        FLEETID_TRY(number, Number(parts[2]));
        FLEETID_TRY(version, api_.policy.Version(number));
        return Answer{200,
                      {{"version", number},
                       {"hash", version->Hash()},
                       {"active", number == allowed.number},
                       {"diff_from_active", policy::Diff(*allowed.policy, *version)},
                       {"document", Json::parse(version->Canonical())}}};
      }
      if (parts.size() == 2 && parts[1] == "proposals") {
        FLEETID_TRY(all, api_.policy.Proposals(req_.query != "all=true"));
        Json out = Json::array();
        for (const policy::Proposal& p : all) out.push_back(policy::ProposalView(p));
        return Answer{200, {{"proposals", out}}};
      }
      if (parts.size() == 3 && parts[1] == "proposals") {
        FLEETID_TRY(id, Number(parts[2]));
        FLEETID_TRY(proposal, api_.policy.GetProposal(id));
        return Answer{200, policy::ProposalView(proposal)};
      }
      return NotFound();
    }
    if (parts.size() == 2 && parts[1] == "proposals") {
      FLEETID_TRY(request, ParseProposal(body_));
      FLEETID_TRY(proposal,
                  api_.policy.Propose(by, request.document, request.base, request.reason));
      return Answer{201, policy::ProposalView(proposal)};
    }
    if (parts.size() == 4 && parts[1] == "proposals" && parts[3] == "approve") {
      FLEETID_TRY(id, Number(parts[2]));
      FLEETID_TRY(request, ParseApproval(body_));
      policy::ApprovalEvidence evidence;
      if (!request.signature.empty()) {
        // The proposal's digest never changes, so it is read before the approval's transaction.
        FLEETID_TRY(proposal, api_.policy.GetProposal(id));
        FLEETID_TRY(verified, operators::VerifyApproval(request.signature,
                                                        fmt::format("policy proposal {}", id),
                                                        proposal.digest, "approve"));
        if (req_.client_chain.empty() || verified.chain_der.front() != req_.client_chain.front()) {
          return MakeError(ErrorCode::kUnauthenticated,
                           "the approval is signed with another certificate than this session's");
        }
        evidence.signature = std::move(request.signature);
      }
      FLEETID_TRY(decided, api_.policy.Approve(by, id, request.reason, evidence));
      return Answer{200, policy::ProposalView(decided)};
    }
    if (parts.size() == 4 && parts[1] == "proposals") {
      FLEETID_TRY(id, Number(parts[2]));
      FLEETID_TRY(reason, ParseReason(body_, false));
      Result<policy::Proposal> decided = MakeError(ErrorCode::kNotFound, "no such decision");
      if (parts[3] == "reject")
        decided = api_.policy.Reject(by, id, reason);
      else if (parts[3] == "withdraw")
        decided = api_.policy.Withdraw(by, id, reason);
      else
        return NotFound();
      if (!decided) return std::unexpected(decided.error());
      return Answer{200, policy::ProposalView(*decided)};
    }
    return NotFound();
  }

  Result<Answer> Devices(const policy::Operator& by, const std::vector<std::string_view>& parts,
                         bool post) {
    if (!post && parts.size() == 1) return ListDevices(by);
    if (parts.size() < 2 || parts[1].empty()) return NotFound();
    const DeviceAction* action = nullptr;
    // POST .../certificates issues a certificate for the device (ca.issue); the other POSTs are
    // its lifecycle actions.
    const bool issue = post && parts.size() == 3 && parts[2] == "certificates";
    if (post && !issue) {
      if (parts.size() != 3) return NotFound();
      action = std::ranges::find_if(kDeviceActions,
                                    [&](const DeviceAction& a) { return a.path == parts[2]; });
      if (action == std::end(kDeviceActions)) return NotFound();
    } else if (!post && parts.size() != 2) {
      return NotFound();
    }
    const std::string_view wanted = issue ? "ca.issue" : post ? action->action : "device.read";
    auto found = api_.registry.Get(parts[1]);
    if (!found && found.error().code() == ErrorCode::kNotFound) {
      FLEETID_CHECK_OK(KnownOnlyEverywhere(by, wanted, parts[1]));
    }
    FLEETID_TRY(device, std::move(found));
    if (issue) return IssueCertificate(by, device);
    if (!post || action == nullptr) {
      FLEETID_TRY(allowed,
                  api_.policy.Authorize(by, "device.read", ResourceOf(device), device.serial));
      static_cast<void>(allowed);
      FLEETID_TRY(history, api_.registry.History(device.serial));
      Json out = DeviceJson(device);
      Json events = Json::array();
      for (const registry::TransitionRecord& t : history) {
        events.push_back({{"event", registry::EventName(t.event)},
                          {"from", registry::StateName(t.from)},
                          {"to", registry::StateName(t.to)},
                          {"actor", t.actor},
                          {"reason", t.reason},
                          {"at", Iso8601(t.at)},
                          {"policy_version", t.policy_version}});
      }
      out["history"] = events;
      return Answer{200, out};
    }
    const bool provision = action->event == registry::Event::kProvision;
    FLEETID_TRY(request_body, ParseDeviceAction(body_, provision));
    // A provisioning is judged where the device goes (its new tenant and region).
    policy::Resource resource = ResourceOf(device);
    registry::TransitionRequest request;
    if (provision) {
      request.tenant = resource.tenant = request_body.tenant;
      request.region = resource.region = request_body.region;
    }
    FLEETID_TRY(allowed, api_.policy.Authorize(by, action->action, resource, device.serial));
    static_cast<void>(allowed);
    request.serial = device.serial;
    request.event = action->event;
    request.expected_version = device.version;
    request.actor = {.kind = registry::kOperator,
                     .id = fmt::format("{}#{}", by.name, by.credential),
                     .roles = {},
                     .authorized_by_policy = true};
    request.reason = std::move(request_body.reason);
    FLEETID_TRY(after, api_.registry.Transition(request));
    return Answer{200, DeviceJson(after)};
  }

  // Certificates is /api/v1/ca/certificates/{serial}[/hold|revoke|release]: a certificate as the
  // CA records it (ca.read), and an operator's hold, revocation or release of it (ca.hold,
  // ca.revoke, ca.release). A device's certificate is judged on its device's tenant, region,
  // model and labels, and its status change is the device's lifecycle event (a hold suspends
  // it, keyCompromise quarantines it: enroll::Service::ChangeCertificateStatus); any other
  // certificate (an operator's, a server's) needs the action everywhere.
  Result<Answer> Certificates(const policy::Operator& by,
                              const std::vector<std::string_view>& parts, bool post) {
    if (parts.size() < 3 || parts.size() > 4 || parts[1] != "certificates" || parts[2].empty() ||
        post != (parts.size() == 4)) {
      return NotFound();
    }
    const std::string_view verb = post ? parts[3] : "read";
    if (verb != "read" && verb != "hold" && verb != "revoke" && verb != "release") {
      return NotFound();
    }
    const std::string action = fmt::format("ca.{}", verb);
    std::string serial(parts[2].substr(0, 64));
    std::ranges::transform(serial, serial.begin(),
                           [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    auto found = api_.authority.Get(serial);
    if (!found && found.error().code() == ErrorCode::kNotFound) {
      FLEETID_CHECK_OK(KnownOnlyEverywhere(by, action, serial));
    }
    FLEETID_TRY(record, std::move(found));
    policy::Resource resource;
    if (!record.device.empty() && !record.device.starts_with("operator:")) {
      if (auto device = api_.registry.Get(record.device)) resource = ResourceOf(*device);
    }
    FLEETID_TRY(allowed,
                api_.policy.Authorize(by, action, resource, fmt::format("certificate {}", serial)));
    static_cast<void>(allowed);
    if (!post) return Answer{200, pki::CertificateJson(record)};
    if (record.device.starts_with("operator:")) {
      // Operators::Revoke keeps the last operator who can invite and revoke; this route would not.
      return MakeError(ErrorCode::kConflict,
                       "an operator's certificate changes with its operator: POST "
                       "/api/v1/operators/{}/revoke, or renew",
                       record.device.substr(std::string_view("operator:").size()));
    }
    FLEETID_TRY(request, ParseCertificateAction(body_, verb == "revoke"));
    std::optional<pki::Reason> reason;
    if (verb == "hold") reason = pki::Reason::kCertificateHold;
    if (verb == "revoke") {
      FLEETID_TRY(named, pki::ParseReason(request.revocation_reason));
      if (named == pki::Reason::kCertificateHold || named == pki::Reason::kRemoveFromCrl) {
        return MakeError(ErrorCode::kInvalidArgument,
                         "'{}' is not a revocation: use /hold or /release",
                         request.revocation_reason);
      }
      reason = named;
    }
    const registry::Actor actor{.kind = registry::kOperator,
                                .id = fmt::format("{}#{}", by.name, by.credential),
                                .roles = {},
                                .authorized_by_policy = true};
    FLEETID_TRY(changed,
                api_.enrollment.ChangeCertificateStatus(serial, reason, actor, request.reason));
    if (changed) return Answer{200, pki::CertificateJson(*changed)};
    // No device's credential: the CA alone decides.
    FLEETID_TRY(done, reason ? api_.authority.Revoke(serial, *reason, policy::AuditActor(by))
                             : api_.authority.Release(serial, policy::AuditActor(by)));
    return Answer{200, pki::CertificateJson(done)};
  }

  // ListDevices is GET /api/v1/devices?filters: a page of the devices the operator may read.
  // The filters go to the database; the operator's scope is applied to each device of the page
  // (in memory, not audited one by one), so a scoped operator's page may hold fewer devices
  // than the limit while |next| still leads on.
  Result<Answer> ListDevices(const policy::Operator& by) {
    FLEETID_TRY(query, ParseDeviceQuery(req_.query, api_.clock.Now()));
    const policy::Active active = api_.policy.Current();
    // Refused (and audited) when no grant of the operator reads devices anywhere.
    const bool reads_somewhere = std::ranges::any_of(by.grants, [&](const policy::Grant& g) {
      return active.policy->DecideWithin(by.grants, "device.read", g.scope).allowed;
    });
    if (!reads_somewhere) {
      return std::unexpected(api_.policy.Refuse(
          by, "device.read", "devices",
          active.policy->Explain(active.policy->DecideWithin(by.grants, "device.read", {}),
                                 "device.read"),
          active.policy->Hash()));
    }
    FLEETID_TRY(page, api_.registry.Query(query));
    Json devices = Json::array();
    for (const registry::Device& d : page.devices) {
      if (active.policy->Decide(by.grants, "device.read", ResourceOf(d)).allowed) {
        devices.push_back(DeviceJson(d));
      }
    }
    return Answer{200,
                  {{"devices", devices},
                   {"next", page.next},
                   {"scanned", page.devices.size()},
                   {"policy", {{"version", active.number}, {"hash", active.policy->Hash()}}}}};
  }

  const OperatorApi& api_;
  const HttpRequest& req_;
  std::string request_id_;
  Json body_;
  std::optional<policy::Operator> who_;
  std::string idempotency_key_;                    // claimed by this request (Finish it)
  std::optional<operators::StoredAnswer> replay_;  // the earlier answer to send again
};

}  // namespace

void RegisterOperatorApi(server::Router& router, const OperatorApi& api) {
  // The API's own description, to anyone over HTTPS (docs/openapi.json).
  router.Add("GET", std::string(kPrefix) + "openapi.json", [api](const HttpRequest& req) {
    const std::string request_id = NewRequestId(api.rng);
    if (!req.tls) {
      return Refuse(
          Error(ErrorCode::kInvalidArgument, "the operator API is served over HTTPS only"),
          request_id);
    }
    HttpResponse r;
    r.content_type = "application/json";
    r.body = std::string(OpenApiDocument());
    r.headers.emplace_back("X-Request-Id", request_id);
    return r;
  });
  for (const char* method : {"GET", "POST"}) {
    router.Add(method, std::string(kPrefix) + "*", [api](const HttpRequest& req) {
      return Call(api, req, NewRequestId(api.rng)).Serve();
    });
  }
}

AuditReadGate OperatorAuditGate(const OperatorApi& api) {
  return [api](const HttpRequest& req) -> Result<AuditEntryFilter> {
    if (!req.tls) {
      return MakeError(ErrorCode::kInvalidArgument,
                       "the audit log's entries are served over HTTPS to operators allowed "
                       "audit.read; heads and proofs are public");
    }
    FLEETID_TRY(who, api.operators.Authenticate(req.client_chain));
    const policy::Active active = api.policy.Current();
    if (active.policy->Decide(who.grants, "audit.read", {}).allowed) return AuditEntryFilter();
    if (!active.policy->PermitsAnywhere(who.grants, "audit.read")) {
      FLEETID_TRY(allowed, api.policy.Authorize(who, "audit.read", {}, "audit log"));
      static_cast<void>(allowed);  // refused (and audited) above: no rule permits it anywhere
    }
    return ScopedAuditFilter(api, active.policy, std::move(who.grants));
  };
}

}  // namespace fleetid::api
