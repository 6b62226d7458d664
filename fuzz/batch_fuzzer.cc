// Fuzzes registry::ParseBatch, the reader of a factory batch file (JSON Lines, one device a
// line) that `fleetid devices import` takes from the factory floor.
//
// Invariants checked: refusals are kInvalidArgument with a message naming the line; every
// record accepted has a registry serial and model, a manufacturer, a hex SHA-256 IDevID
// fingerprint, and is no more than one per input line.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "common/identifier.h"
#include "fuzz_check.h"
#include "registry/registry.h"

namespace {

using fleetid::fuzz::Check;
using fleetid::fuzz::CheckRefusal;

bool IsHex64(std::string_view s) {
  return s.size() == 64 && std::ranges::all_of(s, [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text = fleetid::fuzz::Text(data, size);
  const auto batch = fleetid::registry::ParseBatch(text);
  CheckRefusal(batch);
  if (!batch) {
    Check(batch.error().message().starts_with("line "));
    return 0;
  }
  Check(batch->size() <= static_cast<std::size_t>(std::ranges::count(text, '\n')) + 1);
  for (const auto& record : *batch) {
    Check(fleetid::IsIdentifier(record.serial) && fleetid::IsIdentifier(record.model));
    Check(!record.manufacturer.empty() && IsHex64(record.idevid_fingerprint));
    Check(record.firmware_digest.empty() || IsHex64(record.firmware_digest));
  }
  return 0;
}
