#include "common/log.h"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <iterator>

#include "common/mutex.h"

namespace fleetid::log {
namespace {

struct State {
  State()
      : logger(std::make_shared<spdlog::logger>(
            "fleetid", std::make_shared<spdlog::sinks::stderr_sink_mt>())) {
    logger->set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %l %v", spdlog::pattern_time_type::utc);
    logger->set_level(spdlog::level::trace);
  }

  std::atomic<Level> level{Level::kInfo};
  Mutex mu;
  Sink test_sink FLEETID_GUARDED_BY(mu) = nullptr;
  void* test_arg FLEETID_GUARDED_BY(mu) = nullptr;
  std::shared_ptr<spdlog::logger> logger;
};

State& GetState() {
  static State state;
  return state;
}

spdlog::level::level_enum ToSpd(Level level) {
  switch (level) {
    case Level::kDebug:
      return spdlog::level::debug;
    case Level::kInfo:
      return spdlog::level::info;
    case Level::kWarn:
      return spdlog::level::warn;
    case Level::kError:
      return spdlog::level::err;
    case Level::kOff:
      return spdlog::level::off;
  }
  return spdlog::level::info;
}

bool NeedsQuotes(std::string_view v) {
  return v.empty() || std::ranges::any_of(v, [](unsigned char c) {
           return c <= ' ' || c == '"' || c == '=' || c == '\\' || c >= 0x7f;
         });
}

}  // namespace

bool ParseLevel(std::string_view name, Level* out) {
  static constexpr std::pair<std::string_view, Level> kNames[] = {
      {"debug", Level::kDebug}, {"info", Level::kInfo}, {"warn", Level::kWarn},
      {"error", Level::kError}, {"off", Level::kOff}};
  const auto* it = std::ranges::find(kNames, name, &std::pair<std::string_view, Level>::first);
  if (it == std::end(kNames)) return false;
  *out = it->second;
  return true;
}

void Init(Level level) { GetState().level.store(level, std::memory_order_relaxed); }

void SetSinkForTesting(Sink sink, void* arg) {
  State& s = GetState();
  MutexLock lock(s.mu);
  s.test_sink = sink;
  s.test_arg = arg;
}

std::string Escape(std::string_view value) {
  if (!NeedsQuotes(value)) return std::string(value);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(value.size() + 2);
  out.push_back('"');
  for (unsigned char c : value) {
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(c));
    } else if (c < ' ' || c >= 0x7f) {
      out += "\\x";
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 0xf]);
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  out.push_back('"');
  return out;
}

std::string FormatLine(std::string_view event, std::initializer_list<Field> fields) {
  std::string line = "msg=" + Escape(event);
  for (const Field& f : fields) {
    line.push_back(' ');
    line.append(f.key);
    line.push_back('=');
    line += Escape(f.value);
  }
  return line;
}

void Write(Level level, std::string_view event, std::initializer_list<Field> fields) {
  State& s = GetState();
  if (level < s.level.load(std::memory_order_relaxed) || level == Level::kOff) return;
  std::string line = FormatLine(event, fields);
  {
    MutexLock lock(s.mu);
    if (s.test_sink != nullptr) {
      s.test_sink(line, s.test_arg);
    }
  }
  s.logger->log(ToSpd(level), "{}", line);
}

}  // namespace fleetid::log
