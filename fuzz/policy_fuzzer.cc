// Fuzzes the policy document reader (policy::Policy::Parse): proposals arrive over the API from
// operators, and a stolen or careless operator key must not be able to crash or wedge the
// authority with one.
//
// Invariants checked: a refusal is kInvalidArgument with a message; an accepted document has a
// 64-hex-digit hash, its canonical form reads back to the same canonical form and hash, the
// diff against itself is empty, and decisions on a few fixed questions are default-deny (a
// refusal with no rules names no rule; an allowance names at least one permit rule) and explained.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "fuzz_check.h"
#include "policy/policy.h"

namespace {

using fleetid::fuzz::Check;
using fleetid::fuzz::CheckRefusal;
namespace policy = fleetid::policy;

void CheckDecisions(const policy::Policy& p) {
  std::vector<policy::Grant> grants;
  for (const policy::Role& role : p.Roles()) {
    grants.push_back({.role = role.name, .scope = {}});
    if (grants.size() == 8) break;
  }
  const policy::Resource device{
      .tenant = "acme", .region = "eu", .model = "gw-1", .labels = {{"line", "7"}}};
  for (const char* action : {"device.suspend", "policy.propose", "audit.read", "nonsense"}) {
    for (const policy::Resource& resource : {device, policy::Resource{}}) {
      const policy::Decision d = p.Decide(grants, action, resource);
      Check(!d.allowed || !d.rules.empty());
      for (const policy::RuleRef& ref : d.rules) {
        Check(ref.effect == (d.allowed ? policy::Effect::kPermit : policy::Effect::kForbid));
        const policy::Role* role = p.FindRole(ref.role);
        Check(role != nullptr && ref.index < role->rules.size());
      }
      Check(!p.Explain(d, action).empty());
      Check(p.Decide({}, action, resource).rules.empty());
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto parsed = policy::Policy::Parse(fleetid::fuzz::Text(data, size));
  CheckRefusal(parsed);
  if (!parsed) return 0;
  const policy::Policy& p = **parsed;
  Check(p.Hash().size() == 64);
  auto again = policy::Policy::Parse(p.Canonical());
  Check(again.has_value());
  if (!again) return 0;
  Check((*again)->Canonical() == p.Canonical() && (*again)->Hash() == p.Hash());
  Check(policy::Diff(p, **again).empty());
  Check(!p.Credentials().empty());
  CheckDecisions(p);
  return 0;
}
