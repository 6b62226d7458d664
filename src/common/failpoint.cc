#include "common/failpoint.h"

#include <csignal>
#include <cstdlib>
#include <string>

namespace fleetid {

void Failpoint(std::string_view name) {
  static const std::string armed = [] {
    const char* v = std::getenv("FLEETID_FAILPOINTS");
    return v == nullptr ? std::string() : "," + std::string(v) + ",";
  }();
  if (armed.empty()) return;
  if (armed.find("," + std::string(name) + ",") != std::string::npos) static_cast<void>(std::raise(SIGKILL));
}

}  // namespace fleetid
