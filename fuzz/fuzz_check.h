// Helpers shared by the fuzz targets.
#ifndef FLEETID_FUZZ_FUZZ_CHECK_H_
#define FLEETID_FUZZ_FUZZ_CHECK_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "common/error.h"

namespace fleetid::fuzz {

// Check stops the run (libFuzzer records the input) when an invariant of the fuzzed code breaks.
inline void Check(bool condition) {
  if (!condition) __builtin_trap();
}

// CheckRefusal checks that a parser refused hostile input as invalid input, the one answer a
// parser of untrusted bytes gives, with a message to show.
template <typename T>
void CheckRefusal(const Result<T>& result) {
  if (result) return;
  Check(result.error().code() == ErrorCode::kInvalidArgument);
  Check(!result.error().message().empty());
}

inline std::string_view Text(const std::uint8_t* data, std::size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

}  // namespace fleetid::fuzz

#endif  // FLEETID_FUZZ_FUZZ_CHECK_H_
