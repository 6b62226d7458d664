// The identifier character set: what the registry stores and the CA writes into certificate
// subjects (serials, models, tenants, regions). One validator for both (docs/registry.md,
// "Identifiers").
#ifndef FLEETID_COMMON_IDENTIFIER_H_
#define FLEETID_COMMON_IDENTIFIER_H_

#include <cstddef>
#include <string_view>

#include "common/error.h"

namespace fleetid {

// An identifier is 1 to kMaxIdentifierChars characters of A-Z a-z 0-9 . _ - beginning with a
// letter or digit; nothing else (no NUL, line breaks, ',' '=' '+' or spaces, which would change a
// distinguished name or a log line).
inline constexpr std::size_t kMaxIdentifierChars = 64;
bool IsIdentifier(std::string_view value);
// CheckIdentifier is kInvalidArgument naming |what| unless IsIdentifier(|value|).
[[nodiscard]] Result<void> CheckIdentifier(std::string_view what, std::string_view value);

}  // namespace fleetid

#endif  // FLEETID_COMMON_IDENTIFIER_H_
