// operators::Idempotency on SQLite and a throwaway PostgreSQL: a key claims its request, replays
// its answer, refuses another request, waits while in flight, and expires; time is a FakeClock.
// (The operator API's use of it is tests/integration/operator_api_test.sh.)
#include "operators/idempotency.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "operators/operators.h"
#include "testing/db.h"
#include "testing/matchers.h"

namespace fleetid::operators {
namespace {

using namespace std::chrono_literals;
using test::Backend;
using test::HasCode;

class IdempotencyTest : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    db_ = std::make_unique<test::TestDb>(GetParam());
    ASSERT_TRUE(Operators::Migrate(db_->db()));
    keys_ = std::make_unique<Idempotency>(db_->db(), clock_);
  }

  std::unique_ptr<test::TestDb> db_;
  FakeClock clock_{TimePoint(std::chrono::seconds(1'800'000'000))};
  std::unique_ptr<Idempotency> keys_;
};

TEST_P(IdempotencyTest, AKeyClaimsItsRequestThenReplaysItsAnswer) {
  auto first = keys_->Begin("alice", "k-1", "POST /x body-1");
  ASSERT_TRUE(first) << first.error();
  EXPECT_FALSE(first->has_value()) << "a new request is claimed, not replayed";
  EXPECT_THAT(keys_->Begin("alice", "k-1", "POST /x body-1"), HasCode(ErrorCode::kConflict))
      << "the same request while the first is in flight";
  ASSERT_TRUE(keys_->Finish("alice", "k-1", {.status = 200, .body = R"({"state":"suspended"})"}));
  auto again = keys_->Begin("alice", "k-1", "POST /x body-1");
  ASSERT_TRUE(again) << again.error();
  ASSERT_TRUE(again->has_value());
  const StoredAnswer replayed = again->value_or(StoredAnswer{});
  EXPECT_EQ(replayed.status, 200);
  EXPECT_EQ(replayed.body, R"({"state":"suspended"})");
  EXPECT_THAT(keys_->Begin("alice", "k-1", "POST /x body-2"), HasCode(ErrorCode::kConflict))
      << "the key came with another request";
  auto bobs = keys_->Begin("bob", "k-1", "POST /x body-2");
  ASSERT_TRUE(bobs) << bobs.error();
  EXPECT_FALSE(bobs->has_value()) << "keys belong to their operator";
}

TEST_P(IdempotencyTest, AnAbandonedClaimIsTakenOverAndKeysExpire) {
  ASSERT_TRUE(keys_->Begin("alice", "k-2", "POST /x 1"));
  clock_.Advance(Idempotency::kInFlightFor + 1s);
  auto taken = keys_->Begin("alice", "k-2", "POST /x 1");
  ASSERT_TRUE(taken) << taken.error();
  EXPECT_FALSE(taken->has_value()) << "a server that died mid-request leaves the key to a retry";
  ASSERT_TRUE(keys_->Finish("alice", "k-2", {.status = 201, .body = "{}"}));
  clock_.Advance(Idempotency::kKeepFor + 1s);
  auto fresh = keys_->Begin("alice", "k-2", "POST /y other");
  ASSERT_TRUE(fresh) << fresh.error();
  EXPECT_FALSE(fresh->has_value()) << "after a day the key is free again";
}

TEST_P(IdempotencyTest, KeysAreVisibleAsciiOfBoundedLength) {
  EXPECT_TRUE(Idempotency::CheckKey("3f1c9a2e-retry_1"));
  for (const std::string& bad : {std::string(), std::string(256, 'k'), std::string("a b"),
                                 std::string("tab\there"), std::string("caf\xc3\xa9")}) {
    EXPECT_THAT(Idempotency::CheckKey(bad), HasCode(ErrorCode::kInvalidArgument)) << bad;
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, IdempotencyTest,
                         ::testing::Values(Backend::kSqlite, Backend::kPostgres),
                         [](const auto& param_info) {
                           return test::BackendName(param_info.param);
                         });

}  // namespace
}  // namespace fleetid::operators
