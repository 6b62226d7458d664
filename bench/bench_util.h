// Helpers shared by the benchmarks that print one JSON object per figure.
#ifndef FLEETID_BENCH_BENCH_UTIL_H_
#define FLEETID_BENCH_BENCH_UTIL_H_

#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <string>

namespace fleetid::bench {

using Steady = std::chrono::steady_clock;

inline double Seconds(Steady::time_point since) {
  return std::chrono::duration<double>(Steady::now() - since).count();
}

// Print writes {"figure":...,"count":n,"seconds":s,"per_second":n/s<extra>} and flushes.
inline void Print(const std::string& figure, double n, double seconds, const std::string& extra = "") {
  std::printf("{\"figure\":\"%s\",\"count\":%.0f,\"seconds\":%.3f,\"per_second\":%.1f%s}\n",
              figure.c_str(), n, seconds, n / seconds, extra.c_str());
  std::fflush(stdout);
}

inline long MaxRssKb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss;
}

}  // namespace fleetid::bench

#endif  // FLEETID_BENCH_BENCH_UTIL_H_
