// testing/matchers.h: gMock matchers for Result<T> and Result<void> (common/error.h).
//
//   EXPECT_THAT(registry.Find(id), IsOk());
//   EXPECT_THAT(authority.Issue(csr, ...), HasCode(ErrorCode::kPermissionDenied));
//
// A failed match prints the error's code and message, so a test never needs `<< r.error()`.
#ifndef FLEETID_TESTING_MATCHERS_H_
#define FLEETID_TESTING_MATCHERS_H_

#include <gmock/gmock.h>

#include <ostream>

#include "common/error.h"

namespace fleetid::test {

// IsOk matches a Result that holds a value; on a mismatch it explains with the error.
MATCHER(IsOk, negation ? "is an error" : "is ok") {
  if (arg.has_value()) return true;
  *result_listener << "which is " << arg.error();
  return false;
}

// HasCode matches a Result that holds an error with |code|; on a mismatch it explains with the
// error it holds, or says that it holds a value.
MATCHER_P(HasCode, code,
          std::string(negation ? "is not an error with code " : "is an error with code ") +
              std::string(ErrorCodeName(code))) {
  if (arg.has_value()) {
    *result_listener << "which is ok";
    return false;
  }
  *result_listener << "which is " << arg.error();
  return arg.error().code() == code;
}

}  // namespace fleetid::test

#endif  // FLEETID_TESTING_MATCHERS_H_
