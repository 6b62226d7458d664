// operators::Operators: the people (and service accounts) who run the authority. Each has a name,
// grants (a role of the active policy and a scope) and short-lived certificates from the
// operators' CA for a key in their own token; the API authenticates them by that certificate,
// never by a typed name. The first administrator exchanges a one-time bootstrap code, written
// by the first start to a 0600 file, for their certificate; everyone else is invited with a
// one-time code that carries their grants. No code is ever stored in clear: the database keeps
// its SHA-256 (docs/operators.md).
#ifndef FLEETID_OPERATORS_OPERATORS_H_
#define FLEETID_OPERATORS_OPERATORS_H_

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/clock.h"
#include "common/error.h"
#include "common/mutex.h"
#include "common/rng.h"
#include "operators/idempotency.h"
#include "pki/pki.h"
#include "policy/policy.h"
#include "policy/versions.h"
#include "store/store.h"

namespace fleetid::operators {

struct GrantRecord {
  policy::Grant grant;
  std::string granted_by;  // audit actor
  TimePoint granted_at;
};

struct OperatorInfo {
  std::string name;
  bool active = true;  // false once revoked
  TimePoint created_at;
  std::string created_by;
  std::vector<GrantRecord> grants;
};

// Issued is a new operator certificate with the chain a client presents after it.
struct Issued {
  std::string name;
  pki::CertificateRecord certificate;
  std::vector<std::vector<std::uint8_t>> chain;  // the operators' CA, then the root
};

// Invitation is a one-time code (shown once, to the inviter) for |name| to enroll with |grants|.
struct Invitation {
  std::string code;
  std::string name;
  TimePoint expires_at;
  std::vector<policy::Grant> grants;
};

struct OperatorsOptions {
  // An operator certificate's life (days, not years); renewed with Renew.
  std::chrono::seconds certificate_lifetime = std::chrono::hours(24 * 7);
  // An invitation lives at most this long.
  std::chrono::seconds max_invitation_lifetime = std::chrono::hours(24 * 7);
};

// ClientChain is the TLS client chain the handshake verified: leaf first, DER.
using ClientChain = std::vector<std::vector<std::uint8_t>>;

// Operators is thread-safe.
class Operators {
 public:
  [[nodiscard]] static Result<void> Migrate(store::Database& db);

  Operators(store::Database& db, pki::Authority& authority, policy::Versions& policy, Clock& clock,
            Rng& rng, OperatorsOptions options = {});

  // PrepareBootstrap makes sure, while no operator exists, that |path| holds a one-time bootstrap
  // code the database knows (by its SHA-256): a file holding a valid unused code is kept, anything
  // else is replaced by a new code (0600). Once an operator exists the file is removed and it
  // returns false.
  [[nodiscard]] Result<bool> PrepareBootstrap(const std::filesystem::path& path);

  // Bootstrap exchanges the bootstrap code for the first administrator's certificate: the
  // operator |name| is created with the role `admin` unscoped, for the key of |csr_der| (DER
  // PKCS#10, its signature verified). Refused once any operator exists (kConflict) and for a
  // wrong or used code (kPermissionDenied, which says no more).
  [[nodiscard]] Result<Issued> Bootstrap(std::string_view code, std::string_view name,
                                         std::span<const std::uint8_t> csr_der);

  // Invite makes a one-time code for a new operator |name| with |grants|, valid for |lifetime|
  // (at most max_invitation_lifetime). |by| needs operator.invite and may offer only grants it
  // may make (policy::Policy::MayGrant), checked again when the code is used.
  [[nodiscard]] Result<Invitation> Invite(const policy::Operator& by, std::string_view name,
                                          const std::vector<policy::Grant>& grants,
                                          std::chrono::seconds lifetime);

  // Enroll exchanges an invitation code for the invited operator's first certificate.
  [[nodiscard]] Result<Issued> Enroll(std::string_view code, std::span<const std::uint8_t> csr_der);

  // Renew issues |by| a new certificate for the key of |csr_der|; the one |by| authenticated
  // with is revoked as superseded in the same transaction.
  [[nodiscard]] Result<Issued> Renew(const policy::Operator& by,
                                     std::span<const std::uint8_t> csr_der);

  // Authenticate names the operator a verified TLS client chain belongs to: the leaf must be an
  // operator certificate (pki::Authority::IsOperatorCertificate) that the CA knows, whose status
  // is good, of an operator who is not revoked. A device's certificate, a revoked or held
  // operator certificate, or a revoked operator is kUnauthenticated.
  [[nodiscard]] Result<policy::Operator> Authenticate(const ClientChain& chain);

  // Grant adds |grant| to operator |name| (policy::Policy::MayGrant for |by|).
  [[nodiscard]] Result<OperatorInfo> Grant(const policy::Operator& by, std::string_view name,
                                           const policy::Grant& grant);

  // Revoke ends operator |name|: it is marked revoked and every certificate of theirs still good
  // or on hold is revoked (cessationOfOperation), in one transaction. Needs operator.revoke.
  [[nodiscard]] Result<OperatorInfo> Revoke(const policy::Operator& by, std::string_view name,
                                            std::string_view reason);

  // Get and List need operator.read.
  [[nodiscard]] Result<OperatorInfo> Get(const policy::Operator& by, std::string_view name);
  [[nodiscard]] Result<std::vector<OperatorInfo>> List(const policy::Operator& by);

  // idempotency holds the API's idempotency keys, which belong to operators (operators/
  // idempotency.h; its table is migrated with the operators').
  Idempotency& idempotency() { return idempotency_; }

 private:
  struct Code;
  [[nodiscard]] Result<Issued> IssueIn(store::Transaction& tx, std::string_view name,
                                       std::span<const std::uint8_t> csr_der,
                                       std::string_view actor);
  [[nodiscard]] Result<Code> UseCode(store::Transaction& tx, std::string_view code,
                                     std::string_view kind);
  [[nodiscard]] static Result<OperatorInfo> LoadIn(store::Transaction& tx, std::string_view name);
  [[nodiscard]] Result<std::string> NewCode();
  // SerialOf is the serial (lower-case hex) of the client certificate |der|. Every call of a
  // keep-alive connection presents the same certificate, and decoding one costs OpenSSL 3 far
  // more than the rest of authentication (its public key goes through the decoder framework),
  // so serials are remembered by the certificate's bytes: at most kSerialCacheSize of them,
  // forgotten all at once when full. A serial is a function of the bytes alone; nothing about
  // the certificate's status is kept.
  [[nodiscard]] Result<std::string> SerialOf(const std::vector<std::uint8_t>& der);
  // Allowed checks |action| for |by| throughout every scope of |grants| (unscoped: everywhere),
  // auditing a refusal.
  [[nodiscard]] Result<std::string> Allowed(const policy::Operator& by, std::string_view action,
                                            std::span<const policy::Grant> grants,
                                            std::string_view subject);

  store::Database& db_;
  pki::Authority& authority_;
  policy::Versions& policy_;
  Clock& clock_;
  Rng& rng_;
  OperatorsOptions options_;
  Idempotency idempotency_;
  Mutex bootstrap_mu_;
  std::filesystem::path bootstrap_path_ FLEETID_GUARDED_BY(bootstrap_mu_);
  static constexpr std::size_t kSerialCacheSize = 4096;
  Mutex serial_mu_;
  std::unordered_map<std::string, std::string> serial_by_der_ FLEETID_GUARDED_BY(serial_mu_);
};

}  // namespace fleetid::operators

#endif  // FLEETID_OPERATORS_OPERATORS_H_
