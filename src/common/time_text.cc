#include "common/time_text.h"

#include <fmt/chrono.h>
#include <fmt/format.h>

namespace fleetid {

std::string Iso8601(TimePoint t) {
  return fmt::format("{:%Y-%m-%dT%H:%M:%SZ}", std::chrono::floor<std::chrono::seconds>(t));
}

}  // namespace fleetid
