// The compiled form of a policy and the decisions taken from it.
#include <algorithm>
#include <array>

#include "policy/policy.h"

namespace fleetid::policy {
namespace {

// Sorted, so that ActionId can search it.
constexpr std::array<std::string_view, 37> kActions = {
    "alert.acknowledge",   "alert.read",        "approval.approve",
    "approval.read",       "approval.withdraw", "audit.read",
    "batch.control",       "batch.read",        "batch.run",
    "ca.hold",             "ca.issue",          "ca.read",
    "ca.release",          "ca.revoke",         "device.cancel_decommission",
    "device.decommission", "device.provision",  "device.quarantine",
    "device.read",         "device.resume",     "device.rotate",
    "device.suspend",      "manifest.import",   "manifest.read",
    "metrics.read",        "operator.grant",    "operator.invite",
    "operator.read",       "operator.revoke",   "policy.approve",
    "policy.propose",      "policy.read",       "policy.reject",
    "reference.manage",    "reference.read",    "webhook.manage",
    "webhook.read"};

static_assert(std::is_sorted(kActions.begin(), kActions.end()));
static_assert(std::none_of(kActions.begin(), kActions.end(),
                           [](std::string_view a) { return a.empty(); }));

bool Contains(const std::vector<std::string>& sorted, std::string_view value) {
  return std::binary_search(sorted.begin(), sorted.end(), value, std::less<>());
}

bool Subset(const std::vector<std::string>& inner, const std::vector<std::string>& outer) {
  return std::includes(outer.begin(), outer.end(), inner.begin(), inner.end());
}

// InScope says whether |resource| is inside |scope| (policy.h, Scope).
bool InScope(const Scope& scope, const Resource& resource) {
  auto dimension = [](const std::optional<std::vector<std::string>>& allowed,
                      const std::string& value) {
    return !allowed || (!value.empty() && Contains(*allowed, value));
  };
  if (!dimension(scope.tenants, resource.tenant) || !dimension(scope.regions, resource.region) ||
      !dimension(scope.models, resource.model)) {
    return false;
  }
  return std::ranges::all_of(scope.labels, [&](const auto& label) {
    auto it = resource.labels.find(label.first);
    return it != resource.labels.end() && it->second == label.second;
  });
}

// Matches says whether the action pattern |pattern| ("ca.revoke", "device.*", "*") names
// |action|.
bool Matches(std::string_view pattern, std::string_view action) {
  if (pattern == "*" || pattern == action) return true;
  return pattern.ends_with(".*") && action.starts_with(pattern.substr(0, pattern.size() - 1));
}

// Intersection is the scope of resources inside both |a| and |b|; nullopt when none can be.
std::optional<Scope> Intersection(const Scope& a, const Scope& b) {
  if (!a.Overlaps(b)) return std::nullopt;
  Scope out;
  auto dimension = [](const std::optional<std::vector<std::string>>& x,
                      const std::optional<std::vector<std::string>>& y) {
    if (!x) return y;
    if (!y) return x;
    std::vector<std::string> both;
    std::ranges::set_intersection(*x, *y, std::back_inserter(both));
    return std::optional<std::vector<std::string>>(std::move(both));
  };
  out.tenants = dimension(a.tenants, b.tenants);
  out.regions = dimension(a.regions, b.regions);
  out.models = dimension(a.models, b.models);
  out.labels = a.labels;
  out.labels.insert(b.labels.begin(), b.labels.end());
  return out;
}

}  // namespace

std::span<const std::string_view> Actions() { return kActions; }

std::optional<std::size_t> ActionId(std::string_view action) {
  auto it = std::lower_bound(kActions.begin(), kActions.end(), action);
  if (it == kActions.end() || *it != action) return std::nullopt;
  return static_cast<std::size_t>(it - kActions.begin());
}

void Scope::Normalize() {
  for (std::optional<std::vector<std::string>>* list : {&tenants, &regions, &models}) {
    if (!*list) continue;
    std::sort((*list)->begin(), (*list)->end());
    (*list)->erase(std::unique((*list)->begin(), (*list)->end()), (*list)->end());
  }
}

bool Scope::Within(const Scope& outer) const {
  auto dimension = [](const std::optional<std::vector<std::string>>& inner,
                      const std::optional<std::vector<std::string>>& bound) {
    return !bound || (inner && Subset(*inner, *bound));
  };
  if (!dimension(tenants, outer.tenants) || !dimension(regions, outer.regions) ||
      !dimension(models, outer.models)) {
    return false;
  }
  return std::all_of(outer.labels.begin(), outer.labels.end(), [&](const auto& label) {
    auto it = labels.find(label.first);
    return it != labels.end() && it->second == label.second;
  });
}

bool Scope::Overlaps(const Scope& other) const {
  auto dimension = [](const std::optional<std::vector<std::string>>& a,
                      const std::optional<std::vector<std::string>>& b) {
    if (!a || !b) return !(a && a->empty()) && !(b && b->empty());
    return std::ranges::any_of(*a, [&](const std::string& v) { return Contains(*b, v); });
  };
  if (!dimension(tenants, other.tenants) || !dimension(regions, other.regions) ||
      !dimension(models, other.models)) {
    return false;
  }
  return std::ranges::none_of(labels, [&](const auto& label) {
    auto it = other.labels.find(label.first);
    return it != other.labels.end() && it->second != label.second;
  });
}

std::string Scope::Describe() const {
  std::string out;
  auto add = [&](std::string_view what, const std::optional<std::vector<std::string>>& values) {
    if (!values) return;
    out += out.empty() ? "in " : ", ";
    out += what;
    for (std::size_t i = 0; i < values->size(); ++i) out += (i == 0 ? " " : "|") + (*values)[i];
  };
  add("tenant", tenants);
  add("region", regions);
  add("model", models);
  for (const auto& [key, value] : labels) {
    out += out.empty() ? "in " : ", ";
    out += fmt::format("label {}={}", key, value);
  }
  return out.empty() ? "everywhere" : out;
}

const Role* Policy::FindRole(std::string_view name) const {
  auto it = role_index_.find(name);
  return it == role_index_.end() ? nullptr : &roles_[it->second];
}

void Policy::Compile() {
  role_index_.clear();
  rules_by_role_action_.assign(roles_.size(), std::vector<std::vector<CompiledRule>>(kActions.size()));
  for (std::size_t r = 0; r < roles_.size(); ++r) {
    role_index_.emplace(roles_[r].name, static_cast<std::uint32_t>(r));
    const std::vector<Rule>& rules = roles_[r].rules;
    for (std::size_t i = 0; i < rules.size(); ++i) {
      for (std::size_t a = 0; a < kActions.size(); ++a) {
        const bool named = std::any_of(rules[i].actions.begin(), rules[i].actions.end(),
                                       [&](const std::string& p) { return Matches(p, kActions[a]); });
        if (!named) continue;
        rules_by_role_action_[r][a].push_back(CompiledRule{.role = static_cast<std::uint32_t>(r),
                                                           .index = static_cast<std::uint32_t>(i),
                                                           .effect = rules[i].effect,
                                                           .scope = &rules[i].scope});
      }
    }
  }
  // Forbid rules first: once one matches, no permit rule needs looking at.
  for (auto& by_action : rules_by_role_action_) {
    for (auto& list : by_action) {
      std::stable_partition(list.begin(), list.end(),
                            [](const CompiledRule& c) { return c.effect == Effect::kForbid; });
    }
  }
}

Decision Policy::Decide(std::span<const Grant> grants, std::string_view action,
                        const Resource& resource) const {
  Decision decision;
  const std::optional<std::size_t> id = ActionId(action);
  if (!id) return decision;
  bool forbidden = false;
  for (const Grant& grant : grants) {
    auto role = role_index_.find(grant.role);
    if (role == role_index_.end() || !InScope(grant.scope, resource)) continue;
    for (const CompiledRule& rule : rules_by_role_action_[role->second][*id]) {
      if (forbidden && rule.effect == Effect::kPermit) break;
      if (!InScope(*rule.scope, resource)) continue;
      if (rule.effect == Effect::kForbid && !forbidden) {
        forbidden = true;
        decision.rules.clear();
      }
      decision.rules.push_back(
          RuleRef{.role = roles_[rule.role].name, .index = rule.index, .effect = rule.effect});
    }
  }
  decision.allowed = !forbidden && !decision.rules.empty();
  return decision;
}

bool Policy::PermitsAnywhere(std::span<const Grant> grants, std::string_view action) const {
  const std::optional<std::size_t> id = ActionId(action);
  if (!id) return false;
  return std::ranges::any_of(grants, [&](const Grant& grant) {
    auto role = role_index_.find(grant.role);
    return role != role_index_.end() &&
           std::ranges::any_of(rules_by_role_action_[role->second][*id],
                               [](const CompiledRule& c) { return c.effect == Effect::kPermit; });
  });
}

Decision Policy::DecideWithin(std::span<const Grant> grants, std::string_view action,
                              const Scope& scope) const {
  Decision decision;
  const std::optional<std::size_t> id = ActionId(action);
  if (!id) return decision;
  bool forbidden = false;
  for (const Grant& grant : grants) {
    auto role = role_index_.find(grant.role);
    if (role == role_index_.end() || !grant.scope.Overlaps(scope)) continue;
    const bool grant_covers = scope.Within(grant.scope);
    for (const CompiledRule& rule : rules_by_role_action_[role->second][*id]) {
      const bool counts = rule.effect == Effect::kForbid
                              ? rule.scope->Overlaps(scope)
                              : grant_covers && !forbidden && scope.Within(*rule.scope);
      if (!counts) continue;
      if (rule.effect == Effect::kForbid && !forbidden) {
        forbidden = true;
        decision.rules.clear();
      }
      decision.rules.push_back(
          RuleRef{.role = roles_[rule.role].name, .index = rule.index, .effect = rule.effect});
    }
  }
  decision.allowed = !forbidden && !decision.rules.empty();
  return decision;
}

Result<void> Policy::MayGrant(std::span<const Grant> granter, const Grant& wanted) const {
  const Role* role = FindRole(wanted.role);
  if (role == nullptr) {
    return MakeError(ErrorCode::kInvalidArgument, "the policy has no role '{}'", wanted.role);
  }
  const std::string where = wanted.scope.Describe();
  const Decision grant = DecideWithin(granter, "operator.grant", wanted.scope);
  if (!grant.allowed) {
    return MakeError(ErrorCode::kPermissionDenied, "{} ({})", Explain(grant, "operator.grant"),
                     where);
  }
  // Only what the granter holds: every action the role permits, wherever the grant lets it
  // apply, must be allowed to the granter there.
  for (const Rule& rule : role->rules) {
    if (rule.effect != Effect::kPermit) continue;
    const std::optional<Scope> reach = Intersection(wanted.scope, rule.scope);
    if (!reach) continue;  // the rule applies nowhere inside the grant
    for (std::string_view action : Actions()) {
      if (std::ranges::none_of(rule.actions,
                               [&](const std::string& p) { return Matches(p, action); })) {
        continue;
      }
      const Decision held = DecideWithin(granter, action, *reach);
      if (!held.allowed) {
        return MakeError(ErrorCode::kPermissionDenied,
                         "refused: operator.grant of role {} {}: the granter may not {} {} "
                         "themselves (an operator grants only what they hold, never wider than "
                         "their scope)",
                         wanted.role, where, action, reach->Describe());
      }
    }
  }
  return {};
}

std::string Policy::Explain(const Decision& decision, std::string_view action) const {
  if (decision.rules.empty()) {
    return fmt::format("refused: no rule of the operator's roles permits {} here", action);
  }
  std::string rules;
  for (const RuleRef& ref : decision.rules) {
    const Role* role = FindRole(ref.role);
    if (role == nullptr || ref.index >= role->rules.size()) continue;
    // Named as in the document: /roles/<role>/permit/<n> or /roles/<role>/forbid/<n>.
    const auto permits = static_cast<std::size_t>(
        std::count_if(role->rules.begin(), role->rules.end(),
                      [](const Rule& r) { return r.effect == Effect::kPermit; }));
    const bool permit = ref.effect == Effect::kPermit;
    const std::string& why = role->rules[ref.index].why;
    rules += fmt::format("{}/roles/{}/{}/{}{}", rules.empty() ? "" : ", ", ref.role,
                         permit ? "permit" : "forbid", permit ? ref.index : ref.index - permits,
                         why.empty() ? "" : " (" + why + ")");
  }
  return fmt::format("{}: {} {} by {}", decision.allowed ? "allowed" : "refused", action,
                     decision.allowed ? "permitted" : "forbidden", rules);
}

Result<const CredentialClass*> Policy::CredentialsFor(const Resource& device) const {
  for (const CredentialClass& c : credentials_) {
    if (InScope(c.match, device)) return &c;
  }
  return MakeError(ErrorCode::kNotFound, "no credential class of the policy applies to the device");
}

const ApprovalRule* Policy::ApprovalsFor(std::string_view action, std::int64_t devices) const {
  const ApprovalRule* strictest = nullptr;
  for (const ApprovalRule& rule : approvals_) {
    const bool named = std::any_of(rule.actions.begin(), rule.actions.end(),
                                   [&](const std::string& p) { return Matches(p, action); });
    if (!named || devices < rule.min_devices) continue;
    if (strictest == nullptr || rule.approvals > strictest->approvals) strictest = &rule;
  }
  return strictest;
}

}  // namespace fleetid::policy
