// PolicyVersionFn names the policy version decisions are being taken under: the active version's
// hash (policy::Versions::CurrentHash). The components that write audit records (registry, CA,
// enrollment) are given one, so every record carries the version it was decided under
// (docs/policy.md § Versions). Unset, as in tests of a component alone, it names none ("").
#ifndef FLEETID_COMMON_POLICY_VERSION_H_
#define FLEETID_COMMON_POLICY_VERSION_H_

#include <functional>
#include <string>

namespace fleetid {

using PolicyVersionFn = std::function<std::string()>;

inline std::string CurrentPolicyVersion(const PolicyVersionFn& fn) {
  return fn ? fn() : std::string();
}

}  // namespace fleetid

#endif  // FLEETID_COMMON_POLICY_VERSION_H_
