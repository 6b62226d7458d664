// policy_bench: access decisions per second on a policy of 1,000 rules (100 roles of 10), from
// the compiled form, beside the same decisions taken by interpreting the document's rules one by
// one in the same run (what compiling buys). One thread: the figure is per core. Prints one JSON
// object per figure.
#include <algorithm>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include "bench/bench_util.h"
#include "policy/policy.h"

namespace fleetid {
namespace {

using bench::Print;
using bench::Seconds;
using bench::Steady;
using policy::Effect;

constexpr int kRoles = 100;
constexpr int kRulesPerRole = 10;

std::string Document() {
  nlohmann::json doc = {{"schema", policy::kSchema},
                        {"roles", nlohmann::json::object()},
                        {"credentials", nlohmann::json::array({{{"name", "default"},
                                                               {"suites", nlohmann::json::array({"ecdsa-p256-sha256"})}}})}};
  const std::vector<std::string> families = {"device.suspend", "device.resume", "device.read",
                                             "device.quarantine", "ca.revoke"};
  for (int r = 0; r < kRoles; ++r) {
    nlohmann::json role;
    for (int i = 0; i < kRulesPerRole; ++i) {
      nlohmann::json scope = {
          {"regions", nlohmann::json::array({fmt::format("region-{}", (r + i) % 20)})}};
      if (i % 3 == 0) scope["tenants"] = nlohmann::json::array({fmt::format("tenant-{}", r % 7)});
      if (i % 4 == 0) scope["labels"] = {{"line", std::to_string(i)}};
      nlohmann::json rule = {{"actions", {families[static_cast<std::size_t>(i) % families.size()],
                                          families[static_cast<std::size_t>(i + 1) % families.size()]}},
                             {"scope", scope}};
      role[i == kRulesPerRole - 1 ? "forbid" : "permit"].push_back(rule);
    }
    doc["roles"][fmt::format("team-{}", r)] = role;
  }
  return doc.dump();
}

bool InScope(const policy::Scope& scope, const policy::Resource& resource) {
  auto dimension = [](const std::optional<std::vector<std::string>>& allowed,
                      const std::string& value) {
    return !allowed || (!value.empty() && std::find(allowed->begin(), allowed->end(), value) !=
                                              allowed->end());
  };
  if (!dimension(scope.tenants, resource.tenant) || !dimension(scope.regions, resource.region) ||
      !dimension(scope.models, resource.model)) {
    return false;
  }
  return std::all_of(scope.labels.begin(), scope.labels.end(), [&](const auto& label) {
    auto it = resource.labels.find(label.first);
    return it != resource.labels.end() && it->second == label.second;
  });
}

// NaiveDecide is the baseline: the same semantics (policy.h, Policy::Decide) taken straight from
// the document's rules, with no index.
bool NaiveDecide(const policy::Policy& p, const std::vector<policy::Grant>& grants,
                 const std::string& action, const policy::Resource& resource) {
  bool permitted = false;
  for (const policy::Grant& grant : grants) {
    if (!InScope(grant.scope, resource)) continue;
    for (const policy::Role& role : p.Roles()) {
      if (role.name != grant.role) continue;
      for (const policy::Rule& rule : role.rules) {
        const bool named = std::any_of(rule.actions.begin(), rule.actions.end(), [&](const std::string& a) {
          return a == "*" || a == action ||
                 (a.ends_with(".*") && action.starts_with(a.substr(0, a.size() - 1)));
        });
        if (!named || !InScope(rule.scope, resource)) continue;
        if (rule.effect == Effect::kForbid) return false;
        permitted = true;
      }
    }
  }
  return permitted;
}

struct Question {
  std::vector<policy::Grant> grants;
  std::string action;
  policy::Resource resource;
};

int Run() {
  auto parsed = policy::Policy::Parse(Document());
  if (!parsed) {
    static_cast<void>(std::fprintf(stderr, "%s\n", parsed.error().ToString().c_str()));
    return 1;
  }
  const policy::Policy& p = **parsed;
  std::mt19937 rng(7);
  const std::vector<std::string> actions = {"device.suspend", "device.resume", "device.read",
                                            "device.quarantine", "ca.revoke", "device.decommission"};
  std::vector<Question> questions(4096);
  for (Question& q : questions) {
    for (int g = 0; g < 3; ++g) {
      q.grants.push_back({.role = fmt::format("team-{}", rng() % kRoles), .scope = {}});
    }
    q.action = actions[rng() % actions.size()];
    q.resource = {.tenant = fmt::format("tenant-{}", rng() % 7),
                  .region = fmt::format("region-{}", rng() % 20),
                  .model = "gw-1",
                  .labels = {{"line", std::to_string(rng() % 10)}}};
  }
  std::size_t allowed = 0;
  for (const Question& q : questions) {
    const bool compiled = p.Decide(q.grants, q.action, q.resource).allowed;
    if (compiled != NaiveDecide(p, q.grants, q.action, q.resource)) {
      static_cast<void>(std::fprintf(stderr, "the compiled and naive decisions differ\n"));
      return 1;
    }
    allowed += compiled ? 1 : 0;
  }
  const std::string extra =
      fmt::format(",\"rules\":{},\"allowed_share\":{:.2f}", kRoles * kRulesPerRole,
                  static_cast<double>(allowed) / static_cast<double>(questions.size()));
  // Alternate the two, three rounds each; report.py takes the medians.
  for (int round = 0; round < 3; ++round) {
    constexpr int kCompiled = 2'000'000;
    std::size_t yes = 0;
    auto start = Steady::now();
    for (int i = 0; i < kCompiled; ++i) {
      const Question& q = questions[static_cast<std::size_t>(i) % questions.size()];
      yes += p.Decide(q.grants, q.action, q.resource).allowed ? 1 : 0;
    }
    Print("policy_decisions", kCompiled, Seconds(start), extra + fmt::format(",\"yes\":{}", yes));
    constexpr int kNaive = 200'000;
    yes = 0;
    start = Steady::now();
    for (int i = 0; i < kNaive; ++i) {
      const Question& q = questions[static_cast<std::size_t>(i) % questions.size()];
      yes += NaiveDecide(p, q.grants, q.action, q.resource) ? 1 : 0;
    }
    Print("policy_decisions_interpreted", kNaive, Seconds(start),
          extra + fmt::format(",\"yes\":{}", yes));
  }
  return 0;
}

}  // namespace
}  // namespace fleetid

int main() { return fleetid::Run(); }
