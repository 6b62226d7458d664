// fleetid's policy: one versioned JSON document (docs/policy.md) holding who may do what (roles of
// permit and forbid rules over actions and scopes), how devices of each class get credentials,
// and which actions need approvals. Parse reads and checks a document strictly; a Policy is the
// compiled, immutable form every decision is taken from. Pure: no database, clock or I/O.
#ifndef FLEETID_POLICY_POLICY_H_
#define FLEETID_POLICY_POLICY_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "common/error.h"

namespace fleetid::policy {

// The schema name every document carries; a later incompatible schema gets a new name.
inline constexpr std::string_view kSchema = "fleetid.policy/v1";
// Bounds on what a document may hold, so a proposal cannot make evaluation or storage unbounded.
inline constexpr std::size_t kMaxDocumentBytes = 1 << 20;
inline constexpr std::size_t kMaxRoles = 1000;
inline constexpr std::size_t kMaxRulesPerRole = 1000;
inline constexpr std::size_t kMaxNameLength = 64;

// Actions lists every action a rule can name: every operation the API offers. A rule may also
// name a family ("device.*") or everything ("*").
std::span<const std::string_view> Actions();
// ActionId is an action's index in Actions(); nullopt for an unknown name.
std::optional<std::size_t> ActionId(std::string_view action);

// Scope limits where a rule or a grant applies. Each dimension that is present constrains (the
// resource's value must be one of those listed; every listed label must be on the resource with
// that value); an absent dimension does not. A resource with no value for a constrained
// dimension (an action on no device, a device with no tenant yet) is outside the scope.
// The lists are sorted and without repeats (Parse leaves them so; Normalize does it for a scope
// made in code).
struct Scope {
  std::optional<std::vector<std::string>> tenants;
  std::optional<std::vector<std::string>> regions;
  std::optional<std::vector<std::string>> models;
  std::map<std::string, std::string> labels;

  bool Unbounded() const { return !tenants && !regions && !models && labels.empty(); }
  void Normalize();
  // Within says whether every resource inside this scope is inside |outer| (delegation).
  bool Within(const Scope& outer) const;
  // Overlaps says whether some resource could be inside both scopes.
  bool Overlaps(const Scope& other) const;
  // Describe is "everywhere" or "tenant acme, region eu, label line=7", for diffs and refusals.
  std::string Describe() const;
  friend bool operator==(const Scope&, const Scope&) = default;
};

// ParseStrictJson parses |text| as JSON, refusing comments and a key repeated in one object
// (which nlohmann would otherwise resolve silently, last one wins); errors name |what|.
[[nodiscard]] Result<nlohmann::json> ParseStrictJson(std::string_view text, std::string_view what);

// ParseScope reads a scope written as a policy document writes one (`{"regions":["eu"]}`;
// `{}` is everywhere), strictly, with the document's bounds; ScopeFromJson does the same for
// parsed JSON (a grant in an API request). ScopeToJson writes one canonically.
[[nodiscard]] Result<Scope> ParseScope(std::string_view json);
[[nodiscard]] Result<Scope> ScopeFromJson(const nlohmann::json& value);
std::string ScopeToJson(const Scope& scope);

// Resource is what an action is about, as far as scopes see it.
struct Resource {
  std::string tenant;  // empty: none
  std::string region;
  std::string model;
  std::map<std::string, std::string> labels;
};

enum class Effect { kPermit, kForbid };

// Rule is one permit or forbid rule of a role, as written.
struct Rule {
  Effect effect = Effect::kPermit;
  std::vector<std::string> actions;  // names, "family.*" or "*"
  Scope scope;
  std::string why;  // the author's reason, shown with every decision it takes part in
};

struct Role {
  std::string name;
  std::string description;
  std::vector<Rule> rules;  // permit rules first, then forbid rules, each in document order
};

// CredentialClass says how devices it matches get credentials. The first class (in document
// order) whose |match| takes a device applies to it.
struct CredentialClass {
  std::string name;
  Scope match;
  std::vector<std::string> suites;  // allowed, by crypto::Suite name
  std::string preferred_suite;      // one of |suites|
  std::int64_t ldevid_lifetime_seconds = 0;
  int renew_at_percent = 0;  // of the lifetime, when the agent renews
  bool attestation_required = true;
  bool idevid_reenroll_after_lapse = false;
  std::int64_t nonce_lifetime_seconds = 0;
  std::int64_t evidence_lifetime_seconds = 0;
  friend bool operator==(const CredentialClass&, const CredentialClass&) = default;
};

// ApprovalRule says that |actions| need |approvals| approvals from holders of |from_roles|
// (never the requester) within |lifetime_seconds| of the request; for batch actions only from
// |min_devices| devices on.
struct ApprovalRule {
  std::vector<std::string> actions;
  int approvals = 1;
  std::vector<std::string> from_roles;
  std::int64_t lifetime_seconds = 0;
  std::int64_t min_devices = 0;
  friend bool operator==(const ApprovalRule&, const ApprovalRule&) = default;
};

// Grant is a role held by an operator within a scope (stored by the operator plane, not in the
// document).
struct Grant {
  std::string role;
  Scope scope;
};

// RuleRef names one rule of a compiled policy: role |role|, the |index|th of its rules.
struct RuleRef {
  std::string_view role;
  std::size_t index = 0;
  Effect effect = Effect::kPermit;
  friend bool operator==(const RuleRef&, const RuleRef&) = default;
};

// Decision is the outcome of one access question, with the rules that decided it: the forbid
// rules that matched when refused by one, the permit rules that matched when allowed, none when
// refused by default (no rule permits).
struct Decision {
  bool allowed = false;
  std::vector<RuleRef> rules;
};

// Policy is one compiled, immutable policy version. Thread-safe (const).
class Policy {
 public:
  // Parse reads a document: strict JSON (no comments, no duplicate keys, no unknown keys, no
  // floating-point numbers), every name known or defined, every bound respected.
  // kInvalidArgument names the first problem by its JSON pointer ("/roles/eu-ops/permit/0/...").
  [[nodiscard]] static Result<std::shared_ptr<const Policy>> Parse(std::string_view json);

  // Canonical is the document in canonical JSON (sorted keys, no whitespace, defaults written
  // out); Hash is the lower-case hex SHA-256 of it, the version's name everywhere it is recorded.
  const std::string& Canonical() const { return canonical_; }
  const std::string& Hash() const { return hash_; }

  std::span<const Role> Roles() const { return roles_; }
  const Role* FindRole(std::string_view name) const;
  std::span<const CredentialClass> Credentials() const { return credentials_; }
  std::span<const ApprovalRule> Approvals() const { return approvals_; }

  // Decide answers whether an operator holding |grants| may do |action| on |resource|: default
  // deny; a grant takes part only if |resource| is inside its scope, and a rule only if the
  // action is one it names and |resource| is inside its scope; any matching forbid refuses,
  // otherwise any matching permit allows. An unknown action or role is refused.
  Decision Decide(std::span<const Grant> grants, std::string_view action,
                  const Resource& resource) const;

  // DecideWithin answers whether |grants| allow |action| everywhere inside |scope| (a question
  // about a whole scope, as delegation asks): a permit counts only from a grant and a rule whose
  // scopes contain all of |scope|, and a forbid of any grant that could apply anywhere inside it
  // refuses.
  Decision DecideWithin(std::span<const Grant> grants, std::string_view action,
                        const Scope& scope) const;

  // PermitsAnywhere says whether some role of |grants| has a permit rule naming |action|: whether
  // the holder may take it anywhere at all (an auditor scoped to a region may read some audit
  // entries). No scope is looked at.
  bool PermitsAnywhere(std::span<const Grant> grants, std::string_view action) const;

  // MayGrant says whether an operator holding |granter| may grant |wanted| (delegation): they
  // must be allowed operator.grant throughout wanted.scope, and hold what they grant: every
  // action the role permits, wherever the grant lets it apply, must be allowed to them there
  // (DecideWithin). A refusal is kPermissionDenied naming what is missing; an unknown role
  // kInvalidArgument.
  [[nodiscard]] Result<void> MayGrant(std::span<const Grant> granter, const Grant& wanted) const;

  // Explain is |decision| about |action| in one sentence for logs, audit records and 403 bodies,
  // naming the rules that decided it and their authors' reasons.
  std::string Explain(const Decision& decision, std::string_view action) const;

  // CredentialsFor is the class that applies to a device, kNotFound when none does.
  [[nodiscard]] Result<const CredentialClass*> CredentialsFor(const Resource& device) const;

  // ApprovalsFor is the strictest approval rule for |action| (on |devices| devices, for batch
  // actions), nullptr when the action needs none.
  const ApprovalRule* ApprovalsFor(std::string_view action, std::int64_t devices = 0) const;

 private:
  struct CompiledRule {
    std::uint32_t role = 0;
    std::uint32_t index = 0;
    Effect effect = Effect::kPermit;
    const Scope* scope = nullptr;
  };
  friend class Reader;
  Policy() = default;
  void Compile();

  std::string canonical_;
  std::string hash_;
  std::vector<Role> roles_;
  std::vector<CredentialClass> credentials_;
  std::vector<ApprovalRule> approvals_;
  std::map<std::string, std::uint32_t, std::less<>> role_index_;
  // rules_by_role_action_[role][action]: the rules of |role| naming |action|, forbids first.
  std::vector<std::vector<std::vector<CompiledRule>>> rules_by_role_action_;
};

// Diff describes, one line per change, what activating |after| in place of |before| changes:
// "role eu-ops gains device.decommission in region eu", "credential class default: LDevID
// lifetime 604800 s -> 86400 s". Empty when the two are the same policy.
std::vector<std::string> Diff(const Policy& before, const Policy& after);

}  // namespace fleetid::policy

#endif  // FLEETID_POLICY_POLICY_H_
