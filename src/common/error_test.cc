#include "common/error.h"

#include <gtest/gtest.h>

#include <set>

namespace fleetid {
namespace {

Result<int> Half(int x) {
  if (x % 2 != 0) return MakeError(ErrorCode::kInvalidArgument, "{} is odd", x);
  return x / 2;
}

Result<int> Quarter(int x) {
  FLEETID_TRY(half, Half(x));
  FLEETID_TRY(quarter, Half(half));
  return quarter;
}

TEST(ErrorTest, TryPropagatesTheFirstError) {
  EXPECT_EQ(*Quarter(8), 2);
  auto odd = Quarter(6);
  ASSERT_FALSE(odd);
  EXPECT_EQ(odd.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(odd.error().message(), "3 is odd");
}

TEST(ErrorTest, CodesMapOneToOneOntoHttpStatus) {
  const ErrorCode all[] = {ErrorCode::kInvalidArgument, ErrorCode::kNotFound,
                           ErrorCode::kUnauthenticated, ErrorCode::kPermissionDenied,
                           ErrorCode::kConflict,        ErrorCode::kUnavailable,
                           ErrorCode::kInternal};
  std::set<int> statuses;
  std::set<std::string_view> names;
  for (ErrorCode code : all) {
    statuses.insert(HttpStatus(code));
    names.insert(ErrorCodeName(code));
  }
  EXPECT_EQ(statuses.size(), std::size(all));
  EXPECT_EQ(names.size(), std::size(all));
  EXPECT_EQ(HttpStatus(ErrorCode::kConflict), 409);
  EXPECT_EQ(ErrorCodeName(ErrorCode::kPermissionDenied), "permission_denied");
}

TEST(ErrorTest, WrapKeepsTheCode) {
  Error e(ErrorCode::kNotFound, "no key 'x'");
  Error wrapped = e.Wrap("loading signer");
  EXPECT_EQ(wrapped.code(), ErrorCode::kNotFound);
  EXPECT_EQ(wrapped.message(), "loading signer: no key 'x'");
  EXPECT_EQ(wrapped.ToString(), "not_found: loading signer: no key 'x'");
}

}  // namespace
}  // namespace fleetid
