// fleetid::Error and Result<T>: the one error vocabulary at every component boundary.
#ifndef FLEETID_COMMON_ERROR_H_
#define FLEETID_COMMON_ERROR_H_

#include <expected>

#include <fmt/core.h>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>

namespace fleetid {

// ErrorCode says what the *caller* should do, not where the failure happened. Each code maps onto
// exactly one HTTP status (HttpStatus below); EST and OCSP map them onto their own error forms.
enum class ErrorCode {
  kInvalidArgument,   // The request is malformed or names something unsupported: fix the request.
  kNotFound,          // The named thing does not exist: check the name.
  kUnauthenticated,   // Credentials are missing or wrong (bad PIN, no client certificate).
  kPermissionDenied,  // Authenticated, but not allowed to do this (policy, key usage, locked PIN).
  kConflict,          // The current state forbids the change: re-read the state, then decide.
  kUnavailable,       // A dependency is down or missing (HSM module, database): retry or fix ops.
  kInternal,          // A bug or broken invariant in fleetid: report it.
};

// ErrorCodeName returns a stable snake_case name for |code|, used in JSON bodies and logs.
std::string_view ErrorCodeName(ErrorCode code);

// HttpStatus returns the HTTP status that answers an error with |code|.
int HttpStatus(ErrorCode code);

// Error is a code plus a message that is safe to show to the caller: it names the problem and never
// contains a secret (PIN, key material) or unescaped attacker-controlled bytes.
class Error {
 public:
  Error(ErrorCode code, std::string message) : code_(code), message_(std::move(message)) {}

  ErrorCode code() const { return code_; }
  const std::string& message() const { return message_; }

  // Wrap returns a copy whose message is prefixed with |context| ("loading key 'ca': ...").
  Error Wrap(std::string_view context) const {
    return Error(code_, std::string(context) + ": " + message_);
  }

  std::string ToString() const { return std::string(ErrorCodeName(code_)) + ": " + message_; }

 private:
  ErrorCode code_;
  std::string message_;
};

std::ostream& operator<<(std::ostream& os, const Error& error);

// Result<T> is the return type of every fallible operation that crosses a component boundary.
// Functions returning it are [[nodiscard]].
template <typename T>
using Result = std::expected<T, Error>;

// MakeError builds the unexpected side of a Result with a formatted message.
template <typename... Args>
[[nodiscard]] std::unexpected<Error> MakeError(ErrorCode code, fmt::format_string<Args...> format,
                                               Args&&... args) {
  return std::unexpected(Error(code, fmt::format(format, std::forward<Args>(args)...)));
}

[[nodiscard]] inline std::unexpected<Error> MakeError(Error error) {
  return std::unexpected(std::move(error));
}

}  // namespace fleetid

// FLEETID_TRY(var, expr) evaluates |expr| (a Result), returns its error from the enclosing function
// if it failed, and otherwise moves the value into a new variable |var|.
// NOLINTBEGIN(bugprone-macro-parentheses): |var| names a new variable and cannot be parenthesised.
#define FLEETID_TRY(var, expr)                                                   \
  auto var##_result_ = (expr);                                                   \
  if (!var##_result_) return std::unexpected(std::move(var##_result_).error()); \
  auto var = std::move(*var##_result_)
// NOLINTEND(bugprone-macro-parentheses)

// FLEETID_CHECK_OK(expr) returns the error of a Result<void> (or any Result) from the enclosing
// function if it failed.
#define FLEETID_CHECK_OK(expr)                                                  \
  do {                                                                          \
    if (auto fleetid_check_ = (expr); !fleetid_check_)                          \
      return std::unexpected(std::move(fleetid_check_).error());                \
  } while (false)

#endif  // FLEETID_COMMON_ERROR_H_
