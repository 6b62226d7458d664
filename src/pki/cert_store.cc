#include "pki/internal/cert_store.h"

#include <algorithm>
#include <utility>

#include "audit/log.h"
#include "crypto/crypto.h"
#include "crypto/keys.h"
#include "pki/internal/util.h"

namespace fleetid::pki {
namespace {

constexpr std::string_view kSchema = R"sql(
CREATE TABLE ca_certificates (
  name TEXT PRIMARY KEY,
  role TEXT NOT NULL,
  suite TEXT NOT NULL,
  key_label TEXT NOT NULL,
  der BLOB NOT NULL
);
CREATE TABLE certificates (
  serial TEXT PRIMARY KEY,
  issuer TEXT NOT NULL,
  device TEXT NOT NULL,
  suite TEXT NOT NULL,
  not_before INTEGER NOT NULL,
  not_after INTEGER NOT NULL,
  status TEXT NOT NULL,
  reason INTEGER,
  revoked_at INTEGER,
  partition_id INTEGER NOT NULL,
  der BLOB NOT NULL
);
CREATE INDEX certificates_by_device ON certificates (device);
CREATE INDEX certificates_by_crl ON certificates (issuer, partition_id, status);
CREATE TABLE certificate_changes (
  id INTEGER PRIMARY KEY,
  serial TEXT NOT NULL
);
CREATE TABLE crl_numbers (
  issuer TEXT NOT NULL,
  partition_id INTEGER NOT NULL,
  number INTEGER NOT NULL,
  PRIMARY KEY (issuer, partition_id)
);
)sql";

// When a status changed: the revocation date of a removeFromCRL entry in a delta CRL.
constexpr std::string_view kChangeTimes = R"sql(
ALTER TABLE certificate_changes ADD COLUMN changed_at INTEGER;
)sql";

// Public keys revoked for keyCompromise or cACompromise, by the SHA-256 of their DER
// SubjectPublicKeyInfo: never certified again.
constexpr std::string_view kCompromisedKeys = R"sql(
CREATE TABLE compromised_keys (
  spki_sha256 TEXT PRIMARY KEY,
  serial TEXT NOT NULL,
  reason INTEGER NOT NULL,
  recorded_at INTEGER NOT NULL
);
)sql";

constexpr std::string_view kRecordColumns =
    "serial, issuer, device, suite, not_before, not_after, status, reason, revoked_at, "
    "partition_id, der";

}  // namespace

std::string_view ReasonName(Reason reason) {
  switch (reason) {
    case Reason::kUnspecified:
      return "unspecified";
    case Reason::kKeyCompromise:
      return "keyCompromise";
    case Reason::kCaCompromise:
      return "cACompromise";
    case Reason::kAffiliationChanged:
      return "affiliationChanged";
    case Reason::kSuperseded:
      return "superseded";
    case Reason::kCessationOfOperation:
      return "cessationOfOperation";
    case Reason::kCertificateHold:
      return "certificateHold";
    case Reason::kRemoveFromCrl:
      return "removeFromCRL";
    case Reason::kPrivilegeWithdrawn:
      return "privilegeWithdrawn";
    case Reason::kAaCompromise:
      return "aACompromise";
  }
  return "unspecified";
}

Result<Reason> ParseReason(std::string_view name) {
  for (Reason r : {Reason::kUnspecified, Reason::kKeyCompromise, Reason::kCaCompromise,
                   Reason::kAffiliationChanged, Reason::kSuperseded, Reason::kCessationOfOperation,
                   Reason::kCertificateHold, Reason::kPrivilegeWithdrawn, Reason::kAaCompromise}) {
    if (ReasonName(r) == name) return r;
  }
  return MakeError(ErrorCode::kInvalidArgument, "unknown revocation reason '{}'", name);
}

std::string_view StatusName(Status status) {
  switch (status) {
    case Status::kGood:
      return "good";
    case Status::kRevoked:
      return "revoked";
    case Status::kOnHold:
      return "hold";
  }
  return "good";
}

namespace internal {
namespace {

CertificateRecord DecodeRecord(const store::Row& r) {
  CertificateRecord c;
  c.serial = r.Text(0);
  c.issuer = r.Text(1);
  c.device = r.Text(2);
  c.suite = r.Text(3);
  c.not_before = FromUnixSeconds(r.Int(4));
  c.not_after = FromUnixSeconds(r.Int(5));
  const std::string status = r.Text(6);
  c.status = status == "revoked" ? Status::kRevoked
             : status == "hold"  ? Status::kOnHold
                                 : Status::kGood;
  if (!r.IsNull(7)) c.reason = static_cast<Reason>(r.Int(7));
  if (!r.IsNull(8)) c.revoked_at = FromUnixSeconds(r.Int(8));
  c.partition = r.Int(9);
  c.der = r.Bytes(10);
  return c;
}

bool IsSerialHex(std::string_view s) {
  return !s.empty() && s.size() <= 40 && std::ranges::all_of(s, [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
  });
}

// KeyFingerprints are the compromised_keys keys |spki| is looked up under: crypto::KeyFingerprint,
// and the SHA-256 of the SPKI bytes as given, under which RSA and Ed25519 keys were recorded
// before crypto::KeyFingerprint existed (EC rows were already in its form).
Result<std::pair<std::string, std::string>> KeyFingerprints(std::span<const std::uint8_t> spki) {
  FLEETID_TRY(canonical, crypto::KeyFingerprint(spki));
  return std::pair{std::move(canonical), crypto::Hex(crypto::Sha256(spki))};
}

store::Value OptionalInt(std::optional<std::int64_t> v) {
  if (!v) return nullptr;
  return *v;
}

}  // namespace

Result<void> MigrateStore(store::Database& db) {
  // Every issuance and status change appends to the audit log in its own transaction.
  FLEETID_CHECK_OK(audit::Log::Migrate(db));
  static const std::string pg = store::PostgresDdl(kSchema);
  static const std::string pg2 = store::PostgresDdl(kChangeTimes);
  static const std::string pg3 = store::PostgresDdl(kCompromisedKeys);
  const store::Migration migrations[] = {{1, "ca, certificates, crl numbers", kSchema, pg},
                                         {2, "status change times", kChangeTimes, pg2},
                                         {3, "compromised keys", kCompromisedKeys, pg3}};
  FLEETID_TRY(applied, db.Migrate("pki", migrations));
  (void)applied;
  return {};
}

Result<CertificateRecord> GetIn(store::Transaction& tx, std::string_view serial) {
  if (!IsSerialHex(serial)) {
    return MakeError(ErrorCode::kInvalidArgument, "a serial is lower-case hex");
  }
  FLEETID_TRY(rows,
              tx.Query(fmt::format("SELECT {} FROM certificates WHERE serial = ?", kRecordColumns),
                       {std::string(serial)}));
  if (rows.empty()) return MakeError(ErrorCode::kNotFound, "no certificate with serial {}", serial);
  return DecodeRecord(rows.front());
}

Result<std::optional<CertificateRecord>> LatestGoodIn(store::Transaction& tx,
                                                      std::string_view device,
                                                      TimePoint not_after_beyond) {
  FLEETID_TRY(rows, tx.Query(fmt::format("SELECT {} FROM certificates WHERE device = ? AND "
                                         "status = 'good' AND not_after > ? "
                                         "ORDER BY not_after DESC LIMIT 1",
                                         kRecordColumns),
                             {std::string(device), UnixSeconds(not_after_beyond)}));
  if (rows.empty()) return std::optional<CertificateRecord>();
  return std::optional<CertificateRecord>(DecodeRecord(rows.front()));
}

Result<void> InsertIn(store::Transaction& tx, const CertificateRecord& record) {
  std::optional<std::int64_t> reason;
  if (record.reason) reason = static_cast<std::int64_t>(*record.reason);
  std::optional<std::int64_t> revoked_at;
  if (record.revoked_at) revoked_at = UnixSeconds(*record.revoked_at);
  FLEETID_TRY(inserted,
              tx.Exec("INSERT INTO certificates (serial, issuer, device, suite, not_before, "
                      "not_after, status, reason, revoked_at, partition_id, der) "
                      "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                      {record.serial, record.issuer, record.device, record.suite,
                       UnixSeconds(std::chrono::floor<std::chrono::seconds>(record.not_before)),
                       UnixSeconds(std::chrono::floor<std::chrono::seconds>(record.not_after)),
                       std::string(StatusName(record.status)), OptionalInt(reason),
                       OptionalInt(revoked_at), record.partition, store::Blob(record.der)}));
  static_cast<void>(inserted);
  return {};
}

Result<void> UpdateStatusIn(store::Transaction& tx, const CertificateRecord& next, Status was) {
  std::optional<std::int64_t> reason;
  if (next.reason) reason = static_cast<std::int64_t>(*next.reason);
  std::optional<std::int64_t> revoked_at;
  if (next.revoked_at) revoked_at = UnixSeconds(*next.revoked_at);
  FLEETID_TRY(changed,
              tx.Exec("UPDATE certificates SET status = ?, reason = ?, revoked_at = ? "
                      "WHERE serial = ? AND status = ?",
                      {std::string(StatusName(next.status)), OptionalInt(reason),
                       OptionalInt(revoked_at), next.serial, std::string(StatusName(was))}));
  if (changed != 1) {
    return MakeError(ErrorCode::kConflict, "certificate {} changed concurrently", next.serial);
  }
  return {};
}

Result<void> RecordChangeIn(store::Transaction& tx, std::string_view serial, TimePoint at) {
  FLEETID_TRY(inserted,
              tx.Exec("INSERT INTO certificate_changes (serial, changed_at) VALUES (?, ?)",
                      {std::string(serial), UnixSeconds(at)}));
  static_cast<void>(inserted);
  return {};
}

Result<std::int64_t> LastChangeIn(store::Transaction& tx) {
  FLEETID_TRY(max, tx.Query("SELECT COALESCE(MAX(id), 0) FROM certificate_changes"));
  return max.front().Int(0);
}

Result<bool> KeyCompromisedIn(store::Transaction& tx, std::span<const std::uint8_t> spki) {
  FLEETID_TRY(fingerprints, KeyFingerprints(spki));
  FLEETID_TRY(rows, tx.Query("SELECT 1 FROM compromised_keys WHERE spki_sha256 IN (?, ?)",
                             {fingerprints.first, fingerprints.second}));
  return !rows.empty();
}

Result<void> RecordCompromisedKeyIn(store::Transaction& tx, std::span<const std::uint8_t> der,
                                    std::string_view serial, Reason reason, TimePoint at) {
  FLEETID_TRY(cert, ParseCert(der));
  FLEETID_TRY(spki, crypto::SubjectPublicKeyInfoDer(cert.get()));
  FLEETID_TRY(fingerprint, crypto::KeyFingerprint(spki));
  FLEETID_TRY(
      inserted,
      tx.Exec("INSERT INTO compromised_keys (spki_sha256, serial, reason, "
              "recorded_at) VALUES (?, ?, ?, ?) ON CONFLICT (spki_sha256) DO NOTHING",
              {fingerprint, std::string(serial), static_cast<std::int64_t>(reason), UnixSeconds(at)}));
  static_cast<void>(inserted);
  return {};
}

}  // namespace internal
}  // namespace fleetid::pki
