#include "policy/versions.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <utility>

#include "audit/log.h"
#include "common/log.h"
#include "common/time_text.h"
#include "crypto/crypto.h"

namespace fleetid::policy {
namespace {

using Json = nlohmann::json;
using store::Row;
using store::Transaction;
using store::TxMode;

// clang-format off
constexpr std::string_view kSchemaSqlite = R"sql(
CREATE TABLE policy_versions (
  id INTEGER PRIMARY KEY,
  hash TEXT NOT NULL UNIQUE,
  document TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  created_by TEXT NOT NULL,
  audit_index INTEGER NOT NULL
);
CREATE TABLE policy_active (
  slot INTEGER NOT NULL PRIMARY KEY CHECK (slot = 1),
  version INTEGER NOT NULL REFERENCES policy_versions (id),
  activated_at INTEGER NOT NULL,
  activated_by TEXT NOT NULL,
  audit_index INTEGER NOT NULL
);
CREATE TABLE policy_proposals (
  id INTEGER PRIMARY KEY,
  requester TEXT NOT NULL,
  requester_name TEXT NOT NULL,
  reason TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  state TEXT NOT NULL,
  base_version INTEGER NOT NULL REFERENCES policy_versions (id),
  target_version INTEGER NOT NULL REFERENCES policy_versions (id),
  digest TEXT NOT NULL,
  approvals_required INTEGER NOT NULL,
  from_roles TEXT NOT NULL,
  diff TEXT NOT NULL,
  decided_by TEXT NOT NULL
);
CREATE INDEX policy_proposals_by_state ON policy_proposals (state, id);
CREATE TABLE policy_approvals (
  proposal INTEGER NOT NULL REFERENCES policy_proposals (id),
  approver_name TEXT NOT NULL,
  approver TEXT NOT NULL,
  at INTEGER NOT NULL,
  reason TEXT NOT NULL,
  audit_index INTEGER NOT NULL,
  PRIMARY KEY (proposal, approver_name)
);
)sql";

// How each approval arrived: signed by the approver's key (a JWS over the request's digest) or
// through a mutual-TLS session only.
constexpr std::string_view kApprovalEvidenceSql = R"sql(
ALTER TABLE policy_approvals ADD COLUMN via TEXT NOT NULL DEFAULT 'mtls';
ALTER TABLE policy_approvals ADD COLUMN signature TEXT NOT NULL DEFAULT '';
)sql";

constexpr std::string_view kDefaultDocument = R"json({
  "schema": "fleetid.policy/v1",
  "description": "fleetid's built-in first policy: administrators run everything, auditors read everything, and no single person changes the policy",
  "roles": {
    "admin": {
      "description": "runs the authority",
      "permit": [{"actions": ["*"], "why": "administrators run the authority"}]
    },
    "auditor": {
      "description": "reads everything, changes nothing",
      "permit": [{"actions": ["alert.read", "approval.read", "audit.read", "batch.read", "ca.read",
                              "device.read", "manifest.read", "metrics.read", "operator.read",
                              "policy.read", "reference.read", "webhook.read"],
                  "why": "auditors read everything"}]
    }
  },
  "credentials": [
    {"name": "default",
     "suites": ["ecdsa-p256-sha256", "ecdsa-p384-sha384", "ed25519", "rsa3072-pss-sha256"],
     "preferred_suite": "ecdsa-p256-sha256"}
  ],
  "approvals": [
    {"actions": ["policy.propose"], "approvals": 1, "from_roles": ["admin"],
     "lifetime_seconds": 86400}
  ]
})json";
// clang-format on

constexpr std::string_view kSystemActor = "system";
constexpr std::string_view kProposeAction = "policy.propose";

RequestState ParseState(std::string_view name) {
  for (RequestState s :
       {RequestState::kPending, RequestState::kApplied, RequestState::kRejected,
        RequestState::kWithdrawn, RequestState::kExpired, RequestState::kSuperseded}) {
    if (RequestStateName(s) == name) return s;
  }
  return RequestState::kSuperseded;  // not written by this code; treat as closed
}

std::vector<std::string> StringList(const std::string& json_text) {
  std::vector<std::string> out;
  const Json parsed = Json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (!parsed.is_array()) return out;
  for (const Json& item : parsed) {
    if (item.is_string()) out.push_back(item.get<std::string>());
  }
  return out;
}

// ProposalDigest is what an approval covers: the action and the exact versions, by hash.
std::string ProposalDigest(const std::string& base_hash, const std::string& target_hash) {
  const Json covered = {{"action", kProposeAction}, {"base", base_hash}, {"target", target_hash}};
  return crypto::Hex(crypto::Sha256(covered.dump()));
}

// HoldsOneOf says whether |op| holds, without a scope, one of |roles|: an approval is about the
// whole policy, so a grant scoped to part of the fleet does not count.
bool HoldsOneOf(const Operator& op, const std::vector<std::string>& roles) {
  return std::ranges::any_of(op.grants, [&](const Grant& g) {
    return g.scope.Unbounded() && std::ranges::find(roles, g.role) != roles.end();
  });
}

constexpr std::string_view kProposalColumns =
    "p.id, p.requester, p.reason, p.created_at, p.expires_at, p.state, p.base_version, b.hash, "
    "p.target_version, t.hash, p.digest, p.approvals_required, p.from_roles, p.diff, "
    "p.decided_by, p.requester_name";

Proposal DecodeProposal(const Row& r) {
  Proposal p;
  p.id = r.Int(0);
  p.requester = r.Text(1);
  p.reason = r.Text(2);
  p.created_at = FromUnixSeconds(r.Int(3));
  p.expires_at = FromUnixSeconds(r.Int(4));
  p.state = ParseState(r.Text(5));
  p.base_number = r.Int(6);
  p.base_hash = r.Text(7);
  p.target_number = r.Int(8);
  p.target_hash = r.Text(9);
  p.digest = r.Text(10);
  p.approvals_required = static_cast<int>(r.Int(11));
  p.from_roles = StringList(r.Text(12));
  p.diff = StringList(r.Text(13));
  p.decided_by = r.Text(14);
  p.requester_name = r.Text(15);
  return p;
}

Json ProposalJson(const Proposal& p) {
  return {{"id", p.id},
          {"state", RequestStateName(p.state)},
          {"base", p.base_hash},
          {"target", p.target_hash},
          {"digest", p.digest},
          {"approvals", static_cast<std::int64_t>(p.approvals.size())},
          {"approvals_required", p.approvals_required}};
}

}  // namespace

std::string AuditActor(const Operator& op) {
  if (op.credential.empty()) return fmt::format("operator:{}", op.name);
  return fmt::format("operator:{}#{}", op.name, op.credential);
}

std::string_view RequestStateName(RequestState state) {
  switch (state) {
    case RequestState::kPending:
      return "pending";
    case RequestState::kApplied:
      return "applied";
    case RequestState::kRejected:
      return "rejected";
    case RequestState::kWithdrawn:
      return "withdrawn";
    case RequestState::kExpired:
      return "expired";
    case RequestState::kSuperseded:
      return "superseded";
  }
  return "superseded";
}

nlohmann::json ProposalView(const Proposal& p) {
  Json approvals = Json::array();
  for (const ApprovalRecord& a : p.approvals) {
    Json one{{"approver", a.approver}, {"at", Iso8601(a.at)}, {"reason", a.reason}, {"via", a.via}};
    if (!a.signature.empty()) one["signature"] = a.signature;
    approvals.push_back(std::move(one));
  }
  return {{"id", p.id},
          {"state", RequestStateName(p.state)},
          {"requester", p.requester},
          {"reason", p.reason},
          {"created_at", Iso8601(p.created_at)},
          {"expires_at", Iso8601(p.expires_at)},
          {"base", {{"version", p.base_number}, {"hash", p.base_hash}}},
          {"target", {{"version", p.target_number}, {"hash", p.target_hash}}},
          {"digest", p.digest},
          {"approvals_required", p.approvals_required},
          {"from_roles", p.from_roles},
          {"approvals", approvals},
          {"diff", p.diff},
          {"decided_by", p.decided_by}};
}

std::string_view Versions::DefaultDocument() { return kDefaultDocument; }

Result<void> Versions::Migrate(store::Database& db) {
  FLEETID_CHECK_OK(audit::Log::Migrate(db));
  const std::string pg = store::PostgresDdl(kSchemaSqlite);
  const store::Migration migrations[] = {
      {1, "policy versions, active version, proposals", kSchemaSqlite, pg},
      {2, "how approvals arrived, with their signatures", kApprovalEvidenceSql, {}}};
  FLEETID_TRY(applied, db.Migrate("policy", migrations));
  static_cast<void>(applied);
  return {};
}

Result<std::unique_ptr<Versions>> Versions::Open(store::Database& db, Clock& clock) {
  FLEETID_CHECK_OK(Migrate(db));
  std::unique_ptr<Versions> versions(new Versions(db, clock));
  // Install the default as version 1 on first start. Two processes starting at once: the
  // loser's insert conflicts on the slot's primary key, and it reads the winner's.
  {
    FLEETID_TRY(tx, db.Begin(TxMode::kWrite));
    FLEETID_TRY(rows, tx->Query("SELECT version FROM policy_active WHERE slot = 1"));
    if (rows.empty()) {
      FLEETID_TRY(policy, Policy::Parse(kDefaultDocument));
      const std::int64_t now = UnixSeconds(clock.Now());
      FLEETID_TRY(seq, audit::Log::Append(*tx,
                                          {.actor = std::string(kSystemActor),
                                           .action = "policy.activate",
                                           .subject = policy->Hash(),
                                           .before = nullptr,
                                           .after = {{"version", 1}, {"hash", policy->Hash()}},
                                           .reason = "the built-in first policy",
                                           .policy_version = policy->Hash(),
                                           .evidence_digest = ""},
                                          clock));
      const auto index = static_cast<std::int64_t>(seq);
      FLEETID_TRY(
          inserted,
          tx->Query("INSERT INTO policy_versions (hash, document, created_at, created_by, "
                    "audit_index) VALUES (?, ?, ?, ?, ?) RETURNING id",
                    {policy->Hash(), policy->Canonical(), now, std::string(kSystemActor), index}));
      FLEETID_CHECK_OK(
          tx->Exec("INSERT INTO policy_active (slot, version, activated_at, "
                   "activated_by, audit_index) VALUES (1, ?, ?, ?, ?)",
                   {inserted.at(0).Int(0), now, std::string(kSystemActor), index}));
      auto committed = tx->Commit();
      if (!committed && committed.error().code() != ErrorCode::kConflict) {
        return std::unexpected(committed.error());
      }
      if (committed) {
        log::Info("policy installed", {{"version", 1}, {"hash", policy->Hash()}});
      }
    }
  }
  FLEETID_TRY(tx, db.Begin(TxMode::kRead));
  FLEETID_TRY(active, versions->LoadActive(*tx));
  versions->Publish(std::move(active));
  return versions;
}

Result<Active> Versions::LoadActive(Transaction& tx) {
  FLEETID_TRY(rows, tx.Query("SELECT a.version, a.activated_at, a.activated_by, v.hash "
                             "FROM policy_active a JOIN policy_versions v ON v.id = a.version "
                             "WHERE a.slot = 1"));
  if (rows.empty()) return MakeError(ErrorCode::kInternal, "no active policy version");
  Active active{.policy = nullptr,
                .number = rows[0].Int(0),
                .activated_at = FromUnixSeconds(rows[0].Int(1)),
                .activated_by = rows[0].Text(2)};
  {
    MutexLock lock(mu_);
    if (active_.policy && active_.number == active.number) {
      active.policy = active_.policy;
      return active;
    }
  }
  FLEETID_TRY(docs, tx.Query("SELECT document FROM policy_versions WHERE id = ?", {active.number}));
  auto policy = Policy::Parse(docs.at(0).Text(0));
  if (!policy || (*policy)->Hash() != rows[0].Text(3)) {
    return MakeError(ErrorCode::kInternal, "stored policy version {} does not read back",
                     active.number);
  }
  active.policy = std::move(*policy);
  return active;
}

void Versions::Publish(Active active) {
  MutexLock lock(mu_);
  if (active_.policy && active_.number == active.number) return;
  active_ = std::move(active);
}

Active Versions::Current() const {
  MutexLock lock(mu_);
  return active_;
}

std::string Versions::CurrentHash() const {
  MutexLock lock(mu_);
  return active_.policy ? active_.policy->Hash() : std::string();
}

Result<void> Versions::Refresh() {
  FLEETID_TRY(tx, db_.Begin(TxMode::kRead));
  FLEETID_TRY(active, LoadActive(*tx));
  if (active.number != Current().number) {
    log::Info("policy version now active",
              {{"version", active.number}, {"hash", active.policy->Hash()}});
  }
  Publish(std::move(active));
  return {};
}

Result<std::vector<VersionInfo>> Versions::List() {
  FLEETID_TRY(tx, db_.Begin(TxMode::kAutocommit));
  FLEETID_TRY(rows, tx->Query("SELECT id, hash, created_at, created_by FROM policy_versions "
                              "ORDER BY id"));
  std::vector<VersionInfo> out;
  out.reserve(rows.size());
  for (const Row& r : rows) {
    out.push_back({.number = r.Int(0),
                   .hash = r.Text(1),
                   .created_at = FromUnixSeconds(r.Int(2)),
                   .created_by = r.Text(3)});
  }
  return out;
}

Result<std::shared_ptr<const Policy>> Versions::Version(std::int64_t number) {
  FLEETID_TRY(tx, db_.Begin(TxMode::kAutocommit));
  FLEETID_TRY(rows, tx->Query("SELECT document FROM policy_versions WHERE id = ?", {number}));
  if (rows.empty()) return MakeError(ErrorCode::kNotFound, "no policy version {}", number);
  return Policy::Parse(rows[0].Text(0));
}

Result<Active> Versions::Authorize(const Operator& by, std::string_view action,
                                   const Resource& resource, std::string_view subject) {
  Active active = Current();
  const Decision decision = active.policy->Decide(by.grants, action, resource);
  if (!decision.allowed) {
    return std::unexpected(Refuse(by, action, subject, active.policy->Explain(decision, action),
                                  active.policy->Hash()));
  }
  if (std::string why = ApprovalsNotOffered(*active.policy, action); !why.empty()) {
    return std::unexpected(Refuse(by, action, subject, why, active.policy->Hash()));
  }
  return active;
}

std::string ApprovalsNotOffered(const Policy& policy, std::string_view action) {
  if (action.starts_with("policy.")) return "";  // a change of policy is a proposal
  const ApprovalRule* rule = policy.ApprovalsFor(action);
  if (rule == nullptr) return "";
  return fmt::format(
      "policy {} asks {} approval(s) from {} for {}, and approval requests exist only for policy "
      "changes so far: refused rather than taken without them",
      policy.Hash().substr(0, 12), rule->approvals, fmt::join(rule->from_roles, ", "), action);
}

Error Versions::Refuse(const Operator& by, std::string_view action, std::string_view subject,
                       const std::string& why, const std::string& policy_hash) {
  Error refusal(ErrorCode::kPermissionDenied,
                fmt::format("{} may not {}: {}", by.name, action, why));
  auto audited = [&]() -> Result<void> {
    FLEETID_TRY(tx, db_.Begin(TxMode::kWrite));
    FLEETID_TRY(seq, audit::Log::Append(*tx,
                                        {.actor = AuditActor(by),
                                         .action = "access.denied",
                                         .subject = std::string(subject),
                                         .before = nullptr,
                                         .after = {{"action", action}},
                                         .reason = why,
                                         .policy_version = policy_hash,
                                         .evidence_digest = ""},
                                        clock_));
    static_cast<void>(seq);
    return tx->Commit();
  }();
  // A refusal that cannot be recorded is still a refusal; the caller learns both.
  if (!audited) return audited.error().Wrap(refusal.message() + "; recording the refusal");
  return refusal;
}

Result<Proposal> Versions::LoadProposal(Transaction& tx, std::int64_t id) {
  FLEETID_TRY(rows, tx.Query(fmt::format("SELECT {} FROM policy_proposals p "
                                         "JOIN policy_versions b ON b.id = p.base_version "
                                         "JOIN policy_versions t ON t.id = p.target_version "
                                         "WHERE p.id = ?",
                                         kProposalColumns),
                             {id}));
  if (rows.empty()) return MakeError(ErrorCode::kNotFound, "no policy proposal {}", id);
  Proposal p = DecodeProposal(rows[0]);
  FLEETID_TRY(approvals, tx.Query("SELECT approver_name, approver, at, reason, via, signature "
                                  "FROM policy_approvals WHERE proposal = ? ORDER BY audit_index",
                                  {id}));
  for (const Row& r : approvals) {
    p.approvals.push_back({.approver_name = r.Text(0),
                           .approver = r.Text(1),
                           .at = FromUnixSeconds(r.Int(2)),
                           .reason = r.Text(3),
                           .via = r.Text(4),
                           .signature = r.Text(5)});
  }
  return p;
}

Result<Proposal> Versions::GetProposal(std::int64_t id) {
  FLEETID_TRY(tx, db_.Begin(TxMode::kRead));
  return LoadProposal(*tx, id);
}

Result<std::vector<Proposal>> Versions::Proposals(bool pending_only, int limit) {
  FLEETID_TRY(tx, db_.Begin(TxMode::kRead));
  const std::int64_t bounded = std::clamp(limit, 1, 1000);
  // One query text built up, rather than a choice between two results: g++ 12 at -O2 took the
  // moved-from alternative's vector for uninitialized (-Wmaybe-uninitialized) and failed the
  // release build.
  std::string sql = "SELECT id FROM policy_proposals";
  std::vector<store::Value> params;
  if (pending_only) {
    sql += " WHERE state = ?";
    params.emplace_back(std::string(RequestStateName(RequestState::kPending)));
  }
  sql += " ORDER BY id DESC LIMIT ?";
  params.emplace_back(bounded);
  FLEETID_TRY(rows, tx->Query(sql, params));
  std::vector<Proposal> out;
  out.reserve(rows.size());
  for (const Row& r : rows) {
    FLEETID_TRY(p, LoadProposal(*tx, r.Int(0)));
    out.push_back(std::move(p));
  }
  return out;
}

Result<Proposal> Versions::Propose(const Operator& by, std::string_view document, std::int64_t base,
                                   std::string_view reason) {
  FLEETID_TRY(target, Policy::Parse(document));
  FLEETID_TRY(allowed, Authorize(by, kProposeAction, Resource{}, target->Hash()));
  static_cast<void>(allowed);
  const std::string actor = AuditActor(by);
  const TimePoint now = clock_.Now();

  FLEETID_TRY(tx, db_.Begin(TxMode::kWrite));
  // Decided under the version active in this transaction, which is also the base checked.
  FLEETID_TRY(active, LoadActive(*tx));
  const Policy& current = *active.policy;
  if (base != active.number) {
    return MakeError(ErrorCode::kConflict,
                     "the proposal is against policy version {}, but version {} is active", base,
                     active.number);
  }
  if (target->Hash() == current.Hash()) {
    return MakeError(ErrorCode::kInvalidArgument, "the proposed policy is the active version {}",
                     active.number);
  }
  const Decision decision = current.Decide(by.grants, kProposeAction, Resource{});
  if (!decision.allowed) {
    tx.reset();
    return std::unexpected(Refuse(by, kProposeAction, target->Hash(),
                                  current.Explain(decision, kProposeAction), current.Hash()));
  }
  const std::vector<std::string> diff = Diff(current, *target);
  const ApprovalRule* rule = current.ApprovalsFor(kProposeAction);

  // The target version: the stored one with this hash, or a new one.
  std::int64_t target_number = 0;
  FLEETID_TRY(known, tx->Query("SELECT id FROM policy_versions WHERE hash = ?", {target->Hash()}));
  if (!known.empty()) {
    target_number = known[0].Int(0);
  } else {
    FLEETID_TRY(seq, audit::Log::Append(*tx,
                                        {.actor = actor,
                                         .action = "policy.version",
                                         .subject = target->Hash(),
                                         .before = nullptr,
                                         .after = {{"hash", target->Hash()}},
                                         .reason = std::string(reason),
                                         .policy_version = current.Hash(),
                                         .evidence_digest = target->Hash()},
                                        clock_));
    FLEETID_TRY(inserted,
                tx->Query("INSERT INTO policy_versions (hash, document, created_at, created_by, "
                          "audit_index) VALUES (?, ?, ?, ?, ?) RETURNING id",
                          {target->Hash(), target->Canonical(), UnixSeconds(now), actor,
                           static_cast<std::int64_t>(seq)}));
    target_number = inserted.at(0).Int(0);
  }

  Proposal p;
  p.requester_name = by.name;
  p.requester = actor;
  p.reason = std::string(reason);
  p.created_at = now;
  p.expires_at = now + std::chrono::seconds(rule ? rule->lifetime_seconds : 0);
  p.state = rule ? RequestState::kPending : RequestState::kApplied;
  p.base_number = active.number;
  p.base_hash = current.Hash();
  p.target_number = target_number;
  p.target_hash = target->Hash();
  p.digest = ProposalDigest(p.base_hash, p.target_hash);
  p.approvals_required = rule ? rule->approvals : 0;
  if (rule) p.from_roles = rule->from_roles;
  p.diff = diff;
  p.decided_by = rule ? "" : actor;
  FLEETID_TRY(inserted,
              tx->Query("INSERT INTO policy_proposals (requester, requester_name, reason, "
                        "created_at, expires_at, state, base_version, target_version, digest, "
                        "approvals_required, from_roles, diff, decided_by) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                        {actor, by.name, p.reason, UnixSeconds(now), UnixSeconds(p.expires_at),
                         std::string(RequestStateName(p.state)), p.base_number, p.target_number,
                         p.digest, std::int64_t{p.approvals_required}, Json(p.from_roles).dump(),
                         Json(p.diff).dump(), p.decided_by}));
  p.id = inserted.at(0).Int(0);
  FLEETID_TRY(seq,
              audit::Log::Append(*tx,
                                 {.actor = actor,
                                  .action = "policy.propose",
                                  .subject = p.target_hash,
                                  .before = {{"version", p.base_number}, {"hash", p.base_hash}},
                                  .after = ProposalJson(p),
                                  .reason = p.reason,
                                  .policy_version = current.Hash(),
                                  .evidence_digest = p.digest},
                                 clock_));
  static_cast<void>(seq);
  // No approval asked: applied now, the same way an approval applies it.
  if (!rule) FLEETID_CHECK_OK(ActivateIn(*tx, p, actor, current.Hash(), now));
  FLEETID_CHECK_OK(tx->Commit());
  log::Info("policy proposed", {{"proposal", p.id},
                                {"by", actor},
                                {"target", p.target_hash},
                                {"state", RequestStateName(p.state)}});
  if (!rule) FLEETID_CHECK_OK(Refresh());
  return p;
}

Result<void> Versions::ActivateIn(Transaction& tx, const Proposal& p, const std::string& actor,
                                  const std::string& decided_under, TimePoint now) {
  FLEETID_TRY(
      seq,
      audit::Log::Append(
          tx,
          {.actor = actor,
           .action = "policy.activate",
           .subject = p.target_hash,
           .before = {{"version", p.base_number}, {"hash", p.base_hash}},
           .after = {{"version", p.target_number}, {"hash", p.target_hash}, {"proposal", p.id}},
           .reason = p.reason,
           .policy_version = decided_under,
           .evidence_digest = p.digest},
          clock_));
  // The compare-and-set: only if the version the proposal was made against is still active.
  FLEETID_TRY(changed,
              tx.Exec("UPDATE policy_active SET version = ?, activated_at = ?, activated_by = ?, "
                      "audit_index = ? WHERE slot = 1 AND version = ?",
                      {p.target_number, UnixSeconds(now), actor, static_cast<std::int64_t>(seq),
                       p.base_number}));
  if (changed != 1) {
    return MakeError(ErrorCode::kConflict, "the active policy version changed concurrently");
  }
  return {};
}

Result<void> Versions::Close(const Proposal& proposal, RequestState state, const std::string& why) {
  FLEETID_TRY(tx, db_.Begin(TxMode::kWrite));
  FLEETID_TRY(changed, tx->Exec("UPDATE policy_proposals SET state = ? WHERE id = ? AND state = ?",
                                {std::string(RequestStateName(state)), proposal.id,
                                 std::string(RequestStateName(RequestState::kPending))}));
  if (changed == 1) {
    Proposal closed = proposal;
    closed.state = state;
    FLEETID_TRY(seq, audit::Log::Append(*tx,
                                        {.actor = std::string(kSystemActor),
                                         .action = "policy.close",
                                         .subject = proposal.target_hash,
                                         .before = {{"state", "pending"}},
                                         .after = ProposalJson(closed),
                                         .reason = why,
                                         .policy_version = CurrentHash(),
                                         .evidence_digest = proposal.digest},
                                        clock_));
    static_cast<void>(seq);
  }
  return tx->Commit();
}

Result<Proposal> Versions::Approve(const Operator& by, std::int64_t id, std::string_view reason,
                                   const ApprovalEvidence& evidence) {
  return Settle(by, id, "approve", evidence, reason);
}

Result<Proposal> Versions::Reject(const Operator& by, std::int64_t id, std::string_view reason) {
  return Settle(by, id, "reject", {}, reason);
}

Result<Proposal> Versions::Withdraw(const Operator& by, std::int64_t id, std::string_view reason) {
  return Settle(by, id, "withdraw", {}, reason);
}

// Settle is Approve, Reject and Withdraw: one transaction that locks the proposal's row (so
// concurrent approvals count one after the other), checks it is still open, and records |how|.
Result<Proposal> Versions::Settle(const Operator& by, std::int64_t id, std::string_view how,
                                  const ApprovalEvidence& evidence, std::string_view reason) {
  const std::string action = fmt::format("policy.{}", how);
  const std::string actor = AuditActor(by);
  const std::string subject = fmt::format("policy proposal {}", id);
  if (how != "withdraw") {
    FLEETID_TRY(allowed, Authorize(by, action, Resource{}, subject));
    static_cast<void>(allowed);
  }
  const TimePoint now = clock_.Now();
  FLEETID_TRY(tx, db_.Begin(TxMode::kWrite));
  // Lock the row first (PostgreSQL: the count below then sees every earlier approval).
  FLEETID_TRY(locked, tx->Exec("UPDATE policy_proposals SET state = state WHERE id = ?", {id}));
  if (locked == 0) return MakeError(ErrorCode::kNotFound, "no policy proposal {}", id);
  FLEETID_TRY(p, LoadProposal(*tx, id));
  FLEETID_TRY(active, LoadActive(*tx));
  const std::string decided_under = active.policy->Hash();
  if (p.state != RequestState::kPending) {
    return MakeError(ErrorCode::kConflict, "policy proposal {} is {}", id,
                     RequestStateName(p.state));
  }
  // The refusals below are decided in this transaction; each is audited in one of its own.
  auto refuse = [&](const std::string& why) -> Result<Proposal> {
    tx.reset();
    return std::unexpected(Refuse(by, action, subject, why, decided_under));
  };
  const bool is_requester = p.requester_name == by.name;
  if (how == "withdraw" && !is_requester) {
    return refuse(fmt::format("only the requester ({}) may withdraw it", p.requester_name));
  }
  if (how != "withdraw") {
    const Decision decision = active.policy->Decide(by.grants, action, Resource{});
    if (!decision.allowed) return refuse(active.policy->Explain(decision, action));
  }
  if (how == "approve") {
    if (is_requester) return refuse("the requester never approves their own proposal");
    if (!HoldsOneOf(by, p.from_roles)) {
      return refuse(fmt::format("an approval needs one of the roles {}, held without a scope",
                                fmt::join(p.from_roles, ", ")));
    }
    if (std::ranges::any_of(p.approvals,
                            [&](const ApprovalRecord& a) { return a.approver_name == by.name; })) {
      return MakeError(ErrorCode::kConflict, "{} approved policy proposal {} already", by.name, id);
    }
  }
  // Expired and superseded proposals are closed in a transaction of their own, so the refusal
  // leaves them marked.
  std::optional<std::pair<RequestState, std::string>> close;
  if (how != "withdraw" && now >= p.expires_at) {
    close.emplace(RequestState::kExpired, fmt::format("policy proposal {} expired", id));
  } else if (how == "approve" && p.base_number != active.number) {
    close.emplace(RequestState::kSuperseded,
                  fmt::format("policy proposal {} was made against version {}, but version {} "
                              "is active now",
                              id, p.base_number, active.number));
  }
  if (close) {
    tx.reset();
    FLEETID_CHECK_OK(Close(p, close->first, close->second));
    return MakeError(ErrorCode::kConflict, "{}", close->second);
  }

  Proposal after = p;
  if (how == "approve") {
    after.approvals.push_back({.approver_name = by.name,
                               .approver = actor,
                               .at = now,
                               .reason = std::string(reason),
                               .via = evidence.signature.empty() ? "mtls" : "signed",
                               .signature = evidence.signature});
    if (static_cast<int>(after.approvals.size()) >= p.approvals_required) {
      after.state = RequestState::kApplied;
    }
  } else {
    after.state = how == "reject" ? RequestState::kRejected : RequestState::kWithdrawn;
  }
  if (after.state != RequestState::kPending) after.decided_by = actor;
  Json after_json = ProposalJson(after);
  if (how == "approve") {
    // The signature travels in the audit entry, so the approval verifies from the log alone.
    after_json["approval"] = {{"via", after.approvals.back().via},
                              {"signature", evidence.signature}};
  }
  FLEETID_TRY(seq, audit::Log::Append(*tx,
                                      {.actor = actor,
                                       .action = action,
                                       .subject = p.target_hash,
                                       .before = ProposalJson(p),
                                       .after = std::move(after_json),
                                       .reason = std::string(reason),
                                       .policy_version = decided_under,
                                       .evidence_digest = p.digest},
                                      clock_));
  if (how == "approve") {
    FLEETID_CHECK_OK(
        tx->Exec("INSERT INTO policy_approvals (proposal, approver_name, approver, "
                 "at, reason, audit_index, via, signature) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                 {id, by.name, actor, UnixSeconds(now), std::string(reason),
                  static_cast<std::int64_t>(seq), after.approvals.back().via, evidence.signature}));
  }
  FLEETID_CHECK_OK(tx->Exec("UPDATE policy_proposals SET state = ?, decided_by = ? WHERE id = ?",
                            {std::string(RequestStateName(after.state)), after.decided_by, id}));
  if (after.state == RequestState::kApplied) {
    FLEETID_CHECK_OK(ActivateIn(*tx, p, actor, decided_under, now));
  }
  FLEETID_CHECK_OK(tx->Commit());
  log::Info(
      "policy proposal decided",
      {{"proposal", id}, {"by", actor}, {"how", how}, {"state", RequestStateName(after.state)}});
  if (after.state == RequestState::kApplied) FLEETID_CHECK_OK(Refresh());
  return after;
}

}  // namespace fleetid::policy
