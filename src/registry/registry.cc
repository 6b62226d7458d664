#include "registry/registry.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "audit/log.h"
#include "common/failpoint.h"

namespace fleetid::registry {
namespace {

// "operator:alice", "device:GW-0001", "scheduler:..." — who, as the audit log records it.
std::string AuditActor(const Actor& actor) {
  const char* kind = actor.kind == kDevice      ? "device"
                     : actor.kind == kScheduler ? "scheduler"
                                                : "operator";
  return fmt::format("{}:{}", kind, actor.id);
}

using store::Row;
using store::TxMode;
using store::Value;
using Json = nlohmann::json;

// clang-format off
constexpr std::string_view kSchemaSqlite = R"sql(
CREATE TABLE devices (
  id INTEGER PRIMARY KEY,
  serial TEXT NOT NULL UNIQUE,
  model TEXT NOT NULL,
  manufacturer TEXT NOT NULL,
  idevid_fingerprint TEXT NOT NULL UNIQUE,
  firmware_version TEXT NOT NULL,
  firmware_digest TEXT NOT NULL,
  tenant TEXT NOT NULL DEFAULT '',
  region TEXT NOT NULL DEFAULT '',
  labels TEXT NOT NULL DEFAULT '{}',
  state TEXT NOT NULL,
  resume_state TEXT NOT NULL,
  version INTEGER NOT NULL,
  batch TEXT NOT NULL,
  station TEXT NOT NULL,
  manufactured_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  grace_until INTEGER
);
CREATE INDEX devices_by_state ON devices (state, id);
CREATE INDEX devices_by_tenant ON devices (tenant, region, id);
CREATE INDEX devices_by_model ON devices (model, id);
CREATE INDEX devices_by_firmware ON devices (firmware_version, id);
CREATE TABLE device_labels (
  device_id INTEGER NOT NULL REFERENCES devices (id),
  key TEXT NOT NULL,
  value TEXT NOT NULL,
  PRIMARY KEY (device_id, key)
);
CREATE INDEX device_labels_by_value ON device_labels (key, value, device_id);
CREATE TABLE credentials (
  cert_serial TEXT PRIMARY KEY,
  device_id INTEGER NOT NULL REFERENCES devices (id),
  role TEXT NOT NULL,
  not_after INTEGER NOT NULL
);
CREATE INDEX credentials_by_device ON credentials (device_id);
CREATE INDEX credentials_by_expiry ON credentials (role, not_after);
CREATE TABLE transitions (
  id INTEGER PRIMARY KEY,
  device_id INTEGER NOT NULL REFERENCES devices (id),
  version INTEGER NOT NULL,
  event TEXT NOT NULL,
  from_state TEXT NOT NULL,
  to_state TEXT NOT NULL,
  actor TEXT NOT NULL,
  reason TEXT NOT NULL,
  at INTEGER NOT NULL,
  policy_version TEXT NOT NULL,
  evidence_digest TEXT NOT NULL,
  audit_index INTEGER,
  UNIQUE (device_id, version)
);
CREATE TABLE tombstones (
  kind TEXT NOT NULL,
  value TEXT NOT NULL,
  device_id INTEGER NOT NULL,
  at INTEGER NOT NULL,
  PRIMARY KEY (kind, value)
);
CREATE TABLE import_batches (
  batch_id TEXT PRIMARY KEY,
  actor TEXT NOT NULL,
  at INTEGER NOT NULL,
  devices INTEGER NOT NULL
);
)sql";
// clang-format on

constexpr std::string_view kDeviceColumns =
    "id, serial, model, manufacturer, idevid_fingerprint, firmware_version, firmware_digest, "
    "tenant, region, labels, state, resume_state, version, batch, station, manufactured_at, "
    "updated_at, grace_until";

Result<Device> DecodeDevice(const Row& r) {
  Device d;
  d.id = r.Int(0);
  d.serial = r.Text(1);
  d.model = r.Text(2);
  d.manufacturer = r.Text(3);
  d.idevid_fingerprint = r.Text(4);
  d.firmware_version = r.Text(5);
  d.firmware_digest = r.Text(6);
  d.tenant = r.Text(7);
  d.region = r.Text(8);
  Json labels = Json::parse(r.Text(9), nullptr, false);
  if (labels.is_object()) {
    for (const auto& [k, v] : labels.items()) {
      if (v.is_string()) d.labels[k] = v.get<std::string>();
    }
  }
  FLEETID_TRY(state, ParseState(r.Text(10)));
  d.state = state;
  FLEETID_TRY(resume, ParseState(r.Text(11)));
  d.resume_state = resume;
  d.version = r.Int(12);
  d.batch = r.Text(13);
  d.station = r.Text(14);
  d.manufactured_at = FromUnixSeconds(r.Int(15));
  d.updated_at = FromUnixSeconds(r.Int(16));
  if (!r.IsNull(17)) d.grace_until = FromUnixSeconds(r.Int(17));
  return d;
}

Result<Device> LoadDevice(store::Transaction& tx, std::string_view serial) {
  FLEETID_TRY(rows, tx.Query(fmt::format("SELECT {} FROM devices WHERE serial = ?", kDeviceColumns),
                             {std::string(serial)}));
  if (rows.empty()) return MakeError(ErrorCode::kNotFound, "no device with serial '{}'", serial);
  return DecodeDevice(rows.front());
}

bool IsHexDigest(std::string_view s) {
  return s.size() == 64 && std::ranges::all_of(s, [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

Result<void> CheckRecord(const ManufacturingRecord& r, std::size_t index) {
  auto bad = [&](std::string_view what) {
    return MakeError(ErrorCode::kInvalidArgument, "record {}: {}", index, what);
  };
  for (const auto& [what, value] :
       {std::pair<std::string_view, std::string_view>{"serial", r.serial}, {"model", r.model}}) {
    if (auto ok = CheckIdentifier(what, value); !ok) return bad(ok.error().message());
  }
  if (r.manufacturer.empty()) return bad("manufacturer is required");
  if (!IsHexDigest(r.idevid_fingerprint)) {
    return bad("idevid_fingerprint must be 64 lower-case hex characters (SHA-256)");
  }
  if (!r.firmware_digest.empty() && !IsHexDigest(r.firmware_digest)) {
    return bad("firmware_digest must be 64 lower-case hex characters (SHA-256)");
  }
  return {};
}

bool HasRole(const Actor& actor, std::string_view role) {
  return std::ranges::any_of(actor.roles, [&](const std::string& r) { return r == role || r == "admin"; });
}

std::string LabelsJson(const Labels& labels) {
  Json j = Json::object();
  for (const auto& [k, v] : labels) j[k] = v;
  return j.dump();
}

}  // namespace

Registry::Registry(store::Database& db, Clock& clock, CredentialEffects* effects,
                   RegistryOptions options)
    : db_(db), clock_(clock), effects_(effects), options_(std::move(options)) {}

Result<void> Registry::Migrate(store::Database& db) {
  // Every transition appends to the audit log in its own transaction.
  FLEETID_CHECK_OK(audit::Log::Migrate(db));
  static const std::string pg = store::PostgresDdl(kSchemaSqlite);
  const store::Migration migrations[] = {{1, "devices, credentials, history", kSchemaSqlite, pg}};
  FLEETID_TRY(applied, db.Migrate("registry", migrations));
  (void)applied;
  return {};
}

Result<ImportReport> Registry::Import(std::string_view batch_id,
                                      std::span<const ManufacturingRecord> records,
                                      const Actor& actor) {
  if (batch_id.empty()) return MakeError(ErrorCode::kInvalidArgument, "batch id is required");
  for (std::size_t i = 0; i < records.size(); ++i) FLEETID_CHECK_OK(CheckRecord(records[i], i));

  const std::int64_t now = UnixSeconds(clock_.Now());
  const std::string manufactured(StateName(State::kManufactured));
  ImportReport report;
  FLEETID_TRY(tx, db_.Begin(TxMode::kWrite));
  // Tombstoned identities are refused. Devices are never deleted, so a tombstoned serial or
  // IDevID always collides with its old row below; the tombstone table is consulted per record
  // up front only when it has entries, which keeps the common import one statement per device.
  FLEETID_TRY(any_dead, tx->Query("SELECT 1 FROM tombstones LIMIT 1"));
  auto tombstoned = [&](const ManufacturingRecord& r) -> Result<std::string> {
    FLEETID_TRY(dead, tx->Query("SELECT kind FROM tombstones WHERE kind = 'serial' AND value = ? "
                                "UNION ALL SELECT kind FROM tombstones WHERE kind = 'idevid' "
                                "AND value = ?",
                                {r.serial, r.idevid_fingerprint}));
    return dead.empty() ? std::string() : dead.front().Text(0);
  };
  auto refuse_dead = [&](std::size_t i, const ManufacturingRecord& r, std::string_view kind) {
    return MakeError(ErrorCode::kPermissionDenied,
                     "record {}: {} of '{}' belongs to a decommissioned identity, which can "
                     "never be registered again",
                     i, kind == "idevid" ? "IDevID" : "serial", r.serial);
  };
  for (std::size_t i = 0; i < records.size(); ++i) {
    const ManufacturingRecord& r = records[i];
    if (i == records.size() / 2) Failpoint("registry-import-midway");
    if (!any_dead.empty()) {
      FLEETID_TRY(kind, tombstoned(r));
      if (!kind.empty()) return refuse_dead(i, r, kind);
    }
    FLEETID_TRY(changed,
                tx->Exec("INSERT INTO devices (serial, model, manufacturer, idevid_fingerprint, "
                         "firmware_version, firmware_digest, labels, state, resume_state, "
                         "version, batch, station, manufactured_at, updated_at) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?) "
                         "ON CONFLICT DO NOTHING",
                         {r.serial, r.model, r.manufacturer, r.idevid_fingerprint,
                          r.firmware_version, r.firmware_digest, LabelsJson(r.labels),
                          manufactured, manufactured, std::string(batch_id), r.station,
                          UnixSeconds(r.manufactured_at), now}));
    if (changed == 0) {
      FLEETID_TRY(existing, tx->Query("SELECT serial, idevid_fingerprint, state FROM devices "
                                      "WHERE serial = ? OR idevid_fingerprint = ?",
                                      {r.serial, r.idevid_fingerprint}));
      for (const store::Row& e : existing) {
        if (e.Text(2) == StateName(State::kDecommissioned)) {
          return refuse_dead(i, r, e.Text(0) == r.serial ? "serial" : "idevid");
        }
      }
      const bool same = existing.size() == 1 && existing[0].Text(0) == r.serial &&
                        existing[0].Text(1) == r.idevid_fingerprint;
      if (!same) {
        return MakeError(ErrorCode::kConflict,
                         "record {}: serial '{}' or its IDevID is already registered to "
                         "another device",
                         i, r.serial);
      }
      ++report.already_present;
      continue;
    }
    if (!r.labels.empty()) {
      FLEETID_TRY(id, tx->Query("SELECT id FROM devices WHERE serial = ?", {r.serial}));
      for (const auto& [k, v] : r.labels) {
        FLEETID_CHECK_OK(tx->Exec(
            "INSERT INTO device_labels (device_id, key, value) VALUES (?, ?, ?)",
            {id.front().Int(0), k, v}));
      }
    }
    ++report.imported;
  }
  FLEETID_CHECK_OK(tx->Exec("INSERT INTO import_batches (batch_id, actor, at, devices) "
                            "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                            {std::string(batch_id), actor.id, now, report.imported}));
  if (report.imported > 0) {
    FLEETID_TRY(seq, audit::Log::Append(
                         *tx,
                         {.actor = AuditActor(actor),
                          .action = "registry.import",
                          .subject = std::string(batch_id),
                          .before = nullptr,
                          .after = {{"imported", report.imported},
                                    {"already_present", report.already_present},
                                    {"state", manufactured}},
                          .reason = "",
                          .policy_version = CurrentPolicyVersion(options_.policy_version),
                          .evidence_digest = ""},
                         clock_));
    static_cast<void>(seq);
  }
  Failpoint("registry-import-before-commit");
  FLEETID_CHECK_OK(tx->Commit());
  Failpoint("registry-import-after-commit");
  return report;
}

Result<Device> Registry::Get(std::string_view serial) {
  FLEETID_TRY(tx, db_.Begin(TxMode::kAutocommit));  // one statement: no BEGIN/ROLLBACK round trips
  return LoadDevice(*tx, serial);
}

Result<Device> Registry::Transition(const TransitionRequest& request) {
  // A serialization failure under PostgreSQL is a conflict the caller resolves by re-reading;
  // nothing is retried here, so "exactly one wins" stays observable.
  return TransitionOnce(request);
}

Result<Device> Registry::TransitionOnce(const TransitionRequest& request) {
  FLEETID_TRY(tx, db_.Begin(TxMode::kWrite));
  FLEETID_TRY(next, TransitionIn(*tx, request));
  FLEETID_CHECK_OK(tx->Commit());
  return next;
}

Result<Device> Registry::GetIn(store::Transaction& tx, std::string_view serial) {
  return LoadDevice(tx, serial);
}

Result<Device> Registry::GetByIdevid(store::Transaction& tx, std::string_view idevid_fingerprint) {
  FLEETID_TRY(rows, tx.Query(fmt::format("SELECT {} FROM devices WHERE idevid_fingerprint = ?",
                                         kDeviceColumns),
                             {std::string(idevid_fingerprint)}));
  if (rows.empty()) {
    return MakeError(ErrorCode::kNotFound, "no device has the IDevID {}", idevid_fingerprint);
  }
  return DecodeDevice(rows.front());
}

Result<std::vector<Credential>> Registry::Credentials(store::Transaction& tx,
                                                      std::int64_t device_id) {
  FLEETID_TRY(rows, tx.Query("SELECT cert_serial, role, not_after FROM credentials "
                             "WHERE device_id = ? ORDER BY not_after, cert_serial",
                             {device_id}));
  std::vector<Credential> out;
  out.reserve(rows.size());
  for (const Row& r : rows) {
    FLEETID_TRY(role, ParseCredentialRole(r.Text(1)));
    out.push_back({r.Text(0), role, FromUnixSeconds(r.Int(2))});
  }
  return out;
}

std::string_view CredentialRoleName(CredentialRole role) {
  switch (role) {
    case CredentialRole::kCurrent:
      return "current";
    case CredentialRole::kPending:
      return "pending";
    case CredentialRole::kSuperseded:
      return "superseded";
  }
  return "superseded";
}

Result<CredentialRole> ParseCredentialRole(std::string_view name) {
  for (CredentialRole role :
       {CredentialRole::kCurrent, CredentialRole::kPending, CredentialRole::kSuperseded}) {
    if (CredentialRoleName(role) == name) return role;
  }
  return MakeError(ErrorCode::kInternal, "a stored credential has the unknown role '{}'", name);
}

Result<void> Registry::SetCredentialRole(store::Transaction& tx, std::string_view cert_serial,
                                         CredentialRole role) {
  FLEETID_TRY(changed, tx.Exec("UPDATE credentials SET role = ? WHERE cert_serial = ?",
                               {std::string(CredentialRoleName(role)), std::string(cert_serial)}));
  if (changed != 1) return MakeError(ErrorCode::kNotFound, "no credential {}", cert_serial);
  return {};
}

Result<Device> Registry::TransitionIn(store::Transaction& txr, const TransitionRequest& request) {
  store::Transaction* tx = &txr;
  const std::string policy_version = CurrentPolicyVersion(options_.policy_version);
  FLEETID_TRY(device, LoadDevice(*tx, request.serial));
  if (device.version != request.expected_version) {
    return MakeError(ErrorCode::kConflict,
                     "device '{}' is at version {}, not {}: it changed since it was read",
                     request.serial, device.version, request.expected_version);
  }
  FLEETID_TRY(rule, FindRule(request.event, device.state));
  if ((rule->actors & request.actor.kind) == 0) {
    return MakeError(ErrorCode::kPermissionDenied, "'{}' from '{}' cannot be caused by {}",
                     EventName(request.event), StateName(device.state),
                     request.actor.kind == kDevice      ? "the device"
                     : request.actor.kind == kScheduler ? "the scheduler"
                                                        : "an operator");
  }
  if (request.actor.kind == kOperator && !request.actor.authorized_by_policy &&
      !HasRole(request.actor, rule->role)) {
    return MakeError(ErrorCode::kPermissionDenied, "'{}' needs the operator role '{}'",
                     EventName(request.event), rule->role);
  }
  if (request.actor.kind == kDevice && request.actor.id != device.serial) {
    return MakeError(ErrorCode::kPermissionDenied, "a device may only change its own state");
  }
  switch (rule->evidence) {
    case Evidence::kNone:
      break;
    case Evidence::kReason:
      if (request.reason.empty()) {
        return MakeError(ErrorCode::kInvalidArgument, "'{}' needs a reason",
                         EventName(request.event));
      }
      break;
    case Evidence::kAttestation:
    case Evidence::kFirmwareMeasurement:
    case Evidence::kPossession:
    case Evidence::kReceipt:
      if (!IsHexDigest(request.evidence_digest)) {
        return MakeError(ErrorCode::kInvalidArgument,
                         "'{}' needs the SHA-256 digest of its evidence (64 hex characters)",
                         EventName(request.event));
      }
      break;
  }

  const TimePoint now = clock_.Now();
  Device next = device;
  next.state = rule->to;
  next.version = device.version + 1;
  next.updated_at = now;
  switch (request.event) {
    case Event::kProvision:
      if (request.tenant.empty() || request.region.empty()) {
        return MakeError(ErrorCode::kInvalidArgument, "provisioning needs a tenant and a region");
      }
      FLEETID_CHECK_OK(CheckIdentifier("tenant", request.tenant));
      FLEETID_CHECK_OK(CheckIdentifier("region", request.region));
      next.tenant = request.tenant;
      next.region = request.region;
      break;
    case Event::kUpdate:
      if (request.firmware_version.empty() || !IsHexDigest(request.firmware_digest)) {
        return MakeError(ErrorCode::kInvalidArgument,
                         "a firmware update needs the new version and its SHA-256 digest");
      }
      next.firmware_version = request.firmware_version;
      next.firmware_digest = request.firmware_digest;
      break;
    case Event::kDecommission:
      next.resume_state = device.state;
      next.grace_until = now + options_.decommission_grace;
      break;
    case Event::kCancelDecommission:
      if (device.grace_until && *device.grace_until <= now) {
        return MakeError(ErrorCode::kConflict,
                         "the decommissioning grace period of '{}' has ended", device.serial);
      }
      next.state = device.resume_state;
      next.grace_until.reset();
      break;
    case Event::kFinalizeDecommission:
      if (!device.grace_until || *device.grace_until > now) {
        return MakeError(ErrorCode::kConflict,
                         "the decommissioning grace period of '{}' has not ended",
                         device.serial);
      }
      next.grace_until.reset();
      break;
    default:
      break;
  }

  Value grace = nullptr;
  if (next.grace_until) grace = UnixSeconds(*next.grace_until);
  FLEETID_TRY(changed, tx->Exec("UPDATE devices SET state = ?, resume_state = ?, version = ?, "
                                "tenant = ?, region = ?, firmware_version = ?, firmware_digest = ?, "
                                "updated_at = ?, grace_until = ? WHERE id = ? AND version = ?",
                                {std::string(StateName(next.state)),
                                 std::string(StateName(next.resume_state)), next.version,
                                 next.tenant, next.region, next.firmware_version,
                                 next.firmware_digest, UnixSeconds(now), grace, device.id,
                                 device.version}));
  if (changed != 1) {
    return MakeError(ErrorCode::kConflict, "device '{}' changed concurrently", device.serial);
  }
  FLEETID_TRY(seq, audit::Log::Append(
                       *tx,
                       {.actor = AuditActor(request.actor),
                        .action = "registry." + std::string(EventName(request.event)),
                        .subject = device.serial,
                        .before = {{"state", StateName(device.state)}, {"version", device.version}},
                        .after = {{"state", StateName(next.state)}, {"version", next.version}},
                        .reason = request.reason,
                        .policy_version = policy_version,
                        .evidence_digest = request.evidence_digest},
                       clock_));
  // The transition names its audit entry (the leaf index), appended in the same transaction.
  FLEETID_CHECK_OK(tx->Exec(
      "INSERT INTO transitions (device_id, version, event, from_state, to_state, actor, reason, "
      "at, policy_version, evidence_digest, audit_index) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
      {device.id, next.version, std::string(EventName(request.event)),
       std::string(StateName(device.state)), std::string(StateName(next.state)),
       request.actor.id, request.reason, UnixSeconds(now), policy_version,
       request.evidence_digest, static_cast<std::int64_t>(seq)}));
  if (rule->action == CredentialAction::kRevokeCessation) {
    for (const auto& [kind, value] : {std::pair<std::string, std::string>{"serial", device.serial},
                                      {"idevid", device.idevid_fingerprint}}) {
      FLEETID_CHECK_OK(tx->Exec("INSERT INTO tombstones (kind, value, device_id, at) "
                                "VALUES (?, ?, ?, ?)",
                                {kind, value, device.id, UnixSeconds(now)}));
    }
  }
  if (rule->action != CredentialAction::kNone) {
    if (effects_ == nullptr) {
      return MakeError(ErrorCode::kUnavailable, "'{}' acts on credentials, and no PKI is wired",
                       EventName(request.event));
    }
    FLEETID_CHECK_OK(effects_->Apply(*tx, next, rule->action, request));
  }
  return next;
}

Result<Event> Registry::EnrollmentEventIn(store::Transaction& tx, const Device& device,
                                          const EnrollmentPolicy& policy) {
  FLEETID_CHECK_OK(CheckEnrollableIn(tx, device.serial, device.idevid_fingerprint));
  const auto rules = Transitions();
  const auto issuing = std::ranges::find_if(rules, [&](const TransitionRule& r) {
    return r.from == device.state && r.action == CredentialAction::kIssue &&
           (r.actors & kDevice) != 0;
  });
  if (issuing == rules.end()) {
    return MakeError(ErrorCode::kPermissionDenied, "'{}' is {}: enrollment refused",
                     device.serial, StateName(device.state));
  }
  if (issuing->event == Event::kReattest && !policy.idevid_reenroll_after_expiry) {
    return MakeError(ErrorCode::kPermissionDenied,
                     "'{}' is {} and policy does not allow enrolling again with the IDevID",
                     device.serial, StateName(device.state));
  }
  return issuing->event;
}

Result<const TransitionRule*> Registry::DeviceMay(const Device& device, Event event,
                                                  std::string_view what) {
  auto rule = FindRule(event, device.state);
  if (!rule || ((*rule)->actors & kDevice) == 0) {
    return MakeError(ErrorCode::kPermissionDenied, "'{}' is {}: {} refused", device.serial,
                     StateName(device.state), what);
  }
  return *rule;
}

Result<int> Registry::FinalizeDecommissions() {
  std::vector<std::pair<std::string, std::int64_t>> due;
  {
    FLEETID_TRY(tx, db_.Begin(TxMode::kRead));
    FLEETID_TRY(rows, tx->Query("SELECT serial, version FROM devices WHERE state = ? AND "
                                "grace_until <= ? ORDER BY id",
                                {std::string(StateName(State::kDecommissioning)),
                                 UnixSeconds(clock_.Now())}));
    for (const Row& r : rows) due.emplace_back(r.Text(0), r.Int(1));
  }
  int moved = 0;
  for (const auto& [serial, version] : due) {
    TransitionRequest req;
    req.serial = serial;
    req.event = Event::kFinalizeDecommission;
    req.expected_version = version;
    req.actor = Actor{kScheduler, "scheduler", {}};
    auto r = Transition(req);
    if (r) {
      ++moved;
    } else if (r.error().code() != ErrorCode::kConflict) {
      return MakeError(r.error());  // A conflict means an operator acted first: skip it.
    }
  }
  return moved;
}

Result<std::vector<TransitionRecord>> Registry::History(std::string_view serial) {
  FLEETID_TRY(tx, db_.Begin(TxMode::kRead));
  FLEETID_TRY(device, LoadDevice(*tx, serial));
  FLEETID_TRY(rows, tx->Query("SELECT id, version, event, from_state, to_state, actor, reason, at, "
                              "policy_version, evidence_digest, audit_index FROM transitions "
                              "WHERE device_id = ? ORDER BY version",
                              {device.id}));
  std::vector<TransitionRecord> out;
  out.reserve(rows.size());
  for (const Row& r : rows) {
    TransitionRecord t;
    t.id = r.Int(0);
    t.serial = device.serial;
    t.version = r.Int(1);
    FLEETID_TRY(event, ParseEvent(r.Text(2)));
    t.event = event;
    FLEETID_TRY(from, ParseState(r.Text(3)));
    t.from = from;
    FLEETID_TRY(to, ParseState(r.Text(4)));
    t.to = to;
    t.actor = r.Text(5);
    t.reason = r.Text(6);
    t.at = FromUnixSeconds(r.Int(7));
    t.policy_version = r.Text(8);
    t.evidence_digest = r.Text(9);
    if (!r.IsNull(10)) t.audit_index = r.Int(10);
    out.push_back(std::move(t));
  }
  return out;
}

Result<DevicePage> Registry::Query(const DeviceQuery& q) {
  if (q.limit < 1 || q.limit > 1000) {
    return MakeError(ErrorCode::kInvalidArgument, "page size must be 1 to 1000");
  }
  std::string sql = fmt::format("SELECT {} FROM devices WHERE id > ?", kDeviceColumns);
  std::vector<Value> params = {q.after};
  auto add = [&](std::string_view clause, const Value& v) {
    sql += " AND ";
    sql += clause;
    params.push_back(v);
  };
  if (q.state) add("state = ?", std::string(StateName(*q.state)));
  if (!q.tenant.empty()) add("tenant = ?", q.tenant);
  if (!q.region.empty()) add("region = ?", q.region);
  if (!q.model.empty()) add("model = ?", q.model);
  if (!q.firmware_version.empty()) add("firmware_version = ?", q.firmware_version);
  if (!q.label_key.empty()) {
    add("id IN (SELECT device_id FROM device_labels WHERE key = ?", q.label_key);
    sql += " AND value = ?)";
    params.emplace_back(q.label_value);
  }
  if (q.expires_before) {
    add("id IN (SELECT device_id FROM credentials WHERE role = 'current' AND not_after < ?)",
        UnixSeconds(*q.expires_before));
  }
  sql += " ORDER BY id LIMIT ?";
  params.emplace_back(std::int64_t{q.limit} + 1);
  FLEETID_TRY(tx, db_.Begin(TxMode::kRead));
  FLEETID_TRY(rows, tx->Query(sql, params));
  DevicePage page;
  for (std::size_t i = 0; i < rows.size() && i < static_cast<std::size_t>(q.limit); ++i) {
    FLEETID_TRY(d, DecodeDevice(rows[i]));
    page.devices.push_back(std::move(d));
  }
  if (rows.size() > static_cast<std::size_t>(q.limit)) page.next = page.devices.back().id;
  return page;
}

Result<std::map<State, std::int64_t>> Registry::CountByState(std::string_view tenant) {
  FLEETID_TRY(tx, db_.Begin(TxMode::kRead));
  std::vector<Row> rows;
  if (tenant.empty()) {
    FLEETID_TRY(r, tx->Query("SELECT state, COUNT(*) FROM devices GROUP BY state"));
    rows = std::move(r);
  } else {
    FLEETID_TRY(r, tx->Query("SELECT state, COUNT(*) FROM devices WHERE tenant = ? GROUP BY state",
                             {std::string(tenant)}));
    rows = std::move(r);
  }
  std::map<State, std::int64_t> counts;
  for (const Row& r : rows) {
    FLEETID_TRY(state, ParseState(r.Text(0)));
    counts[state] = r.Int(1);
  }
  return counts;
}

Result<void> Registry::CheckEnrollable(std::string_view serial,
                                       std::string_view idevid_fingerprint) {
  FLEETID_TRY(tx, db_.Begin(TxMode::kRead));
  return CheckEnrollableIn(*tx, serial, idevid_fingerprint);
}

Result<void> Registry::CheckEnrollableIn(store::Transaction& tx, std::string_view serial,
                                         std::string_view idevid_fingerprint) {
  FLEETID_TRY(dead, tx.Query("SELECT kind FROM tombstones WHERE (kind = 'serial' AND value = ?) "
                             "OR (kind = 'idevid' AND value = ?)",
                             {std::string(serial), std::string(idevid_fingerprint)}));
  if (!dead.empty()) {
    return MakeError(ErrorCode::kPermissionDenied,
                     "'{}' is a decommissioned identity and can never enroll again", serial);
  }
  return {};
}

Result<std::optional<TimePoint>> Registry::LastLiftedAtIn(store::Transaction& tx,
                                                          std::int64_t device_id) {
  FLEETID_TRY(rows, tx.Query("SELECT MAX(at) FROM transitions WHERE device_id = ? AND "
                             "event IN (?, ?)",
                             {device_id, std::string(EventName(Event::kResume)),
                              std::string(EventName(Event::kClear))}));
  if (rows.empty() || rows[0].IsNull(0)) return std::optional<TimePoint>();
  return std::optional<TimePoint>(FromUnixSeconds(rows[0].Int(0)));
}

Result<void> Registry::AddCredential(store::Transaction& tx, std::int64_t device_id,
                                     std::string_view cert_serial, CredentialRole role,
                                     TimePoint not_after) {
  FLEETID_CHECK_OK(tx.Exec("INSERT INTO credentials (cert_serial, device_id, role, not_after) "
                           "VALUES (?, ?, ?, ?)",
                           {std::string(cert_serial), device_id, std::string(CredentialRoleName(role)),
                            UnixSeconds(not_after)}));
  return {};
}

Result<std::vector<ManufacturingRecord>> ParseBatch(std::string_view text) {
  std::vector<ManufacturingRecord> out;
  std::size_t line_no = 0;
  while (!text.empty()) {
    ++line_no;
    const std::size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.remove_suffix(1);
    if (line.empty() || line.front() == '#') continue;
    Json j = Json::parse(line, nullptr, false);
    if (!j.is_object()) {
      return MakeError(ErrorCode::kInvalidArgument, "line {}: not a JSON object", line_no);
    }
    ManufacturingRecord r;
    auto text_field = [&](const char* key, std::string& dst, bool required) -> Result<void> {
      auto it = j.find(key);
      if (it == j.end()) {
        if (required) {
          return MakeError(ErrorCode::kInvalidArgument, "line {}: missing '{}'", line_no, key);
        }
        return {};
      }
      if (!it->is_string()) {
        return MakeError(ErrorCode::kInvalidArgument, "line {}: '{}' must be a string", line_no,
                         key);
      }
      dst = it->get<std::string>();
      return {};
    };
    FLEETID_CHECK_OK(text_field("serial", r.serial, true));
    FLEETID_CHECK_OK(text_field("model", r.model, true));
    FLEETID_CHECK_OK(text_field("manufacturer", r.manufacturer, true));
    FLEETID_CHECK_OK(text_field("idevid_fingerprint", r.idevid_fingerprint, true));
    FLEETID_CHECK_OK(text_field("firmware_version", r.firmware_version, false));
    FLEETID_CHECK_OK(text_field("firmware_digest", r.firmware_digest, false));
    FLEETID_CHECK_OK(text_field("station", r.station, false));
    if (auto it = j.find("manufactured_at"); it != j.end()) {
      // Beyond kMaxSeconds the TimePoint would overflow (2262 and 1677).
      constexpr std::int64_t kMaxSeconds =
          std::chrono::duration_cast<std::chrono::seconds>(TimePoint::max().time_since_epoch())
              .count();
      const bool fits = it->is_number_unsigned()
                            ? it->get<std::uint64_t>() <= std::uint64_t{kMaxSeconds}
                            : it->is_number_integer() && it->get<std::int64_t>() >= -kMaxSeconds &&
                                  it->get<std::int64_t>() <= kMaxSeconds;
      if (!fits) {
        return MakeError(ErrorCode::kInvalidArgument,
                         "line {}: 'manufactured_at' must be Unix seconds", line_no);
      }
      r.manufactured_at = FromUnixSeconds(it->get<std::int64_t>());
    }
    if (auto it = j.find("labels"); it != j.end()) {
      if (!it->is_object()) {
        return MakeError(ErrorCode::kInvalidArgument, "line {}: 'labels' must be an object",
                         line_no);
      }
      for (const auto& [k, v] : it->items()) {
        if (!v.is_string()) {
          return MakeError(ErrorCode::kInvalidArgument, "line {}: label '{}' must be a string",
                           line_no, k);
        }
        r.labels[k] = v.get<std::string>();
      }
    }
    if (auto checked = CheckRecord(r, out.size()); !checked) {
      return MakeError(ErrorCode::kInvalidArgument, "line {}: {}", line_no,
                       checked.error().message());
    }
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace fleetid::registry
