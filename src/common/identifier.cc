#include "common/identifier.h"

#include <algorithm>

namespace fleetid {

bool IsIdentifier(std::string_view value) {
  const auto alnum = [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
  };
  return !value.empty() && value.size() <= kMaxIdentifierChars && alnum(value.front()) &&
         std::ranges::all_of(value,
                             [&](char c) { return alnum(c) || c == '.' || c == '_' || c == '-'; });
}

Result<void> CheckIdentifier(std::string_view what, std::string_view value) {
  if (IsIdentifier(value)) return {};
  return MakeError(ErrorCode::kInvalidArgument,
                   "{} must be 1 to {} characters of A-Z a-z 0-9 . _ -, beginning with a letter or "
                   "digit",
                   what, kMaxIdentifierChars);
}

}  // namespace fleetid
