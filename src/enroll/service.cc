#include "enroll/service.h"

#include <openssl/objects.h>
#include <openssl/pkcs7.h>
#include <openssl/x509.h>

#include <algorithm>
#include <cmath>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "audit/log.h"
#include "common/failpoint.h"
#include "crypto/crypto.h"
#include "crypto/csr.h"
#include "crypto/handles.h"
#include "crypto/jws.h"
#include "crypto/keys.h"
#include "crypto/x509.h"
#include "enroll/claims.h"
#include "enroll/csr_check.h"
#include "enroll/factory.h"

namespace fleetid::enroll {
namespace {

using Json = nlohmann::json;
using store::Row;
using store::TxMode;
using Role = registry::CredentialRole;

// RoleName is a credential's role as errors name it; "untracked" for a certificate the registry
// does not list for the device.
std::string_view RoleName(const std::optional<Role>& role) {
  return role.has_value() ? registry::CredentialRoleName(*role) : "untracked";
}

// clang-format off
constexpr std::string_view kSchemaSqlite = R"sql(
CREATE TABLE manufacturers (
  fingerprint TEXT PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  der BLOB NOT NULL,
  added_by TEXT NOT NULL,
  added_at INTEGER NOT NULL
);
CREATE TABLE reference_values (
  model TEXT NOT NULL,
  firmware_sha256 TEXT NOT NULL,
  added_by TEXT NOT NULL,
  added_at INTEGER NOT NULL,
  PRIMARY KEY (model, firmware_sha256)
);
CREATE TABLE attest_nonces (
  nonce TEXT PRIMARY KEY,
  device TEXT NOT NULL,
  purpose TEXT NOT NULL,
  expires_at INTEGER NOT NULL,
  consumed_at INTEGER
);
CREATE TABLE appraisals (
  id INTEGER PRIMARY KEY,
  device TEXT NOT NULL,
  purpose TEXT NOT NULL,
  key_sha256 TEXT NOT NULL,
  evidence_sha256 TEXT NOT NULL,
  firmware_sha256 TEXT NOT NULL,
  result TEXT NOT NULL,
  detail TEXT NOT NULL,
  at INTEGER NOT NULL,
  used_at INTEGER
);
CREATE INDEX appraisals_by_key ON appraisals (device, purpose, key_sha256);
CREATE TABLE attest_counters (
  name TEXT PRIMARY KEY,
  value INTEGER NOT NULL
);
CREATE TABLE receipts (
  device TEXT PRIMARY KEY,
  cert_serial TEXT NOT NULL,
  receipt TEXT NOT NULL,
  at INTEGER NOT NULL
);
)sql";
// clang-format on


std::string DeviceActor(std::string_view serial) { return fmt::format("device:{}", serial); }

// OrderId names a decommissioning order: the device's version and time when it was ordered,
// which stay fixed while it is decommissioning.
std::string OrderId(const registry::Device& device) {
  return crypto::Hex(crypto::Sha256(fmt::format("decommission|{}|{}|{}", device.serial,
                                                device.version, UnixSeconds(device.updated_at))));
}

bool Live(const pki::CertificateRecord& r) { return r.status != pki::Status::kRevoked; }

// RefusalBucket names the rate bucket of |serial|'s refused appraisals ('|' is in no serial).
std::string RefusalBucket(std::string_view serial) { return fmt::format("refusal|{}", serial); }

}  // namespace

std::string_view PurposeName(Purpose purpose) {
  return purpose == Purpose::kEnroll ? "enroll" : "reenroll";
}

Result<Purpose> ParsePurpose(std::string_view name) {
  if (name == "enroll") return Purpose::kEnroll;
  if (name == "reenroll") return Purpose::kReenroll;
  return MakeError(ErrorCode::kInvalidArgument, "purpose is 'enroll' or 'reenroll', not '{}'", name);
}

// ---------------------------------------------------------------------------------------------

namespace {

// Supersede revokes (superseded) the live certificates of |device| whose credential role is one
// of |roles|, and marks their credentials superseded; each change is published once |tx| commits.
Result<void> Supersede(store::Transaction& tx, pki::Authority& authority,
                       const registry::Device& device,
                       std::initializer_list<Role> roles) {
  FLEETID_TRY(credentials, registry::Registry::Credentials(tx, device.id));
  for (const registry::Credential& c : credentials) {
    if (std::ranges::find(roles, c.role) == roles.end()) continue;
    FLEETID_TRY(record, pki::Authority::GetIn(tx, c.cert_serial));
    if (Live(record)) {
      FLEETID_TRY(revoked, authority.ChangeStatusIn(tx, c.cert_serial, pki::Reason::kSuperseded,
                                                    DeviceActor(device.serial)));
      tx.AfterCommit([&authority, r = std::move(revoked)] { authority.Publish(r); });
    }
    FLEETID_CHECK_OK(registry::Registry::SetCredentialRole(tx, c.cert_serial, Role::kSuperseded));
  }
  return {};
}

}  // namespace

Result<void> PkiEffects::Apply(store::Transaction& tx, const registry::Device& device,
                               registry::CredentialAction action,
                               const registry::TransitionRequest& request) {
  using A = registry::CredentialAction;
  switch (action) {
    case A::kNone:
      return {};
    case A::kIssue:
      return Issue(tx, device, request);
    case A::kSupersede:
      return Release(tx, device, request);
    default:
      return ApplyToEach(tx, device, action);
  }
}

// Issue: the new credential replaces every earlier one (an unproven rotation's included), and is
// issued good from the request's CSR, which the enrollment service checked.
Result<void> PkiEffects::Issue(store::Transaction& tx, const registry::Device& device,
                               const registry::TransitionRequest& request) {
  if (request.csr == nullptr) {
    return MakeError(ErrorCode::kInvalidArgument, "'{}' issues a credential and needs a CSR",
                     registry::EventName(request.event));
  }
  FLEETID_TRY(terms, Terms(device));
  FLEETID_CHECK_OK(Supersede(tx, authority_, device, {Role::kCurrent, Role::kPending}));
  FLEETID_TRY(record,
              authority_.IssueIn(tx, *request.csr,
                                 {device.serial, device.tenant, terms.ldevid_lifetime},
                                 *terms.suites, DeviceActor(device.serial), false));
  return registry::Registry::AddCredential(tx, device.id, record.serial, Role::kCurrent,
                                           record.not_after);
}

// Release completes a rotation: the current credential is superseded and the pending one, whose
// key the device has just proven (the request's evidence is the digest of that certificate), is
// released from its hold and becomes current.
Result<void> PkiEffects::Release(store::Transaction& tx, const registry::Device& device,
                                 const registry::TransitionRequest& request) {
  FLEETID_TRY(credentials, registry::Registry::Credentials(tx, device.id));
  std::string serial;
  for (const registry::Credential& c : credentials) {
    if (c.role != Role::kPending) continue;
    FLEETID_TRY(record, pki::Authority::GetIn(tx, c.cert_serial));
    if (crypto::Hex(crypto::Sha256(record.der)) == request.evidence_digest) serial = c.cert_serial;
  }
  if (serial.empty()) {
    return MakeError(ErrorCode::kConflict, "'{}' has no pending rotation to the proven certificate",
                     device.serial);
  }
  FLEETID_CHECK_OK(Supersede(tx, authority_, device, {Role::kCurrent}));
  FLEETID_TRY(released,
              authority_.ChangeStatusIn(tx, serial, std::nullopt, DeviceActor(device.serial)));
  FLEETID_CHECK_OK(registry::Registry::SetCredentialRole(tx, serial, Role::kCurrent));
  tx.AfterCommit([this, r = std::move(released)] { authority_.Publish(r); });
  return {};
}

Result<void> PkiEffects::ApplyToEach(store::Transaction& tx, const registry::Device& device,
                                     registry::CredentialAction action) {
  using A = registry::CredentialAction;
  FLEETID_TRY(credentials, registry::Registry::Credentials(tx, device.id));
  const std::string actor = "system:lifecycle";
  for (const registry::Credential& c : credentials) {
    FLEETID_TRY(record, pki::Authority::GetIn(tx, c.cert_serial));
    std::optional<pki::Reason> reason;
    bool release = false;
    switch (action) {
      case A::kHold:
        if (c.role == Role::kCurrent && record.status == pki::Status::kGood) {
          reason = pki::Reason::kCertificateHold;
        }
        // A rotation in flight is abandoned, as a new rotation abandons it (Reenroll): its
        // certificate was never proven, and left on hold the device's Confirm would release it
        // past the operator's hold. superseded, not cessationOfOperation: the key is not in
        // doubt and the device is not retiring; it rotates again once it is active.
        if (c.role == Role::kPending && record.status == pki::Status::kOnHold) {
          reason = pki::Reason::kSuperseded;
          FLEETID_CHECK_OK(registry::Registry::SetCredentialRole(tx, c.cert_serial, Role::kSuperseded));
        }
        break;
      case A::kRelease:
        release = c.role == Role::kCurrent && record.status == pki::Status::kOnHold;
        break;
      case A::kRevokeCompromise:
        if (c.role != Role::kSuperseded && Live(record)) reason = pki::Reason::kKeyCompromise;
        break;
      case A::kRevokeCessation:
        if (Live(record)) reason = pki::Reason::kCessationOfOperation;
        break;
      default:
        break;
    }
    if (!reason && !release) continue;
    FLEETID_TRY(changed, authority_.ChangeStatusIn(tx, c.cert_serial, reason, actor));
    tx.AfterCommit([this, record = std::move(changed)] { authority_.Publish(record); });
  }
  return {};
}

// ---------------------------------------------------------------------------------------------

struct Service::Identified {
  bool idevid = false;  // anchored at a registered manufacturer; otherwise an LDevID
  registry::Device device;
  crypto::X509Ptr leaf;
  std::vector<std::uint8_t> leaf_der;
  pki::CertificateRecord record;  // LDevID only
  std::optional<Role> role;        // LDevID only: its credential role
};

Service::Service(store::Database& db, registry::Registry& registry, pki::Authority& authority,
                 PkiEffects& effects, Clock& clock, Rng& rng, ServiceOptions options)
    : db_(db),
      registry_(registry),
      authority_(authority),
      effects_(effects),
      clock_(clock),
      rng_(rng),
      options_(std::move(options)) {
  fleet_anchors_.push_back(authority_.RootDer());
  for (const std::string& name : authority_.CaNames()) {
    if (auto der = authority_.CaCertificate(name)) fleet_anchors_.push_back(*der);
  }
  // The hierarchy is fixed for the life of the process: /cacerts is built once.
  if (auto p7 = CertsOnly(fleet_anchors_)) cacerts_ = std::move(*p7);
}

Result<void> Service::Migrate(store::Database& db) {
  FLEETID_CHECK_OK(registry::Registry::Migrate(db));
  FLEETID_CHECK_OK(pki::Authority::Migrate(db));
  static const std::string pg = store::PostgresDdl(kSchemaSqlite);
  const store::Migration migrations[] = {
      {1, "manufacturers, reference values, nonces, appraisals, receipts", kSchemaSqlite, pg}};
  FLEETID_TRY(applied, db.Migrate("enroll", migrations));
  (void)applied;
  return {};
}

bool Service::IsFleetAnchor(std::span<const std::uint8_t> anchor_der) const {
  return std::ranges::any_of(fleet_anchors_, [&](const std::vector<std::uint8_t>& a) {
    return std::ranges::equal(a, anchor_der);
  });
}

namespace {

Result<std::optional<Manufacturer>> ManufacturerByFingerprint(store::Transaction& tx,
                                                              const std::string& fp) {
  FLEETID_TRY(rows, tx.Query("SELECT name, fingerprint, der FROM manufacturers WHERE fingerprint = ?",
                             {fp}));
  if (rows.empty()) return std::optional<Manufacturer>();
  return std::optional<Manufacturer>(Manufacturer{rows[0].Text(0), rows[0].Text(1), rows[0].Bytes(2)});
}

}  // namespace

// RefuseRetiredCredential refuses a credential that no longer speaks for its device: an LDevID
// that is revoked (for any reason) and the IDevID of a tombstoned identity. A certificate on hold
// still passes: that is how a suspended device learns its orders.
Result<void> Service::RefuseRetiredCredential(store::Transaction& tx, const Identified& who) {
  if (!who.idevid && who.record.status == pki::Status::kRevoked) {
    return MakeError(ErrorCode::kPermissionDenied, "certificate {} is revoked ({})",
                     who.record.serial,
                     who.record.reason ? pki::ReasonName(*who.record.reason) : "unspecified");
  }
  if (who.idevid) {
    FLEETID_CHECK_OK(registry::Registry::CheckEnrollableIn(tx, who.device.serial,
                                                           who.device.idevid_fingerprint));
  }
  return {};
}

Result<Service::Identified> Service::Identify(store::Transaction& tx,
                                              const ClientChain& chain) const {
  if (chain.empty()) {
    return MakeError(ErrorCode::kUnauthenticated,
                     "a client certificate (the IDevID or an LDevID) is required");
  }
  Identified out;
  out.leaf_der = chain.front();
  FLEETID_TRY(leaf, crypto::ParseCertificateDer(out.leaf_der));
  out.leaf = std::move(leaf);
  if (IsFleetAnchor(chain.back())) {
    auto record = pki::Authority::GetIn(
        tx, crypto::SerialHex(X509_get0_serialNumber(out.leaf.get())).value_or(""));
    if (!record || record->der != out.leaf_der) {
      return MakeError(ErrorCode::kPermissionDenied, "the client certificate is not one fleetid issued");
    }
    // Identities never cross: an operator's certificate never enrolls, renews or speaks for a
    // device (and no device name can be an operator's: serials have no ':').
    if (record->issuer == pki::kOperatorCa) {
      return MakeError(ErrorCode::kPermissionDenied,
                       "an operator certificate never enrolls or renews a device");
    }
    auto device = registry::Registry::GetIn(tx, record->device);
    if (!device) {
      return MakeError(ErrorCode::kPermissionDenied, "the client certificate is not a device's");
    }
    out.device = std::move(*device);
    FLEETID_TRY(credentials, registry::Registry::Credentials(tx, out.device.id));
    for (const registry::Credential& c : credentials) {
      if (c.cert_serial == record->serial) out.role = c.role;
    }
    out.record = std::move(*record);
    return out;
  }
  FLEETID_TRY(maker, ManufacturerByFingerprint(tx, crypto::Hex(crypto::Sha256(chain.back()))));
  if (!maker) {
    return MakeError(ErrorCode::kPermissionDenied,
                     "the client certificate does not chain to a registered manufacturer");
  }
  auto device = registry::Registry::GetByIdevid(tx, crypto::Hex(crypto::Sha256(out.leaf_der)));
  if (!device || device->manufacturer != maker->name) {
    return MakeError(ErrorCode::kPermissionDenied,
                     "this IDevID is not in any imported batch of {}", maker->name);
  }
  out.idevid = true;
  out.device = std::move(*device);
  return out;
}

Result<void> Service::Count(std::string_view counter) {
  FLEETID_TRY(tx, db_.Begin(TxMode::kWrite));
  FLEETID_TRY(changed, tx->Exec("UPDATE attest_counters SET value = value + 1 WHERE name = ?",
                                {std::string(counter)}));
  if (changed == 0) {
    FLEETID_CHECK_OK(tx->Exec("INSERT INTO attest_counters (name, value) VALUES (?, 1)",
                              {std::string(counter)}));
  }
  FLEETID_TRY(seq, audit::Log::Append(*tx,
                                      {.actor = "system:attest",
                                       .action = "attest.refused",
                                       .subject = std::string(counter),
                                       .before = nullptr,
                                       .after = nullptr,
                                       .reason = std::string(counter),
                                       .policy_version = CurrentPolicyVersion(options_.policy_version),
                                       .evidence_digest = ""},
                                      clock_));
  (void)seq;
  return tx->Commit();
}

// --- operators -------------------------------------------------------------------------------

Result<Manufacturer> Service::AddManufacturer(std::span<const std::uint8_t> ca_der,
                                              std::string_view name, std::string_view actor) {
  FLEETID_TRY(cert, crypto::ParseCertificateDer(ca_der));
  if (name.empty() || name.size() > 64) {
    return MakeError(ErrorCode::kInvalidArgument, "a manufacturer name has 1 to 64 characters");
  }
  if (X509_check_ca(cert.get()) == 0) {
    return MakeError(ErrorCode::kInvalidArgument, "the manufacturer certificate is not a CA");
  }
  Manufacturer m{std::string(name), crypto::Hex(crypto::Sha256(ca_der)),
                 std::vector<std::uint8_t>(ca_der.begin(), ca_der.end())};
  FLEETID_TRY(tx, db_.Begin(TxMode::kWrite));
  FLEETID_TRY(existing, ManufacturerByFingerprint(*tx, m.fingerprint));
  if (existing) {
    if (existing->name != m.name) {
      return MakeError(ErrorCode::kConflict, "that certificate is registered as '{}'", existing->name);
    }
    return m;
  }
  auto inserted = tx->Exec("INSERT INTO manufacturers (fingerprint, name, der, added_by, added_at) "
                           "VALUES (?, ?, ?, ?, ?)",
                           {m.fingerprint, m.name, store::Blob(m.der), std::string(actor),
                            UnixSeconds(clock_.Now())});
  if (!inserted) {
    return MakeError(ErrorCode::kConflict, "a manufacturer named '{}' is registered already", name);
  }
  FLEETID_TRY(seq, audit::Log::Append(*tx,
                                      {.actor = std::string(actor),
                                       .action = "enroll.manufacturer.add",
                                       .subject = m.name,
                                       .before = nullptr,
                                       .after = {{"fingerprint", m.fingerprint}},
                                       .reason = "",
                                       .policy_version = CurrentPolicyVersion(options_.policy_version),
                                       .evidence_digest = m.fingerprint},
                                      clock_));
  (void)seq;
  FLEETID_CHECK_OK(tx->Commit());
  return m;
}

Result<std::vector<Manufacturer>> Service::Manufacturers() {
  FLEETID_TRY(tx, db_.Begin(TxMode::kRead));
  FLEETID_TRY(rows, tx->Query("SELECT name, fingerprint, der FROM manufacturers ORDER BY name"));
  std::vector<Manufacturer> out;
  for (const Row& r : rows) out.push_back({r.Text(0), r.Text(1), r.Bytes(2)});
  return out;
}

Result<void> Service::AddReferenceValue(std::string_view model, std::string_view firmware_sha256,
                                        std::string_view actor) {
  if (model.empty() || !IsHex64(firmware_sha256)) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "a reference value is a model and a lower-case hex SHA-256 firmware digest");
  }
  FLEETID_TRY(tx, db_.Begin(TxMode::kWrite));
  FLEETID_TRY(rows, tx->Query("SELECT 1 FROM reference_values WHERE model = ? AND firmware_sha256 = ?",
                              {std::string(model), std::string(firmware_sha256)}));
  if (!rows.empty()) return {};
  FLEETID_CHECK_OK(tx->Exec("INSERT INTO reference_values (model, firmware_sha256, added_by, "
                            "added_at) VALUES (?, ?, ?, ?)",
                            {std::string(model), std::string(firmware_sha256), std::string(actor),
                             UnixSeconds(clock_.Now())}));
  FLEETID_TRY(seq, audit::Log::Append(*tx,
                                      {.actor = std::string(actor),
                                       .action = "attest.reference.add",
                                       .subject = std::string(model),
                                       .before = nullptr,
                                       .after = {{"firmware_sha256", firmware_sha256}},
                                       .reason = "",
                                       .policy_version = CurrentPolicyVersion(options_.policy_version),
                                       .evidence_digest = ""},
                                      clock_));
  (void)seq;
  return tx->Commit();
}

Result<registry::ImportReport> Service::ImportManifest(std::string_view jws, std::string_view actor) {
  FLEETID_TRY(parsed, ParseManifest(jws));
  std::optional<Manufacturer> maker;
  {
    FLEETID_TRY(tx, db_.Begin(TxMode::kRead));
    FLEETID_TRY(found, ManufacturerByFingerprint(*tx, parsed.signer_sha256));
    maker = std::move(found);
  }
  if (!maker) {
    return MakeError(ErrorCode::kPermissionDenied,
                     "the manifest is signed by a manufacturer that is not registered");
  }
  FLEETID_CHECK_OK(VerifyManifest(parsed, maker->der));
  const Manifest& m = parsed.manifest;
  if (m.manufacturer != maker->name) {
    return MakeError(ErrorCode::kPermissionDenied,
                     "the manifest claims manufacturer '{}' but is signed by '{}'", m.manufacturer,
                     maker->name);
  }
  std::vector<registry::ManufacturingRecord> records;
  records.reserve(m.devices.size());
  for (const ManifestDevice& d : m.devices) {
    registry::ManufacturingRecord r;
    r.serial = d.serial;
    r.model = m.model;
    r.manufacturer = m.manufacturer;
    r.idevid_fingerprint = d.idevid_sha256;
    r.firmware_version = d.firmware_version;
    r.firmware_digest = d.firmware_sha256;
    r.station = m.station;
    r.manufactured_at = FromUnixSeconds(m.manufactured_at);
    records.push_back(std::move(r));
  }
  return registry_.Import(m.batch, records,
                          registry::Actor{registry::kOperator, std::string(actor), {}});
}

// --- attestation -----------------------------------------------------------------------------

namespace {

// CheckReenrollable decides whether an active device may enroll again with its IDevID: only when
// no current LDevID is still valid, and never past an operator's hold or a keyCompromise (those
// are lifted through the lifecycle: resume, or quarantine and clear).
Result<void> CheckReenrollable(store::Transaction& tx, const registry::Device& device,
                               TimePoint now) {
  FLEETID_TRY(credentials, registry::Registry::Credentials(tx, device.id));
  // A revocation for any reason but superseded is sticky: only an operator's later resume or
  // clear lifts it (the device was suspended or quarantined by it, docs/registry.md).
  FLEETID_TRY(lifted, registry::Registry::LastLiftedAtIn(tx, device.id));
  for (const registry::Credential& c : credentials) {
    FLEETID_TRY(record, pki::Authority::GetIn(tx, c.cert_serial));
    if (record.status == pki::Status::kRevoked && record.reason != pki::Reason::kSuperseded &&
        record.revoked_at && (!lifted || *record.revoked_at > *lifted)) {
      return MakeError(ErrorCode::kPermissionDenied,
                       "'{}' has its certificate {} revoked ({}) and no operator lifted that "
                       "through the lifecycle since (fleetid devices suspend and resume)",
                       device.serial, c.cert_serial,
                       record.reason ? pki::ReasonName(*record.reason) : "unspecified");
    }
    if (c.role != Role::kCurrent) continue;
    if (record.status == pki::Status::kOnHold) {
      return MakeError(ErrorCode::kPermissionDenied,
                       "'{}' has its certificate {} on hold: an operator lifts it through the "
                       "lifecycle",
                       device.serial, c.cert_serial);
    }
    if (record.reason == pki::Reason::kKeyCompromise) {
      return MakeError(ErrorCode::kPermissionDenied,
                       "'{}' has its certificate {} revoked for keyCompromise: it enrolls again "
                       "only once an operator quarantined and cleared it",
                       device.serial, c.cert_serial);
    }
    if (record.status == pki::Status::kGood && c.not_after > now) {
      return MakeError(ErrorCode::kConflict,
                       "'{}' holds a valid LDevID ({}): renew it with simplereenroll",
                       device.serial, c.cert_serial);
    }
  }
  return {};
}

// RefuseCompromisedKey is kPermissionDenied if |spki| (DER) is the key of any of |device|'s
// certificates revoked for keyCompromise.
Result<void> RefuseCompromisedKey(store::Transaction& tx, const registry::Device& device,
                                  std::span<const std::uint8_t> spki) {
  FLEETID_TRY(credentials, registry::Registry::Credentials(tx, device.id));
  for (const registry::Credential& c : credentials) {
    FLEETID_TRY(record, pki::Authority::GetIn(tx, c.cert_serial));
    if (record.reason != pki::Reason::kKeyCompromise) continue;
    FLEETID_TRY(cert, crypto::ParseCertificateDer(record.der));
    FLEETID_TRY(key, crypto::SubjectPublicKeyInfoDer(cert.get()));
    // One key, one fingerprint, however its SPKI is encoded (crypto::KeyFingerprint).
    FLEETID_TRY(revoked_fp, crypto::KeyFingerprint(key));
    FLEETID_TRY(asked_fp, crypto::KeyFingerprint(spki));
    if (revoked_fp == asked_fp) {
      return MakeError(ErrorCode::kPermissionDenied,
                       "this key was revoked for keyCompromise (certificate {}) and is never "
                       "certified again",
                       c.cert_serial);
    }
  }
  return {};
}

}  // namespace

std::optional<std::chrono::seconds> Service::TakeNonceToken(const std::string& device) {
  const TimePoint now = clock_.Now();
  const double burst = options_.nonce_burst;
  const double refill = std::chrono::duration<double>(options_.nonce_refill).count();
  MutexLock lock(buckets_mu_);
  auto [it, fresh] = buckets_.try_emplace(device, Bucket{burst, now});
  Bucket& bucket = it->second;
  if (!fresh && now > bucket.at) {
    const double elapsed = std::chrono::duration<double>(now - bucket.at).count();
    bucket.tokens = std::min(burst, bucket.tokens + elapsed / refill);
    bucket.at = now;
  }
  if (bucket.tokens >= 1) {
    bucket.tokens -= 1;
    return std::nullopt;
  }
  return std::chrono::seconds(static_cast<std::int64_t>(std::ceil((1 - bucket.tokens) * refill)));
}

// MayEnrollIn asks the registry which event an enrollment of |device| with its IDevID is; a
// reattest also needs the device's credentials out of the way (CheckReenrollable).
Result<registry::Event> Service::MayEnrollIn(store::Transaction& tx, const registry::Device& device,
                                             const CredentialTerms& terms, TimePoint now) {
  const registry::EnrollmentPolicy policy{.idevid_reenroll_after_expiry =
                                              terms.idevid_reenroll_after_lapse};
  FLEETID_TRY(event, registry::Registry::EnrollmentEventIn(tx, device, policy));
  if (event == registry::Event::kReattest) FLEETID_CHECK_OK(CheckReenrollable(tx, device, now));
  return event;
}

// MayRenew: a renewal is the first half of a rotation, so the registry must allow the device's
// kRotate from its state, and only its current, good LDevID may ask.
Result<void> Service::MayRenew(const Identified& who) {
  FLEETID_TRY(rule, registry::Registry::DeviceMay(who.device, registry::Event::kRotate, "renewal"));
  (void)rule;
  if (who.role != Role::kCurrent || who.record.status != pki::Status::kGood) {
    return MakeError(ErrorCode::kPermissionDenied,
                     "certificate {} is {} ({}): only the current, good LDevID may renew",
                     who.record.serial, pki::StatusName(who.record.status),
                     RoleName(who.role));
  }
  return {};
}

Result<Nonce> Service::IssueNonce(const ClientChain& chain, Purpose purpose, Throttled* throttled) {
  FLEETID_TRY(tx, db_.Begin(TxMode::kWrite));
  FLEETID_TRY(who, Identify(*tx, chain));
  if ((purpose == Purpose::kEnroll) != who.idevid) {
    return MakeError(ErrorCode::kPermissionDenied, "a nonce to {} is asked for with the {}",
                     PurposeName(purpose), purpose == Purpose::kEnroll ? "IDevID" : "current LDevID");
  }
  // Refused early: a device that could not use the evidence gets no nonce to make it with. The
  // registry judges the lifecycle, exactly as Enroll and Reenroll ask it.
  if (who.device.state == registry::State::kDecommissioned) {
    return MakeError(ErrorCode::kPermissionDenied,
                     "'{}' is a decommissioned identity and can never enroll again",
                     who.device.serial);
  }
  FLEETID_TRY(terms, effects_.Terms(who.device));
  if (purpose == Purpose::kEnroll) {
    FLEETID_CHECK_OK(MayEnrollIn(*tx, who.device, terms, clock_.Now()));
  } else {
    FLEETID_CHECK_OK(MayRenew(who));
  }
  if (auto wait = TakeNonceToken(who.device.serial)) {
    if (throttled != nullptr) throttled->retry_after = *wait;
    return MakeError(ErrorCode::kUnavailable, "'{}' asks for nonces too often: retry in {} s",
                     who.device.serial, wait->count());
  }
  FLEETID_TRY(raw, rng_.Bytes(32));
  Nonce nonce{crypto::Base64UrlEncode(raw), clock_.Now() + terms.nonce_ttl};
  FLEETID_CHECK_OK(tx->Exec("INSERT INTO attest_nonces (nonce, device, purpose, expires_at) "
                            "VALUES (?, ?, ?, ?)",
                            {nonce.value, who.device.serial, std::string(PurposeName(purpose)),
                             UnixSeconds(nonce.expires_at)}));
  FLEETID_TRY(seq, audit::Log::Append(*tx,
                                      {.actor = DeviceActor(who.device.serial),
                                       .action = "attest.nonce",
                                       .subject = who.device.serial,
                                       .before = nullptr,
                                       .after = {{"purpose", PurposeName(purpose)},
                                                 {"expires_at", UnixSeconds(nonce.expires_at)}},
                                       .reason = "",
                                       .policy_version = CurrentPolicyVersion(options_.policy_version),
                                       .evidence_digest = crypto::Hex(crypto::Sha256(nonce.value))},
                                      clock_));
  (void)seq;
  FLEETID_CHECK_OK(tx->Commit());
  return nonce;
}

struct Service::Evidence : EvidenceClaims {};

Result<Service::Evidence> Service::ParseEvidence(std::string_view evidence) {
  FLEETID_TRY(claims, ParseEvidenceClaims(evidence));
  return Evidence{std::move(claims)};
}

Result<void> Service::ConsumeNonce(store::Transaction& tx, const Identified& who,
                                   const std::string& nonce, Purpose purpose, TimePoint now,
                                   std::string& refusal) {
  FLEETID_TRY(rows, tx.Query("SELECT device, purpose, expires_at, consumed_at FROM attest_nonces "
                             "WHERE nonce = ?",
                             {nonce}));
  if (rows.empty()) {
    refusal = "nonce_unknown";
    return MakeError(ErrorCode::kPermissionDenied, "the evidence's nonce was never issued");
  }
  const auto& row = rows.front();
  if (!row.IsNull(3)) {
    refusal = "nonce_replayed";
    return MakeError(ErrorCode::kPermissionDenied, "the nonce was used already: replay refused");
  }
  if (row.Text(0) != who.device.serial || row.Text(1) != PurposeName(purpose)) {
    refusal = "nonce_misbound";
    return MakeError(ErrorCode::kPermissionDenied,
                     "the nonce was issued to another device or for another purpose");
  }
  if (row.Int(2) <= UnixSeconds(now)) {
    refusal = "nonce_expired";
    return MakeError(ErrorCode::kPermissionDenied, "the nonce expired; ask for a fresh one");
  }
  FLEETID_TRY(consumed, tx.Exec("UPDATE attest_nonces SET consumed_at = ? WHERE nonce = ? AND "
                                "consumed_at IS NULL",
                                {UnixSeconds(now), nonce}));
  if (consumed != 1) {
    refusal = "nonce_replayed";
    return MakeError(ErrorCode::kPermissionDenied, "the nonce was used already: replay refused");
  }
  return {};
}

Result<Appraisal> Service::AppraiseIn(const ClientChain& chain, const Evidence& evidence,
                                      std::string& refusal, std::string& device) {
  FLEETID_TRY(tx, db_.Begin(TxMode::kWrite));
  FLEETID_TRY(who, Identify(*tx, chain));
  // A credential that no longer speaks for the device is refused before its signature costs
  // anything, and writes nothing (as Status).
  FLEETID_CHECK_OK(RefuseRetiredCredential(*tx, who));
  device = who.device.serial;
  EVP_PKEY* key = X509_get0_pubkey(who.leaf.get());
  if (key == nullptr || !crypto::VerifyJws(evidence.jws, key)) {
    return MakeError(ErrorCode::kUnauthenticated,
                     "the evidence is not signed by the key of the client certificate");
  }
  const Purpose purpose = who.idevid ? Purpose::kEnroll : Purpose::kReenroll;
  const TimePoint now = clock_.Now();
  FLEETID_CHECK_OK(ConsumeNonce(*tx, who, evidence.nonce, purpose, now, refusal));
  Appraisal out;
  out.device = who.device.serial;
  out.evidence_sha256 = evidence.sha256;
  FLEETID_TRY(refs, tx->Query("SELECT 1 FROM reference_values WHERE model = ? AND "
                              "firmware_sha256 = ?",
                              {who.device.model, evidence.firmware}));
  if (evidence.serial != who.device.serial) {
    out.detail =
        fmt::format("the evidence names device '{}', not '{}'", evidence.serial, who.device.serial);
  } else if (refs.empty()) {
    out.detail = fmt::format("firmware measurement {} is not an accepted value for model {}",
                             evidence.firmware, who.device.model);
  } else {
    out.passed = true;
    out.detail = "accepted";
  }
  FLEETID_TRY(ids, tx->Query("INSERT INTO appraisals (device, purpose, key_sha256, "
                             "evidence_sha256, firmware_sha256, result, detail, at) VALUES "
                             "(?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                             {out.device, std::string(PurposeName(purpose)), evidence.key_sha256,
                              evidence.sha256, evidence.firmware, out.passed ? "pass" : "fail",
                              out.detail, UnixSeconds(now)}));
  out.id = ids.at(0).Int(0);
  FLEETID_TRY(seq, audit::Log::Append(*tx,
                                      {.actor = DeviceActor(out.device),
                                       .action = "attest.appraise",
                                       .subject = out.device,
                                       .before = nullptr,
                                       .after = {{"result", out.passed ? "pass" : "fail"},
                                                 {"purpose", PurposeName(purpose)},
                                                 {"key_sha256", evidence.key_sha256},
                                                 {"fw_sha256", evidence.firmware},
                                                 {"swversion", evidence.swversion}},
                                       .reason = out.passed ? "" : out.detail,
                                       .policy_version = CurrentPolicyVersion(options_.policy_version),
                                       .evidence_digest = evidence.sha256},
                                      clock_));
  (void)seq;
  FLEETID_CHECK_OK(tx->Commit());
  return out;
}

Result<Appraisal> Service::Appraise(const ClientChain& chain, std::string_view evidence,
                                    Throttled* throttled) {
  FLEETID_TRY(parsed, ParseEvidence(evidence));
  std::string refusal;  // the counter to bump once the transaction is closed
  std::string device;   // whose refusal budget that spends
  auto result = AppraiseIn(chain, parsed, refusal, device);
  if (!refusal.empty()) {
    // Each refusal is a counter update and an audit entry: a device spends a token of its
    // refusal bucket (sized as its nonce bucket) on each, and past it nothing is written.
    if (auto wait = TakeNonceToken(RefusalBucket(device))) {
      if (throttled != nullptr) throttled->retry_after = *wait;
      return MakeError(ErrorCode::kUnavailable,
                       "'{}' sends refused evidence too often: retry in {} s", device,
                       wait->count());
    }
    FLEETID_CHECK_OK(Count(refusal));
  }
  if (result && !result->passed) {
    return MakeError(ErrorCode::kPermissionDenied, "appraisal failed: {}", result->detail);
  }
  return result;
}

// --- enrollment ------------------------------------------------------------------------------

namespace {

// UseAppraisal finds the newest unused passing appraisal of |device| for |purpose| that names the
// key |key_sha256| and is younger than |ttl|, and marks it used. Returns its evidence digest.
Result<std::string> UseAppraisal(store::Transaction& tx, const std::string& device,
                                 Purpose purpose, const std::string& key_sha256, TimePoint now,
                                 std::chrono::seconds ttl) {
  FLEETID_TRY(rows, tx.Query("SELECT id, evidence_sha256 FROM appraisals WHERE device = ? AND "
                             "purpose = ? AND key_sha256 = ? AND result = 'pass' AND "
                             "used_at IS NULL AND at >= ? ORDER BY id DESC LIMIT 1",
                             {device, std::string(PurposeName(purpose)), key_sha256,
                              UnixSeconds(now - ttl)}));
  if (rows.empty()) {
    return MakeError(ErrorCode::kPermissionDenied,
                     "no fresh, passing evidence names the key in this CSR: send evidence for "
                     "it first");
  }
  FLEETID_TRY(used, tx.Exec("UPDATE appraisals SET used_at = ? WHERE id = ? AND used_at IS NULL",
                            {UnixSeconds(now), rows[0].Int(0)}));
  if (used != 1) return MakeError(ErrorCode::kConflict, "the evidence was used concurrently");
  return rows[0].Text(1);
}

// EvidenceFor is what an enrollment under |terms| records as its evidence: a fresh, passing
// appraisal naming the CSR's key (UseAppraisal) where the device's credential class requires
// attestation; where it does not, the SHA-256 of the request itself.
Result<std::string> EvidenceFor(store::Transaction& tx, const std::string& device,
                                Purpose purpose, const std::string& key_sha256,
                                const crypto::VerifiedCsr& csr, const CredentialTerms& terms,
                                TimePoint now) {
  if (!terms.attestation_required) return crypto::Hex(csr.request_sha256);
  return UseAppraisal(tx, device, purpose, key_sha256, now, terms.evidence_ttl);
}

}  // namespace

Result<pki::CertificateRecord> Service::Enroll(const ClientChain& chain,
                                               std::span<const std::uint8_t> csr_der) {
  FLEETID_TRY(tx, db_.Begin(TxMode::kWrite));
  FLEETID_TRY(who, Identify(*tx, chain));
  if (!who.idevid) {
    return MakeError(ErrorCode::kPermissionDenied,
                     "simpleenroll takes the IDevID; renew an LDevID with simplereenroll");
  }
  const registry::Device& device = who.device;
  const TimePoint now = clock_.Now();
  FLEETID_TRY(terms, effects_.Terms(device));
  FLEETID_TRY(event, MayEnrollIn(*tx, device, terms, now));
  // Only a known device that may enroll gets its key checked, and only an allowed key its
  // signature verified.
  FLEETID_TRY(checked, CheckCsrKey(csr_der, *terms.suites));
  FLEETID_CHECK_OK(RefuseCompromisedKey(*tx, device, checked.spki));
  FLEETID_TRY(csr, crypto::VerifyCsr(csr_der));
  const std::string key_sha256 = crypto::Hex(crypto::Sha256(checked.spki));
  FLEETID_TRY(evidence, EvidenceFor(*tx, device.serial, Purpose::kEnroll, key_sha256, csr, terms,
                                    now));
  // The registry records the event, and the event's credential action (kIssue, PkiEffects)
  // issues the certificate, in this transaction.
  registry::TransitionRequest req;
  req.serial = device.serial;
  req.event = event;
  req.expected_version = device.version;
  req.actor = registry::Actor{registry::kDevice, device.serial, {}};
  req.evidence_digest = evidence;
  req.csr = &csr;
  FLEETID_TRY(next, registry_.TransitionIn(*tx, req));
  FLEETID_TRY(issued, CurrentCredentialIn(*tx, next));
  FLEETID_CHECK_OK(tx->Commit());
  return issued;
}

// CheckRotationKey: a rotation's CSR carries an allowed key that is neither the current one nor
// one revoked for keyCompromise, and its signature verifies. Returns the verified request, whose
// key's SHA-256 (of the SPKI) the appraisal must name.
Result<crypto::VerifiedCsr> Service::CheckRotationKey(store::Transaction& tx, const Identified& who,
                                                     const CredentialTerms& terms,
                                                     std::span<const std::uint8_t> csr_der) {
  FLEETID_TRY(checked, CheckCsrKey(csr_der, *terms.suites));
  FLEETID_TRY(current_spki, crypto::SubjectPublicKeyInfoDer(who.leaf.get()));
  FLEETID_TRY(current_fp, crypto::KeyFingerprint(current_spki));
  FLEETID_TRY(next_fp, crypto::KeyFingerprint(checked.spki));
  if (current_fp == next_fp) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "a rotation needs a new key; this CSR carries the current one");
  }
  FLEETID_CHECK_OK(RefuseCompromisedKey(tx, who.device, checked.spki));
  return crypto::VerifyCsr(csr_der);
}

Result<pki::CertificateRecord> Service::Reenroll(const ClientChain& chain,
                                                 std::span<const std::uint8_t> csr_der) {
  FLEETID_TRY(tx, db_.Begin(TxMode::kWrite));
  FLEETID_TRY(who, Identify(*tx, chain));
  if (who.idevid) {
    return MakeError(ErrorCode::kPermissionDenied,
                     "simplereenroll takes the current LDevID; enroll with the IDevID at "
                     "simpleenroll");
  }
  const registry::Device& device = who.device;
  FLEETID_CHECK_OK(MayRenew(who));
  FLEETID_TRY(terms, effects_.Terms(device));
  FLEETID_TRY(csr, CheckRotationKey(*tx, who, terms, csr_der));
  const std::string key_sha256 = crypto::Hex(crypto::Sha256(csr.spki));
  FLEETID_TRY(evidence, EvidenceFor(*tx, device.serial, Purpose::kReenroll, key_sha256, csr,
                                    terms, clock_.Now()));
  (void)evidence;  // recorded by the appraisal and the issuance's audit entry
  // An earlier, unfinished rotation: its certificate was never proven and is abandoned. The new
  // one is born on hold; the lifecycle records the rotation only at its proof (Confirm).
  FLEETID_CHECK_OK(Supersede(*tx, authority_, device, {Role::kPending}));
  FLEETID_TRY(issued, authority_.IssueIn(*tx, csr,
                                         {device.serial, device.tenant, terms.ldevid_lifetime},
                                         *terms.suites,
                                         DeviceActor(device.serial), true));
  FLEETID_CHECK_OK(registry::Registry::AddCredential(*tx, device.id, issued.serial, Role::kPending,
                                                     issued.not_after));
  tx->AfterCommit([this, r = issued] { authority_.Publish(r); });
  Failpoint("server-reenroll-before-commit");
  FLEETID_CHECK_OK(tx->Commit());
  Failpoint("server-reenroll-after-commit");
  return issued;
}

Result<pki::CertificateRecord> Service::Confirm(const ClientChain& chain) {
  FLEETID_TRY(tx, db_.Begin(TxMode::kWrite));
  FLEETID_TRY(who, Identify(*tx, chain));
  if (who.idevid) {
    return MakeError(ErrorCode::kPermissionDenied,
                     "a rotation is confirmed with the new certificate, not the IDevID");
  }
  const registry::Device& device = who.device;
  if (who.role == Role::kCurrent && who.record.status == pki::Status::kGood) {
    return who.record;  // confirmed before: the answer was lost, the retry is harmless
  }
  if (who.role != Role::kPending || who.record.status != pki::Status::kOnHold) {
    return MakeError(ErrorCode::kConflict, "certificate {} is not a pending rotation (it is {}, {})",
                     who.record.serial, RoleName(who.role),
                     pki::StatusName(who.record.status));
  }
  FLEETID_TRY(rule, registry::Registry::DeviceMay(device, registry::Event::kRotate, "rotation"));
  (void)rule;
  // The registry records the rotation, and its credential action (kSupersede, PkiEffects)
  // releases the proven certificate and supersedes the old one, in this transaction.
  registry::TransitionRequest req;
  req.serial = device.serial;
  req.event = registry::Event::kRotate;
  req.expected_version = device.version;
  req.actor = registry::Actor{registry::kDevice, device.serial, {}};
  req.evidence_digest = crypto::Hex(crypto::Sha256(who.leaf_der));
  FLEETID_TRY(next, registry_.TransitionIn(*tx, req));
  (void)next;
  FLEETID_TRY(now_current, pki::Authority::GetIn(*tx, who.record.serial));
  Failpoint("server-confirm-before-commit");
  FLEETID_CHECK_OK(tx->Commit());
  Failpoint("server-confirm-after-commit");
  return now_current;
}

// CurrentCredentialIn is the certificate of |device|'s current credential.
Result<pki::CertificateRecord> Service::CurrentCredentialIn(store::Transaction& tx,
                                                            const registry::Device& device) {
  FLEETID_TRY(credentials, registry::Registry::Credentials(tx, device.id));
  const auto current = std::ranges::find_if(
      credentials, [](const registry::Credential& c) { return c.role == Role::kCurrent; });
  if (current == credentials.end()) {
    return MakeError(ErrorCode::kInternal, "'{}' has no current credential", device.serial);
  }
  return pki::Authority::GetIn(tx, current->cert_serial);
}

Result<DeviceStatus> Service::Status(const ClientChain& chain) {
  FLEETID_TRY(tx, db_.Begin(TxMode::kRead));
  FLEETID_TRY(who, Identify(*tx, chain));
  FLEETID_CHECK_OK(RefuseRetiredCredential(*tx, who));
  DeviceStatus out;
  out.device = who.device;
  out.decommission_ordered = who.device.state == registry::State::kDecommissioning ||
                             who.device.state == registry::State::kDecommissioned;
  if (who.device.state == registry::State::kDecommissioning) out.order_id = OrderId(who.device);
  if (auto terms = effects_.Terms(who.device)) out.renew_at_percent = terms->renew_at_percent;
  FLEETID_TRY(credentials, registry::Registry::Credentials(*tx, who.device.id));
  for (const registry::Credential& c : credentials) {
    if (c.role != Role::kCurrent) continue;
    FLEETID_TRY(record, pki::Authority::GetIn(*tx, c.cert_serial));
    out.current = std::move(record);
  }
  return out;
}

Result<registry::Device> Service::RecordReceipt(std::string_view receipt) {
  FLEETID_TRY(claims, ParseReceiptClaims(receipt));
  const crypto::Jws& jws = claims.jws;
  const std::vector<std::string>& destroyed = claims.destroyed;
  const std::int64_t iat = claims.iat;
  const std::string& kid = claims.kid;
  const std::string receipt_sha256 = crypto::Hex(crypto::Sha256(receipt));
  registry::Device result;
  {
    FLEETID_TRY(tx, db_.Begin(TxMode::kWrite));
    auto record = pki::Authority::GetIn(*tx, kid);
    if (!record) {
      return MakeError(ErrorCode::kPermissionDenied, "the receipt's kid names no fleetid certificate");
    }
    FLEETID_TRY(cert, crypto::ParseCertificateDer(record->der));
    EVP_PKEY* key = X509_get0_pubkey(cert.get());
    if (key == nullptr || !crypto::VerifyJws(jws, key)) {
      return MakeError(ErrorCode::kUnauthenticated,
                       "the receipt is not signed by the certificate it names");
    }
    FLEETID_TRY(device, registry::Registry::GetIn(*tx, record->device));
    // Only the device's latest keys speak for it: not a superseded key, nor one revoked as
    // compromised, whose holder may not be the device.
    FLEETID_TRY(credentials, registry::Registry::Credentials(*tx, device.id));
    const bool latest = std::ranges::any_of(credentials, [&](const registry::Credential& c) {
      return c.cert_serial == kid && (c.role == Role::kCurrent || c.role == Role::kPending);
    });
    if (!latest || record->reason == pki::Reason::kKeyCompromise) {
      return MakeError(ErrorCode::kPermissionDenied,
                       "the receipt is signed by a key that no longer speaks for the device");
    }
    if (claims.serial != device.serial) {
      return MakeError(ErrorCode::kPermissionDenied, "the receipt names another device");
    }
    FLEETID_TRY(seen, tx->Query("SELECT receipt FROM receipts WHERE device = ?", {device.serial}));
    if (!seen.empty() && device.state == registry::State::kDecommissioned &&
        seen[0].Text(0) == receipt) {
      return device;
    }
    if (device.state != registry::State::kDecommissioning) {
      return MakeError(ErrorCode::kConflict, "'{}' is {}: no decommissioning was ordered",
                       device.serial, registry::StateName(device.state));
    }
    if (claims.order != OrderId(device)) {
      return MakeError(ErrorCode::kPermissionDenied,
                       "the receipt answers another order than the pending decommissioning");
    }
    const std::int64_t now = UnixSeconds(clock_.Now());
    const std::int64_t skew = options_.receipt_skew.count();
    if (iat < UnixSeconds(device.updated_at) - skew || iat > now + skew) {
      return MakeError(ErrorCode::kPermissionDenied,
                       "the receipt's iat is before the order or too far from now");
    }
    // The keys that must be named destroyed: the signing one, and every current one.
    std::vector<std::string> required;
    FLEETID_TRY(signing_spki, crypto::SubjectPublicKeyInfoDer(cert.get()));
    required.push_back(crypto::Hex(crypto::Sha256(signing_spki)));
    for (const registry::Credential& c : credentials) {
      if (c.role != Role::kCurrent) continue;
      FLEETID_TRY(current, pki::Authority::GetIn(*tx, c.cert_serial));
      FLEETID_TRY(current_cert, crypto::ParseCertificateDer(current.der));
      FLEETID_TRY(spki, crypto::SubjectPublicKeyInfoDer(current_cert.get()));
      required.push_back(crypto::Hex(crypto::Sha256(spki)));
    }
    for (const std::string& k : required) {
      if (std::ranges::find(destroyed, k) == destroyed.end()) {
        return MakeError(ErrorCode::kPermissionDenied,
                         "the receipt does not name the device's LDevID key {} destroyed", k);
      }
    }
    FLEETID_CHECK_OK(
        tx->Exec("INSERT INTO receipts (device, cert_serial, receipt, at) VALUES "
                 "(?, ?, ?, ?)",
                 {device.serial, kid, std::string(receipt), now}));
    registry::TransitionRequest req;
    req.serial = device.serial;
    req.event = registry::Event::kErased;
    req.expected_version = device.version;
    req.actor = registry::Actor{registry::kDevice, device.serial, {}};
    req.evidence_digest = receipt_sha256;
    FLEETID_TRY(next, registry_.TransitionIn(*tx, req));
    FLEETID_CHECK_OK(tx->Commit());
    result = std::move(next);
  }
  return result;
}

// --- operators' issuance --------------------------------------------------------------------

Result<pki::CertificateRecord> IssueForDevice(store::Database& db, pki::Authority& authority,
                                              std::string_view serial,
                                              std::span<const std::uint8_t> csr_der,
                                              std::string_view actor,
                                              const CredentialTermsFn& terms_fn) {
  FLEETID_TRY(tx, db.Begin(TxMode::kWrite));
  FLEETID_TRY(device, registry::Registry::GetIn(*tx, serial));
  FLEETID_TRY(terms, TermsOf(terms_fn, device));
  FLEETID_CHECK_OK(
      registry::Registry::CheckEnrollableIn(*tx, device.serial, device.idevid_fingerprint));
  FLEETID_TRY(csr, crypto::VerifyCsr(csr_der));
  FLEETID_TRY(issued,
              authority.IssueIn(*tx, csr, {device.serial, device.tenant, terms.ldevid_lifetime},
                                *terms.suites, actor, false));
  FLEETID_CHECK_OK(tx->Commit());
  return issued;
}

Result<pki::CertificateRecord> Service::IssueCertificate(std::string_view serial,
                                                         std::span<const std::uint8_t> csr_der,
                                                         std::string_view actor) {
  return IssueForDevice(db_, authority_, serial, csr_der, actor,
                        [this](const registry::Device& device) { return effects_.Terms(device); });
}

// --- operators' certificate actions ----------------------------------------------------------

namespace {

// OperatorStatusEvent is the lifecycle event that an operator's hold (kCertificateHold),
// revocation (another reason) or release (nullopt) of |credential| is for |device|, if any.
Result<std::optional<registry::Event>> OperatorStatusEvent(std::optional<pki::Reason> reason,
                                                           const registry::Credential& credential,
                                                           const registry::Device& device) {
  if (!reason.has_value()) {
    if (credential.role != Role::kCurrent || device.state != registry::State::kSuspended) {
      return MakeError(ErrorCode::kConflict,
                       "certificate {} is a {} credential of '{}', which is {}: a device's hold "
                       "is lifted only through its lifecycle (fleetid devices resume or "
                       "cancel-decommission), a pending one by the device's proof of possession",
                       credential.cert_serial, registry::CredentialRoleName(credential.role), device.serial,
                       registry::StateName(device.state));
    }
    return registry::Event::kResume;
  }
  if (*reason == pki::Reason::kCertificateHold) return registry::Event::kSuspend;
  if (*reason == pki::Reason::kKeyCompromise &&
      registry::FindRule(registry::Event::kQuarantine, device.state)) {
    return registry::Event::kQuarantine;
  }
  if (*reason != pki::Reason::kSuperseded && credential.role == Role::kCurrent &&
      registry::FindRule(registry::Event::kSuspend, device.state)) {
    // Any other revocation of the current credential suspends the device until an operator
    // resumes it; the credential is then revoked (not merely held), so the resumed device
    // enrolls afresh with its IDevID and new evidence. cessationOfOperation too: an operator
    // who means to retire the device decommissions it, with its grace period.
    return registry::Event::kSuspend;
  }
  return std::optional<registry::Event>();
}

// StatusReached says whether |now| already carries the operator's |reason| for a credential
// of |role|: a pending certificate's hold is done when the suspension cancelled it (PkiEffects),
// and a revocation for keyCompromise covers any other reason.
bool StatusReached(const pki::CertificateRecord& now, pki::Reason reason, Role role) {
  const bool hold_done = reason == pki::Reason::kCertificateHold &&
                         (now.status == pki::Status::kOnHold ||
                          (role == Role::kPending && now.status == pki::Status::kRevoked));
  const bool revoke_done = now.status == pki::Status::kRevoked &&
                           (now.reason == reason || now.reason == pki::Reason::kKeyCompromise);
  return hold_done || revoke_done;
}

}  // namespace

Result<std::optional<pki::CertificateRecord>> Service::ChangeCertificateStatus(
    std::string_view cert_serial, std::optional<pki::Reason> reason, const registry::Actor& actor,
    std::string_view why) {
  using Answer = std::optional<pki::CertificateRecord>;
  Answer after;
  {
    FLEETID_TRY(tx, db_.Begin(TxMode::kWrite));
    // Only a certificate or device that is not there makes this the CA's alone; any other
    // error (the database's) is the caller's, never a CA-only change past the lifecycle.
    auto record = pki::Authority::GetIn(*tx, cert_serial);
    if (!record && record.error().code() == ErrorCode::kNotFound) return Answer();
    if (!record) return MakeError(record.error());
    auto found = registry::Registry::GetIn(*tx, record->device);
    if (!found && found.error().code() == ErrorCode::kNotFound) return Answer();
    if (!found) return MakeError(found.error());
    const registry::Device device = std::move(*found);
    const std::string serial = record->serial;
    FLEETID_TRY(credentials, registry::Registry::Credentials(*tx, device.id));
    const auto credential = std::ranges::find_if(
        credentials, [&](const registry::Credential& c) { return c.cert_serial == serial; });
    if (credential == credentials.end()) return Answer();  // issued outside enrollment
    FLEETID_TRY(event, OperatorStatusEvent(reason, *credential, device));
    if (event.has_value()) {
      const std::string what = reason ? std::string(pki::ReasonName(*reason)) : "release";
      registry::TransitionRequest req;
      req.serial = device.serial;
      req.event = *event;
      req.expected_version = device.version;
      req.actor = actor;
      req.reason = fmt::format("{} of certificate {}{}{}", what, serial, why.empty() ? "" : ": ", why);
      FLEETID_TRY(next, registry_.TransitionIn(*tx, req));
      (void)next;
    }
    // The named certificate carries the operator's reason even where the lifecycle's effects
    // did not reach it (a pending or superseded credential, a state without a transition).
    FLEETID_TRY(now_record, pki::Authority::GetIn(*tx, serial));
    if (reason.has_value() && !StatusReached(now_record, *reason, credential->role)) {
      FLEETID_TRY(status, authority_.ChangeStatusIn(*tx, serial, reason,
                                                    fmt::format("operator:{}", actor.id)));
      now_record = status;
      tx->AfterCommit([this, r = std::move(status)] { authority_.Publish(r); });
    }
    FLEETID_CHECK_OK(tx->Commit());
    after = std::move(now_record);
  }
  return after;
}

// --- maintenance -----------------------------------------------------------------------------

Result<PruneReport> Service::Prune() {
  PruneReport report;
  const TimePoint now = clock_.Now();
  {
    FLEETID_TRY(tx, db_.Begin(TxMode::kWrite));
    FLEETID_TRY(deleted, tx->Exec("DELETE FROM attest_nonces WHERE expires_at < ?",
                                  {UnixSeconds(now - options_.nonce_retention)}));
    report.nonces = deleted;
    FLEETID_CHECK_OK(tx->Commit());
  }
  const double burst = options_.nonce_burst;
  const double refill = std::chrono::duration<double>(options_.nonce_refill).count();
  MutexLock lock(buckets_mu_);
  std::erase_if(buckets_, [&](const auto& entry) {
    const double elapsed = std::chrono::duration<double>(now - entry.second.at).count();
    const bool full = entry.second.tokens + elapsed / refill >= burst;
    report.buckets += full ? 1 : 0;
    return full;
  });
  return report;
}

// --- EST helpers -----------------------------------------------------------------------------

Result<std::vector<std::uint8_t>> CertsOnly(std::span<const std::vector<std::uint8_t>> certs) {
  crypto::Pkcs7Ptr p7(PKCS7_new());
  if (!p7 || PKCS7_set_type(p7.get(), NID_pkcs7_signed) != 1 ||
      PKCS7_content_new(p7.get(), NID_pkcs7_data) != 1) {
    return MakeError(crypto::OpenSslError(ErrorCode::kInternal, "certs-only CMS"));
  }
  for (const std::vector<std::uint8_t>& der : certs) {
    FLEETID_TRY(cert, crypto::ParseCertificateDer(der));
    if (PKCS7_add_certificate(p7.get(), cert.get()) != 1) {  // takes its own reference
      return MakeError(crypto::OpenSslError(ErrorCode::kInternal, "certs-only CMS"));
    }
  }
  const int len = i2d_PKCS7(p7.get(), nullptr);
  if (len <= 0) return MakeError(crypto::OpenSslError(ErrorCode::kInternal, "certs-only CMS"));
  std::vector<std::uint8_t> out(static_cast<std::size_t>(len));
  unsigned char* p = out.data();
  i2d_PKCS7(p7.get(), &p);
  return out;
}

Result<std::vector<std::uint8_t>> Service::CaCerts() const {
  if (cacerts_.empty()) return CertsOnly(fleet_anchors_);
  return cacerts_;
}

Result<std::vector<std::uint8_t>> Service::CsrAttrs() {
  // CsrAttrs ::= SEQUENCE OF AttrOrOID (RFC 7030 §4.5.2): the signature algorithm and the key
  // (an EC key on P-256) fleetid prefers.
  crypto::Asn1SequencePtr seq(sk_ASN1_TYPE_new_null());
  ASN1_TYPE* sig = ASN1_TYPE_new();
  if (!seq || sig == nullptr) return MakeError(ErrorCode::kInternal, "out of memory");
  ASN1_TYPE_set(sig, V_ASN1_OBJECT, OBJ_nid2obj(NID_ecdsa_with_SHA256));
  sk_ASN1_TYPE_push(seq.get(), sig);
  crypto::X509AttributePtr attr(X509_ATTRIBUTE_create(NID_X9_62_id_ecPublicKey, V_ASN1_OBJECT,
                                                      OBJ_nid2obj(NID_X9_62_prime256v1)));
  unsigned char* der = nullptr;
  const int len = attr ? i2d_X509_ATTRIBUTE(attr.get(), &der) : -1;
  const crypto::OpenSslBytesPtr owner(der);
  ASN1_STRING* body = ASN1_STRING_type_new(V_ASN1_SEQUENCE);
  ASN1_TYPE* attr_type = ASN1_TYPE_new();
  if (len <= 0 || body == nullptr || attr_type == nullptr ||
      ASN1_STRING_set(body, der, len) != 1) {
    ASN1_STRING_free(body);
    ASN1_TYPE_free(attr_type);
    return MakeError(crypto::OpenSslError(ErrorCode::kInternal, "CsrAttrs"));
  }
  ASN1_TYPE_set(attr_type, V_ASN1_SEQUENCE, body);
  sk_ASN1_TYPE_push(seq.get(), attr_type);
  unsigned char* out = nullptr;
  const int out_len = i2d_ASN1_SEQUENCE_ANY(seq.get(), &out);
  const crypto::OpenSslBytesPtr out_owner(out);
  if (out_len <= 0) return MakeError(crypto::OpenSslError(ErrorCode::kInternal, "CsrAttrs"));
  return std::vector<std::uint8_t>(out, out + out_len);
}

Result<std::map<std::string, std::int64_t>> Service::Counters() {
  FLEETID_TRY(tx, db_.Begin(TxMode::kRead));
  std::map<std::string, std::int64_t> out;
  FLEETID_TRY(rows, tx->Query("SELECT name, value FROM attest_counters"));
  for (const Row& r : rows) out[r.Text(0)] = r.Int(1);
  FLEETID_TRY(results, tx->Query("SELECT result, COUNT(*) FROM appraisals GROUP BY result"));
  for (const Row& r : results) out["appraisals_" + r.Text(0)] = r.Int(1);
  return out;
}

}  // namespace fleetid::enroll
