// Internal: a bounded pool of connections shared by the backends.
#ifndef FLEETID_STORE_POOL_H_
#define FLEETID_STORE_POOL_H_

#include <condition_variable>
#include <memory>
#include <vector>

#include "common/mutex.h"

namespace fleetid::store::internal {

// Pool owns up to |capacity| connections of type C. Take waits while all are lent; a connection
// given back with Put(nullptr) (broken) frees its slot so a fresh one can be made. Thread-safe.
template <typename C>
class Pool {
 public:
  explicit Pool(int capacity) : capacity_(capacity) {}

  // Take returns an idle connection, or nullptr with a slot reserved for a new one.
  std::unique_ptr<C> Take() {
    MutexLock lock(mu_);
    // The predicate runs with the mutex held (condition_variable_any retakes it first).
    cv_.wait(lock, [&]() FLEETID_REQUIRES(mu_) { return !idle_.empty() || open_ < capacity_; });
    if (!idle_.empty()) {
      std::unique_ptr<C> c = std::move(idle_.back());
      idle_.pop_back();
      return c;
    }
    ++open_;
    return nullptr;
  }

  void Put(std::unique_ptr<C> c) {
    {
      MutexLock lock(mu_);
      if (c) {
        idle_.push_back(std::move(c));
      } else {
        --open_;
      }
    }
    cv_.notify_one();
  }

 private:
  Mutex mu_;
  std::condition_variable_any cv_;
  std::vector<std::unique_ptr<C>> idle_ FLEETID_GUARDED_BY(mu_);
  int open_ FLEETID_GUARDED_BY(mu_) = 0;
  const int capacity_;
};

// RewritePlaceholders turns `?` placeholders into `$1, $2, ...` (PostgreSQL), leaving `?` inside
// quoted literals and identifiers alone.
std::string RewritePlaceholders(std::string_view sql);

}  // namespace fleetid::store::internal

#endif  // FLEETID_STORE_POOL_H_
