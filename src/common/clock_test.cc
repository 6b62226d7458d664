#include "common/clock.h"

#include <gtest/gtest.h>

#include "common/rng.h"

namespace fleetid {
namespace {

using namespace std::chrono_literals;

TEST(ClockTest, FakeClockMovesOnlyWhenTold) {
  const TimePoint start = std::chrono::sys_days{std::chrono::year{2030} / 1 / 1};
  FakeClock clock(start);
  EXPECT_EQ(clock.Now(), start);
  clock.Advance(25h);
  EXPECT_EQ(clock.Now(), start + 25h);
  clock.Set(start);
  EXPECT_EQ(clock.Now(), start);
}

TEST(ClockTest, SystemClockIsNearSystemTime) {
  auto delta = SystemClock::Instance().Now() - std::chrono::system_clock::now();
  EXPECT_LT(std::chrono::abs(delta), 5s);
}

TEST(RngTest, FakeRngIsReproducibleAndSeedDependent) {
  FakeRng a(42);
  FakeRng b(42);
  FakeRng c(43);
  auto x = a.Bytes(32);
  auto y = b.Bytes(32);
  auto z = c.Bytes(32);
  ASSERT_TRUE(x && y && z);
  EXPECT_EQ(*x, *y);
  EXPECT_NE(*x, *z);
  auto next = a.Bytes(32);
  ASSERT_TRUE(next);
  EXPECT_NE(*next, *x);
}

}  // namespace
}  // namespace fleetid
