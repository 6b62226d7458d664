// The device registry: fleetid's system of record for devices, their lifecycle state, their
// credentials and the evidence for every change. Built on the store seam, so the same code runs on
// SQLite (one machine) and PostgreSQL (several authority nodes).
#ifndef FLEETID_REGISTRY_REGISTRY_H_
#define FLEETID_REGISTRY_REGISTRY_H_

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/error.h"
#include "common/identifier.h"
#include "common/policy_version.h"
#include "registry/lifecycle.h"
#include "store/store.h"

namespace fleetid::crypto {
struct VerifiedCsr;
}  // namespace fleetid::crypto

namespace fleetid::registry {

using Labels = std::map<std::string, std::string>;

struct Device {
  std::int64_t id = 0;  // internal, never reused
  std::string serial;
  std::string model;
  std::string manufacturer;
  std::string idevid_fingerprint;  // hex SHA-256 of the IDevID certificate (DER)
  std::string firmware_version;
  std::string firmware_digest;     // hex SHA-256 of the firmware image
  std::string tenant;              // empty until provisioned
  std::string region;
  Labels labels;
  State state = State::kManufactured;
  State resume_state = State::kManufactured;  // where cancel_decommission returns to
  std::int64_t version = 0;                   // optimistic concurrency: +1 per change
  std::string batch;                          // manufacturing record
  std::string station;
  TimePoint manufactured_at;
  TimePoint updated_at;
  std::optional<TimePoint> grace_until;       // decommissioning only
};

// ManufacturingRecord is one device of a factory batch as imported.
struct ManufacturingRecord {
  std::string serial;
  std::string model;
  std::string manufacturer;
  std::string idevid_fingerprint;
  std::string firmware_version;
  std::string firmware_digest;
  std::string station;
  TimePoint manufactured_at;
  Labels labels;
};

struct Actor {
  std::uint8_t kind = kOperator;  // one ActorKind bit
  std::string id;                 // operator name, device serial, "scheduler"
  std::vector<std::string> roles; // operators only
  // The policy allowed this operator the event already (the operator API decides with the
  // active policy); the table's built-in role is then not asked for. The built-in roles remain
  // for the command line's direct path to the database.
  bool authorized_by_policy = false;
};

struct TransitionRequest {
  std::string serial;
  Event event = Event::kProvision;
  std::int64_t expected_version = 0;  // the version the caller read; a mismatch is kConflict
  Actor actor;
  std::string reason;
  std::string evidence_digest;        // hex SHA-256 of the evidence, when the rule needs one
  std::string tenant;                 // provision
  std::string region;                 // provision
  std::string firmware_version;       // updated
  std::string firmware_digest;        // updated
  // A rule that issues a credential (activate, reattest): the new credential's request, parsed
  // and verified once by the caller (crypto::VerifyCsr). Borrowed for the call.
  const crypto::VerifiedCsr* csr = nullptr;
};

struct TransitionRecord {
  std::int64_t id = 0;
  std::string serial;
  std::int64_t version = 0;  // the device's version after the change
  Event event = Event::kProvision;
  State from = State::kManufactured;
  State to = State::kManufactured;
  std::string actor;
  std::string reason;
  TimePoint at;
  std::string policy_version;
  std::string evidence_digest;
  std::optional<std::int64_t> audit_index;  // the audit log leaf recording it (same transaction)
};

struct ImportReport {
  std::int64_t imported = 0;         // new devices
  std::int64_t already_present = 0;  // identical rows from an earlier run of the same import
};

// DeviceQuery filters devices; every set field must match. Results are ordered by internal id;
// |after| is the cursor from the previous page (0 for the first).
struct DeviceQuery {
  std::optional<State> state;
  std::string tenant;
  std::string region;
  std::string model;
  std::string firmware_version;
  std::string label_key;    // with label_value: devices whose label has that value
  std::string label_value;
  std::optional<TimePoint> expires_before;  // current credential's notAfter before this
  std::int64_t after = 0;
  int limit = 100;
};

struct DevicePage {
  std::vector<Device> devices;
  std::int64_t next = 0;  // cursor for the next page; 0 when this is the last
};

// CredentialEffects carries a transition's CredentialAction out through the PKI, inside the
// registry's transaction, so both commit or neither does: every action of the table, issuing
// (from |request|'s CSR) and superseding included. |device| is the device after the change.
// What must happen only after the commit (publishing) is registered on |tx|
// (store::Transaction::AfterCommit).
class CredentialEffects {
 public:
  virtual ~CredentialEffects() = default;
  [[nodiscard]] virtual Result<void> Apply(store::Transaction& tx, const Device& device,
                                           CredentialAction action,
                                           const TransitionRequest& request) = 0;
};

// CredentialRole is what one of a device's certificates is to it: its operational LDevID
// (current), one issued in a rotation and not yet proven (pending), or an earlier one
// (superseded). Stored by CredentialRoleName.
enum class CredentialRole { kCurrent, kPending, kSuperseded };

std::string_view CredentialRoleName(CredentialRole role);
[[nodiscard]] Result<CredentialRole> ParseCredentialRole(std::string_view name);

// Credential is one certificate the registry tracks for a device, by role.
struct Credential {
  std::string cert_serial;
  CredentialRole role = CredentialRole::kSuperseded;
  TimePoint not_after;
};

// EnrollmentPolicy is what the credential policy says about a device enrolling with its IDevID.
struct EnrollmentPolicy {
  // An active device whose LDevID lapsed (an outage longer than its life) may enroll again with
  // its IDevID and fresh evidence: the reattest event.
  bool idevid_reenroll_after_expiry = true;
};

struct RegistryOptions {
  std::chrono::seconds decommission_grace = std::chrono::hours(24 * 7);
  // The hash of the active policy version, recorded with every transition and audit entry.
  PolicyVersionFn policy_version;
};

// Registry is thread-safe; concurrent conflicting transitions resolve by version: one wins, the
// other gets kConflict and changes nothing.
class Registry {
 public:
  // |effects| may be null only where no transition needs the PKI (tests of the table itself).
  Registry(store::Database& db, Clock& clock, CredentialEffects* effects, RegistryOptions options);

  // Migrate creates or upgrades the registry's tables.
  [[nodiscard]] static Result<void> Migrate(store::Database& db);

  // Import adds a factory batch as one transaction: all of it or nothing. Re-running the same
  // batch imports nothing twice. A serial or IDevID seen before with different data, or ever
  // decommissioned, fails the whole batch with the offending record's index (0-based).
  [[nodiscard]] Result<ImportReport> Import(std::string_view batch_id,
                                            std::span<const ManufacturingRecord> records,
                                            const Actor& actor);

  [[nodiscard]] Result<Device> Get(std::string_view serial);

  // Transition applies |request| if the lifecycle table allows it from the device's current
  // state for this actor, with the evidence it needs, at the expected version. The state change,
  // the history record and the credential effects commit together.
  [[nodiscard]] Result<Device> Transition(const TransitionRequest& request);

  // TransitionIn is Transition inside the caller's write transaction |tx|, for changes that
  // must commit together with others (enrollment: the certificate, the consumed evidence, the
  // transition). Nothing is committed here; on an error the caller rolls back.
  [[nodiscard]] Result<Device> TransitionIn(store::Transaction& tx, const TransitionRequest& request);

  // Device lookups inside a transaction: by serial, and by the IDevID certificate's
  // fingerprint (kNotFound if no device has it).
  [[nodiscard]] static Result<Device> GetIn(store::Transaction& tx, std::string_view serial);
  [[nodiscard]] static Result<Device> GetByIdevid(store::Transaction& tx,
                                                  std::string_view idevid_fingerprint);

  // FinalizeDecommissions moves every device whose grace period has ended to decommissioned.
  // Returns how many it moved.
  [[nodiscard]] Result<int> FinalizeDecommissions();

  [[nodiscard]] Result<std::vector<TransitionRecord>> History(std::string_view serial);
  [[nodiscard]] Result<DevicePage> Query(const DeviceQuery& query);
  [[nodiscard]] Result<std::map<State, std::int64_t>> CountByState(std::string_view tenant = {});

  // CheckEnrollable is kPermissionDenied if |serial| or |idevid_fingerprint| belongs to a
  // decommissioned (tombstoned) identity.
  [[nodiscard]] Result<void> CheckEnrollable(std::string_view serial,
                                             std::string_view idevid_fingerprint);
  // CheckEnrollableIn is CheckEnrollable inside the caller's transaction |tx|.
  [[nodiscard]] static Result<void> CheckEnrollableIn(store::Transaction& tx,
                                                      std::string_view serial,
                                                      std::string_view idevid_fingerprint);

  // EnrollmentEventIn is the lifecycle event an enrollment of |device| with its IDevID is, read
  // from the table: the rule a device causes from its state that issues a credential (activate
  // from provisioned, reattest from active). kPermissionDenied, saying why, for a tombstoned
  // identity, a state no such rule leaves, or a reattest |policy| does not allow. Whether a
  // credential of the device still stands in the way (a valid LDevID, a revocation no operator
  // lifted) is the PKI's to say; enroll checks it in the same transaction |tx|.
  [[nodiscard]] static Result<Event> EnrollmentEventIn(store::Transaction& tx, const Device& device,
                                                       const EnrollmentPolicy& policy);
  // DeviceMay is the table's rule for |device| itself causing |event| from its state, or
  // kPermissionDenied "'serial' is state: |what| refused" (a rotation, say, needs an active
  // device: the new certificate is issued pending before kRotate is recorded at its proof).
  [[nodiscard]] static Result<const TransitionRule*> DeviceMay(const Device& device, Event event,
                                                               std::string_view what);

  // Credentials: certificate serials per device and their role.
  [[nodiscard]] static Result<void> AddCredential(store::Transaction& tx, std::int64_t device_id,
                                           std::string_view cert_serial, CredentialRole role,
                                           TimePoint not_after);
  [[nodiscard]] static Result<std::vector<Credential>> Credentials(store::Transaction& tx,
                                                                   std::int64_t device_id);
  [[nodiscard]] static Result<void> SetCredentialRole(store::Transaction& tx,
                                                      std::string_view cert_serial,
                                                      CredentialRole role);
  // LastLiftedAtIn is when an operator last lifted a suspension or a quarantine of the device
  // |device_id| (its latest resume or clear), or nullopt if none ever was. A revocation of the
  // device's credential after that time has not been lifted (docs/registry.md).
  [[nodiscard]] static Result<std::optional<TimePoint>> LastLiftedAtIn(store::Transaction& tx,
                                                                       std::int64_t device_id);

 private:
  [[nodiscard]] Result<Device> TransitionOnce(const TransitionRequest& request);

  store::Database& db_;
  Clock& clock_;
  CredentialEffects* effects_;
  RegistryOptions options_;
};

// Identifiers the registry stores and the CA writes into certificate subjects: serials,
// models, tenants and regions, in the one character set of common/identifier.h (the CA checks
// the same at issuance). docs/registry.md, "Identifiers".
using fleetid::CheckIdentifier;
using fleetid::IsIdentifier;
using fleetid::kMaxIdentifierChars;

// ParseBatch reads a batch file in JSON Lines (one device object per line; blank lines and lines
// starting with # are skipped) and reports the first bad line by number.
[[nodiscard]] Result<std::vector<ManufacturingRecord>> ParseBatch(std::string_view text);

}  // namespace fleetid::registry

#endif  // FLEETID_REGISTRY_REGISTRY_H_
