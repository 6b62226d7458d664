// The certificate authority: a hierarchy whose keys live in the token, issuance of short-lived
// device certificates from PKCS#10 requests, revocation (RFC 5280 reasons, certificateHold and its
// release), partitioned CRLs (RFC 5280 §5) and an OCSP responder (RFC 6960) with pre-signed
// answers.
#ifndef FLEETID_PKI_PKI_H_
#define FLEETID_PKI_PKI_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/error.h"
#include "common/policy_version.h"
#include "common/rng.h"
#include "crypto/csr.h"
#include "crypto/handles.h"
#include "crypto/suite.h"
#include "custody/custody.h"
#include "store/store.h"

namespace fleetid::pki {

// RFC 5280 §5.3.1 CRLReason. certificateHold (6) is reversible; removeFromCRL (8) appears only
// in delta CRLs.
enum class Reason {
  kUnspecified = 0,
  kKeyCompromise = 1,
  kCaCompromise = 2,
  kAffiliationChanged = 3,
  kSuperseded = 4,
  kCessationOfOperation = 5,
  kCertificateHold = 6,
  kRemoveFromCrl = 8,
  kPrivilegeWithdrawn = 9,
  kAaCompromise = 10,
};
[[nodiscard]] Result<Reason> ParseReason(std::string_view name);
std::string_view ReasonName(Reason reason);

enum class Status { kGood, kRevoked, kOnHold };
std::string_view StatusName(Status status);

struct AuthorityOptions {
  // The hash of the active policy version, recorded with every issuance and revocation.
  PolicyVersionFn policy_version;
  // Base of the URLs written into certificates (AIA, CDP): http://host:port of the plain-HTTP
  // listener relying parties reach.
  std::string base_url = "http://127.0.0.1:8080";
  std::vector<crypto::SuiteId> issuing_suites = {crypto::SuiteId::kEcdsaP256Sha256};
  crypto::SuiteId root_suite = crypto::SuiteId::kEcdsaP256Sha256;
  std::chrono::seconds leaf_lifetime = std::chrono::hours(24);
  std::chrono::seconds server_lifetime = std::chrono::hours(24 * 30);
  std::chrono::seconds backdate = std::chrono::minutes(5);
  std::chrono::seconds crl_validity = std::chrono::hours(1);
  // A full CRL is rebuilt for a status change at most this often; deltas carry the changes in
  // between. Zero: at the next fetch.
  std::chrono::seconds crl_min_interval = std::chrono::seconds(60);
  std::chrono::seconds ocsp_validity = std::chrono::hours(1);
  std::chrono::seconds ocsp_signer_lifetime = std::chrono::hours(24 * 365);
  // Device certificates: one CRL partition per issuance hour (ids >= 0), served while it can
  // hold a certificate within leaf_lifetime. Long-lived certificates (server certificates,
  // OCSP signers) have their own coarse partitions (ids < 0: -1 - issuance week), served while
  // they can hold one within max(server_lifetime, ocsp_signer_lifetime).
  std::chrono::seconds partition_span = std::chrono::hours(1);
  std::chrono::seconds long_partition_span = std::chrono::hours(24 * 7);
  // Signed OCSP answers that name a serial this authority never issued ("unknown"): at most
  // this many per second (and as a burst); beyond it such requests get an unsigned
  // `unauthorized`. They are never cached.
  int ocsp_unknown_per_second = 20;
  // Answers that cannot come from the pre-signed cache (a request with a nonce, or with more than
  // one CertID): at most this many signed per second (and as a burst). Beyond it a nonced
  // single-CertID request gets the cached answer without its nonce (RFC 6960 §4.4.1 and RFC 8954
  // §2.1 let a responder omit it) and a multi-CertID request an unsigned `unauthorized`.
  int ocsp_fresh_per_second = 200;
  // Pre-signed OCSP answers held at most (one per CertID hash and issued serial asked for
  // within ocsp_validity). Past it, caching an answer evicts the one signed longest ago; an
  // evicted answer is signed again at its next query. Zero: nothing is cached.
  std::size_t ocsp_cache_max_entries = 65536;
};

// The operators' issuing CA (in CaNames, /ca/operators.crt): it certifies operators, never
// devices, and device CAs never certify operators, so the two identities never cross.
inline constexpr std::string_view kOperatorCa = "operators";
// An operator certificate lives at most this long (its CRL partition is a long-lived one).
inline constexpr std::chrono::hours kMaxOperatorLifetime{24 * 30};

// The classes of certificate the CA issues, by where their revocation is published.
enum class CertificateClass { kDevice, kLongLived };

// DeviceIdentity is what the CA writes into a certificate: taken from the registry's record of the
// device, never from the CSR.
struct DeviceIdentity {
  std::string serial;
  std::string tenant;
  // The certificate's lifetime (its credential class's); zero or more than leaf_lifetime, which
  // bounds how long a CRL partition is served, gives leaf_lifetime.
  std::chrono::seconds lifetime{0};
};

struct CertificateRecord {
  std::string serial;  // lower-case hex
  std::string issuer;  // the issuing CA's name (its suite)
  std::string device;
  std::string suite;
  TimePoint not_before;
  TimePoint not_after;
  Status status = Status::kGood;
  std::optional<Reason> reason;
  std::optional<TimePoint> revoked_at;
  std::int64_t partition = 0;
  std::vector<std::uint8_t> der;
};

// OcspAnswer is a DER OCSPResponse plus what HTTP caching needs (RFC 5019 §6).
struct OcspAnswer {
  std::vector<std::uint8_t> der;
  bool cacheable = false;  // a successful, nonce-less answer
  TimePoint this_update;
  TimePoint next_update;
  std::string etag;  // quoted hex SHA-1 of |der|, the entity tag RFC 5019 §6.2 recommends
};

struct CrlAnswer {
  std::vector<std::uint8_t> der;
  TimePoint this_update;
  TimePoint next_update;
  std::int64_t number = 0;  // its cRLNumber
  std::size_t entries = 0;
  std::string etag;  // quoted hex SHA-1 of |der|
};

// Authority is thread-safe.
class Authority {
 public:
  // Open loads the hierarchy from |db| and the token, creating it on first use: a root CA, one
  // issuing CA per enabled suite and a delegated OCSP signer per issuing CA, every key generated
  // in |token|.
  [[nodiscard]] static Result<std::unique_ptr<Authority>> Open(
      std::shared_ptr<custody::Token> token, store::Database& db, Clock& clock, Rng& rng,
      AuthorityOptions options);

  [[nodiscard]] static Result<void> Migrate(store::Database& db);

  // Issue verifies |csr_der| (signature, key suite allowed by |policy|) and issues a certificate
  // for |device| from the issuing CA of the key's suite. Returns the record, DER included. The
  // record and its audit entry (|actor|, the CSR's SHA-256 as evidence) commit together.
  [[nodiscard]] Result<CertificateRecord> Issue(std::span<const std::uint8_t> csr_der,
                                                const DeviceIdentity& device,
                                                const crypto::SuitePolicy& policy,
                                                std::string_view actor = "system");

  // IssueIn is Issue inside the caller's write transaction |tx| (nothing is committed here), for
  // a request the caller has already verified (crypto::VerifyCsr; the key suite is still checked
  // against |policy| here). With |pending| the certificate is born on hold (certificateHold): a
  // rotation's new credential, which becomes good (Release) once the device proves it holds the
  // key.
  [[nodiscard]] Result<CertificateRecord> IssueIn(store::Transaction& tx,
                                                  const crypto::VerifiedCsr& csr,
                                                  const DeviceIdentity& device,
                                                  const crypto::SuitePolicy& policy,
                                                  std::string_view actor, bool pending);

  // IssueOperatorIn issues, inside |tx|, an operator certificate from the operators' CA for the
  // verified request's key: the operator's |name| (an identifier: 1-64 of A-Z a-z 0-9 . _ -) as
  // its subject's CN, urn:fleetid:operator:<name> as its subjectAltName, clientAuth only, for
  // |lifetime| (at most kMaxOperatorLifetime). The record's device is "operator:<name>". A key
  // revoked as compromised is refused.
  [[nodiscard]] Result<CertificateRecord> IssueOperatorIn(store::Transaction& tx,
                                                          const crypto::VerifiedCsr& csr,
                                                          std::string_view name,
                                                          std::chrono::seconds lifetime,
                                                          std::string_view actor);
  // IsOperatorCertificate says whether |cert| was issued by the operators' CA (its issuer name,
  // key identifier and signature). The TLS handshake has verified the chain already.
  bool IsOperatorCertificate(X509* cert) const;

  // IssueServer issues a TLS server certificate (EKU serverAuth) for the key |spki| (DER
  // SubjectPublicKeyInfo, typically a token key), naming |names| (DNS names or IP addresses) in
  // its subjectAltName. The record's device is "server:<first name>".
  [[nodiscard]] Result<CertificateRecord> IssueServer(std::span<const std::uint8_t> spki,
                                                      const std::vector<std::string>& names);

  // ServerCertificate returns a good server certificate for |spki| and |names| issued earlier,
  // if one has at least a third of its lifetime left (see RenewalDue), and otherwise issues one
  // (IssueServer).
  [[nodiscard]] Result<CertificateRecord> ServerCertificate(std::span<const std::uint8_t> spki,
                                                            const std::vector<std::string>& names);

  // Revoke marks |serial| revoked with |reason| (kCertificateHold puts it on hold); Release lifts
  // a hold. The OCSP cache holds the new answer before either returns.
  // Each change commits with its audit entry, naming |actor|. Issuing CAs and OCSP signers are
  // revocable like any certificate (the root's CRL lists revoked issuing CAs). keyCompromise and
  // cACompromise also record the certificate's public key (crypto::KeyFingerprint) as
  // compromised in the same transaction: from then on every issuance for that key, however its
  // SubjectPublicKeyInfo is encoded, is refused with kPermissionDenied. A revoked certificate can
  // be revoked again only to raise its reason to keyCompromise or cACompromise (its revocation
  // date stays, RFC 5280 §5.3.1); any other change of a revoked certificate is kConflict.
  [[nodiscard]] Result<CertificateRecord> Revoke(std::string_view serial, Reason reason,
                                                 std::string_view actor = "system");
  [[nodiscard]] Result<CertificateRecord> Release(std::string_view serial,
                                                  std::string_view actor = "system");
  [[nodiscard]] Result<CertificateRecord> Get(std::string_view serial);
  [[nodiscard]] static Result<CertificateRecord> GetIn(store::Transaction& tx,
                                                       std::string_view serial);

  // ChangeStatusIn revokes (|reason|), holds (kCertificateHold) or releases (nullopt) |serial|
  // inside the caller's transaction, with its audit entry. After the commit, the caller passes
  // the record to Publish, which replaces cached OCSP answers and marks the CRL for a rebuild
  // (other nodes notice within 50 ms anyway: the change feed polls certificate_changes).
  [[nodiscard]] Result<CertificateRecord> ChangeStatusIn(store::Transaction& tx,
                                                         std::string_view serial,
                                                         std::optional<Reason> reason,
                                                         std::string_view actor);
  void Publish(const CertificateRecord& changed);

  // Ocsp answers a DER OCSPRequest. It never fails: garbage, more than kMaxOcspCertIds CertIDs,
  // a serial over 20 octets (RFC 5280 §4.1.2.2), a nonce over 32 octets (RFC 8954 §2.1) and an
  // unknown critical extension get malformedRequest; a CertID of an issuer fleetid does not run
  // gets unauthorized, and so does a serial never issued once ocsp_unknown_per_second signed
  // answers have been spent, and a multi-CertID request once ocsp_fresh_per_second have; a
  // nonced request past that budget gets the pre-signed answer, without its nonce.
  OcspAnswer Ocsp(std::span<const std::uint8_t> request_der);
  static constexpr int kMaxOcspCertIds = 16;
  // OcspSignatures counts the OCSP answers signed in the token since Open.
  std::uint64_t OcspSignatures() const;
  // OcspCacheSize is the number of pre-signed answers held: one per (CertID hash, issued
  // serial) asked for within ocsp_validity, never one per never-issued serial.
  std::size_t OcspCacheSize() const;

  // Crl returns the current full CRL of |issuer|'s |partition|, or with |delta| the delta CRL
  // against it (RFC 5280 §5.2.4). Each is rebuilt once half its validity has passed and after a
  // status change in its scope; a full CRL coalesces changes for crl_min_interval.
  [[nodiscard]] Result<CrlAnswer> Crl(std::string_view issuer, std::int64_t partition,
                                      bool delta = false);

  // RefreshCrls rebuilds every CRL served so far that is due (see Crl), so fetches rarely wait
  // for a build; it drops CRLs of partitions that can no longer hold an unexpired certificate,
  // and OCSP answers older than ocsp_validity. The server calls it on a timer.
  void RefreshCrls();
  std::size_t CrlCacheSize() const;

  // PartitionOf is the CRL partition of a certificate of |klass| issued at |issued|;
  // PartitionLive says whether partition |partition| of an issuing CA can still hold an
  // unexpired certificate at |now|.
  std::int64_t PartitionOf(CertificateClass klass, TimePoint issued) const;
  bool PartitionLive(std::int64_t partition, TimePoint now) const;

  // KeyCompromisedIn says whether |spki| (DER SubjectPublicKeyInfo) was revoked for keyCompromise
  // or cACompromise.
  [[nodiscard]] static Result<bool> KeyCompromisedIn(store::Transaction& tx,
                                                     std::span<const std::uint8_t> spki);

  // Chain material for AIA caIssuers and EST /cacerts.
  [[nodiscard]] Result<std::vector<std::uint8_t>> CaCertificate(std::string_view name) const;
  std::vector<std::string> CaNames() const;
  const std::vector<std::uint8_t>& RootDer() const;

  ~Authority();

 private:
  struct Impl;  // the hierarchy, issuer, responder, CRL publisher and change feed (authority.cc)
  explicit Authority(std::unique_ptr<Impl> impl);
  [[nodiscard]] Result<CertificateRecord> ChangeStatus(std::string_view serial,
                                                       std::optional<Reason> reason,
                                                       std::string_view actor);

  std::unique_ptr<Impl> impl_;
};

// RenewalDue says whether the certificate |current| should be replaced at |now|: two thirds of
// its life have passed, or it is revoked or on hold, or it has expired.
bool RenewalDue(const CertificateRecord& current, TimePoint now);

// ServerCertificateKeeper keeps the HTTPS front's certificate current: Check re-reads the status
// of the certificate in use and, when RenewalDue, returns a replacement (Authority::
// ServerCertificate for the same key and names). Not thread-safe: one maintenance thread owns it.
class ServerCertificateKeeper {
 public:
  ServerCertificateKeeper(Authority& authority, const Clock& clock, std::vector<std::uint8_t> spki,
                          std::vector<std::string> names);

  // Current is the certificate in use (empty before the first Check).
  const CertificateRecord& Current() const { return current_; }
  // Check returns a new certificate to serve when the current one is due for renewal (or at the
  // first call), nullopt when it stands.
  [[nodiscard]] Result<std::optional<CertificateRecord>> Check();

 private:
  Authority& authority_;
  const Clock& clock_;
  std::vector<std::uint8_t> spki_;
  std::vector<std::string> names_;
  CertificateRecord current_;
};

}  // namespace fleetid::pki

#endif  // FLEETID_PKI_PKI_H_
