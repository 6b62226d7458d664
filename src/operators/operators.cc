#include "operators/operators.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <openssl/x509.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <system_error>

#include "audit/log.h"
#include "common/identifier.h"
#include "common/log.h"
#include "crypto/crypto.h"
#include "crypto/csr.h"
#include "crypto/jws.h"
#include "crypto/x509.h"

namespace fleetid::operators {
namespace {

using Json = nlohmann::json;
using store::Row;
using store::Transaction;
using store::TxMode;

// clang-format off
constexpr std::string_view kSchemaSqlite = R"sql(
CREATE TABLE operators (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  state TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  created_by TEXT NOT NULL
);
CREATE TABLE operator_grants (
  id INTEGER PRIMARY KEY,
  operator_id INTEGER NOT NULL REFERENCES operators (id),
  role TEXT NOT NULL,
  scope TEXT NOT NULL,
  granted_by TEXT NOT NULL,
  granted_at INTEGER NOT NULL,
  audit_index INTEGER NOT NULL
);
CREATE INDEX operator_grants_by_operator ON operator_grants (operator_id);
CREATE TABLE operator_codes (
  code_sha256 TEXT PRIMARY KEY,
  kind TEXT NOT NULL,
  name TEXT NOT NULL,
  grants TEXT NOT NULL,
  created_by TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  used_at INTEGER,
  used_by TEXT
);
)sql";
// clang-format on

constexpr std::string_view kBootstrap = "bootstrap";
constexpr std::string_view kInvite = "invite";
constexpr std::string_view kAdminRole = "admin";
constexpr std::size_t kCodeBytes = 32;
// A bootstrap code waits until it is used; this bounds it only against a forgotten file.
constexpr std::chrono::hours kBootstrapLifetime{24 * 365};

std::string CodeHash(std::string_view code) { return crypto::Hex(crypto::Sha256(code)); }

Json GrantsJson(std::span<const policy::Grant> grants) {
  Json out = Json::array();
  for (const policy::Grant& g : grants) {
    out.push_back({{"role", g.role}, {"scope", Json::parse(policy::ScopeToJson(g.scope))}});
  }
  return out;
}

Result<std::vector<policy::Grant>> GrantsFrom(const std::string& text) {
  const Json parsed = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!parsed.is_array()) return MakeError(ErrorCode::kInternal, "stored grants do not read back");
  std::vector<policy::Grant> out;
  for (const Json& g : parsed) {
    if (!g.is_object() || !g.contains("role") || !g.contains("scope") || !g["role"].is_string()) {
      return MakeError(ErrorCode::kInternal, "stored grants do not read back");
    }
    FLEETID_TRY(scope, policy::ScopeFromJson(g["scope"]));
    out.push_back({.role = g["role"].get<std::string>(), .scope = std::move(scope)});
  }
  return out;
}

std::string Actor(std::string_view name, std::string_view serial) {
  return policy::AuditActor(
      {.name = std::string(name), .credential = std::string(serial), .grants = {}});
}

}  // namespace

struct Operators::Code {
  std::string name;
  std::vector<policy::Grant> grants;
  std::string created_by;
};

// The operator API's idempotency keys (operators/idempotency.h): status 0 while the first
// request is in flight.
constexpr std::string_view kIdempotencySql = R"sql(
CREATE TABLE api_idempotency (
  operator_name TEXT NOT NULL,
  idem_key TEXT NOT NULL,
  fingerprint TEXT NOT NULL,
  status INTEGER NOT NULL,
  body TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  PRIMARY KEY (operator_name, idem_key)
);
CREATE INDEX api_idempotency_by_age ON api_idempotency (created_at);
)sql";

Result<void> Operators::Migrate(store::Database& db) {
  FLEETID_CHECK_OK(audit::Log::Migrate(db));
  const std::string pg = store::PostgresDdl(kSchemaSqlite);
  const store::Migration migrations[] = {
      {1, "operators, grants, bootstrap and invitation codes", kSchemaSqlite, pg},
      {2, "idempotency keys of the operator API's mutations", kIdempotencySql, {}}};
  FLEETID_TRY(applied, db.Migrate("operators", migrations));
  static_cast<void>(applied);
  return {};
}

Operators::Operators(store::Database& db, pki::Authority& authority, policy::Versions& policy,
                     Clock& clock, Rng& rng, OperatorsOptions options)
    : db_(db),
      authority_(authority),
      policy_(policy),
      clock_(clock),
      rng_(rng),
      options_(options),
      idempotency_(db, clock) {}

Result<std::string> Operators::NewCode() {
  FLEETID_TRY(bytes, rng_.Bytes(kCodeBytes));
  return crypto::Base64UrlEncode(bytes);
}

Result<bool> Operators::PrepareBootstrap(const std::filesystem::path& path) {
  MutexLock lock(bootstrap_mu_);
  bootstrap_path_ = path;
  FLEETID_TRY(tx, db_.Begin(TxMode::kWrite));
  FLEETID_TRY(count, tx->Query("SELECT COUNT(*) FROM operators"));
  if (count.at(0).Int(0) > 0) {
    std::error_code ignored;
    std::filesystem::remove(path, ignored);
    return false;
  }
  const std::int64_t now = UnixSeconds(clock_.Now());
  // A file from an earlier start whose code is still waiting is kept.
  std::string existing;
  if (std::ifstream in(path); in) std::getline(in, existing);
  if (!existing.empty()) {
    FLEETID_TRY(rows, tx->Query("SELECT 1 FROM operator_codes WHERE code_sha256 = ? AND kind = ? "
                                "AND used_at IS NULL AND expires_at > ?",
                                {CodeHash(existing), std::string(kBootstrap), now}));
    if (!rows.empty()) return true;
  }
  FLEETID_TRY(code, NewCode());
  std::error_code ec_ignored;
  // Earlier unused bootstrap codes stop working: only the one in the file does.
  FLEETID_CHECK_OK(
      tx->Exec("UPDATE operator_codes SET used_at = ?, used_by = 'replaced' "
               "WHERE kind = ? AND used_at IS NULL",
               {now, std::string(kBootstrap)}));
  FLEETID_CHECK_OK(tx->Exec(
      "INSERT INTO operator_codes (code_sha256, kind, name, grants, created_by, created_at, "
      "expires_at) VALUES (?, ?, '', ?, 'system', ?, ?)",
      {CodeHash(code), std::string(kBootstrap), GrantsJson({}).dump(), now,
       now + std::chrono::duration_cast<std::chrono::seconds>(kBootstrapLifetime).count()}));
  // Written owner-only (created 0600, whatever the umask) before the code is committed, so a
  // code the database knows is never readable by others; then renamed into place.
  const std::filesystem::path temp = path.string() + ".new";
  std::filesystem::remove(temp, ec_ignored);
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) return MakeError(ErrorCode::kUnavailable, "cannot create {}", temp.string());
  const std::string line = code + "\n";
  const bool written = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
  const bool closed = ::close(fd) == 0;
  if (!written || !closed)
    return MakeError(ErrorCode::kUnavailable, "cannot write {}", temp.string());
  std::error_code ec;
  std::filesystem::rename(temp, path, ec);
  if (ec) {
    return MakeError(ErrorCode::kUnavailable, "cannot write {}: {}", path.string(), ec.message());
  }
  FLEETID_CHECK_OK(tx->Commit());
  return true;
}

Result<Operators::Code> Operators::UseCode(Transaction& tx, std::string_view code,
                                           std::string_view kind) {
  const std::int64_t now = UnixSeconds(clock_.Now());
  FLEETID_TRY(rows, tx.Query("SELECT name, grants, created_by FROM operator_codes "
                             "WHERE code_sha256 = ? AND kind = ? AND used_at IS NULL "
                             "AND expires_at > ?",
                             {CodeHash(code), std::string(kind), now}));
  if (rows.empty()) {
    return MakeError(ErrorCode::kPermissionDenied, "not a valid {} code (wrong, used or expired)",
                     kind);
  }
  FLEETID_TRY(changed, tx.Exec("UPDATE operator_codes SET used_at = ? WHERE code_sha256 = ? AND "
                               "used_at IS NULL",
                               {now, CodeHash(code)}));
  if (changed != 1)
    return MakeError(ErrorCode::kConflict, "the {} code was used concurrently", kind);
  FLEETID_TRY(grants, GrantsFrom(rows[0].Text(1)));
  return Code{.name = rows[0].Text(0), .grants = std::move(grants), .created_by = rows[0].Text(2)};
}

Result<Issued> Operators::IssueIn(Transaction& tx, std::string_view name,
                                  std::span<const std::uint8_t> csr_der, std::string_view actor) {
  FLEETID_TRY(csr, crypto::VerifyCsr(csr_der));
  FLEETID_TRY(record,
              authority_.IssueOperatorIn(tx, csr, name, options_.certificate_lifetime, actor));
  FLEETID_TRY(ca, authority_.CaCertificate(std::string(pki::kOperatorCa)));
  return Issued{.name = std::string(name),
                .certificate = std::move(record),
                .chain = {std::move(ca), authority_.RootDer()}};
}

Result<Issued> Operators::Bootstrap(std::string_view code, std::string_view name,
                                    std::span<const std::uint8_t> csr_der) {
  FLEETID_CHECK_OK(CheckIdentifier("operator name", name));
  const policy::Active active = policy_.Current();
  if (active.policy->FindRole(kAdminRole) == nullptr) {
    return MakeError(ErrorCode::kConflict, "the active policy has no role '{}' to bootstrap with",
                     kAdminRole);
  }
  const std::int64_t now = UnixSeconds(clock_.Now());
  FLEETID_TRY(tx, db_.Begin(TxMode::kWrite));
  FLEETID_TRY(count, tx->Query("SELECT COUNT(*) FROM operators"));
  if (count.at(0).Int(0) > 0) {
    return MakeError(ErrorCode::kConflict,
                     "operators exist: bootstrap is over; ask an administrator for an invitation");
  }
  FLEETID_TRY(used, UseCode(*tx, code, kBootstrap));
  static_cast<void>(used);
  const std::vector<policy::Grant> grants = {{.role = std::string(kAdminRole), .scope = {}}};
  FLEETID_TRY(inserted, tx->Query("INSERT INTO operators (name, state, created_at, created_by) "
                                  "VALUES (?, 'active', ?, 'bootstrap') RETURNING id",
                                  {std::string(name), now}));
  FLEETID_TRY(issued, IssueIn(*tx, name, csr_der, "bootstrap"));
  FLEETID_TRY(seq, audit::Log::Append(*tx,
                                      {.actor = "bootstrap",
                                       .action = "operator.bootstrap",
                                       .subject = std::string(name),
                                       .before = nullptr,
                                       .after = {{"operator", name},
                                                 {"certificate", issued.certificate.serial},
                                                 {"grants", GrantsJson(grants)}},
                                       .reason = "the first administrator",
                                       .policy_version = active.policy->Hash(),
                                       .evidence_digest = ""},
                                      clock_));
  FLEETID_CHECK_OK(
      tx->Exec("INSERT INTO operator_grants (operator_id, role, scope, granted_by, "
               "granted_at, audit_index) VALUES (?, ?, ?, 'bootstrap', ?, ?)",
               {inserted.at(0).Int(0), std::string(kAdminRole), policy::ScopeToJson({}), now,
                static_cast<std::int64_t>(seq)}));
  FLEETID_CHECK_OK(tx->Commit());
  log::Info("operator bootstrapped", {{"operator", name}, {"serial", issued.certificate.serial}});
  {
    MutexLock lock(bootstrap_mu_);
    std::error_code ignored;
    if (!bootstrap_path_.empty()) std::filesystem::remove(bootstrap_path_, ignored);
  }
  return issued;
}

Result<std::string> Operators::Allowed(const policy::Operator& by, std::string_view action,
                                       std::span<const policy::Grant> grants,
                                       std::string_view subject) {
  const policy::Active active = policy_.Current();
  std::vector<policy::Scope> scopes;
  for (const policy::Grant& g : grants) scopes.push_back(g.scope);
  if (scopes.empty()) scopes.emplace_back();
  for (const policy::Scope& scope : scopes) {
    const policy::Decision decision = active.policy->DecideWithin(by.grants, action, scope);
    if (!decision.allowed) {
      return std::unexpected(policy_.Refuse(
          by, action, subject,
          fmt::format("{} ({})", active.policy->Explain(decision, action), scope.Describe()),
          active.policy->Hash()));
    }
  }
  if (std::string why = policy::ApprovalsNotOffered(*active.policy, action); !why.empty()) {
    return std::unexpected(policy_.Refuse(by, action, subject, why, active.policy->Hash()));
  }
  for (const policy::Grant& g : grants) {
    if (auto may = active.policy->MayGrant(by.grants, g); !may) {
      if (may.error().code() != ErrorCode::kPermissionDenied) return std::unexpected(may.error());
      return std::unexpected(policy_.Refuse(by, "operator.grant", subject, may.error().message(),
                                            active.policy->Hash()));
    }
  }
  return active.policy->Hash();
}

Result<Invitation> Operators::Invite(const policy::Operator& by, std::string_view name,
                                     const std::vector<policy::Grant>& grants,
                                     std::chrono::seconds lifetime) {
  FLEETID_CHECK_OK(CheckIdentifier("operator name", name));
  if (lifetime <= std::chrono::seconds(0) || lifetime > options_.max_invitation_lifetime) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "an invitation lives more than 0 s and at most {} s",
                     options_.max_invitation_lifetime.count());
  }
  FLEETID_TRY(decided_under, Allowed(by, "operator.invite", grants, name));
  const TimePoint now = clock_.Now();
  FLEETID_TRY(code, NewCode());
  FLEETID_TRY(tx, db_.Begin(TxMode::kWrite));
  FLEETID_TRY(existing, tx->Query("SELECT 1 FROM operators WHERE name = ?", {std::string(name)}));
  if (!existing.empty()) return MakeError(ErrorCode::kConflict, "operator '{}' exists", name);
  const std::string actor = policy::AuditActor(by);
  FLEETID_CHECK_OK(tx->Exec(
      "INSERT INTO operator_codes (code_sha256, kind, name, grants, created_by, created_at, "
      "expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
      {CodeHash(code), std::string(kInvite), std::string(name), GrantsJson(grants).dump(), by.name,
       UnixSeconds(now), UnixSeconds(now + lifetime)}));
  FLEETID_TRY(seq, audit::Log::Append(*tx,
                                      {.actor = actor,
                                       .action = "operator.invite",
                                       .subject = std::string(name),
                                       .before = nullptr,
                                       .after = {{"grants", GrantsJson(grants)},
                                                 {"expires_at", UnixSeconds(now + lifetime)}},
                                       .reason = "",
                                       .policy_version = decided_under,
                                       .evidence_digest = ""},
                                      clock_));
  static_cast<void>(seq);
  FLEETID_CHECK_OK(tx->Commit());
  return Invitation{.code = std::move(code),
                    .name = std::string(name),
                    .expires_at = now + lifetime,
                    .grants = grants};
}

Result<Issued> Operators::Enroll(std::string_view code, std::span<const std::uint8_t> csr_der) {
  const policy::Active active = policy_.Current();
  const std::int64_t now = UnixSeconds(clock_.Now());
  FLEETID_TRY(tx, db_.Begin(TxMode::kWrite));
  FLEETID_TRY(invitation, UseCode(*tx, code, kInvite));
  // Checked again at use: the inviter must still be an operator who may make these grants.
  auto inviter = LoadIn(*tx, invitation.created_by);
  if (!inviter || !inviter->active) {
    return MakeError(ErrorCode::kPermissionDenied,
                     "the invitation's author '{}' is no longer an operator",
                     invitation.created_by);
  }
  std::vector<policy::Grant> inviter_grants;
  for (const GrantRecord& g : inviter->grants) inviter_grants.push_back(g.grant);
  for (const policy::Grant& g : invitation.grants) {
    if (auto may = active.policy->MayGrant(inviter_grants, g); !may) {
      return MakeError(ErrorCode::kPermissionDenied, "the invitation no longer holds: {}",
                       may.error().message());
    }
  }
  FLEETID_TRY(existing, tx->Query("SELECT 1 FROM operators WHERE name = ?", {invitation.name}));
  if (!existing.empty())
    return MakeError(ErrorCode::kConflict, "operator '{}' exists", invitation.name);
  const std::string inviter_actor = Actor(invitation.created_by, "");
  FLEETID_TRY(inserted, tx->Query("INSERT INTO operators (name, state, created_at, created_by) "
                                  "VALUES (?, 'active', ?, ?) RETURNING id",
                                  {invitation.name, now, inviter_actor}));
  FLEETID_TRY(issued, IssueIn(*tx, invitation.name, csr_der, Actor(invitation.name, "")));
  FLEETID_TRY(seq, audit::Log::Append(*tx,
                                      {.actor = Actor(invitation.name, issued.certificate.serial),
                                       .action = "operator.enroll",
                                       .subject = invitation.name,
                                       .before = nullptr,
                                       .after = {{"certificate", issued.certificate.serial},
                                                 {"grants", GrantsJson(invitation.grants)},
                                                 {"invited_by", inviter_actor}},
                                       .reason = "",
                                       .policy_version = active.policy->Hash(),
                                       .evidence_digest = ""},
                                      clock_));
  for (const policy::Grant& g : invitation.grants) {
    FLEETID_CHECK_OK(
        tx->Exec("INSERT INTO operator_grants (operator_id, role, scope, granted_by, "
                 "granted_at, audit_index) VALUES (?, ?, ?, ?, ?, ?)",
                 {inserted.at(0).Int(0), g.role, policy::ScopeToJson(g.scope), inviter_actor, now,
                  static_cast<std::int64_t>(seq)}));
  }
  FLEETID_CHECK_OK(tx->Commit());
  log::Info("operator enrolled",
            {{"operator", invitation.name}, {"serial", issued.certificate.serial}});
  return issued;
}

Result<Issued> Operators::Renew(const policy::Operator& by, std::span<const std::uint8_t> csr_der) {
  FLEETID_TRY(tx, db_.Begin(TxMode::kWrite));
  FLEETID_TRY(issued, IssueIn(*tx, by.name, csr_der, policy::AuditActor(by)));
  FLEETID_TRY(old, authority_.ChangeStatusIn(*tx, by.credential, pki::Reason::kSuperseded,
                                             policy::AuditActor(by)));
  FLEETID_CHECK_OK(tx->Commit());
  authority_.Publish(old);
  return issued;
}

Result<policy::Operator> Operators::Authenticate(const ClientChain& chain) {
  if (chain.empty()) {
    return MakeError(ErrorCode::kUnauthenticated,
                     "an operator certificate (TLS client authentication) is required");
  }
  FLEETID_TRY(serial, SerialOf(chain.front()));
  // The authority's own record decides, not a signature check per call: the certificate must be
  // the very one (byte for byte) the authority issued for an operator, which only the operators'
  // CA does (pki::Authority::IssueOperatorIn). The TLS handshake verified the chain already.
  // Every call asks this, so it is one statement in autocommit (one round trip to PostgreSQL,
  // where a transaction of three queries took five): the certificate's record (the CA's table,
  // read here as pki::Authority::GetIn reads it), its operator and the operator's grants.
  FLEETID_TRY(tx, db_.Begin(TxMode::kAutocommit));
  FLEETID_TRY(rows,
              tx->Query("SELECT c.der, c.device, c.status, o.state, g.role, g.scope "
                        "FROM certificates c "
                        "LEFT JOIN operators o ON c.device LIKE 'operator:%' AND "
                        "o.name = substr(c.device, 10) "
                        "LEFT JOIN operator_grants g ON g.operator_id = o.id "
                        "WHERE c.serial = ? ORDER BY g.id",
                        {serial}));
  if (rows.empty() || rows[0].Bytes(0) != chain.front()) {
    return MakeError(ErrorCode::kUnauthenticated,
                     "the client certificate is not an operator certificate fleetid issued");
  }
  const std::string device = rows[0].Text(1);
  if (!device.starts_with("operator:")) {
    return MakeError(ErrorCode::kUnauthenticated,
                     "the client certificate is not an operator's (a device certificate never "
                     "acts as an operator)");
  }
  if (rows[0].Text(2) != pki::StatusName(pki::Status::kGood)) {
    return MakeError(ErrorCode::kUnauthenticated, "operator certificate {} is {}", serial,
                     rows[0].Text(2));
  }
  const std::string name = device.substr(std::string_view("operator:").size());
  if (rows[0].IsNull(3)) return MakeError(ErrorCode::kNotFound, "no operator '{}'", name);
  if (rows[0].Text(3) != "active") {
    return MakeError(ErrorCode::kUnauthenticated, "operator '{}' is revoked", name);
  }
  policy::Operator out{.name = name, .credential = serial, .grants = {}};
  for (const Row& r : rows) {
    if (r.IsNull(4)) continue;
    FLEETID_TRY(scope, policy::ParseScope(r.Text(5)));
    out.grants.push_back({.role = r.Text(4), .scope = std::move(scope)});
  }
  return out;
}

Result<std::string> Operators::SerialOf(const std::vector<std::uint8_t>& der) {
  std::string key(der.begin(), der.end());
  {
    MutexLock lock(serial_mu_);
    if (auto it = serial_by_der_.find(key); it != serial_by_der_.end()) return it->second;
  }
  FLEETID_TRY(leaf, crypto::ParseCertificateDer(der));
  FLEETID_TRY(serial, crypto::SerialHex(X509_get0_serialNumber(leaf.get())));
  MutexLock lock(serial_mu_);
  if (serial_by_der_.size() >= kSerialCacheSize) serial_by_der_.clear();
  serial_by_der_.emplace(std::move(key), serial);
  return serial;
}

Result<OperatorInfo> Operators::LoadIn(Transaction& tx, std::string_view name) {
  FLEETID_TRY(rows, tx.Query("SELECT id, state, created_at, created_by FROM operators "
                             "WHERE name = ?",
                             {std::string(name)}));
  if (rows.empty()) return MakeError(ErrorCode::kNotFound, "no operator '{}'", name);
  OperatorInfo info{.name = std::string(name),
                    .active = rows[0].Text(1) == "active",
                    .created_at = FromUnixSeconds(rows[0].Int(2)),
                    .created_by = rows[0].Text(3),
                    .grants = {}};
  FLEETID_TRY(grants, tx.Query("SELECT role, scope, granted_by, granted_at FROM operator_grants "
                               "WHERE operator_id = ? ORDER BY id",
                               {rows[0].Int(0)}));
  for (const Row& r : grants) {
    FLEETID_TRY(scope, policy::ParseScope(r.Text(1)));
    info.grants.push_back({.grant = {.role = r.Text(0), .scope = std::move(scope)},
                           .granted_by = r.Text(2),
                           .granted_at = FromUnixSeconds(r.Int(3))});
  }
  return info;
}

Result<OperatorInfo> Operators::Grant(const policy::Operator& by, std::string_view name,
                                      const policy::Grant& grant) {
  const std::vector<policy::Grant> wanted = {grant};
  FLEETID_TRY(decided_under, Allowed(by, "operator.grant", wanted, name));
  FLEETID_TRY(tx, db_.Begin(TxMode::kWrite));
  FLEETID_TRY(rows,
              tx->Query("SELECT id, state FROM operators WHERE name = ?", {std::string(name)}));
  if (rows.empty()) return MakeError(ErrorCode::kNotFound, "no operator '{}'", name);
  if (rows[0].Text(1) != "active")
    return MakeError(ErrorCode::kConflict, "operator '{}' is revoked", name);
  const std::string actor = policy::AuditActor(by);
  FLEETID_TRY(seq, audit::Log::Append(*tx,
                                      {.actor = actor,
                                       .action = "operator.grant",
                                       .subject = std::string(name),
                                       .before = nullptr,
                                       .after = GrantsJson(wanted),
                                       .reason = "",
                                       .policy_version = decided_under,
                                       .evidence_digest = ""},
                                      clock_));
  FLEETID_CHECK_OK(
      tx->Exec("INSERT INTO operator_grants (operator_id, role, scope, granted_by, "
               "granted_at, audit_index) VALUES (?, ?, ?, ?, ?, ?)",
               {rows[0].Int(0), grant.role, policy::ScopeToJson(grant.scope), actor,
                UnixSeconds(clock_.Now()), static_cast<std::int64_t>(seq)}));
  FLEETID_TRY(info, LoadIn(*tx, name));
  FLEETID_CHECK_OK(tx->Commit());
  return info;
}

Result<OperatorInfo> Operators::Revoke(const policy::Operator& by, std::string_view name,
                                       std::string_view reason) {
  FLEETID_TRY(decided_under, Allowed(by, "operator.revoke", {}, name));
  const std::string actor = policy::AuditActor(by);
  FLEETID_TRY(tx, db_.Begin(TxMode::kWrite));
  FLEETID_TRY(changed, tx->Exec("UPDATE operators SET state = 'revoked' WHERE name = ? AND "
                                "state = 'active'",
                                {std::string(name)}));
  if (changed != 1) {
    FLEETID_TRY(info, LoadIn(*tx, name));  // kNotFound for an unknown name
    static_cast<void>(info);
    return MakeError(ErrorCode::kConflict, "operator '{}' is revoked already", name);
  }
  // Never lock everyone out: some other active operator must still be able to invite and revoke
  // everywhere (a grant without a scope whose role allows both).
  const policy::Active active = policy_.Current();
  FLEETID_TRY(others, tx->Query("SELECT o.name, g.role, g.scope FROM operators o JOIN "
                                "operator_grants g ON g.operator_id = o.id "
                                "WHERE o.state = 'active' AND o.name <> ?",
                                {std::string(name)}));
  const bool someone_left = std::ranges::any_of(others, [&](const Row& r) {
    auto scope = policy::ParseScope(r.Text(2));
    if (!scope || !scope->Unbounded()) return false;
    const std::vector<policy::Grant> one = {{.role = r.Text(1), .scope = {}}};
    return active.policy->DecideWithin(one, "operator.invite", {}).allowed &&
           active.policy->DecideWithin(one, "operator.revoke", {}).allowed;
  });
  if (!someone_left) {
    return MakeError(ErrorCode::kConflict,
                     "revoking '{}' would leave no operator who can invite and revoke "
                     "everywhere; invite another administrator first",
                     name);
  }
  FLEETID_TRY(certs, tx->Query("SELECT serial FROM certificates WHERE device = ? AND status <> ?",
                               {"operator:" + std::string(name),
                                std::string(pki::StatusName(pki::Status::kRevoked))}));
  std::vector<pki::CertificateRecord> revoked;
  for (const Row& r : certs) {
    FLEETID_TRY(
        rec, authority_.ChangeStatusIn(*tx, r.Text(0), pki::Reason::kCessationOfOperation, actor));
    revoked.push_back(std::move(rec));
  }
  FLEETID_TRY(seq,
              audit::Log::Append(
                  *tx,
                  {.actor = actor,
                   .action = "operator.revoke",
                   .subject = std::string(name),
                   .before = {{"state", "active"}},
                   .after = {{"state", "revoked"},
                             {"certificates_revoked", static_cast<std::int64_t>(revoked.size())}},
                   .reason = std::string(reason),
                   .policy_version = decided_under,
                   .evidence_digest = ""},
                  clock_));
  static_cast<void>(seq);
  FLEETID_TRY(info, LoadIn(*tx, name));
  FLEETID_CHECK_OK(tx->Commit());
  for (const pki::CertificateRecord& rec : revoked) authority_.Publish(rec);
  log::Info("operator revoked", {{"operator", name}, {"by", actor}});
  return info;
}

Result<OperatorInfo> Operators::Get(const policy::Operator& by, std::string_view name) {
  FLEETID_TRY(allowed, Allowed(by, "operator.read", {}, name));
  static_cast<void>(allowed);
  FLEETID_TRY(tx, db_.Begin(TxMode::kRead));
  return LoadIn(*tx, name);
}

Result<std::vector<OperatorInfo>> Operators::List(const policy::Operator& by) {
  FLEETID_TRY(allowed, Allowed(by, "operator.read", {}, "operators"));
  static_cast<void>(allowed);
  FLEETID_TRY(tx, db_.Begin(TxMode::kRead));
  FLEETID_TRY(rows, tx->Query("SELECT name FROM operators ORDER BY name"));
  std::vector<OperatorInfo> out;
  out.reserve(rows.size());
  for (const Row& r : rows) {
    FLEETID_TRY(info, LoadIn(*tx, r.Text(0)));
    out.push_back(std::move(info));
  }
  return out;
}

}  // namespace fleetid::operators
