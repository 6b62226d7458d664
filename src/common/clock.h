// Clock: the injected source of wall-clock time. Components take a Clock& in their constructor so
// tests can step past notBefore/notAfter or nonce expiry without sleeping.
#ifndef FLEETID_COMMON_CLOCK_H_
#define FLEETID_COMMON_CLOCK_H_

#include <atomic>
#include <chrono>
#include <cstdint>

namespace fleetid {

using TimePoint = std::chrono::system_clock::time_point;

// UnixSeconds is |t| in whole seconds since the Unix epoch (truncated toward zero), the form the
// databases, JSON bodies and JWS claims carry; FromUnixSeconds is its inverse. ASN1_TIME
// conversions are crypto/x509.h's.
constexpr std::int64_t UnixSeconds(TimePoint t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}
constexpr TimePoint FromUnixSeconds(std::int64_t seconds) {
  return TimePoint(std::chrono::seconds(seconds));
}

class Clock {
 public:
  virtual ~Clock() = default;
  // Now returns the current time. Thread-safe in every implementation.
  virtual TimePoint Now() const = 0;
};

// SystemClock reads std::chrono::system_clock.
class SystemClock final : public Clock {
 public:
  TimePoint Now() const override { return std::chrono::system_clock::now(); }

  // Instance returns a process-wide SystemClock.
  static SystemClock& Instance() {
    static SystemClock clock;
    return clock;
  }
};

// FakeClock is a clock that only moves when told to. Thread-safe.
class FakeClock final : public Clock {
 public:
  explicit FakeClock(TimePoint start) : now_(start.time_since_epoch().count()) {}

  TimePoint Now() const override {
    return TimePoint(TimePoint::duration(now_.load(std::memory_order_acquire)));
  }
  void Set(TimePoint t) { now_.store(t.time_since_epoch().count(), std::memory_order_release); }
  void Advance(std::chrono::nanoseconds d) {
    now_.fetch_add(std::chrono::duration_cast<TimePoint::duration>(d).count(),
                   std::memory_order_acq_rel);
  }

 private:
  std::atomic<TimePoint::rep> now_;
};

}  // namespace fleetid

#endif  // FLEETID_COMMON_CLOCK_H_
