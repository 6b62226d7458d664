#include "pki/internal/issuer.h"

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <utility>

#include "audit/log.h"
#include "common/identifier.h"
#include "crypto/crypto.h"
#include "crypto/csr.h"
#include "crypto/keys.h"
#include "pki/internal/cert_store.h"
#include "pki/internal/util.h"

namespace fleetid::pki::internal {
namespace {

using crypto::X509ExtensionPtr;

// RefusePssKey is kInvalidArgument for a key whose SPKI names id-RSASSA-PSS: the
// rsa3072-pss-sha256 suite's keys are rsaEncryption keys (RSASSA-PSS is how they sign), and no
// suite certifies a PSS-restricted key, so an RSA key is certified under one encoding only.
Result<void> RefusePssKey(EVP_PKEY* key) {
  if (EVP_PKEY_get_base_id(key) != EVP_PKEY_RSA_PSS) return {};
  return MakeError(ErrorCode::kInvalidArgument,
                   "an RSA key is an rsaEncryption SubjectPublicKeyInfo, not id-RSASSA-PSS");
}

std::unexpected<Error> Compromised() {
  return MakeError(ErrorCode::kPermissionDenied,
                   "this public key was revoked as compromised and is never certified again");
}

// AppendIssued appends the pki.issue audit entry of |record| to |tx|.
Result<void> AppendIssued(store::Transaction& tx, const CertificateRecord& record,
                          std::string_view actor, std::string_view evidence_digest,
                          const PolicyVersionFn& policy_version, Clock& clock) {
  const nlohmann::json after = {{"device", record.device},
                                {"issuer", record.issuer},
                                {"suite", record.suite},
                                {"not_after", UnixSeconds(record.not_after)},
                                {"status", StatusName(record.status)}};
  FLEETID_TRY(seq, audit::Log::Append(tx,
                                      {.actor = std::string(actor),
                                       .action = "pki.issue",
                                       .subject = record.serial,
                                       .before = nullptr,
                                       .after = after,
                                       .reason = "",
                                       .policy_version = CurrentPolicyVersion(policy_version),
                                       .evidence_digest = std::string(evidence_digest)},
                                      clock));
  static_cast<void>(seq);
  return {};
}

// SameServerCertificate says whether |cert| names the key |spki| and exactly |names|.
bool SameServerCertificate(X509* cert, std::span<const std::uint8_t> spki,
                           const std::vector<std::string>& names) {
  auto der = crypto::SubjectPublicKeyInfoDer(cert);
  bool same = der && std::ranges::equal(spki, *der);
  for (const std::string& name : names) {
    crypto::Asn1OctetStringPtr ip(a2i_IPADDRESS(name.c_str()));
    ERR_clear_error();
    same = same && (ip ? X509_check_ip_asc(cert, name.c_str(), 0) == 1
                       : X509_check_host(cert, name.c_str(), name.size(),
                                         X509_CHECK_FLAG_NO_WILDCARDS, nullptr) == 1);
  }
  return same;
}

bool IsCompromise(std::optional<Reason> r) {
  return r == Reason::kKeyCompromise || r == Reason::kCaCompromise;
}

// CheckTransition says whether |current| may move to |reason| (nullopt: release): kConflict if
// not.
Result<void> CheckTransition(const CertificateRecord& current, std::optional<Reason> reason) {
  if (reason) {
    // A revoked certificate's reason can still be raised to a compromise, found later (a key
    // superseded first, then found stolen): the key must still be listed as compromised. Its
    // revocation date stays (RFC 5280 §5.3.1 reasonCode changes, revocationDate does not).
    if (current.status == Status::kRevoked &&
        (!IsCompromise(reason) || IsCompromise(current.reason))) {
      return MakeError(ErrorCode::kConflict, "certificate {} is already revoked", current.serial);
    }
    if (current.status == Status::kOnHold && *reason == Reason::kCertificateHold) {
      return MakeError(ErrorCode::kConflict, "certificate {} is already on hold", current.serial);
    }
  } else if (current.status != Status::kOnHold) {
    return MakeError(ErrorCode::kConflict, "certificate {} is not on hold", current.serial);
  }
  return {};
}

CertificateRecord Transitioned(const CertificateRecord& current, std::optional<Reason> reason,
                               TimePoint now) {
  CertificateRecord next = current;
  if (reason) {
    next.status = *reason == Reason::kCertificateHold ? Status::kOnHold : Status::kRevoked;
    next.reason = reason;
    // A hold turned into a revocation keeps the original revocation time (RFC 5280 §5.3.2).
    if (!current.revoked_at) next.revoked_at = std::chrono::floor<std::chrono::seconds>(now);
  } else {
    next.status = Status::kGood;
    next.reason.reset();
    next.revoked_at.reset();
  }
  return next;
}

nlohmann::json State(const CertificateRecord& r) {
  nlohmann::json out{{"status", StatusName(r.status)}};
  if (r.reason) out["reason"] = ReasonName(*r.reason);
  return out;
}

}  // namespace

Result<CertificateRecord> Issuer::IssueDevice(store::Transaction* tx,
                                              const crypto::VerifiedCsr& csr,
                                              const DeviceIdentity& device,
                                              const crypto::SuitePolicy& policy,
                                              std::string_view actor, bool pending) {
  // What goes into the subject and subjectAltName: the registry's character set, enforced here
  // too so no caller can put ',', '=', NUL or a line break into a name.
  FLEETID_CHECK_OK(CheckIdentifier("device serial", device.serial));
  if (!device.tenant.empty()) FLEETID_CHECK_OK(CheckIdentifier("tenant", device.tenant));
  FLEETID_CHECK_OK(RefusePssKey(csr.key.get()));
  FLEETID_TRY(suite, crypto::SuiteOfPublicKey(csr.key.get()));
  FLEETID_CHECK_OK(policy.CheckUsable(*suite));
  FLEETID_TRY(issuing, hierarchy_.IssuingCa(*suite));
  const TimePoint now = clock_.Now();
  const std::int64_t partition = PartitionOf(options_, CertificateClass::kDevice, now);
  CertSpec spec;
  crypto::X509NamePtr subject = Name(device.serial, device.tenant);
  spec.subject = subject.get();
  spec.spki = csr.spki;
  spec.refuse_compromised = true;
  spec.not_before = now - options_.backdate;
  const std::chrono::seconds lifetime =
      device.lifetime > std::chrono::seconds(0) && device.lifetime < options_.leaf_lifetime
          ? device.lifetime
          : options_.leaf_lifetime;
  spec.not_after = now + lifetime;
  for (const X509ExtensionPtr& ext : issuing->device_extensions)
    spec.extensions.push_back(ext.get());
  FLEETID_TRY(cdp, hierarchy_.DistributionPoint(*issuing, partition));
  spec.extensions.push_back(cdp);
  spec.authority_key_id = issuing->authority_key_id.get();
  spec.subject_alt_names = {{GEN_URI, DeviceUri(device.serial)}};
  const std::string evidence = crypto::Hex(csr.request_sha256);
  return SignAndRecord(spec, *issuing, device.serial, *suite, partition, {actor, evidence}, tx,
                       pending);
}

Result<CertificateRecord> Issuer::IssueOperator(store::Transaction& tx,
                                                const crypto::VerifiedCsr& csr,
                                                std::string_view name,
                                                std::chrono::seconds lifetime,
                                                std::string_view actor) {
  FLEETID_CHECK_OK(CheckIdentifier("operator name", name));
  if (lifetime <= std::chrono::seconds(0) || lifetime > kMaxOperatorLifetime) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "an operator certificate lives more than 0 s and at most {} days",
                     kMaxOperatorLifetime.count() / 24);
  }
  FLEETID_CHECK_OK(RefusePssKey(csr.key.get()));
  FLEETID_TRY(suite, crypto::SuiteOfPublicKey(csr.key.get()));
  Ca& issuing = hierarchy_.OperatorCa();
  const TimePoint now = clock_.Now();
  const std::int64_t partition = PartitionOf(options_, CertificateClass::kLongLived, now);
  CertSpec spec;
  crypto::X509NamePtr subject = Name(name, "fleetid operators");
  spec.subject = subject.get();
  spec.spki = csr.spki;
  spec.refuse_compromised = true;
  spec.not_before = now - options_.backdate;
  spec.not_after = now + lifetime;
  for (const X509ExtensionPtr& ext : issuing.device_extensions) spec.extensions.push_back(ext.get());
  FLEETID_TRY(cdp, hierarchy_.DistributionPoint(issuing, partition));
  spec.extensions.push_back(cdp);
  spec.authority_key_id = issuing.authority_key_id.get();
  spec.subject_alt_names = {{GEN_URI, "urn:fleetid:operator:" + std::string(name)}};
  const std::string evidence = crypto::Hex(csr.request_sha256);
  return SignAndRecord(spec, issuing, "operator:" + std::string(name), *suite, partition,
                       {actor, evidence}, &tx, /*hold=*/false);
}

Result<CertificateRecord> Issuer::ServerCertificate(std::span<const std::uint8_t> spki,
                                                    const std::vector<std::string>& names) {
  if (names.empty())
    return MakeError(ErrorCode::kInvalidArgument, "a server certificate needs a name");
  const TimePoint now = clock_.Now();
  {
    FLEETID_TRY(tx, db_.Begin(store::TxMode::kRead));
    FLEETID_TRY(found,
                LatestGoodIn(*tx, "server:" + names.front(), now + options_.server_lifetime / 3));
    if (found) {
      FLEETID_TRY(cert, ParseCert(found->der));
      // Reused only for the same key and exactly the same names.
      const bool same = SameServerCertificate(cert.get(), spki, names);
      // Never reuse a certificate of a key since revoked for compromise under another serial.
      FLEETID_TRY(compromised, KeyCompromisedIn(*tx, spki));
      if (compromised) return Compromised();
      if (same) return std::move(*found);
    }
  }
  return IssueServer(spki, names);
}

Result<CertificateRecord> Issuer::IssueServer(std::span<const std::uint8_t> spki,
                                              const std::vector<std::string>& names) {
  if (names.empty())
    return MakeError(ErrorCode::kInvalidArgument, "a server certificate needs a name");
  FLEETID_TRY(key, crypto::PublicKeyFromDer(spki));
  FLEETID_CHECK_OK(RefusePssKey(key.get()));
  FLEETID_TRY(suite, crypto::SuiteOfPublicKey(key.get()));
  FLEETID_TRY(issuing, hierarchy_.IssuingCa(*suite));
  const TimePoint now = clock_.Now();
  const std::int64_t partition = PartitionOf(options_, CertificateClass::kLongLived, now);
  CertSpec spec;
  crypto::X509NamePtr subject = Name(names.front(), "fleetid");
  spec.subject = subject.get();
  spec.spki = spki;
  spec.refuse_compromised = true;
  spec.not_before = now - options_.backdate;
  spec.not_after = now + options_.server_lifetime;
  std::vector<X509ExtensionPtr> extensions;
  for (const auto& [nid, value] : std::initializer_list<std::pair<int, std::string>>{
           {NID_basic_constraints, "critical,CA:FALSE"},
           {NID_key_usage, "critical,digitalSignature"},
           {NID_ext_key_usage, "serverAuth"},
           {NID_info_access, fmt::format("OCSP;URI:{0}/ocsp,caIssuers;URI:{0}/ca/{1}.crt",
                                         options_.base_url, issuing->name)}}) {
    FLEETID_TRY(ext, ConfExtension(nid, value));
    spec.extensions.push_back(ext.get());
    extensions.push_back(std::move(ext));
  }
  FLEETID_TRY(cdp, hierarchy_.DistributionPoint(*issuing, partition));
  spec.extensions.push_back(cdp);
  spec.authority_key_id = issuing->authority_key_id.get();
  for (const std::string& name : names) {
    crypto::Asn1OctetStringPtr ip(a2i_IPADDRESS(name.c_str()));
    ERR_clear_error();
    spec.subject_alt_names.emplace_back(ip ? GEN_IPADD : GEN_DNS, name);
  }
  return SignAndRecord(spec, *issuing, "server:" + names.front(), *suite, partition,
                       {"system:fleetid-server", ""}, nullptr, false);
}

Result<CertificateRecord> Issuer::SignAndRecord(CertSpec& spec, Ca& issuing,
                                                std::string_view subject_id,
                                                const crypto::Suite& suite, std::int64_t partition,
                                                const AuditContext& audit,
                                                store::Transaction* outer, bool hold) {
  for (int attempt = 0;; ++attempt) {
    FLEETID_TRY(serial, RandomSerial(rng_));
    spec.serial = serial;
    FLEETID_TRY(cert, BuildAndSign(spec, issuing.cert.get(), issuing.key.get(), issuing.md));
    FLEETID_TRY(der, crypto::CertificateDer(cert.get()));
    CertificateRecord record{.serial = crypto::Hex(serial),
                             .issuer = issuing.name,
                             .device = std::string(subject_id),
                             .suite = std::string(suite.name),
                             .not_before = spec.not_before,
                             .not_after = spec.not_after,
                             .status = Status::kGood,
                             .reason = std::nullopt,
                             .revoked_at = std::nullopt,
                             .partition = partition,
                             .der = std::move(der)};
    std::unique_ptr<store::Transaction> own;
    if (outer == nullptr) {
      FLEETID_TRY(begun, db_.Begin(store::TxMode::kWrite));
      own = std::move(begun);
    }
    auto recorded = RecordIn(outer != nullptr ? *outer : *own, record, spec, issuing, audit, hold);
    // The serial is unique by the table's primary key; a collision of 127 random bits draws
    // again (in a transaction of our own: a failed statement may end the caller's).
    if (!recorded && recorded.error().code() == ErrorCode::kConflict && attempt < 3 && own)
      continue;
    if (!recorded) return MakeError(recorded.error());
    if (own) FLEETID_CHECK_OK(own->Commit());
    if (hold && own) crls_.MarkDirty(record.issuer, record.partition);
    // The first OCSP query signs and caches the answer; signing two CertID forms here would
    // triple the token signatures of every issuance.
    return record;
  }
}

// RecordIn stores |record| (born on hold with |hold|) with its pki.issue audit entry in |tx|,
// unless |issuing| is revoked or the key is compromised. A serial collision is kConflict.
Result<void> Issuer::RecordIn(store::Transaction& tx, CertificateRecord& record,
                              const CertSpec& spec, const Ca& issuing, const AuditContext& audit,
                              bool hold) {
  // A revoked issuing CA signs nothing more: relying parties would refuse it anyway.
  FLEETID_TRY(ca_rows,
              tx.Query("SELECT status FROM certificates WHERE serial = ?", {issuing.serial}));
  if (!ca_rows.empty() && ca_rows.front().Text(0) != StatusName(Status::kGood)) {
    return MakeError(ErrorCode::kUnavailable,
                     "issuing CA '{}' is revoked or on hold: it issues nothing more", issuing.name);
  }
  // A key revoked for keyCompromise is never certified again, for anyone.
  if (spec.refuse_compromised) {
    FLEETID_TRY(compromised, KeyCompromisedIn(tx, spec.spki));
    if (compromised) return Compromised();
  }
  if (hold) {
    record.status = Status::kOnHold;
    record.reason = Reason::kCertificateHold;
    record.revoked_at = std::chrono::floor<std::chrono::seconds>(clock_.Now());
  }
  FLEETID_CHECK_OK(InsertIn(tx, record));
  if (hold) FLEETID_CHECK_OK(RecordChangeIn(tx, record.serial, clock_.Now()));
  return AppendIssued(tx, record, audit.actor, audit.evidence_digest,
                      options_.policy_version, clock_);
}

// RecordCaIn makes the certificate record of the issuing CA or OCSP signer whose serial is
// |serial|, with its pki.issue audit entry, inside |tx|: an issuing CA is a certificate of the
// root (partition 0), an OCSP signer a long-lived certificate of its issuing CA. It is made when
// the certificate is first revoked, so it can be revoked, listed and answered for like any
// other. kNotFound when no CA certificate has that serial.
Result<void> Issuer::RecordCaIn(store::Transaction& tx, std::string_view serial) {
  for (const auto& ca : hierarchy_.Issuing()) {
    struct Recorded {
      X509* cert;
      std::string issuer;
      std::string subject;
    };
    for (const Recorded& r : {Recorded{ca->cert.get(), "root", "ca:" + ca->name},
                              Recorded{ca->ocsp_cert.get(), ca->name, "ca:ocsp-" + ca->name}}) {
      if (r.cert == nullptr) continue;
      const auto hex = crypto::SerialHex(X509_get0_serialNumber(r.cert));
      if (!hex.has_value() || *hex != serial) continue;
      FLEETID_TRY(begins, crypto::Asn1TimeToUnix(X509_get0_notBefore(r.cert)));
      FLEETID_TRY(ends, crypto::Asn1TimeToUnix(X509_get0_notAfter(r.cert)));
      FLEETID_TRY(der, crypto::CertificateDer(r.cert));
      const TimePoint not_before = FromUnixSeconds(begins);
      const CertificateRecord record{
          .serial = std::string(serial),
          .issuer = r.issuer,
          .device = r.subject,
          .suite = std::string(ca->suite->name),
          .not_before = not_before,
          .not_after = FromUnixSeconds(ends),
          .status = Status::kGood,
          .reason = std::nullopt,
          .revoked_at = std::nullopt,
          .partition = r.issuer == "root"
                           ? 0
                           : PartitionOf(options_, CertificateClass::kLongLived, not_before),
          .der = std::move(der)};
      FLEETID_CHECK_OK(InsertIn(tx, record));
      return AppendIssued(tx, record, "system", "", options_.policy_version, clock_);
    }
  }
  return MakeError(ErrorCode::kNotFound, "no certificate with serial {}", serial);
}

Result<CertificateRecord> Issuer::ChangeStatusIn(store::Transaction& tx, std::string_view serial,
                                                 std::optional<Reason> reason,
                                                 std::string_view actor) {
  if (reason == Reason::kRemoveFromCrl) {
    return MakeError(ErrorCode::kInvalidArgument, "removeFromCRL is not a revocation reason");
  }
  auto found = GetIn(tx, serial);
  if (!found && found.error().code() == ErrorCode::kNotFound) {
    FLEETID_CHECK_OK(RecordCaIn(tx, serial));
    found = GetIn(tx, serial);
  }
  FLEETID_TRY(current, std::move(found));
  FLEETID_CHECK_OK(CheckTransition(current, reason));
  const TimePoint now = clock_.Now();
  CertificateRecord next = Transitioned(current, reason, now);
  FLEETID_CHECK_OK(UpdateStatusIn(tx, next, current.status));
  // Other processes and nodes serving OCSP for this database pick the change up from here.
  FLEETID_CHECK_OK(RecordChangeIn(tx, serial, now));
  if (reason.has_value() && IsCompromise(reason)) {
    FLEETID_CHECK_OK(RecordCompromisedKeyIn(tx, current.der, serial, *reason, now));
  }
  FLEETID_TRY(seq, audit::Log::Append(tx,
                                      {.actor = std::string(actor),
                                       .action = reason ? "pki.revoke" : "pki.release",
                                       .subject = std::string(serial),
                                       .before = State(current),
                                       .after = State(next),
                                       .reason = reason ? std::string(ReasonName(*reason)) : "",
                                       .policy_version = CurrentPolicyVersion(options_.policy_version),
                                       .evidence_digest = ""},
                                      clock_));
  static_cast<void>(seq);
  return next;
}

}  // namespace fleetid::pki::internal
