#include "pki/internal/change_feed.h"

#include <algorithm>

#include "pki/internal/cert_store.h"

namespace fleetid::pki::internal {

Result<void> ChangeFeed::Start() {
  FLEETID_TRY(tx, db_.Begin(store::TxMode::kAutocommit));
  FLEETID_TRY(last, LastChangeIn(*tx));
  cursor_.store(last);
  return {};
}

void ChangeFeed::Sync() {
  const auto now = std::chrono::steady_clock::now().time_since_epoch().count();
  auto last = last_sync_.load(std::memory_order_relaxed);
  if (now - last <
          std::chrono::duration_cast<std::chrono::steady_clock::duration>(kPollInterval).count() ||
      !last_sync_.compare_exchange_strong(last, now)) {
    return;
  }
  auto tx = db_.Begin(store::TxMode::kAutocommit);
  if (!tx) return;
  auto rows = (*tx)->Query(
      "SELECT c.id, c.serial, r.issuer, r.partition_id FROM certificate_changes c "
      "JOIN certificates r ON r.serial = c.serial WHERE c.id > ? ORDER BY c.id",
      {cursor_.load()});
  if (!rows) return;
  for (const store::Row& r : *rows) {
    ocsp_.Forget(r.Text(2), r.Text(1));
    crls_.MarkDirty(r.Text(2), r.Int(3));
    cursor_.store(std::max(cursor_.load(), r.Int(0)));
  }
}

}  // namespace fleetid::pki::internal
