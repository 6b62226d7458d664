// The role × action × scope matrix through the operator API (issue 12's acceptance test): seven
// roles (one of them granted twice, everywhere and in one region), every action the API offers
// today, each device action on a device inside and outside each scope, and the CA's read, hold,
// release and revocation of a certificate that is no device's. The expected cells are
// written out by hand from the policy below, not computed by the evaluator under test. Only the
// allowed cells get past the policy (a 200 or 201, or a 409 from the device's lifecycle or from
// the CA route, which leaves an operator's certificate to the operator's own); every other
// cell is a 403 naming the missing permission, and every refusal is an access.denied entry in
// the audit log.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <functional>
#include <set>

#include "api/routes_test_util.h"
#include "crypto/jws.h"
#include "crypto/x509.h"

namespace fleetid::api::testing {
namespace {

using Json = nlohmann::json;
using server::HttpResponse;

// The built-in policy (admin, auditor) with five roles added.
Json MatrixPolicy(std::string_view description) {
  Json doc = Json::parse(policy::Versions::DefaultDocument());
  doc["description"] = description;
  auto role = [](std::vector<std::string> permit, std::vector<std::string> forbid = {}) {
    Json r{
        {"description", "matrix"},
        {"permit", Json::array({{{"actions", permit}, {"scope", Json::object()}, {"why", "m"}}})}};
    if (!forbid.empty()) {
      r["forbid"] = Json::array({{{"actions", forbid}, {"scope", Json::object()}, {"why", "m"}}});
    }
    return r;
  };
  doc["roles"]["eu-ops"] =
      role({"device.read", "device.suspend", "device.resume", "device.quarantine"});
  doc["roles"]["acme-support"] = role({"device.*"}, {"device.decommission"});
  doc["roles"]["provisioner"] = role({"device.read", "device.provision"});
  doc["roles"]["policy-editor"] = role({"policy.read", "policy.propose"});
  doc["roles"]["operator-manager"] =
      role({"operator.read", "operator.invite", "operator.grant"}, {"operator.revoke"});
  return doc;
}

struct MatrixOperator {
  std::string label;  // the operator is "m-<label>"
  std::string role;
  Json scope;  // the grant's scope
};

const std::vector<MatrixOperator> kOperators = {
    {"admin", "admin", Json::object()},
    {"auditor", "auditor", Json::object()},
    {"eu-ops", "eu-ops", {{"regions", {"eu"}}}},
    {"acme-support", "acme-support", {{"tenants", {"acme"}}}},
    {"provisioner", "provisioner", {{"regions", {"eu"}}}},
    {"policy-editor", "policy-editor", Json::object()},
    {"operator-manager", "operator-manager", Json::object()},
    {"us-auditor", "auditor", {{"regions", {"us"}}}},
};

struct MatrixDevice {
  std::string serial;
  std::string tenant;
  std::string region;
};

const std::vector<MatrixDevice> kDevices = {{"D-EU-ACME", "acme", "eu"},
                                            {"D-US-ACME", "acme", "us"},
                                            {"D-EU-GLOBEX", "globex", "eu"},
                                            {"D-US-GLOBEX", "globex", "us"}};

// What each operator may do to a device, by hand from MatrixPolicy and the grants above.
bool DeviceAllowed(const std::string& label, std::string_view action, const MatrixDevice& d) {
  const auto one_of = [&](std::initializer_list<std::string_view> actions) {
    return std::ranges::find(actions, action) != actions.end();
  };
  if (label == "admin") return true;
  if (action.starts_with("ca.")) return false;  // ca.issue: no role but admin's permits it
  if (label == "auditor") return action == "device.read";
  if (label == "eu-ops") {
    return d.region == "eu" &&
           one_of({"device.read", "device.suspend", "device.resume", "device.quarantine"});
  }
  if (label == "acme-support") return d.tenant == "acme" && action != "device.decommission";
  if (label == "provisioner")
    return d.region == "eu" && one_of({"device.read", "device.provision"});
  if (label == "us-auditor") return d.region == "us" && action == "device.read";
  return false;  // policy-editor, operator-manager
}

// Who may take each action that is not about one device.
const std::map<std::string, std::set<std::string>> kOtherAllowed = {
    {"operator.read", {"admin", "auditor", "operator-manager"}},
    {"operator.invite", {"admin", "operator-manager"}},
    {"operator.grant", {"admin", "operator-manager"}},
    {"operator.revoke", {"admin"}},
    {"policy.read", {"admin", "auditor", "policy-editor"}},
    {"policy.propose", {"admin", "policy-editor"}},
    {"policy.approve", {"admin"}},
    {"policy.reject", {"admin"}},
    // us-auditor reads the entries about devices in us (the others withheld: AuditRoutesTest).
    {"audit.read", {"admin", "auditor", "us-auditor"}},
    {"ca.read", {"admin", "auditor"}},
    {"ca.hold", {"admin"}},
    {"ca.revoke", {"admin"}},
    {"ca.release", {"admin"}},
    {"manifest.read", {"admin", "auditor"}},
    {"manifest.import", {"admin"}},
    {"reference.manage", {"admin"}},
};

class OperatorMatrixTest : public RoutesTest {
 protected:
  std::uint64_t Denials() {
    auto size = audit_log_->Integrate();
    EXPECT_TRUE(size) << size.error();
    auto entries = audit_log_->Entries(0, size.value_or(0));
    EXPECT_TRUE(entries) << entries.error();
    std::uint64_t n = 0;
    for (const audit::StoredEntry& e : entries.value_or(std::vector<audit::StoredEntry>{})) {
      n += Json::parse(e.body)["action"] == "access.denied" ? 1 : 0;
    }
    return n;
  }

  policy::Operator As(const enroll::ClientChain& chain) {
    auto op = operators_->Authenticate(chain);
    EXPECT_TRUE(op) << op.error();
    return op.value_or(policy::Operator{});
  }

  static policy::Grant GrantOf(const MatrixOperator& m) {
    auto scope = policy::ScopeFromJson(m.scope);
    EXPECT_TRUE(scope) << scope.error();
    return {.role = m.role, .scope = scope.value_or(policy::Scope{})};
  }
};

TEST_F(OperatorMatrixTest, OnlyTheAllowedCellsGetPastThePolicyAndEveryRefusalIsAudited) {
  for (const MatrixDevice& d : kDevices) MakeDevice(d.serial, d.tenant, d.region);
  // alice (the first administrator) proposes the matrix policy; bob approves it.
  const policy::Operator alice = As(AdminChain());
  auto issue_key = NewKey();
  const std::string issue_csr = crypto::Base64Encode(Csr(issue_key.get()));
  auto maker = crypto::ParseCertificateDer(maker_ca_);
  ASSERT_TRUE(maker) << maker.error();
  const std::string maker_pem = crypto::CertificatePem(maker->get()).value_or("");
  const enroll::ClientChain bob_chain = OperatorChain("bob", {{.role = "admin", .scope = {}}});
  const policy::Operator bob = As(bob_chain);
  // A certificate that is no device's (bob's): the ca.* actions on it need no scope, and its
  // status changes go through the operator's own route (409 here, once past the policy).
  auto bob_cert = crypto::ParseCertificateDer(bob_chain.front());
  ASSERT_TRUE(bob_cert) << bob_cert.error();
  const std::string bob_serial =
      crypto::SerialHex(X509_get0_serialNumber(bob_cert->get())).value_or("");
  auto proposed = policy_->Propose(alice, MatrixPolicy("matrix").dump(), 1, "matrix");
  ASSERT_TRUE(proposed) << proposed.error();
  ASSERT_TRUE(policy_->Approve(bob, proposed->id, "ok"));
  ASSERT_EQ(policy_->Current().number, 2);

  std::map<std::string, enroll::ClientChain> chains;
  std::map<std::string, std::int64_t> to_approve;
  std::map<std::string, std::int64_t> to_reject;
  for (const MatrixOperator& m : kOperators) {
    chains[m.label] = OperatorChain("m-" + m.label, {GrantOf(m)});
    ASSERT_FALSE(chains[m.label].empty()) << m.label;
    ASSERT_FALSE(OperatorChain("t-" + m.label, {{.role = "auditor", .scope = {}}}).empty());
    ASSERT_FALSE(OperatorChain("v-" + m.label, {{.role = "auditor", .scope = {}}}).empty());
    for (auto* ids : {&to_approve, &to_reject}) {
      auto p = policy_->Propose(
          alice,
          MatrixPolicy(fmt::format("for {} {}", m.label, ids == &to_approve ? "a" : "r")).dump(),
          policy_->Current().number, "matrix");
      ASSERT_TRUE(p) << p.error();
      (*ids)[m.label] = p->id;
    }
  }

  const std::uint64_t denials_before = Denials();
  int refused = 0;
  int cells = 0;
  // Check runs one cell: |allowed| must get past the policy, anything else be a 403 naming
  // |action|.
  auto check = [&](const MatrixOperator& m, const std::string& action, bool allowed,
                   const std::string& where, Req req) {
    ++cells;
    const HttpResponse r = Call(std::move(req.Chain(chains[m.label])));
    const std::string cell =
        fmt::format("{} {} {} -> {} {}", m.label, action, where, r.status, r.body.substr(0, 200));
    if (allowed) {
      EXPECT_TRUE(r.status == 200 || r.status == 201 || r.status == 409) << cell;
    } else {
      ++refused;
      EXPECT_EQ(r.status, 403) << cell;
      EXPECT_THAT(r.body, ::testing::HasSubstr("permission_denied")) << cell;
      EXPECT_THAT(r.body, ::testing::HasSubstr("may not " + action)) << cell;
    }
  };

  const std::vector<std::pair<std::string, std::string>> device_actions = {
      {"provision", "device.provision"},
      {"suspend", "device.suspend"},
      {"resume", "device.resume"},
      {"quarantine", "device.quarantine"},
      {"decommission", "device.decommission"},
      {"cancel-decommission", "device.cancel_decommission"}};
  for (const MatrixOperator& m : kOperators) {
    for (const MatrixDevice& d : kDevices) {
      const std::string where = fmt::format("on {} ({}, {})", d.serial, d.tenant, d.region);
      check(m, "device.read", DeviceAllowed(m.label, "device.read", d), where,
            Req("GET", "/api/v1/devices/" + d.serial));
      for (const auto& [path, action] : device_actions) {
        Json body{{"reason", "matrix"}};
        if (path == "provision") body = {{"tenant", d.tenant}, {"region", d.region}};
        check(m, action, DeviceAllowed(m.label, action, d), where,
              Req("POST", fmt::format("/api/v1/devices/{}/{}", d.serial, path)).Body(body.dump()));
      }
      check(m, "ca.issue", DeviceAllowed(m.label, "ca.issue", d), where,
            Req("POST", fmt::format("/api/v1/devices/{}/certificates", d.serial))
                .Body(Json{{"csr", issue_csr}}.dump()));
    }
    auto allowed = [&](const std::string& action) {
      return kOtherAllowed.at(action).contains(m.label);
    };
    const Json grant{{"role", m.role}, {"scope", m.scope}};
    check(m, "operator.read", allowed("operator.read"), "", Req("GET", "/api/v1/operators"));
    check(m, "operator.invite", allowed("operator.invite"), "",
          Req("POST", "/api/v1/operators/invitations")
              .Body(Json{{"name", "inv-" + m.label}, {"grants", Json::array({grant})}}.dump()));
    check(m, "operator.grant", allowed("operator.grant"), "",
          Req("POST", fmt::format("/api/v1/operators/t-{}/grants", m.label)).Body(grant.dump()));
    check(m, "operator.revoke", allowed("operator.revoke"), "",
          Req("POST", fmt::format("/api/v1/operators/v-{}/revoke", m.label))
              .Body(R"({"reason":"matrix"})"));
    check(m, "policy.read", allowed("policy.read"), "", Req("GET", "/api/v1/policy"));
    check(m, "policy.propose", allowed("policy.propose"), "",
          Req("POST", "/api/v1/policy/proposals")
              .Body(Json{{"document", MatrixPolicy("proposed by " + m.label)},
                         {"base", policy_->Current().number}}
                        .dump()));
    check(m, "policy.approve", allowed("policy.approve"), "",
          Req("POST", fmt::format("/api/v1/policy/proposals/{}/approve", to_approve[m.label]))
              .Body("{}"));
    check(m, "policy.reject", allowed("policy.reject"), "",
          Req("POST", fmt::format("/api/v1/policy/proposals/{}/reject", to_reject[m.label]))
              .Body(R"({"reason":"matrix"})"));
    check(m, "audit.read", allowed("audit.read"), "",
          Req("GET", "/audit/v1/entries?start=0&end=1"));
    check(m, "ca.read", allowed("ca.read"), "",
          Req("GET", "/api/v1/ca/certificates/" + bob_serial));
    for (const char* verb : {"hold", "release"}) {
      check(m, fmt::format("ca.{}", verb), allowed(fmt::format("ca.{}", verb)), "",
            Req("POST", fmt::format("/api/v1/ca/certificates/{}/{}", bob_serial, verb))
                .Body(R"({"reason":"matrix"})"));
    }
    check(m, "ca.revoke", allowed("ca.revoke"), "",
          Req("POST", fmt::format("/api/v1/ca/certificates/{}/revoke", bob_serial))
              .Body(R"({"revocation_reason":"keyCompromise","reason":"matrix"})"));
    check(m, "manifest.read", allowed("manifest.read"), "", Req("GET", "/api/v1/manufacturers"));
    check(m, "manifest.import", allowed("manifest.import"), "",
          Req("POST", "/api/v1/manufacturers")
              .Body(Json{{"name", "Acme"}, {"certificate", maker_pem}}.dump()));
    check(m, "reference.manage", allowed("reference.manage"), "",
          Req("POST", "/api/v1/reference-values")
              .Body(Json{{"model", kModel}, {"firmware_sha256", std::string(64, 'e')}}.dump()));
  }
  EXPECT_EQ(cells, 8 * (4 * 8 + 9 + 4 + 3));
  EXPECT_GT(refused, cells / 2);
  EXPECT_EQ(Denials() - denials_before, static_cast<std::uint64_t>(refused))
      << "every refusal is audited, once";
}

}  // namespace
}  // namespace fleetid::api::testing
