// The logging facade: one structured event per line, fields as key=value (logfmt).
//
// WARNING: Field values are printed as given (escaped). Never pass a PIN, token, key or any other
// secret; secrets live in crypto::SecretBuffer, which deliberately does not convert to a Field.
#ifndef FLEETID_COMMON_LOG_H_
#define FLEETID_COMMON_LOG_H_

#include <concepts>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

namespace fleetid::log {

enum class Level { kDebug, kInfo, kWarn, kError, kOff };

// ParseLevel maps "debug", "info", "warn", "error", "off" to a Level; false if unknown.
bool ParseLevel(std::string_view name, Level* out);

// Field is one key=value pair of an event. Keys are fixed identifiers chosen by fleetid code
// ("device", "serial", "request"); values may be untrusted and are escaped when printed.
struct Field {
  Field(std::string_view k, std::string_view v) : key(k), value(v) {}
  Field(std::string_view k, const char* v) : key(k), value(v) {}
  Field(std::string_view k, std::string v) : key(k), value(std::move(v)) {}
  Field(std::string_view k, bool v) : key(k), value(v ? "true" : "false") {}
  template <std::integral T>
  Field(std::string_view k, T v) : key(k), value(std::to_string(v)) {}

  std::string_view key;
  std::string value;
};

// Init sets the minimum level printed to stderr. Call once at start-up; thread-safe afterwards.
void Init(Level level);

// SetSinkForTesting sends every formatted line to |sink| (in addition to nothing else) until
// called again with nullptr. For tests that assert on what was logged.
using Sink = void (*)(std::string_view line, void* arg);
void SetSinkForTesting(Sink sink, void* arg);

void Write(Level level, std::string_view event, std::initializer_list<Field> fields);

inline void Debug(std::string_view event, std::initializer_list<Field> fields = {}) {
  Write(Level::kDebug, event, fields);
}
inline void Info(std::string_view event, std::initializer_list<Field> fields = {}) {
  Write(Level::kInfo, event, fields);
}
inline void Warn(std::string_view event, std::initializer_list<Field> fields = {}) {
  Write(Level::kWarn, event, fields);
}
inline void Error(std::string_view event, std::initializer_list<Field> fields = {}) {
  Write(Level::kError, event, fields);
}

// FormatLine renders one event without a timestamp or level: `msg="..." key=value ...`.
// Exposed for tests.
std::string FormatLine(std::string_view event, std::initializer_list<Field> fields);

// Escape quotes |value| when it needs it and replaces control and non-ASCII bytes with \xNN, so
// an attacker-supplied string can neither forge a field nor break the line.
std::string Escape(std::string_view value);

}  // namespace fleetid::log

#endif  // FLEETID_COMMON_LOG_H_
