// Attested enrollment: the authority's side of a device's life after the factory. Registered
// manufacturers and reference values, single-use attestation nonces, appraisal of signed
// evidence (RFC 9334 roles: the device is the attester, this service the verifier and relying
// party), EST enrollment (RFC 7030) with the IDevID, rotation with the LDevID, and
// decommissioning receipts. Transport-free: apps/est_routes.cc maps HTTP onto it. The wire
// formats are in docs/enrollment.md.
#ifndef FLEETID_ENROLL_SERVICE_H_
#define FLEETID_ENROLL_SERVICE_H_

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/error.h"
#include "common/mutex.h"
#include "common/policy_version.h"
#include "common/rng.h"
#include "crypto/csr.h"
#include "crypto/suite.h"
#include "enroll/claims.h"
#include "enroll/terms.h"
#include "pki/pki.h"
#include "registry/registry.h"
#include "store/store.h"

namespace fleetid::enroll {

// ClientChain is the certificate chain a TLS handshake verified (server::HttpRequest::
// client_chain): the client's leaf first, the trust anchor that verified it last, all DER.
using ClientChain = std::vector<std::vector<std::uint8_t>>;

struct Manufacturer {
  std::string name;
  std::string fingerprint;  // hex SHA-256 of the CA certificate
  std::vector<std::uint8_t> der;
};

enum class Purpose { kEnroll, kReenroll };
std::string_view PurposeName(Purpose purpose);
[[nodiscard]] Result<Purpose> ParsePurpose(std::string_view name);

struct Nonce {
  std::string value;  // base64url of 32 random bytes
  TimePoint expires_at;
};

// Throttled says a device asked for nonces faster than ServiceOptions allow, and when to retry.
struct Throttled {
  std::chrono::seconds retry_after{0};
};

struct Appraisal {
  std::int64_t id = 0;
  std::string device;
  bool passed = false;
  std::string detail;           // why it failed, or "accepted"
  std::string evidence_sha256;  // hex SHA-256 of the evidence JWS
};

struct DeviceStatus {
  registry::Device device;
  std::optional<pki::CertificateRecord> current;  // the current LDevID, if any
  bool decommission_ordered = false;
  // Names the decommissioning order; the device's receipt must echo it (docs/enrollment.md).
  std::string order_id;
  // When the agent renews, in percent of an LDevID's lifetime: its credential class's (0 when
  // no class applies to it).
  int renew_at_percent = 0;
};

// What Prune removed.
struct PruneReport {
  std::int64_t nonces = 0;
  std::int64_t buckets = 0;
};

// The terms each device enrolls under (nonce and evidence lifetimes, suites, LDevID lifetime,
// attestation, IDevID re-enrollment after a lapse) are its credential class's: PkiEffects::Terms.
struct ServiceOptions {
  // Nonces per device: a token bucket of nonce_burst, refilled by one every nonce_refill.
  int nonce_burst = 10;
  std::chrono::seconds nonce_refill{6};
  // Prune deletes nonces this long after they expired (until then a replay is named as such).
  std::chrono::seconds nonce_retention{600};
  // A decommissioning receipt's iat may be this far from the server's clock and the order.
  std::chrono::seconds receipt_skew{300};
  // The hash of the active policy version, recorded with every audit entry.
  PolicyVersionFn policy_version;
};

// PkiEffects carries out every credential action of the registry's table through the CA, in the
// registry's transaction: issue (activate, reattest: the request's CSR becomes the current
// credential, earlier ones superseded), supersede (rotate: the proven pending certificate is
// released and becomes current), hold (which abandons a pending rotation: its certificate is
// revoked, superseded, so Confirm refuses it), release, and revocation (keyCompromise,
// cessationOfOperation) of a device's live certificates. The changes are published (OCSP, CRLs)
// once the transaction commits (Transaction::AfterCommit), and never if it rolls back.
// Every issuance follows the device's credential terms (|terms|; BuiltInTerms when empty).
class PkiEffects final : public registry::CredentialEffects {
 public:
  explicit PkiEffects(pki::Authority& authority, CredentialTermsFn terms = {})
      : authority_(authority), terms_(std::move(terms)) {}
  [[nodiscard]] Result<CredentialTerms> Terms(const registry::Device& device) const {
    return TermsOf(terms_, device);
  }
  [[nodiscard]] Result<void> Apply(store::Transaction& tx, const registry::Device& device,
                                   registry::CredentialAction action,
                                   const registry::TransitionRequest& request) override;

 private:
  [[nodiscard]] Result<void> Issue(store::Transaction& tx, const registry::Device& device,
                                   const registry::TransitionRequest& request);
  [[nodiscard]] Result<void> Release(store::Transaction& tx, const registry::Device& device,
                                     const registry::TransitionRequest& request);
  [[nodiscard]] Result<void> ApplyToEach(store::Transaction& tx, const registry::Device& device,
                                         registry::CredentialAction action);

  pki::Authority& authority_;
  CredentialTermsFn terms_;
};

// IssueForDevice is an operator's issuance of a certificate for device |serial| from |csr_der|
// (`fleetid ca issue`), outside the device's enrollment: the certificate is not one of its
// tracked credentials. An unknown device is kNotFound and a tombstoned identity
// kPermissionDenied, judged by the registry in the transaction that issues. The key's suite and
// the lifetime are the device's credential terms (|terms|; BuiltInTerms when empty).
[[nodiscard]] Result<pki::CertificateRecord> IssueForDevice(store::Database& db,
                                                            pki::Authority& authority,
                                                            std::string_view serial,
                                                            std::span<const std::uint8_t> csr_der,
                                                            std::string_view actor,
                                                            const CredentialTermsFn& terms = {});

// Service is thread-safe.
class Service {
 public:
  Service(store::Database& db, registry::Registry& registry, pki::Authority& authority,
          PkiEffects& effects, Clock& clock, Rng& rng, ServiceOptions options);

  // Migrate creates the enrollment tables (and the registry's and CA's).
  [[nodiscard]] static Result<void> Migrate(store::Database& db);

  // --- operators ---
  [[nodiscard]] Result<Manufacturer> AddManufacturer(std::span<const std::uint8_t> ca_der,
                                                     std::string_view name, std::string_view actor);
  [[nodiscard]] Result<std::vector<Manufacturer>> Manufacturers();
  [[nodiscard]] Result<void> AddReferenceValue(std::string_view model,
                                               std::string_view firmware_sha256,
                                               std::string_view actor);
  // ImportManifest verifies a batch manifest against the registered manufacturer it names and
  // imports its devices as manufactured.
  [[nodiscard]] Result<registry::ImportReport> ImportManifest(std::string_view jws,
                                                              std::string_view actor);

  // IssueCertificate is IssueForDevice under the devices' credential terms (PkiEffects::Terms).
  [[nodiscard]] Result<pki::CertificateRecord> IssueCertificate(
      std::string_view serial, std::span<const std::uint8_t> csr_der, std::string_view actor);

  // ChangeCertificateStatus is an operator's hold (kCertificateHold), revocation (another
  // reason) or release (nullopt) of one certificate: `fleetid ca hold|revoke|release`. For a
  // device's tracked credential it is a lifecycle event of that device, decided by the registry
  // in the same transaction (docs/registry.md, "Operator actions on a device's certificate"):
  // a hold suspends the device, keyCompromise quarantines it, any other reason but superseded
  // on the current credential suspends it with that credential revoked, a release is refused
  // unless it resumes a suspended device. Answers nullopt, changing nothing, for a certificate
  // that is no device's credential (not found, or no device's): the CA alone decides those.
  // Any other error (the database's) is returned.
  [[nodiscard]] Result<std::optional<pki::CertificateRecord>> ChangeCertificateStatus(
      std::string_view cert_serial, std::optional<pki::Reason> reason, const registry::Actor& actor,
      std::string_view why);

  // --- devices (over mutual TLS) ---
  // IssueNonce grants a nonce to a device that could use it. A device over its rate gets
  // kUnavailable, and |throttled| (if given) says when to retry.
  [[nodiscard]] Result<Nonce> IssueNonce(const ClientChain& chain, Purpose purpose,
                                         Throttled* throttled = nullptr);
  // Appraise verifies evidence signed by the client's own key and records the result. A
  // failing appraisal is recorded and answered kPermissionDenied with the reason. A revoked
  // LDevID or a tombstoned IDevID is kPermissionDenied before anything is verified or written.
  // A refused nonce (unknown, replayed, misbound, expired) is counted and audited within the
  // device's refusal bucket (nonce_burst, refilled every nonce_refill); past it the answer is
  // kUnavailable, nothing is written, and |throttled| (if given) says when to retry.
  [[nodiscard]] Result<Appraisal> Appraise(const ClientChain& chain, std::string_view evidence,
                                           Throttled* throttled = nullptr);
  // Enroll is EST simpleenroll with the IDevID: the device's first LDevID (or a new one after
  // quarantine or a lapse).
  [[nodiscard]] Result<pki::CertificateRecord> Enroll(const ClientChain& chain,
                                                      std::span<const std::uint8_t> csr_der);
  // Reenroll is EST simplereenroll with the current LDevID: the new certificate is issued on
  // hold (pending) until Confirm.
  [[nodiscard]] Result<pki::CertificateRecord> Reenroll(const ClientChain& chain,
                                                        std::span<const std::uint8_t> csr_der);
  // Confirm completes a rotation, called over TLS authenticated by the pending certificate's
  // key (the proof of possession): the old certificate is revoked (superseded) and the new one
  // made current in one transaction. Idempotent for an already current certificate.
  [[nodiscard]] Result<pki::CertificateRecord> Confirm(const ClientChain& chain);
  // Status answers a device's poll: its IDevID (unless tombstoned) or any of its LDevIDs that
  // is not revoked.
  [[nodiscard]] Result<DeviceStatus> Status(const ClientChain& chain);
  // RecordReceipt records a decommissioning receipt (a JWS signed by one of the device's LDevID
  // keys before it destroyed them) and completes the decommissioning.
  [[nodiscard]] Result<registry::Device> RecordReceipt(std::string_view receipt);

  // EST /cacerts (certs-only CMS, DER) and /csrattrs (CsrAttrs, DER).
  [[nodiscard]] Result<std::vector<std::uint8_t>> CaCerts() const;
  [[nodiscard]] static Result<std::vector<std::uint8_t>> CsrAttrs();
  // Prune deletes nonces expired for longer than nonce_retention and full rate buckets. The
  // server calls it from its maintenance thread.
  [[nodiscard]] Result<PruneReport> Prune();

  // Counters: refused nonces by cause, appraisals by result.
  [[nodiscard]] Result<std::map<std::string, std::int64_t>> Counters();

  // IsManufacturerAnchor / IsFleetAnchor say which trust anchor verified a client chain.
  bool IsFleetAnchor(std::span<const std::uint8_t> anchor_der) const;

 private:
  struct Identified;
  [[nodiscard]] Result<Identified> Identify(store::Transaction& tx,
                                            const ClientChain& chain) const;
  [[nodiscard]] static Result<void> RefuseRetiredCredential(store::Transaction& tx,
                                                            const Identified& who);
  [[nodiscard]] Result<void> Count(std::string_view counter);
  [[nodiscard]] static Result<registry::Event> MayEnrollIn(store::Transaction& tx,
                                                           const registry::Device& device,
                                                           const CredentialTerms& terms,
                                                           TimePoint now);
  [[nodiscard]] static Result<void> MayRenew(const Identified& who);
  [[nodiscard]] static Result<crypto::VerifiedCsr> CheckRotationKey(
      store::Transaction& tx, const Identified& who, const CredentialTerms& terms,
      std::span<const std::uint8_t> csr_der);
  [[nodiscard]] static Result<pki::CertificateRecord> CurrentCredentialIn(
      store::Transaction& tx, const registry::Device& device);
  struct Evidence;
  [[nodiscard]] static Result<Evidence> ParseEvidence(std::string_view evidence);
  // ConsumeNonce marks the evidence's nonce used, or names in |refusal| the counter of why not.
  [[nodiscard]] static Result<void> ConsumeNonce(store::Transaction& tx, const Identified& who,
                                                 const std::string& nonce, Purpose purpose,
                                                 TimePoint now, std::string& refusal);
  [[nodiscard]] Result<Appraisal> AppraiseIn(const ClientChain& chain, const Evidence& evidence,
                                             std::string& refusal, std::string& device);
  // TakeNonceToken spends a token of the bucket |device| (a device serial for its nonces,
  // RefusalBucket(serial) for its refused appraisals), or says how long until one is due.
  std::optional<std::chrono::seconds> TakeNonceToken(const std::string& device);

  struct Bucket {
    double tokens = 0;
    TimePoint at;
  };

  store::Database& db_;
  registry::Registry& registry_;
  pki::Authority& authority_;
  PkiEffects& effects_;
  Clock& clock_;
  Rng& rng_;
  ServiceOptions options_;
  std::vector<std::vector<std::uint8_t>> fleet_anchors_;
  std::vector<std::uint8_t> cacerts_;  // the certs-only CMS of fleet_anchors_
  Mutex buckets_mu_;
  std::map<std::string, Bucket> buckets_ FLEETID_GUARDED_BY(buckets_mu_);  // by device serial
};

// PkcsCertsOnly wraps DER certificates in a certs-only CMS SignedData (RFC 7030 §4.1.3).
[[nodiscard]] Result<std::vector<std::uint8_t>> CertsOnly(
    std::span<const std::vector<std::uint8_t>> certs);

}  // namespace fleetid::enroll

#endif  // FLEETID_ENROLL_SERVICE_H_
