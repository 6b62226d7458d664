// registry_crash_driver: a child process for registry_crash_test. It works on a database until it
// is killed (SIGKILL), printing a line after every commit so the test can kill it mid-work.
//   registry_crash_driver URL import N     one batch of N devices (one transaction)
//   registry_crash_driver URL transitions  suspend/resume devices SN-0..SN-99 forever
#include <charconv>
#include <iostream>
#include <string>

#include "registry/registry.h"

namespace fleetid::registry {
namespace {

int Run(int argc, char** argv) {
  if (argc < 3) return 2;
  auto db = store::Database::Open(argv[1], 2);
  if (!db || !Registry::Migrate(**db)) return 3;
  struct NoPki : CredentialEffects {
    Result<void> Apply(store::Transaction&, const Device&, CredentialAction,
                       const TransitionRequest&) override {
      return {};
    }
  } effects;
  Registry registry(**db, SystemClock::Instance(), &effects, RegistryOptions{});
  const Actor admin{kOperator, "crash-test", {"admin"}};
  const std::string mode = argv[2];
  if (mode == "import" && argc == 4) {
    int n = 0;
    const std::string_view count(argv[3]);
    if (std::from_chars(count.data(), count.data() + count.size(), n).ec != std::errc()) return 2;
    std::vector<ManufacturingRecord> records(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) {
      ManufacturingRecord& r = records[static_cast<std::size_t>(i)];
      r.serial = fmt::format("BIG-{:07d}", i);
      r.model = "m";
      r.manufacturer = "acme";
      r.idevid_fingerprint = fmt::format("{:064x}", 1000000 + i);
    }
    std::cout << "importing" << std::endl;
    auto report = registry.Import("big-batch", records, admin);
    std::cout << "imported " << (report ? "ok" : report.error().ToString()) << std::endl;
    return report ? 0 : 1;
  }
  if (mode == "transitions") {
    for (long round = 0;; ++round) {
      for (int i = 0; i < 100; ++i) {
        const std::string serial = fmt::format("SN-{}", i);
        auto d = registry.Get(serial);
        if (!d) return 4;
        TransitionRequest req;
        req.serial = serial;
        req.event = d->state == State::kActive ? Event::kSuspend : Event::kResume;
        req.expected_version = d->version;
        req.actor = admin;
        req.reason = "crash test";
        if (!registry.Transition(req)) return 5;
        std::cout << "committed " << round << " " << i << std::endl;
      }
    }
  }
  return 2;
}

}  // namespace
}  // namespace fleetid::registry

int main(int argc, char** argv) { return fleetid::registry::Run(argc, argv); }
