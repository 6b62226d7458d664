// policy::Versions against SQLite and a throwaway PostgreSQL: the first version, proposals and
// two-person approval, the compare-and-set on the active version, expiry, withdrawal, rollback,
// and the audit entries every step and every refusal leaves.
#include "policy/versions.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <thread>

#include "audit/log.h"
#include "testing/db.h"
#include "testing/matchers.h"

namespace fleetid::policy {
namespace {

using namespace std::chrono_literals;
using test::Backend;
using test::HasCode;
using test::IsOk;
using test::TestDb;
using ::testing::HasSubstr;
using Json = nlohmann::json;

const TimePoint kStart = std::chrono::sys_days{std::chrono::year{2030} / 3 / 1};

Operator Admin(std::string name) {
  return {.name = std::move(name), .credential = "", .grants = {{"admin", {}}}};
}

// The default policy with a regional role added: what the walkthrough proposes.
std::string WithRegionalRole(int approvals = 1) {
  Json doc = Json::parse(Versions::DefaultDocument());
  doc["roles"]["eu-ops"] = {
      {"description", "regional on-call"},
      {"permit", Json::array({{{"actions", {"device.suspend", "device.resume", "device.read"}},
                               {"scope", {{"regions", {"eu"}}}},
                               {"why", "regional on-call"}}})}};
  doc["approvals"][0]["approvals"] = approvals;
  return doc.dump();
}

class VersionsTest : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    db_ = std::make_unique<TestDb>(GetParam());
    auto opened = Versions::Open(db_->db(), clock_);
    ASSERT_TRUE(opened) << opened.error();
    versions_ = std::move(*opened);
  }

  // Audit entries whose action is |action|, decoded.
  std::vector<Json> Audited(std::string_view action) {
    audit::Log log(db_->db(), nullptr, clock_);
    std::vector<Json> out;
    auto size = log.Integrate();
    EXPECT_TRUE(size) << size.error();
    auto entries = log.Entries(0, size.value_or(0));
    EXPECT_TRUE(entries) << entries.error();
    for (const audit::StoredEntry& e : entries.value_or(std::vector<audit::StoredEntry>{})) {
      Json body = Json::parse(e.body);
      if (body["action"] == action) out.push_back(std::move(body));
    }
    return out;
  }

  std::unique_ptr<TestDb> db_;
  FakeClock clock_{kStart};
  std::unique_ptr<Versions> versions_;
  const Operator alice_ = Admin("alice");
  const Operator dave_ = Admin("dave");
  const Operator auditor_{.name = "audrey", .credential = "", .grants = {{"auditor", {}}}};
};

TEST_P(VersionsTest, TheFirstStartInstallsTheBuiltInPolicyOnce) {
  const Active first = versions_->Current();
  EXPECT_EQ(first.number, 1);
  EXPECT_EQ(first.activated_by, "system");
  auto builtin = Policy::Parse(Versions::DefaultDocument());
  ASSERT_TRUE(builtin) << builtin.error();
  EXPECT_EQ(first.policy->Hash(), (*builtin)->Hash());
  EXPECT_EQ(versions_->CurrentHash(), (*builtin)->Hash());

  auto again = Versions::Open(db_->db(), clock_);
  ASSERT_TRUE(again) << again.error();
  EXPECT_EQ((*again)->Current().number, 1);
  auto listed = versions_->List();
  ASSERT_TRUE(listed) << listed.error();
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ(listed->at(0).hash, first.policy->Hash());
  const std::vector<Json> installed = Audited("policy.activate");
  ASSERT_EQ(installed.size(), 1u);
  EXPECT_EQ(installed[0]["actor"], "system");
  EXPECT_EQ(installed[0]["policy_version"], first.policy->Hash());
}

TEST_P(VersionsTest, AChangeWaitsForASecondAdministrator) {
  const std::string before = versions_->CurrentHash();
  auto proposed = versions_->Propose(alice_, WithRegionalRole(), 1, "regional on-call");
  ASSERT_TRUE(proposed) << proposed.error();
  EXPECT_EQ(proposed->state, RequestState::kPending);
  EXPECT_EQ(proposed->approvals_required, 1);
  EXPECT_EQ(proposed->base_hash, before);
  EXPECT_EQ(proposed->expires_at, kStart + 24h);
  EXPECT_THAT(proposed->diff, ::testing::Contains(HasSubstr("role eu-ops")));
  EXPECT_EQ(versions_->CurrentHash(), before) << "nothing changes before the approval";

  // The requester, an auditor, and an admin scoped to one region may not approve; each refusal
  // is audited with the explanation.
  EXPECT_THAT(versions_->Approve(alice_, proposed->id, "mine"),
              HasCode(ErrorCode::kPermissionDenied));
  EXPECT_THAT(versions_->Approve(auditor_, proposed->id, "looks fine"),
              HasCode(ErrorCode::kPermissionDenied));
  const Operator regional_admin{
      .name = "carol",
      .credential = "",
      .grants = {{"admin", Scope{.tenants = {},
                                 .regions = std::vector<std::string>{"eu"},
                                 .models = {},
                                 .labels = {}}}}};
  EXPECT_THAT(versions_->Approve(regional_admin, proposed->id, "ok"),
              HasCode(ErrorCode::kPermissionDenied));
  const std::vector<Json> denied = Audited("access.denied");
  ASSERT_EQ(denied.size(), 3u);
  EXPECT_EQ(denied[0]["actor"], "operator:alice");
  EXPECT_THAT(denied[0]["reason"].get<std::string>(), HasSubstr("own proposal"));
  EXPECT_EQ(denied[0]["policy_version"], before);
  EXPECT_EQ(denied[1]["actor"], "operator:audrey");
  EXPECT_THAT(denied[1]["reason"].get<std::string>(), HasSubstr("policy.approve"));
  EXPECT_EQ(versions_->CurrentHash(), before);

  auto approved = versions_->Approve(dave_, proposed->id, "reviewed");
  ASSERT_TRUE(approved) << approved.error();
  EXPECT_EQ(approved->state, RequestState::kApplied);
  EXPECT_EQ(approved->decided_by, "operator:dave");
  EXPECT_EQ(versions_->Current().number, 2);
  EXPECT_EQ(versions_->CurrentHash(), proposed->target_hash);
  EXPECT_NE(versions_->Current().policy->FindRole("eu-ops"), nullptr);

  auto stored = versions_->GetProposal(proposed->id);
  ASSERT_TRUE(stored) << stored.error();
  EXPECT_EQ(stored->state, RequestState::kApplied);
  ASSERT_EQ(stored->approvals.size(), 1u);
  EXPECT_EQ(stored->approvals[0].approver, "operator:dave");
  EXPECT_EQ(stored->diff, proposed->diff);

  const std::vector<Json> activated = Audited("policy.activate");
  ASSERT_EQ(activated.size(), 2u);
  EXPECT_EQ(activated[1]["actor"], "operator:dave");
  EXPECT_EQ(activated[1]["policy_version"], before) << "decided under the version it replaces";
  EXPECT_EQ(activated[1]["after"]["hash"], proposed->target_hash);
  EXPECT_EQ(activated[1]["evidence_digest"], proposed->digest);
  ASSERT_EQ(Audited("policy.propose").size(), 1u);
  ASSERT_EQ(Audited("policy.approve").size(), 1u);

  // A settled proposal takes no more decisions.
  EXPECT_THAT(versions_->Approve(Admin("erin"), proposed->id, "late"),
              HasCode(ErrorCode::kConflict));
  EXPECT_THAT(versions_->Reject(dave_, proposed->id, "late"), HasCode(ErrorCode::kConflict));
}

TEST_P(VersionsTest, AnApprovalRecordsHowItArrivedAndItsSignatureInTheAuditEntry) {
  auto first = versions_->Propose(alice_, WithRegionalRole(2), 1, "two approvals from now on");
  ASSERT_TRUE(first) << first.error();
  // The signature is verified by the API before it reaches Versions; here it is carried as is.
  const std::string jws = "header.payload.signature";
  auto signed_approval = versions_->Approve(dave_, first->id, "signed", {.signature = jws});
  ASSERT_TRUE(signed_approval) << signed_approval.error();
  EXPECT_EQ(signed_approval->state, RequestState::kApplied);
  auto rollback = versions_->Propose(alice_, Versions::DefaultDocument(), 2, "back");
  ASSERT_TRUE(rollback) << rollback.error();
  ASSERT_TRUE(versions_->Approve(dave_, rollback->id, "through the console"));

  auto stored = versions_->GetProposal(first->id);
  ASSERT_TRUE(stored) << stored.error();
  ASSERT_EQ(stored->approvals.size(), 1u);
  EXPECT_EQ(stored->approvals[0].via, "signed");
  EXPECT_EQ(stored->approvals[0].signature, jws);
  EXPECT_EQ(ProposalView(*stored)["approvals"][0]["signature"], jws);
  auto pending = versions_->GetProposal(rollback->id);
  ASSERT_TRUE(pending) << pending.error();
  ASSERT_EQ(pending->approvals.size(), 1u);
  EXPECT_EQ(pending->approvals[0].via, "mtls");
  EXPECT_EQ(pending->approvals[0].signature, "");
  EXPECT_FALSE(ProposalView(*pending)["approvals"][0].contains("signature"));

  const std::vector<Json> audited = Audited("policy.approve");
  ASSERT_EQ(audited.size(), 2u);
  EXPECT_EQ(audited[0]["after"]["approval"], (Json{{"via", "signed"}, {"signature", jws}}));
  EXPECT_EQ(audited[0]["evidence_digest"], stored->digest);
  EXPECT_EQ(audited[1]["after"]["approval"], (Json{{"via", "mtls"}, {"signature", ""}}));
}

TEST_P(VersionsTest, AProposalAgainstASupersededVersionIsRefused) {
  auto first = versions_->Propose(alice_, WithRegionalRole(), 1, "regional on-call");
  ASSERT_TRUE(first) << first.error();
  auto second = versions_->Propose(dave_, WithRegionalRole(2), 1, "two approvals");
  ASSERT_TRUE(second) << second.error();
  ASSERT_TRUE(versions_->Approve(dave_, first->id, "ok"));
  ASSERT_EQ(versions_->Current().number, 2);

  auto stale = versions_->Approve(alice_, second->id, "ok");
  ASSERT_THAT(stale, HasCode(ErrorCode::kConflict));
  EXPECT_THAT(stale.error().message(), HasSubstr("version 1"));
  EXPECT_EQ(versions_->GetProposal(second->id)->state, RequestState::kSuperseded);
  EXPECT_EQ(versions_->Current().number, 2);
  EXPECT_EQ(Audited("policy.close").size(), 1u);

  // A new proposal must name the active version as its base.
  EXPECT_THAT(versions_->Propose(alice_, WithRegionalRole(2), 1, "again"),
              HasCode(ErrorCode::kConflict));
}

TEST_P(VersionsTest, ExpiredRejectedAndWithdrawnProposalsNeverApply) {
  auto expiring = versions_->Propose(alice_, WithRegionalRole(), 1, "slow");
  ASSERT_TRUE(expiring) << expiring.error();
  clock_.Advance(24h);
  EXPECT_THAT(versions_->Approve(dave_, expiring->id, "too late"), HasCode(ErrorCode::kConflict));
  EXPECT_EQ(versions_->GetProposal(expiring->id)->state, RequestState::kExpired);

  auto rejected = versions_->Propose(alice_, WithRegionalRole(), 1, "again");
  ASSERT_TRUE(rejected) << rejected.error();
  EXPECT_EQ(rejected->target_number, expiring->target_number) << "a version is stored once";
  EXPECT_THAT(versions_->Reject(auditor_, rejected->id, "no"),
              HasCode(ErrorCode::kPermissionDenied));
  auto no = versions_->Reject(dave_, rejected->id, "not this quarter");
  ASSERT_TRUE(no) << no.error();
  EXPECT_EQ(no->state, RequestState::kRejected);

  auto withdrawn = versions_->Propose(alice_, WithRegionalRole(), 1, "third time");
  ASSERT_TRUE(withdrawn) << withdrawn.error();
  EXPECT_THAT(versions_->Withdraw(dave_, withdrawn->id, "not yours"),
              HasCode(ErrorCode::kPermissionDenied));
  auto gone = versions_->Withdraw(alice_, withdrawn->id, "changed my mind");
  ASSERT_TRUE(gone) << gone.error();
  EXPECT_EQ(gone->state, RequestState::kWithdrawn);
  EXPECT_THAT(versions_->Approve(dave_, withdrawn->id, "ok"), HasCode(ErrorCode::kConflict));

  EXPECT_EQ(versions_->Current().number, 1);
  auto pending = versions_->Proposals(/*pending_only=*/true);
  ASSERT_TRUE(pending) << pending.error();
  EXPECT_TRUE(pending->empty());
  auto all = versions_->Proposals(/*pending_only=*/false);
  ASSERT_TRUE(all) << all.error();
  ASSERT_EQ(all->size(), 3u);
  EXPECT_EQ(all->at(0).id, withdrawn->id) << "newest first";
}

TEST_P(VersionsTest, ARollbackIsAnApprovedProposalOfAnEarlierVersion) {
  auto change = versions_->Propose(alice_, WithRegionalRole(), 1, "regional on-call");
  ASSERT_TRUE(change) << change.error();
  ASSERT_TRUE(versions_->Approve(dave_, change->id, "ok"));
  auto v1 = versions_->Version(1);
  ASSERT_TRUE(v1) << v1.error();

  auto rollback = versions_->Propose(dave_, (*v1)->Canonical(), 2, "roll back");
  ASSERT_TRUE(rollback) << rollback.error();
  EXPECT_EQ(rollback->target_number, 1);
  EXPECT_THAT(rollback->diff, ::testing::Contains(HasSubstr("eu-ops")));
  EXPECT_EQ(versions_->Current().number, 2);
  auto done = versions_->Approve(alice_, rollback->id, "agreed");
  ASSERT_TRUE(done) << done.error();
  EXPECT_EQ(versions_->Current().number, 1);
  EXPECT_EQ(versions_->CurrentHash(), (*v1)->Hash());
  EXPECT_EQ(versions_->List()->size(), 2u) << "versions are kept, not copied";
}

TEST_P(VersionsTest, RefusedProposalsChangeNothing) {
  // Not allowed to propose: refused and audited.
  EXPECT_THAT(versions_->Propose(auditor_, WithRegionalRole(), 1, "sneaky"),
              HasCode(ErrorCode::kPermissionDenied));
  ASSERT_EQ(Audited("access.denied").size(), 1u);
  // Malformed, unknown keys, the active version itself, a base that is not active.
  EXPECT_THAT(versions_->Propose(alice_, "{", 1, ""), HasCode(ErrorCode::kInvalidArgument));
  Json unknown = Json::parse(Versions::DefaultDocument());
  unknown["roles"]["admin"]["superuser"] = true;
  EXPECT_THAT(versions_->Propose(alice_, unknown.dump(), 1, ""),
              HasCode(ErrorCode::kInvalidArgument));
  EXPECT_THAT(versions_->Propose(alice_, Versions::DefaultDocument(), 1, ""),
              HasCode(ErrorCode::kInvalidArgument));
  EXPECT_THAT(versions_->Propose(alice_, WithRegionalRole(), 7, ""), HasCode(ErrorCode::kConflict));
  EXPECT_THAT(versions_->Approve(dave_, 42, ""), HasCode(ErrorCode::kNotFound));
  EXPECT_EQ(versions_->List()->size(), 1u);
  EXPECT_TRUE(versions_->Proposals(false)->empty());
  EXPECT_TRUE(Audited("policy.version").empty());
}

TEST_P(VersionsTest, APolicyThatAsksNoApprovalAppliesAtOnceAndIsAuditedTheSameWay) {
  Json none = Json::parse(WithRegionalRole());
  none["approvals"] = Json::array();
  auto first = versions_->Propose(alice_, none.dump(), 1, "no approvals");
  ASSERT_TRUE(first) << first.error();
  ASSERT_TRUE(versions_->Approve(dave_, first->id, "ok"));
  ASSERT_EQ(versions_->Current().number, 2);
  // Under version 2 a change needs nobody else: it applies as it is proposed.
  none["roles"].erase("eu-ops");
  auto at_once = versions_->Propose(alice_, none.dump(), 2, "drop the regional role");
  ASSERT_TRUE(at_once) << at_once.error();
  EXPECT_EQ(at_once->state, RequestState::kApplied);
  EXPECT_EQ(versions_->Current().number, 3);
  const std::vector<Json> activated = Audited("policy.activate");
  ASSERT_EQ(activated.size(), 3u) << "the built-in one, the approved one, the one applied at once";
  EXPECT_EQ(activated[2]["actor"], "operator:alice");
  EXPECT_EQ(activated[2]["after"]["hash"], at_once->target_hash);
  EXPECT_EQ(activated[2]["policy_version"], first->target_hash);
}

// An approval rule for an action other than a policy change cannot be waited for yet: the action
// is refused, audited, rather than taken without the approvals the version asks.
TEST_P(VersionsTest, AnActionThatNeedsApprovalsIsRefusedUntilItCanWaitForThem) {
  const Operator eu{.name = "erin", .credential = "", .grants = {{"eu-ops", {}}}};
  const Resource in_eu{.tenant = "acme", .region = "eu", .model = "m", .labels = {}};
  Json doc = Json::parse(WithRegionalRole());
  doc["approvals"].push_back({{"actions", {"device.suspend"}},
                              {"approvals", 1},
                              {"from_roles", {"admin"}}});
  auto proposed = versions_->Propose(alice_, doc.dump(), 1, "suspensions need a second person");
  ASSERT_TRUE(proposed) << proposed.error();
  ASSERT_TRUE(versions_->Approve(dave_, proposed->id, "ok"));
  auto refused = versions_->Authorize(eu, "device.suspend", in_eu, "D-1");
  EXPECT_THAT(refused, test::HasCode(ErrorCode::kPermissionDenied));
  EXPECT_THAT(refused.error().message(), ::testing::HasSubstr("asks 1 approval(s) from admin"));
  EXPECT_TRUE(versions_->Authorize(eu, "device.resume", in_eu, "D-1")) << "no rule: at once";
  const std::vector<Json> denied = Audited("access.denied");
  ASSERT_EQ(denied.size(), 1u);
  EXPECT_EQ(denied[0]["subject"], "D-1");
  EXPECT_EQ(ApprovalsNotOffered(*versions_->Current().policy, "policy.propose"), "");
}

TEST_P(VersionsTest, AnotherProcessSeesTheActivationOnRefresh) {
  auto other = Versions::Open(db_->db(), clock_);
  ASSERT_TRUE(other) << other.error();
  auto change = versions_->Propose(alice_, WithRegionalRole(), 1, "regional on-call");
  ASSERT_TRUE(change) << change.error();
  ASSERT_TRUE(versions_->Approve(dave_, change->id, "ok"));
  EXPECT_EQ((*other)->Current().number, 1);
  ASSERT_THAT((*other)->Refresh(), IsOk());
  EXPECT_EQ((*other)->Current().number, 2);
  EXPECT_EQ((*other)->CurrentHash(), change->target_hash);
}

TEST_P(VersionsTest, ConcurrentApprovalsCountEachOnce) {
  // Two approvals needed: the policy is changed first (one approval), then a proposal under it
  // gets three concurrent approvals; exactly two count and it applies once.
  auto two = versions_->Propose(alice_, WithRegionalRole(2), 1, "two approvals");
  ASSERT_TRUE(two) << two.error();
  ASSERT_TRUE(versions_->Approve(dave_, two->id, "ok"));
  auto proposal = versions_->Propose(alice_, WithRegionalRole(3), 2, "three approvals");
  ASSERT_TRUE(proposal) << proposal.error();
  ASSERT_EQ(proposal->approvals_required, 2);

  std::vector<Result<Proposal>> results(3, MakeError(ErrorCode::kInternal, "not run"));
  std::vector<std::thread> threads;
  threads.reserve(3);
  for (int i = 0; i < 3; ++i) {
    threads.emplace_back([&, i] {
      results[static_cast<std::size_t>(i)] =
          versions_->Approve(Admin(fmt::format("approver-{}", i)), proposal->id, "ok");
    });
  }
  for (std::thread& t : threads) t.join();
  int applied = 0;
  int counted = 0;
  for (const Result<Proposal>& r : results) {
    if (r) {
      ++counted;
      if (r->state == RequestState::kApplied) ++applied;
    } else {
      EXPECT_EQ(r.error().code(), ErrorCode::kConflict) << r.error();
    }
  }
  EXPECT_EQ(counted, 2);
  EXPECT_EQ(applied, 1);
  EXPECT_EQ(versions_->Current().number, 3);
  EXPECT_EQ(versions_->GetProposal(proposal->id)->approvals.size(), 2u);
}

INSTANTIATE_TEST_SUITE_P(Backends, VersionsTest,
                         ::testing::Values(Backend::kSqlite, Backend::kPostgres),
                         [](const auto& param_info) {
                           return test::BackendName(param_info.param);
                         });

}  // namespace
}  // namespace fleetid::policy
