// policy::Versions: the policy's versions in the database, the one active version, and the
// proposals that change it. A version is immutable, numbered in order of first proposal, named by
// the SHA-256 of its canonical JSON and kept forever. A change is a proposal (an approval request
// for the action policy.propose) carrying its semantic diff against the version it was made
// against; once it has the approvals the active policy asks for, it is activated as a
// compare-and-set on the active version, so a proposal made against a superseded version is
// refused. A rollback is a proposal of an earlier version, approved the same way.
//
// Every change is authorized here, from the active policy, and audited in the transaction that
// makes it, with the actor and the hash of the version that allowed it; a refusal is audited too
// (docs/policy.md § Versions).
#ifndef FLEETID_POLICY_VERSIONS_H_
#define FLEETID_POLICY_VERSIONS_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/clock.h"
#include "common/error.h"
#include "common/mutex.h"
#include "policy/policy.h"
#include "store/store.h"

namespace fleetid::policy {

// Operator is who asks: an authenticated operator's name, the credential that authenticated them
// (an operator certificate's serial), and the roles they hold with their scopes.
struct Operator {
  std::string name;
  std::string credential;
  std::vector<Grant> grants;
};

// AuditActor is how an operator is named in audit entries: "operator:NAME" (with
// "#CREDENTIAL" when a credential authenticated them).
std::string AuditActor(const Operator& op);

// ApprovalsNotOffered says why |action| may not be taken at once under |policy|: the version
// asks approvals for it (its approval rules), and only policy changes can wait for approvals
// today (proposals); other actions' approval requests are still to be built. Failing closed
// keeps a rule from being ignored. Empty when the action needs none, and for policy.* actions.
std::string ApprovalsNotOffered(const Policy& policy, std::string_view action);

struct VersionInfo {
  std::int64_t number = 0;
  std::string hash;
  TimePoint created_at;
  std::string created_by;  // audit actor
};

// Active is the version decisions are taken under.
struct Active {
  std::shared_ptr<const Policy> policy;
  std::int64_t number = 0;
  TimePoint activated_at;
  std::string activated_by;  // audit actor
};

enum class RequestState { kPending, kApplied, kRejected, kWithdrawn, kExpired, kSuperseded };
std::string_view RequestStateName(RequestState state);

struct ApprovalRecord {
  std::string approver_name;
  std::string approver;  // audit actor
  TimePoint at;
  std::string reason;
  std::string via;        // "signed" (a JWS by the approver's key) or "mtls" (the session only)
  std::string signature;  // the compact JWS when signed (operators/approval.h), else empty
};

// ApprovalEvidence is how an approval reached the server: through a mutual-TLS session only (the
// console's), or signed by the approver's operator key as well (the command line's). A signature
// is verified by the caller (the API) before it is recorded here.
struct ApprovalEvidence {
  std::string signature;  // empty: mutual TLS only
};

// Proposal is an approval request to make |target| the active version in place of |base|.
struct Proposal {
  std::int64_t id = 0;
  std::string requester_name;
  std::string requester;  // audit actor
  std::string reason;
  TimePoint created_at;
  TimePoint expires_at;
  RequestState state = RequestState::kPending;
  std::int64_t base_number = 0;
  std::string base_hash;
  std::int64_t target_number = 0;
  std::string target_hash;
  std::string digest;  // hex SHA-256 of what an approval covers (docs/policy.md)
  int approvals_required = 0;
  std::vector<std::string> from_roles;
  std::vector<std::string> diff;
  std::vector<ApprovalRecord> approvals;
  std::string decided_by;  // who rejected or withdrew it, or whose approval applied it
};

// ProposalView is |p| as the API and the command line show it (times in ISO 8601 UTC).
nlohmann::json ProposalView(const Proposal& p);

class Versions {
 public:
  [[nodiscard]] static Result<void> Migrate(store::Database& db);

  // Open loads the active version, first installing the built-in default (DefaultDocument()) as
  // version 1 when the database has none (audited as the system's).
  [[nodiscard]] static Result<std::unique_ptr<Versions>> Open(store::Database& db, Clock& clock);

  // The built-in first policy: an `admin` role that may do everything, an `auditor` role that may
  // read everything and change nothing, one credential class with today's defaults, and any
  // policy change needing one approval from another admin.
  static std::string_view DefaultDocument();

  // Current is the active version as this process last read it (Refresh keeps it current when
  // another process activates one). Cheap: decisions call it per request.
  Active Current() const;
  // CurrentHash is Current().policy->Hash(), for audit records.
  std::string CurrentHash() const;
  // Refresh re-reads the active version if it changed in the database.
  [[nodiscard]] Result<void> Refresh();

  [[nodiscard]] Result<std::vector<VersionInfo>> List();
  // Version returns a stored version by number.
  [[nodiscard]] Result<std::shared_ptr<const Policy>> Version(std::int64_t number);

  // Propose asks for |document| (a policy's JSON) to become active in place of the version
  // numbered |base| (which must be the active one). Needs policy.propose. The document is stored
  // as a version (or names the stored one with its hash); a document equal to the active one is
  // refused (kInvalidArgument). When the active policy asks no approval for policy.propose, the
  // proposal is applied at once.
  [[nodiscard]] Result<Proposal> Propose(const Operator& by, std::string_view document,
                                         std::int64_t base, std::string_view reason);
  // Approve records |by|'s approval of proposal |id|: needs policy.approve and one of the roles
  // the approval rule names; the requester, or an operator who approved already, is refused.
  // The approval that completes the count activates the target (compare-and-set on |base|). A
  // proposal past its lifetime, or made against a version no longer active, is marked expired
  // or superseded and refused with kConflict.
  // The approval, with its signature if any, is recorded in the audit entry that counts it.
  [[nodiscard]] Result<Proposal> Approve(const Operator& by, std::int64_t id,
                                         std::string_view reason,
                                         const ApprovalEvidence& evidence = {});
  // Reject (policy.reject) and Withdraw (the requester only) end a pending proposal.
  [[nodiscard]] Result<Proposal> Reject(const Operator& by, std::int64_t id,
                                        std::string_view reason);
  [[nodiscard]] Result<Proposal> Withdraw(const Operator& by, std::int64_t id,
                                          std::string_view reason);

  [[nodiscard]] Result<Proposal> GetProposal(std::int64_t id);
  // Proposals lists proposals, newest first; only pending ones when |pending_only|.
  [[nodiscard]] Result<std::vector<Proposal>> Proposals(bool pending_only, int limit = 100);

  // Authorize decides |action| on |resource| for |by| under the active version. A refusal is
  // audited (action "access.denied", the explanation as its reason) and returned as
  // kPermissionDenied naming the missing permission. An action the version asks approvals for
  // is refused the same way (ApprovalsNotOffered), since it cannot wait for them yet.
  [[nodiscard]] Result<Active> Authorize(const Operator& by, std::string_view action,
                                         const Resource& resource, std::string_view subject);

  // Refuse audits a refusal (action "access.denied", |why| as its reason, under the version
  // |policy_hash|) in a transaction of its own and returns it as kPermissionDenied.
  [[nodiscard]] Error Refuse(const Operator& by, std::string_view action, std::string_view subject,
                             const std::string& why, const std::string& policy_hash);

 private:
  Versions(store::Database& db, Clock& clock) : db_(db), clock_(clock) {}
  [[nodiscard]] Result<Active> LoadActive(store::Transaction& tx);
  [[nodiscard]] static Result<Proposal> LoadProposal(store::Transaction& tx, std::int64_t id);
  [[nodiscard]] Result<Proposal> Settle(const Operator& by, std::int64_t id, std::string_view how,
                                        const ApprovalEvidence& evidence, std::string_view reason);

  // ActivateIn makes |p|'s target the active version in |tx|, with its policy.activate entry,
  // as a compare-and-set on |p|'s base (kConflict when another version became active).
  [[nodiscard]] Result<void> ActivateIn(store::Transaction& tx, const Proposal& p,
                                        const std::string& actor, const std::string& decided_under,
                                        TimePoint now);
  // Close marks a pending proposal expired or superseded in its own transaction, audited.
  [[nodiscard]] Result<void> Close(const Proposal& proposal, RequestState state,
                                   const std::string& why);
  void Publish(Active active);

  store::Database& db_;
  Clock& clock_;
  mutable Mutex mu_;
  Active active_ FLEETID_GUARDED_BY(mu_);
};

}  // namespace fleetid::policy

#endif  // FLEETID_POLICY_VERSIONS_H_
