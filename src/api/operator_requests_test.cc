// The operator API's request readers that have no end-to-end test of every refusal: the device
// listing's query string and an approval's body. (The bodies of the other routes are driven by
// tests/integration/operator_api_test.sh; all of them by fuzz/api_request_fuzzer.cc.)
#include "api/operator_requests.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "testing/matchers.h"

namespace fleetid::api {
namespace {

using test::HasCode;
using ::testing::HasSubstr;

const TimePoint kNow = TimePoint(std::chrono::seconds(1'800'000'000));

TEST(DeviceQueryTest, ReadsEveryFilterPercentDecoded) {
  auto q = ParseDeviceQuery(
      "state=suspended&tenant=acme%20corp&region=eu-west&model=sensor-1&firmware=1.2&"
      "label=line%3A7&expires_within=86400&limit=50&after=12",
      kNow);
  ASSERT_TRUE(q) << q.error();
  EXPECT_EQ(q->state, registry::State::kSuspended);
  EXPECT_EQ(q->tenant, "acme corp");
  EXPECT_EQ(q->region, "eu-west");
  EXPECT_EQ(q->model, "sensor-1");
  EXPECT_EQ(q->firmware_version, "1.2");
  EXPECT_EQ(q->label_key, "line");
  EXPECT_EQ(q->label_value, "7");
  EXPECT_EQ(q->expires_before, kNow + std::chrono::hours(24));
  EXPECT_EQ(q->limit, 50);
  EXPECT_EQ(q->after, 12);
  auto none = ParseDeviceQuery("", kNow);
  ASSERT_TRUE(none) << none.error();
  EXPECT_EQ(none->limit, 100);
  EXPECT_FALSE(none->state.has_value());
}

TEST(DeviceQueryTest, RefusesWhatItDoesNotKnowOrCannotBound) {
  for (const char* bad : {"colour=red", "state=sleeping", "limit=0", "limit=1001", "limit=ten",
                          "after=-1", "tenant=a&tenant=b", "label=novalue", "label=:x",
                          "expires_within=0", "tenant=", "region"}) {
    EXPECT_THAT(ParseDeviceQuery(bad, kNow), HasCode(ErrorCode::kInvalidArgument)) << bad;
  }
  EXPECT_THAT(ParseDeviceQuery(std::string("model=") + std::string(257, 'm'), kNow),
              HasCode(ErrorCode::kInvalidArgument));
  auto unknown = ParseDeviceQuery("colour=red", kNow);
  ASSERT_FALSE(unknown);
  EXPECT_THAT(unknown.error().message(), HasSubstr("unknown query parameter 'colour'"));
}

TEST(ApprovalRequestTest, ASignatureIsOptionalAndNothingElseIsTaken) {
  auto plain = ParseApproval(nlohmann::json::object());
  ASSERT_TRUE(plain) << plain.error();
  EXPECT_TRUE(plain->signature.empty());
  auto signed_one = ParseApproval({{"reason", "ok"}, {"signature", "a.b.c"}});
  ASSERT_TRUE(signed_one) << signed_one.error();
  EXPECT_EQ(signed_one->signature, "a.b.c");
  EXPECT_EQ(signed_one->reason, "ok");
  EXPECT_THAT(ParseApproval({{"signature", 7}}), HasCode(ErrorCode::kInvalidArgument));
  EXPECT_THAT(ParseApproval({{"approver", "me"}}), HasCode(ErrorCode::kInvalidArgument));
  EXPECT_THAT(ParseApproval({{"signature", std::string(16385, 'x')}}),
              HasCode(ErrorCode::kInvalidArgument));
}

}  // namespace
}  // namespace fleetid::api
