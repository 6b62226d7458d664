// The issuer: certificates for devices and servers from the hierarchy's issuing CAs, their
// records and audit entries, and status changes (revocation, hold, release) of any certificate
// the authority signed.
#ifndef FLEETID_PKI_INTERNAL_ISSUER_H_
#define FLEETID_PKI_INTERNAL_ISSUER_H_

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/error.h"
#include "common/rng.h"
#include "crypto/suite.h"
#include "pki/internal/cert_builder.h"
#include "pki/internal/crl_publisher.h"
#include "pki/internal/guard.h"
#include "pki/internal/hierarchy.h"
#include "pki/pki.h"
#include "store/store.h"

namespace fleetid::pki::internal {

// Issuer implements Authority's issuance and status changes. Thread-safe.
class Issuer {
 public:
  Issuer(Hierarchy& hierarchy, store::Database& db, Clock& clock, Rng& rng,
         const AuthorityOptions& options, CrlPublisher& crls)
      : hierarchy_(hierarchy), db_(db), clock_(clock), rng_(rng), options_(options), crls_(crls) {}

  // IssueDevice is Authority::IssueIn inside |tx|, or Authority::Issue in a transaction of its
  // own when |tx| is nullptr.
  [[nodiscard]] Result<CertificateRecord> IssueDevice(store::Transaction* tx,
                                                      const crypto::VerifiedCsr& csr,
                                                      const DeviceIdentity& device,
                                                      const crypto::SuitePolicy& policy,
                                                      std::string_view actor, bool pending);
  [[nodiscard]] Result<CertificateRecord> IssueServer(std::span<const std::uint8_t> spki,
                                                      const std::vector<std::string>& names);
  [[nodiscard]] Result<CertificateRecord> IssueOperator(store::Transaction& tx,
                                                        const crypto::VerifiedCsr& csr,
                                                        std::string_view name,
                                                        std::chrono::seconds lifetime,
                                                        std::string_view actor);
  [[nodiscard]] Result<CertificateRecord> ServerCertificate(std::span<const std::uint8_t> spki,
                                                            const std::vector<std::string>& names);
  [[nodiscard]] Result<CertificateRecord> ChangeStatusIn(store::Transaction& tx,
                                                         std::string_view serial,
                                                         std::optional<Reason> reason,
                                                         std::string_view actor);

 private:
  struct AuditContext {
    std::string_view actor;
    std::string evidence_digest;
  };
  struct Signed;
  [[nodiscard]] Result<CertificateRecord> SignAndRecord(
      CertSpec& spec, Ca& issuing, std::string_view subject_id, const crypto::Suite& suite,
      std::int64_t partition, const AuditContext& audit, store::Transaction* outer, bool hold);
  [[nodiscard]] Result<void> RecordIn(store::Transaction& tx, CertificateRecord& record,
                                      const CertSpec& spec, const Ca& issuing,
                                      const AuditContext& audit, bool hold);
  [[nodiscard]] Result<void> RecordCaIn(store::Transaction& tx, std::string_view serial);

  Hierarchy& hierarchy_;
  store::Database& db_;
  Clock& clock_;
  Rng& rng_;
  const AuthorityOptions& options_;
  CrlPublisher& crls_;
};

}  // namespace fleetid::pki::internal

#endif  // FLEETID_PKI_INTERNAL_ISSUER_H_
