// Authority: the composition of the CA's parts (src/pki/internal/) behind pki.h.
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <utility>

#include "pki/internal/cert_store.h"
#include "pki/internal/change_feed.h"
#include "pki/internal/crl_publisher.h"
#include "pki/internal/hierarchy.h"
#include "pki/internal/issuer.h"
#include "pki/internal/ocsp_responder.h"
#include "pki/pki.h"

namespace fleetid::pki {

// Impl owns the parts; each holds references to the options, database, clock and to the parts
// declared before it, so the declaration order is the construction order.
struct Authority::Impl {
  Impl(std::shared_ptr<custody::Token> token_in, store::Database& db_in, Clock& clock_in,
       Rng& rng_in, AuthorityOptions options_in)
      : token(std::move(token_in)),
        db(db_in),
        clock(clock_in),
        rng(rng_in),
        options(std::move(options_in)),
        hierarchy(options),
        crls(hierarchy, db, clock, options),
        ocsp(hierarchy, db, clock, options),
        feed(db, ocsp, crls),
        issuer(hierarchy, db, clock, rng, options, crls) {}

  std::shared_ptr<custody::Token> token;
  store::Database& db;
  Clock& clock;
  Rng& rng;
  const AuthorityOptions options;
  internal::Hierarchy hierarchy;
  internal::CrlPublisher crls;
  internal::OcspResponder ocsp;
  internal::ChangeFeed feed;
  internal::Issuer issuer;
};

Authority::Authority(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Authority::~Authority() = default;

Result<void> Authority::Migrate(store::Database& db) { return internal::MigrateStore(db); }

Result<std::unique_ptr<Authority>> Authority::Open(std::shared_ptr<custody::Token> token,
                                                   store::Database& db, Clock& clock, Rng& rng,
                                                   AuthorityOptions options) {
  FLEETID_CHECK_OK(Migrate(db));
  auto impl = std::make_unique<Impl>(std::move(token), db, clock, rng, std::move(options));
  FLEETID_CHECK_OK(impl->hierarchy.Load(*impl->token, db, clock, rng));
  // Changes made before this start are already reflected in what the database says.
  FLEETID_CHECK_OK(impl->feed.Start());
  return std::unique_ptr<Authority>(new Authority(std::move(impl)));  // NOLINT: private ctor
}

// Issuance and status changes (issuer.cc).

Result<CertificateRecord> Authority::Issue(std::span<const std::uint8_t> csr_der,
                                           const DeviceIdentity& device,
                                           const crypto::SuitePolicy& policy,
                                           std::string_view actor) {
  FLEETID_TRY(csr, crypto::VerifyCsr(csr_der));
  return impl_->issuer.IssueDevice(nullptr, csr, device, policy, actor, false);
}

Result<CertificateRecord> Authority::IssueIn(store::Transaction& tx, const crypto::VerifiedCsr& csr,
                                             const DeviceIdentity& device,
                                             const crypto::SuitePolicy& policy,
                                             std::string_view actor, bool pending) {
  return impl_->issuer.IssueDevice(&tx, csr, device, policy, actor, pending);
}

Result<CertificateRecord> Authority::IssueOperatorIn(store::Transaction& tx,
                                                     const crypto::VerifiedCsr& csr,
                                                     std::string_view name,
                                                     std::chrono::seconds lifetime,
                                                     std::string_view actor) {
  return impl_->issuer.IssueOperator(tx, csr, name, lifetime, actor);
}

bool Authority::IsOperatorCertificate(X509* cert) const {
  const internal::Ca& ca = impl_->hierarchy.OperatorCa();
  const bool issued = cert != nullptr && X509_check_issued(ca.cert.get(), cert) == X509_V_OK &&
                      X509_verify(cert, X509_get0_pubkey(ca.cert.get())) == 1;
  ERR_clear_error();
  return issued;
}

Result<CertificateRecord> Authority::IssueServer(std::span<const std::uint8_t> spki,
                                                 const std::vector<std::string>& names) {
  return impl_->issuer.IssueServer(spki, names);
}

Result<CertificateRecord> Authority::ServerCertificate(std::span<const std::uint8_t> spki,
                                                       const std::vector<std::string>& names) {
  return impl_->issuer.ServerCertificate(spki, names);
}

Result<CertificateRecord> Authority::Revoke(std::string_view serial, Reason reason,
                                            std::string_view actor) {
  if (reason == Reason::kRemoveFromCrl) {
    return MakeError(ErrorCode::kInvalidArgument, "removeFromCRL is not a revocation reason");
  }
  return ChangeStatus(serial, reason, actor);
}

Result<CertificateRecord> Authority::Release(std::string_view serial, std::string_view actor) {
  return ChangeStatus(serial, std::nullopt, actor);
}

Result<CertificateRecord> Authority::ChangeStatus(std::string_view serial,
                                                  std::optional<Reason> reason,
                                                  std::string_view actor) {
  FLEETID_TRY(tx, impl_->db.Begin(store::TxMode::kWrite));
  FLEETID_TRY(next, ChangeStatusIn(*tx, serial, reason, actor));
  FLEETID_CHECK_OK(tx->Commit());
  Publish(next);
  return next;
}

Result<CertificateRecord> Authority::ChangeStatusIn(store::Transaction& tx, std::string_view serial,
                                                    std::optional<Reason> reason,
                                                    std::string_view actor) {
  return impl_->issuer.ChangeStatusIn(tx, serial, reason, actor);
}

void Authority::Publish(const CertificateRecord& changed) {
  impl_->crls.MarkDirty(changed.issuer, changed.partition);
  impl_->ocsp.Refresh(changed);
}

// The certificate store (cert_store.cc).

Result<CertificateRecord> Authority::Get(std::string_view serial) {
  FLEETID_TRY(tx, impl_->db.Begin(store::TxMode::kAutocommit));
  return internal::GetIn(*tx, serial);
}

Result<CertificateRecord> Authority::GetIn(store::Transaction& tx, std::string_view serial) {
  return internal::GetIn(tx, serial);
}

Result<bool> Authority::KeyCompromisedIn(store::Transaction& tx,
                                         std::span<const std::uint8_t> spki) {
  return internal::KeyCompromisedIn(tx, spki);
}

// OCSP (ocsp_responder.cc) and CRLs (crl_publisher.cc), each after the change feed's poll.

OcspAnswer Authority::Ocsp(std::span<const std::uint8_t> request_der) {
  impl_->feed.Sync();
  return impl_->ocsp.Answer(request_der);
}

std::uint64_t Authority::OcspSignatures() const { return impl_->ocsp.Signatures(); }

std::size_t Authority::OcspCacheSize() const { return impl_->ocsp.CacheSize(); }

Result<CrlAnswer> Authority::Crl(std::string_view issuer, std::int64_t partition, bool delta) {
  impl_->feed.Sync();
  return impl_->crls.Get(issuer, partition, delta);
}

void Authority::RefreshCrls() {
  impl_->feed.Sync();
  impl_->ocsp.Prune(impl_->clock.Now());
  impl_->crls.Refresh();
}

std::size_t Authority::CrlCacheSize() const { return impl_->crls.Size(); }

// The hierarchy (hierarchy.cc).

std::int64_t Authority::PartitionOf(CertificateClass klass, TimePoint issued) const {
  return internal::PartitionOf(impl_->options, klass, issued);
}

bool Authority::PartitionLive(std::int64_t partition, TimePoint now) const {
  return internal::PartitionLive(impl_->options, partition, now);
}

Result<std::vector<std::uint8_t>> Authority::CaCertificate(std::string_view name) const {
  return impl_->hierarchy.CaCertificate(name);
}

std::vector<std::string> Authority::CaNames() const { return impl_->hierarchy.CaNames(); }

const std::vector<std::uint8_t>& Authority::RootDer() const { return impl_->hierarchy.Root().der; }

// Server certificate renewal.

bool RenewalDue(const CertificateRecord& current, TimePoint now) {
  if (current.status != Status::kGood) return true;
  return now >= current.not_before + (current.not_after - current.not_before) * 2 / 3;
}

ServerCertificateKeeper::ServerCertificateKeeper(Authority& authority, const Clock& clock,
                                                 std::vector<std::uint8_t> spki,
                                                 std::vector<std::string> names)
    : authority_(authority), clock_(clock), spki_(std::move(spki)), names_(std::move(names)) {}

Result<std::optional<CertificateRecord>> ServerCertificateKeeper::Check() {
  if (!current_.serial.empty()) {
    // Read afresh: a revocation by another process (the operator tool) is in the database.
    FLEETID_TRY(latest, authority_.Get(current_.serial));
    current_ = std::move(latest);
    if (!RenewalDue(current_, clock_.Now())) return std::nullopt;
  }
  FLEETID_TRY(next, authority_.ServerCertificate(spki_, names_));
  if (next.serial == current_.serial) return std::nullopt;
  current_ = std::move(next);
  return current_;
}

}  // namespace fleetid::pki
