// Iso8601: a time as JSON answers and command output show it.
#ifndef FLEETID_COMMON_TIME_TEXT_H_
#define FLEETID_COMMON_TIME_TEXT_H_

#include <string>

#include "common/clock.h"

namespace fleetid {

// Iso8601 is |t| as "2030-03-01T12:00:00Z" (UTC, whole seconds).
std::string Iso8601(TimePoint t);

}  // namespace fleetid

#endif  // FLEETID_COMMON_TIME_TEXT_H_
