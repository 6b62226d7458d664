// The change feed: status changes other processes (the operator tool, other authority nodes)
// committed reach this process's caches through certificate_changes.
#ifndef FLEETID_PKI_INTERNAL_CHANGE_FEED_H_
#define FLEETID_PKI_INTERNAL_CHANGE_FEED_H_

#include <atomic>
#include <chrono>
#include <cstdint>

#include "common/error.h"
#include "pki/internal/crl_publisher.h"
#include "pki/internal/guard.h"
#include "pki/internal/ocsp_responder.h"
#include "store/store.h"

namespace fleetid::pki::internal {

// ChangeFeed follows certificate_changes from a cursor. Thread-safe: one caller at a time polls,
// the others return at once.
class ChangeFeed {
 public:
  static constexpr std::chrono::milliseconds kPollInterval{50};

  ChangeFeed(store::Database& db, OcspResponder& ocsp, CrlPublisher& crls)
      : db_(db), ocsp_(ocsp), crls_(crls) {}

  // Start sets the cursor to the newest change: what was changed before is already what the
  // database says.
  [[nodiscard]] Result<void> Start();
  // Sync drops the cached OCSP answers and marks the CRLs of every change past the cursor; it
  // reads the database at most every kPollInterval.
  void Sync();

 private:
  store::Database& db_;
  OcspResponder& ocsp_;
  CrlPublisher& crls_;
  std::atomic<std::int64_t> cursor_{0};
  std::atomic<std::int64_t> last_sync_{0};  // steady_clock ticks of the last poll
};

}  // namespace fleetid::pki::internal

#endif  // FLEETID_PKI_INTERNAL_CHANGE_FEED_H_
