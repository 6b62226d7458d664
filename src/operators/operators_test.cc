// operators::Operators against SQLite and a throwaway PostgreSQL, with the CA in the shared
// SoftHSM2 test token: the bootstrap code, invitations and delegation, authentication by
// certificate (devices never pass for operators), renewal and revocation.
#include "operators/operators.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "audit/log.h"
#include "crypto/keys.h"
#include "testing/certs.h"
#include "testing/db.h"
#include "testing/matchers.h"
#include "testing/token.h"

namespace fleetid::operators {
namespace {

using namespace std::chrono_literals;
using test::Backend;
using test::HasCode;
using test::IsOk;
using ::testing::HasSubstr;
using Json = nlohmann::json;

std::vector<std::uint8_t> CsrFor(EVP_PKEY* key) {
  return test::MakeCsr(key, {.common_name = "chosen-by-the-operator"});
}

std::string ReadLine(const std::filesystem::path& path) {
  std::string line;
  std::ifstream in(path);
  std::getline(in, line);
  return line;
}

class OperatorsTest : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    db_ = std::make_unique<test::TestDb>(GetParam());
    dir_ = test::DataDir() / ("operators-" + test::BackendName(GetParam()) + "-" +
                              ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
    auto versions = policy::Versions::Open(db_->db(), clock_);
    ASSERT_TRUE(versions) << versions.error();
    versions_ = std::move(*versions);
    auto authority = pki::Authority::Open(test::Opened().token, db_->db(), clock_, rng_, {});
    ASSERT_TRUE(authority) << authority.error();
    authority_ = std::move(*authority);
    ASSERT_THAT(Operators::Migrate(db_->db()), IsOk());
    operators_ = std::make_unique<Operators>(db_->db(), *authority_, *versions_, clock_, rng_);
  }

  // BootstrapAlice makes alice the first administrator and returns her credentials.
  policy::Operator BootstrapAlice() {
    EXPECT_THAT(operators_->PrepareBootstrap(dir_ / "bootstrap-code"), IsOk());
    auto issued =
        operators_->Bootstrap(ReadLine(dir_ / "bootstrap-code"), "alice", CsrFor(alice_key_.get()));
    EXPECT_TRUE(issued) << issued.error();
    auto alice = operators_->Authenticate(Chain(*issued));
    EXPECT_TRUE(alice) << alice.error();
    return alice.value_or(policy::Operator{});
  }

  // Enrolled invites |name| with |grants| as |by| and enrolls them with a new key.
  Result<policy::Operator> Enrolled(const policy::Operator& by, const std::string& name,
                                    const std::vector<policy::Grant>& grants) {
    FLEETID_TRY(invitation, operators_->Invite(by, name, grants, 24h));
    crypto::EvpPkeyPtr key(EVP_EC_gen("P-256"));
    FLEETID_TRY(issued, operators_->Enroll(invitation.code, CsrFor(key.get())));
    chains_[name] = Chain(issued);
    return operators_->Authenticate(Chain(issued));
  }

  // Again authenticates |name| anew with the chain they enrolled with (their grants as now).
  policy::Operator Again(const std::string& name) {
    auto op = operators_->Authenticate(chains_[name]);
    EXPECT_TRUE(op) << op.error();
    return op.value_or(policy::Operator{});
  }

  static ClientChain Chain(const Issued& issued) {
    ClientChain chain = {issued.certificate.der};
    chain.insert(chain.end(), issued.chain.begin(), issued.chain.end());
    return chain;
  }

  // Adopt activates |document| with alice proposing and a second admin, dave, approving.
  void Adopt(const policy::Operator& alice, const policy::Operator& dave, const Json& document) {
    auto proposal = versions_->Propose(alice, document.dump(), versions_->Current().number, "test");
    ASSERT_TRUE(proposal) << proposal.error();
    auto approved = versions_->Approve(dave, proposal->id, "ok");
    ASSERT_TRUE(approved) << approved.error();
    ASSERT_EQ(approved->state, policy::RequestState::kApplied);
  }

  std::vector<Json> Audited(std::string_view action) {
    audit::Log log(db_->db(), nullptr, clock_);
    auto size = log.Integrate();
    std::vector<Json> out;
    auto entries = log.Entries(0, size.value_or(0));
    for (const audit::StoredEntry& e : entries.value_or(std::vector<audit::StoredEntry>{})) {
      Json body = Json::parse(e.body);
      if (body["action"] == action) out.push_back(std::move(body));
    }
    return out;
  }

  std::unique_ptr<test::TestDb> db_;
  std::filesystem::path dir_;
  FakeClock clock_{SystemClock::Instance().Now()};
  FakeRng rng_{42};
  std::unique_ptr<policy::Versions> versions_;
  std::unique_ptr<pki::Authority> authority_;
  std::unique_ptr<Operators> operators_;
  std::map<std::string, ClientChain> chains_;
  crypto::EvpPkeyPtr alice_key_{EVP_EC_gen("P-256")};
};

TEST_P(OperatorsTest, TheBootstrapCodeMakesTheFirstAdministratorOnce) {
  const std::filesystem::path file = dir_ / "bootstrap-code";
  auto waiting = operators_->PrepareBootstrap(file);
  ASSERT_TRUE(waiting) << waiting.error();
  EXPECT_TRUE(*waiting);
  struct stat st {};
  ASSERT_EQ(stat(file.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u) << "the code is readable by its owner only";
  const std::string code = ReadLine(file);
  EXPECT_GE(code.size(), 43u);
  // A second start keeps the waiting code; the database holds only its hash.
  ASSERT_THAT(operators_->PrepareBootstrap(file), IsOk());
  EXPECT_EQ(ReadLine(file), code);
  auto tx = db_->db().Begin(store::TxMode::kRead);
  ASSERT_TRUE(tx);
  auto stored = (*tx)->Query("SELECT code_sha256, name, grants FROM operator_codes");
  ASSERT_TRUE(stored) << stored.error();
  ASSERT_EQ(stored->size(), 1u);
  for (std::size_t i = 0; i < 3; ++i)
    EXPECT_EQ(stored->at(0).Text(i).find(code), std::string::npos);
  tx->reset();

  // A wrong code, a name outside the character set, a CSR whose signature does not verify.
  EXPECT_THAT(operators_->Bootstrap("not-the-code", "alice", CsrFor(alice_key_.get())),
              HasCode(ErrorCode::kPermissionDenied));
  EXPECT_THAT(operators_->Bootstrap(code, "alice,O=x", CsrFor(alice_key_.get())),
              HasCode(ErrorCode::kInvalidArgument));
  std::vector<std::uint8_t> bad_csr = CsrFor(alice_key_.get());
  bad_csr[bad_csr.size() - 3] ^= 0x01;
  EXPECT_THAT(operators_->Bootstrap(code, "alice", bad_csr), HasCode(ErrorCode::kInvalidArgument));

  auto issued = operators_->Bootstrap(code, "alice", CsrFor(alice_key_.get()));
  ASSERT_TRUE(issued) << issued.error();
  EXPECT_EQ(issued->certificate.issuer, pki::kOperatorCa);
  EXPECT_EQ(issued->certificate.not_after - clock_.Now(), OperatorsOptions{}.certificate_lifetime);
  EXPECT_FALSE(std::filesystem::exists(file)) << "the used code's file is removed";
  auto alice = operators_->Authenticate(Chain(*issued));
  ASSERT_TRUE(alice) << alice.error();
  EXPECT_EQ(alice->name, "alice");
  EXPECT_EQ(alice->credential, issued->certificate.serial);
  ASSERT_EQ(alice->grants.size(), 1u);
  EXPECT_EQ(alice->grants[0].role, "admin");
  EXPECT_TRUE(alice->grants[0].scope.Unbounded());

  // Bootstrap is over: the code is spent, and no new one is written.
  EXPECT_THAT(operators_->Bootstrap(code, "mallory", CsrFor(alice_key_.get())),
              HasCode(ErrorCode::kConflict));
  auto again = operators_->PrepareBootstrap(file);
  ASSERT_TRUE(again) << again.error();
  EXPECT_FALSE(*again);
  EXPECT_FALSE(std::filesystem::exists(file));
  const std::vector<Json> audited = Audited("operator.bootstrap");
  ASSERT_EQ(audited.size(), 1u);
  EXPECT_EQ(audited[0]["subject"], "alice");
  EXPECT_EQ(audited[0]["policy_version"], versions_->CurrentHash());
}

TEST_P(OperatorsTest, DevicesRevokedCertificatesAndRevokedOperatorsAreNotOperators) {
  const policy::Operator alice = BootstrapAlice();
  EXPECT_THAT(operators_->Authenticate({}), HasCode(ErrorCode::kUnauthenticated));
  // A device certificate from the same hierarchy.
  crypto::EvpPkeyPtr device_key(EVP_EC_gen("P-256"));
  auto device = authority_->Issue(CsrFor(device_key.get()), {"GW-0001", "acme"}, {});
  ASSERT_TRUE(device) << device.error();
  auto as_operator = operators_->Authenticate({device->der, authority_->RootDer()});
  ASSERT_THAT(as_operator, HasCode(ErrorCode::kUnauthenticated));
  EXPECT_THAT(as_operator.error().message(), HasSubstr("not an operator's"));

  // Renewal supersedes the certificate it authenticated with.
  crypto::EvpPkeyPtr next_key(EVP_EC_gen("P-256"));
  auto tx = db_->db().Begin(store::TxMode::kRead);
  auto first = pki::Authority::GetIn(**tx, alice.credential);
  ASSERT_TRUE(first) << first.error();
  tx->reset();
  auto renewed = operators_->Renew(alice, CsrFor(next_key.get()));
  ASSERT_TRUE(renewed) << renewed.error();
  auto old = operators_->Authenticate({first->der});
  ASSERT_THAT(old, HasCode(ErrorCode::kUnauthenticated));
  EXPECT_THAT(old.error().message(), HasSubstr("revoked"));
  auto alice2 = operators_->Authenticate(Chain(*renewed));
  ASSERT_TRUE(alice2) << alice2.error();

  // A revoked operator is refused at once, with every certificate of theirs revoked.
  auto bob = Enrolled(*alice2, "bob", {{"auditor", {}}});
  ASSERT_TRUE(bob) << bob.error();
  EXPECT_THAT(operators_->Revoke(*bob, "alice", "no"), HasCode(ErrorCode::kPermissionDenied));
  // alice is the only administrator: revoking her would lock everyone out.
  auto lockout = operators_->Revoke(*alice2, "alice", "oops");
  ASSERT_THAT(lockout, HasCode(ErrorCode::kConflict));
  EXPECT_THAT(lockout.error().message(), HasSubstr("invite another administrator first"));
  ASSERT_TRUE(operators_->Authenticate(Chain(*renewed))) << "and she is still active";
  auto revoked = operators_->Revoke(*alice2, "bob", "left the company");
  ASSERT_TRUE(revoked) << revoked.error();
  EXPECT_FALSE(revoked->active);
  auto tx2 = db_->db().Begin(store::TxMode::kRead);
  auto bob_cert = pki::Authority::GetIn(**tx2, bob->credential);
  ASSERT_TRUE(bob_cert) << bob_cert.error();
  EXPECT_EQ(bob_cert->status, pki::Status::kRevoked);
  tx2->reset();
  EXPECT_THAT(operators_->Authenticate({bob_cert->der}), HasCode(ErrorCode::kUnauthenticated));
  EXPECT_THAT(operators_->Revoke(*alice2, "bob", "again"), HasCode(ErrorCode::kConflict));
  EXPECT_THAT(operators_->Revoke(*alice2, "nobody", "?"), HasCode(ErrorCode::kNotFound));
  EXPECT_EQ(Audited("operator.revoke").size(), 1u);
  EXPECT_EQ(Audited("access.denied").size(), 1u) << "bob's refused revocation";
}

TEST_P(OperatorsTest, InvitationsCarryOnlyWhatTheInviterMayGrant) {
  const policy::Operator alice = BootstrapAlice();
  auto dave = Enrolled(alice, "dave", {{"admin", {}}});
  ASSERT_TRUE(dave) << dave.error();
  // The walkthrough's policy: a regional admin who may pass on regional on-call within eu.
  Json doc = Json::parse(policy::Versions::DefaultDocument());
  doc["roles"]["eu-ops"] = {
      {"permit", Json::array({{{"actions", {"device.suspend", "device.resume", "device.read"}},
                               {"scope", {{"regions", {"eu"}}}}}})}};
  doc["roles"]["eu-admin"] = {
      {"permit", Json::array({{{"actions", {"operator.invite", "operator.grant"}},
                               {"scope", {{"regions", {"eu"}}}}}})}};
  Adopt(alice, *dave, doc);

  policy::Scope eu;
  eu.regions = std::vector<std::string>{"eu"};
  policy::Scope us;
  us.regions = std::vector<std::string>{"us"};
  // Grants are added one by one too; dave, an admin, takes the regional roles everywhere.
  ASSERT_TRUE(operators_->Grant(alice, "dave", {"eu-ops", {}}));
  auto granted = operators_->Grant(alice, "dave", {"eu-admin", {}});
  ASSERT_TRUE(granted) << granted.error();
  EXPECT_EQ(granted->grants.size(), 3u);
  EXPECT_EQ(granted->grants.back().granted_by, policy::AuditActor(alice));
  auto lead = Enrolled(Again("dave"), "eu-lead", {{"eu-admin", eu}, {"eu-ops", eu}});
  ASSERT_TRUE(lead) << lead.error();
  ASSERT_EQ(lead->grants.size(), 2u);

  // The regional lead invites within eu only, and never a role they do not hold.
  EXPECT_TRUE(Enrolled(*lead, "eu-oncall", {{"eu-ops", eu}}));
  for (const policy::Grant& wider :
       std::vector<policy::Grant>{{"eu-ops", {}}, {"eu-ops", us}, {"admin", eu}, {"auditor", eu}}) {
    auto r = operators_->Invite(*lead, "x-" + wider.role, {wider}, 24h);
    EXPECT_THAT(r, HasCode(ErrorCode::kPermissionDenied))
        << wider.role << " " << wider.scope.Describe();
  }
  // In two steps: the on-call operator received eu-ops alone and may grant nothing.
  auto grant_by_oncall = operators_->Grant(Again("eu-oncall"), "eu-oncall", {"eu-ops", {}});
  EXPECT_THAT(grant_by_oncall, HasCode(ErrorCode::kPermissionDenied));

  // An invitation is checked again when used: revoking the inviter voids it.
  auto pending = operators_->Invite(*lead, "late", {{"eu-ops", eu}}, 24h);
  ASSERT_TRUE(pending) << pending.error();
  ASSERT_TRUE(operators_->Revoke(alice, "eu-lead", "reorganised"));
  crypto::EvpPkeyPtr key(EVP_EC_gen("P-256"));
  EXPECT_THAT(operators_->Enroll(pending->code, CsrFor(key.get())),
              HasCode(ErrorCode::kPermissionDenied));
  // Codes are single-use and expire.
  auto once = operators_->Invite(alice, "frank", {{"auditor", {}}}, 1h);
  ASSERT_TRUE(once) << once.error();
  clock_.Advance(2h);
  EXPECT_THAT(operators_->Enroll(once->code, CsrFor(key.get())),
              HasCode(ErrorCode::kPermissionDenied));
  auto twice = operators_->Invite(alice, "grace", {{"auditor", {}}}, 1h);
  ASSERT_TRUE(twice) << twice.error();
  EXPECT_TRUE(operators_->Enroll(twice->code, CsrFor(key.get())));
  EXPECT_THAT(operators_->Enroll(twice->code, CsrFor(key.get())),
              HasCode(ErrorCode::kPermissionDenied));
  EXPECT_THAT(operators_->Invite(alice, "grace", {{"auditor", {}}}, 1h),
              HasCode(ErrorCode::kConflict));
  EXPECT_THAT(operators_->Invite(alice, "henry", {{"auditor", {}}}, 24h * 8),
              HasCode(ErrorCode::kInvalidArgument));

  auto listed = operators_->List(alice);
  ASSERT_TRUE(listed) << listed.error();
  EXPECT_EQ(listed->size(), 5u);  // alice, dave, eu-lead, eu-oncall, grace
  EXPECT_THAT(operators_->List(*lead), HasCode(ErrorCode::kPermissionDenied));
}

INSTANTIATE_TEST_SUITE_P(Backends, OperatorsTest,
                         ::testing::Values(Backend::kSqlite, Backend::kPostgres),
                         [](const auto& param_info) {
                           return test::BackendName(param_info.param);
                         });

}  // namespace
}  // namespace fleetid::operators
