#include "policy/policy.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <functional>
#include <nlohmann/json.hpp>

#include "testing/matchers.h"

namespace fleetid::policy {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Json = nlohmann::json;

// A small policy in the shape docs/policy.md shows.
Json Example() {
  return Json::parse(R"({
    "schema": "fleetid.policy/v1",
    "roles": {
      "admin": {"permit": [{"actions": ["*"]}]},
      "auditor": {"permit": [{"actions": ["audit.read", "device.read", "policy.read"]}]},
      "eu-ops": {
        "permit": [{"actions": ["device.suspend", "device.resume", "device.read"],
                    "scope": {"regions": ["eu"]}, "why": "regional on-call"}],
        "forbid": [{"actions": ["device.*"], "scope": {"labels": {"critical": "yes"}},
                    "why": "critical devices are central's"}]
      }
    },
    "credentials": [
      {"name": "cameras", "match": {"models": ["cam-2"]}, "suites": ["ed25519",
       "ecdsa-p256-sha256"], "preferred_suite": "ed25519", "ldevid_lifetime_seconds": 7200},
      {"name": "default", "suites": ["ecdsa-p256-sha256"]}
    ],
    "approvals": [
      {"actions": ["policy.propose"], "from_roles": ["admin"]},
      {"actions": ["batch.run"], "approvals": 2, "from_roles": ["admin", "eu-ops"],
       "min_devices": 100}
    ]
  })");
}

std::shared_ptr<const Policy> Parsed(const Json& doc) {
  auto policy = Policy::Parse(doc.dump());
  EXPECT_TRUE(policy) << policy.error();
  return policy ? *policy : nullptr;
}

Resource Device(std::string region, std::map<std::string, std::string> labels = {}) {
  return Resource{.tenant = "acme", .region = std::move(region), .model = "gw-1",
                  .labels = std::move(labels)};
}

TEST(PolicyTest, DefaultDenyForbidOverridesAndDecisionsNameTheirRules) {
  auto policy = Parsed(Example());
  ASSERT_TRUE(policy);
  const std::vector<Grant> eu{{.role = "eu-ops", .scope = {}}};

  const Decision in_region = policy->Decide(eu, "device.suspend", Device("eu"));
  EXPECT_TRUE(in_region.allowed);
  EXPECT_THAT(in_region.rules,
              ElementsAre(RuleRef{.role = "eu-ops", .index = 0, .effect = Effect::kPermit}));
  EXPECT_EQ(policy->Explain(in_region, "device.suspend"),
            "allowed: device.suspend permitted by /roles/eu-ops/permit/0 (regional on-call)");

  const Decision outside = policy->Decide(eu, "device.suspend", Device("us"));
  EXPECT_FALSE(outside.allowed);
  EXPECT_TRUE(outside.rules.empty()) << "refused by default";
  EXPECT_THAT(policy->Explain(outside, "device.suspend"), HasSubstr("no rule"));

  const Decision critical = policy->Decide(eu, "device.suspend", Device("eu", {{"critical", "yes"}}));
  EXPECT_FALSE(critical.allowed);
  EXPECT_THAT(critical.rules,
              ElementsAre(RuleRef{.role = "eu-ops", .index = 1, .effect = Effect::kForbid}));
  EXPECT_EQ(policy->Explain(critical, "device.suspend"),
            "refused: device.suspend forbidden by /roles/eu-ops/forbid/0 (critical devices are "
            "central's)");

  // An action the role does not name, an unknown action, an unknown role: refused.
  EXPECT_FALSE(policy->Decide(eu, "device.decommission", Device("eu")).allowed);
  EXPECT_FALSE(policy->Decide(eu, "device.explode", Device("eu")).allowed);
  EXPECT_FALSE(policy->Decide(std::vector<Grant>{{.role = "ghost", .scope = {}}}, "device.read",
                              Device("eu"))
                   .allowed);
  EXPECT_FALSE(policy->Decide({}, "device.read", Device("eu")).allowed) << "no grants";

  // "*" names every action; a role names only what it lists.
  const std::vector<Grant> admin{{.role = "admin", .scope = {}}};
  EXPECT_TRUE(policy->Decide(admin, "policy.propose", Resource{}).allowed);
  const std::vector<Grant> auditor{{.role = "auditor", .scope = {}}};
  EXPECT_TRUE(policy->Decide(auditor, "audit.read", Resource{}).allowed);
  EXPECT_FALSE(policy->Decide(auditor, "ca.read", Resource{}).allowed);
}

TEST(PolicyTest, AGrantsScopeNarrowsItsRoleAndAnActionOnNoDeviceIsOutsideAnyScope) {
  auto policy = Parsed(Example());
  ASSERT_TRUE(policy);
  Scope acme_eu;
  acme_eu.tenants = std::vector<std::string>{"acme"};
  const std::vector<Grant> admin_of_acme{{.role = "admin", .scope = acme_eu}};
  EXPECT_TRUE(policy->Decide(admin_of_acme, "device.decommission", Device("us")).allowed);
  Resource other = Device("us");
  other.tenant = "globex";
  EXPECT_FALSE(policy->Decide(admin_of_acme, "device.decommission", other).allowed);
  EXPECT_FALSE(policy->Decide(admin_of_acme, "policy.propose", Resource{}).allowed)
      << "a tenant-scoped admin is no admin of the whole policy";
  // Two grants: the forbid of one role refuses what the other permits.
  const std::vector<Grant> both{{.role = "admin", .scope = {}}, {.role = "eu-ops", .scope = {}}};
  const Decision d = policy->Decide(both, "device.resume", Device("eu", {{"critical", "yes"}}));
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.rules.size(), 1u);
}

// PermitsAnywhere asks whether any permit rule of the grants' roles names the action (by name,
// family or "*"), whatever the scopes; a forbid rule never counts as one.
TEST(PolicyTest, PermitsAnywhereLooksAtActionsNotScopes) {
  auto policy = Parsed(Example());
  ASSERT_TRUE(policy);
  Scope eu;
  eu.regions = std::vector<std::string>{"eu"};
  const std::vector<Grant> auditor_eu{{.role = "auditor", .scope = eu}};
  const std::vector<Grant> admin_eu{{.role = "admin", .scope = eu}};
  const std::vector<Grant> ops{{.role = "eu-ops", .scope = {}}};
  const std::vector<Grant> unknown{{.role = "no-such-role", .scope = {}}};
  EXPECT_TRUE(policy->PermitsAnywhere(auditor_eu, "audit.read"));
  EXPECT_TRUE(policy->PermitsAnywhere(admin_eu, "audit.read")) << "through \"*\"";
  EXPECT_TRUE(policy->PermitsAnywhere(ops, "device.suspend"));
  EXPECT_FALSE(policy->PermitsAnywhere(ops, "device.decommission"))
      << "named only by a forbid rule (device.*)";
  EXPECT_FALSE(policy->PermitsAnywhere(ops, "audit.read"));
  EXPECT_FALSE(policy->PermitsAnywhere(unknown, "audit.read"));
  EXPECT_FALSE(policy->PermitsAnywhere({}, "audit.read"));
}

TEST(PolicyTest, ScopesNestForDelegation) {
  Scope everywhere;
  Scope eu;
  eu.regions = std::vector<std::string>{"eu"};
  Scope eu_us;
  eu_us.regions = std::vector<std::string>{"eu", "us"};
  Scope eu_line7 = eu;
  eu_line7.labels = {{"line", "7"}};
  EXPECT_TRUE(eu.Within(everywhere));
  EXPECT_TRUE(eu.Within(eu_us));
  EXPECT_FALSE(eu_us.Within(eu));
  EXPECT_FALSE(everywhere.Within(eu));
  EXPECT_TRUE(eu_line7.Within(eu));
  EXPECT_FALSE(eu.Within(eu_line7));
  EXPECT_EQ(eu_line7.Describe(), "in region eu, label line=7");
  EXPECT_EQ(everywhere.Describe(), "everywhere");
}

TEST(PolicyTest, ScopesOverlapUnlessADimensionOrALabelSeparatesThem) {
  Scope everywhere;
  Scope eu;
  eu.regions = std::vector<std::string>{"eu"};
  Scope us;
  us.regions = std::vector<std::string>{"us"};
  Scope red;
  red.labels = {{"color", "red"}};
  Scope blue_eu = eu;
  blue_eu.labels = {{"color", "blue"}};
  Scope nowhere;
  nowhere.tenants = std::vector<std::string>{};
  EXPECT_TRUE(eu.Overlaps(everywhere));
  EXPECT_TRUE(everywhere.Overlaps(eu));
  EXPECT_FALSE(eu.Overlaps(us));
  EXPECT_TRUE(eu.Overlaps(red));
  EXPECT_FALSE(blue_eu.Overlaps(red));
  EXPECT_FALSE(nowhere.Overlaps(everywhere));
}

// Delegation (docs/policy.md § Delegation): an operator grants only a role they hold, within
// their own scope, and only where the policy allows them operator.grant; two steps never widen.
TEST(PolicyTest, DelegationNeverWidensARoleOrAScope) {
  Json doc = Example();
  doc["roles"]["eu-admin"] = {
      {"permit", Json::array({{{"actions", {"device.*", "operator.grant", "operator.invite"}},
                               {"scope", {{"regions", {"eu"}}}}}})},
      {"forbid", Json::array({{{"actions", {"operator.grant"}},
                               {"scope", {{"labels", {{"critical", "yes"}}}}}}})}};
  auto policy = Parsed(doc);
  ASSERT_NE(policy, nullptr);
  Scope eu;
  eu.regions = std::vector<std::string>{"eu"};
  Scope eu_line7 = eu;
  eu_line7.labels = {{"line", "7"}};
  Scope us;
  us.regions = std::vector<std::string>{"us"};
  Scope eu_noncritical = eu;
  eu_noncritical.labels = {{"critical", "no"}};
  Scope eu_noncritical_line7 = eu_noncritical;
  eu_noncritical_line7.labels["line"] = "7";
  const std::vector<Grant> regional = {{"eu-admin", eu}, {"eu-ops", eu}};

  // Within their scope and a role they hold: allowed, narrower too.
  EXPECT_THAT(policy->MayGrant(regional, {"eu-ops", eu_noncritical}), test::IsOk());
  EXPECT_THAT(policy->MayGrant(regional, {"eu-ops", eu_noncritical_line7}), test::IsOk());
  EXPECT_THAT(policy->MayGrant(regional, {"eu-admin", eu_noncritical_line7}), test::IsOk());
  // Wider than their scope, another region, a role they do not hold, an unknown role.
  auto wider = policy->MayGrant(regional, {"eu-ops", Scope{}});
  EXPECT_THAT(wider, test::HasCode(ErrorCode::kPermissionDenied));
  EXPECT_THAT(wider.error().message(), HasSubstr("operator.grant"));
  EXPECT_THAT(policy->MayGrant(regional, {"eu-ops", us}), test::HasCode(ErrorCode::kPermissionDenied));
  EXPECT_THAT(policy->MayGrant(regional, {"admin", eu_noncritical}),
              test::HasCode(ErrorCode::kPermissionDenied));
  EXPECT_THAT(policy->MayGrant(regional, {"no-such-role", eu}),
              test::HasCode(ErrorCode::kInvalidArgument));
  // Holding a role without operator.grant: eu-ops alone may not pass eu-ops on.
  auto no_grant = policy->MayGrant(std::vector<Grant>{{"eu-ops", eu}}, {"eu-ops", eu_noncritical});
  EXPECT_THAT(no_grant, test::HasCode(ErrorCode::kPermissionDenied));
  EXPECT_THAT(no_grant.error().message(), HasSubstr("operator.grant"));
  // A forbid that could apply anywhere inside the granted scope refuses: the eu-admin may not
  // grant over critical devices, so not over all of eu (or a line of it) either.
  for (const Scope& overlapping : {eu, eu_line7}) {
    auto forbidden = policy->MayGrant(regional, {"eu-ops", overlapping});
    EXPECT_THAT(forbidden, test::HasCode(ErrorCode::kPermissionDenied));
    EXPECT_THAT(forbidden.error().message(), HasSubstr("/roles/eu-admin/forbid/0"));
  }
  // Two steps: what the first grantee received is all they can pass on.
  const std::vector<Grant> second = {{"eu-admin", eu_noncritical_line7}};
  EXPECT_THAT(policy->MayGrant(second, {"eu-admin", eu_noncritical}),
              test::HasCode(ErrorCode::kPermissionDenied));
  EXPECT_THAT(policy->MayGrant(second, {"eu-admin", eu_noncritical_line7}), test::IsOk());
  EXPECT_THAT(policy->MayGrant(second, {"eu-ops", eu_noncritical_line7}), test::IsOk())
      << "eu-admin's device.* holds everything eu-ops permits";
  auto more = policy->MayGrant(second, {"auditor", eu_noncritical_line7});
  EXPECT_THAT(more, test::HasCode(ErrorCode::kPermissionDenied));
  EXPECT_THAT(more.error().message(), HasSubstr("may not audit.read"));
  // The unscoped admin holds everything; a forbid of any role it holds still counts.
  EXPECT_THAT(policy->MayGrant(std::vector<Grant>{{"admin", Scope{}}}, {"eu-admin", eu}),
              test::IsOk());
  EXPECT_THAT(policy->MayGrant(std::vector<Grant>{{"admin", Scope{}}, {"eu-ops", Scope{}}},
                               {"eu-ops", us}),
              test::IsOk());
}

TEST(PolicyTest, CredentialClassesAndApprovals) {
  auto policy = Parsed(Example());
  ASSERT_TRUE(policy);
  Resource cam = Device("eu");
  cam.model = "cam-2";
  auto cls = policy->CredentialsFor(cam);
  ASSERT_TRUE(cls);
  EXPECT_EQ((*cls)->name, "cameras");
  EXPECT_EQ((*cls)->preferred_suite, "ed25519");
  EXPECT_EQ((*cls)->ldevid_lifetime_seconds, 7200);
  auto fallback = policy->CredentialsFor(Device("eu"));
  ASSERT_TRUE(fallback);
  EXPECT_EQ((*fallback)->name, "default");
  EXPECT_EQ((*fallback)->ldevid_lifetime_seconds, 86400) << "the built-in default";
  EXPECT_EQ((*fallback)->renew_at_percent, 66);
  EXPECT_TRUE((*fallback)->attestation_required);

  const ApprovalRule* change = policy->ApprovalsFor("policy.propose");
  ASSERT_NE(change, nullptr);
  EXPECT_EQ(change->approvals, 1);
  EXPECT_EQ(policy->ApprovalsFor("batch.run", 99), nullptr) << "below the threshold";
  const ApprovalRule* big = policy->ApprovalsFor("batch.run", 100);
  ASSERT_NE(big, nullptr);
  EXPECT_EQ(big->approvals, 2);
  EXPECT_EQ(policy->ApprovalsFor("device.suspend"), nullptr);
}

TEST(PolicyTest, TheHashNamesTheMeaningNotTheSpelling) {
  auto a = Parsed(Example());
  Json reordered = Example();
  // Listing order inside a set, repetition and explicit defaults do not change the policy.
  reordered["roles"]["eu-ops"]["permit"][0]["actions"] =
      Json::array({"device.resume", "device.read", "device.suspend", "device.read"});
  reordered["credentials"][1]["renew_at_percent"] = 66;
  auto b = Parsed(reordered);
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->Hash(), b->Hash());
  EXPECT_EQ(a->Canonical(), b->Canonical());
  EXPECT_EQ(a->Hash().size(), 64u);
  EXPECT_TRUE(Diff(*a, *b).empty());
  // The canonical form reads back to itself.
  auto again = Policy::Parse(a->Canonical());
  ASSERT_TRUE(again) << again.error();
  EXPECT_EQ((*again)->Canonical(), a->Canonical());

  Json changed = Example();
  changed["roles"]["eu-ops"]["permit"][0]["actions"].push_back("device.decommission");
  changed["credentials"][1]["ldevid_lifetime_seconds"] = 3600;
  auto c = Parsed(changed);
  ASSERT_TRUE(c);
  EXPECT_NE(a->Hash(), c->Hash());
  EXPECT_THAT(Diff(*a, *c),
              ElementsAre("role eu-ops gains device.decommission in region eu",
                          "credential class default: LDevID lifetime (s) 86400 -> 3600"));
  EXPECT_THAT(Diff(*c, *a), ElementsAre("role eu-ops loses device.decommission in region eu",
                                        "credential class default: LDevID lifetime (s) 3600 -> 86400"));
}

TEST(PolicyTest, RefusesWhatIsNotExactlyAPolicyNamingWhere) {
  struct Case {
    std::string what;
    std::function<void(Json&)> edit;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"unknown top-level key", [](Json& j) { j["rolez"] = Json::object(); }, "/rolez: is not a known key"},
      {"wrong schema", [](Json& j) { j["schema"] = "fleetid.policy/v0"; }, "/schema: must be"},
      {"missing credentials", [](Json& j) { j.erase("credentials"); }, "/credentials: is required"},
      {"unknown rule key",
       [](Json& j) { j["roles"]["admin"]["permit"][0]["effect"] = "allow"; },
       "/roles/admin/permit/0/effect: is not a known key"},
      {"unknown action",
       [](Json& j) { j["roles"]["admin"]["permit"][0]["actions"] = Json::array({"device.explode"}); },
       "/roles/admin/permit/0/actions/0: is not a known action"},
      {"verb pattern",
       [](Json& j) { j["roles"]["admin"]["permit"][0]["actions"] = Json::array({"*.read"}); },
       "is not a known action"},
      {"unknown family",
       [](Json& j) { j["roles"]["admin"]["permit"][0]["actions"] = Json::array({"rocket.*"}); },
       "is not a known action"},
      {"empty action list",
       [](Json& j) { j["roles"]["admin"]["permit"][0]["actions"] = Json::array(); },
       "/roles/admin/permit/0/actions: must be a list of 1"},
      {"bad role name", [](Json& j) { j["roles"]["Bad Role"] = Json::object(); }, "not a valid role name"},
      {"scope value type",
       [](Json& j) { j["roles"]["eu-ops"]["permit"][0]["scope"]["regions"] = "eu"; },
       "/roles/eu-ops/permit/0/scope/regions: must be a list"},
      {"empty scope value",
       [](Json& j) { j["roles"]["eu-ops"]["permit"][0]["scope"]["regions"] = Json::array({""}); },
       "must not be empty"},
      {"unknown suite", [](Json& j) { j["credentials"][1]["suites"] = Json::array({"rsa512"}); },
       "/credentials/1/suites/0: is not a known suite"},
      {"preferred outside", [](Json& j) { j["credentials"][1]["preferred_suite"] = "ed25519"; },
       "/credentials/1/preferred_suite: must be one of the class's suites"},
      {"lifetime bound", [](Json& j) { j["credentials"][1]["ldevid_lifetime_seconds"] = 60; },
       "/credentials/1/ldevid_lifetime_seconds: must be from 3600"},
      {"float", [](Json& j) { j["credentials"][1]["renew_at_percent"] = 66.5; },
       "/credentials/1/renew_at_percent: must be an integer"},
      {"huge", [](Json& j) { j["credentials"][1]["renew_at_percent"] = 18446744073709551615ULL; },
       "must be from 10 to 95"},
      {"duplicate class", [](Json& j) { j["credentials"][0]["name"] = "default"; },
       "names a class already defined"},
      {"boolean type", [](Json& j) { j["credentials"][1]["attestation_required"] = 1; },
       "must be true or false"},
      {"approval from unknown role", [](Json& j) { j["approvals"][0]["from_roles"] = Json::array({"ghost"}); },
       "/approvals/0/from_roles/0: is not a role of this policy"},
      {"zero approvals", [](Json& j) { j["approvals"][0]["approvals"] = 0; }, "must be from 1 to 10"},
      {"not an object", [](Json& j) { j = Json::array(); }, "policy /: must be an object"},
      {"control bytes in a key", [](Json& j) { j["roles"]["admin"]["x\ny\x7f"] = 1; },
       "/roles/admin/x?y?: is not a known key"},
  };
  for (const Case& c : cases) {
    Json doc = Example();
    c.edit(doc);
    auto parsed = Policy::Parse(doc.dump());
    ASSERT_FALSE(parsed) << c.what;
    EXPECT_EQ(parsed.error().code(), ErrorCode::kInvalidArgument) << c.what;
    EXPECT_THAT(parsed.error().message(), HasSubstr(c.message)) << c.what;
  }
  // Text that is not one JSON document, a key given twice, comments, and too many bytes.
  for (const std::string& text :
       {std::string("{"), std::string(R"({"schema": "a", "schema": "b"})"),
        std::string("// x\n") + Example().dump(), std::string(kMaxDocumentBytes + 1, ' ')}) {
    auto parsed = Policy::Parse(text);
    ASSERT_FALSE(parsed) << text.substr(0, 40);
    EXPECT_EQ(parsed.error().code(), ErrorCode::kInvalidArgument);
  }
  EXPECT_THAT(Policy::Parse(R"({"schema": "a", "schema": "b"})").error().message(),
              HasSubstr("repeats the key 'schema'"));
}

TEST(PolicyTest, ManyRolesCompileAndDecideWithinTheirBounds) {
  Json doc = Example();
  for (int r = 0; r < 100; ++r) {
    Json role;
    for (int i = 0; i < 10; ++i) {
      role["permit"].push_back(
          {{"actions", {"device.suspend", "device.resume"}},
           {"scope", {{"regions", Json::array({fmt::format("r{}", i)})}}}});
    }
    doc["roles"][fmt::format("team-{}", r)] = role;
  }
  auto policy = Parsed(doc);
  ASSERT_TRUE(policy);
  const std::vector<Grant> grants{{.role = "team-42", .scope = {}}};
  EXPECT_TRUE(policy->Decide(grants, "device.suspend", Device("r7")).allowed);
  EXPECT_FALSE(policy->Decide(grants, "device.suspend", Device("r10")).allowed);
  EXPECT_FALSE(policy->Decide(grants, "device.provision", Device("r7")).allowed);
}

}  // namespace
}  // namespace fleetid::policy
