// Failpoints for crash tests: a named step where a test can have the process killed, to prove
// that a crash there leaves consistent state. Inert unless FLEETID_FAILPOINTS is set.
#ifndef FLEETID_COMMON_FAILPOINT_H_
#define FLEETID_COMMON_FAILPOINT_H_

#include <string_view>

namespace fleetid {

// Failpoint SIGKILLs the process if |name| is one of the comma-separated names in the
// environment variable FLEETID_FAILPOINTS (read once). Nothing runs after it: no destructors,
// no flushes, exactly as a power cut or an OOM kill.
void Failpoint(std::string_view name);

}  // namespace fleetid

#endif  // FLEETID_COMMON_FAILPOINT_H_
