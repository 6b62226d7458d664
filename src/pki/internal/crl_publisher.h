// The CRL publisher (RFC 5280 §5): full and delta CRLs per issuing CA and partition, the root's
// one CRL of revoked issuing CAs, and the cache that rebuilds each when due.
#ifndef FLEETID_PKI_INTERNAL_CRL_PUBLISHER_H_
#define FLEETID_PKI_INTERNAL_CRL_PUBLISHER_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <tuple>

#include "common/clock.h"
#include "common/mutex.h"
#include "common/error.h"
#include "pki/internal/guard.h"
#include "pki/internal/hierarchy.h"
#include "pki/pki.h"
#include "store/store.h"

namespace fleetid::pki::internal {

// CrlPublisher builds, numbers (crl_numbers) and caches CRLs. Thread-safe: one mutex is held
// while a CRL is built, so concurrent fetches build it once.
class CrlPublisher {
 public:
  CrlPublisher(Hierarchy& hierarchy, store::Database& db, Clock& clock,
               const AuthorityOptions& options);

  // Get is Authority::Crl without the change-feed poll.
  [[nodiscard]] Result<CrlAnswer> Get(std::string_view issuer, std::int64_t partition, bool delta);
  // Refresh drops the CRLs of partitions no longer live and rebuilds every cached CRL that is
  // due (see Authority::Crl).
  void Refresh();
  // MarkDirty has the CRLs of |issuer|'s |partition| rebuilt at their next fetch (a full CRL
  // after crl_min_interval).
  void MarkDirty(const std::string& issuer, std::int64_t partition);
  std::size_t Size() const;

 private:
  struct Entry {
    CrlAnswer answer;
    std::int64_t cursor = 0;  // certificate_changes read up to here when it was built
    bool dirty = false;       // a status in its scope changed since it was built
  };
  using Key = std::tuple<std::string, std::int64_t, bool>;  // (issuer, partition, delta)

  [[nodiscard]] Result<CrlAnswer> GetLocked(Ca& ca, std::int64_t partition, bool delta)
      FLEETID_REQUIRES(mu_);
  [[nodiscard]] Result<CrlAnswer> Build(Ca& ca, std::int64_t partition, const Entry* base,
                                        TimePoint now, std::int64_t& cursor);
  [[nodiscard]] Result<std::int64_t> NextNumber(const std::string& issuer, std::int64_t partition);
  bool IsRoot(const Ca& ca) const { return &ca == &hierarchy_.Root(); }

  Hierarchy& hierarchy_;
  store::Database& db_;
  Clock& clock_;
  const AuthorityOptions& options_;
  mutable Mutex mu_;
  std::map<Key, Entry> crls_ FLEETID_GUARDED_BY(mu_);
};

}  // namespace fleetid::pki::internal

#endif  // FLEETID_PKI_INTERNAL_CRL_PUBLISHER_H_
