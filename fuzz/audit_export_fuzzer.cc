// Fuzzes the reader of an audit export (JSON Lines, docs/audit.md), audit::ReadExport, which
// `fleetid audit verify` runs on a file it trusts nothing of, audit::ParseHeadJson (a saved tree
// head), and audit::VerifyExport over what they read, with an audit key made in this process.
//
// Invariants checked: refusals are kInvalidArgument with a message; an export holds no more
// records than the input has lines; a tree head read back from HeadJson is the same head; no
// head verifies (none was signed by the key made here), so every head read is a problem named in
// the report, and the report counts every entry read.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>

#include "audit/export.h"
#include "fuzz_check.h"
#include "fuzz_keys.h"

namespace {

namespace audit = fleetid::audit;
using fleetid::fuzz::Check;
using fleetid::fuzz::CheckRefusal;

bool SameHead(const audit::TreeHead& a, const audit::TreeHead& b) {
  return a.size == b.size && a.time_ms == b.time_ms && a.root == b.root &&
         a.signature == b.signature;
}

void FuzzHead(std::string_view line) {
  const auto head = audit::ParseHeadJson(line);
  CheckRefusal(head);
  if (!head) return;
  const auto again = audit::ParseHeadJson(audit::HeadJson(*head));
  Check(again.has_value() && SameHead(*again, *head));
}

void FuzzExport(std::string_view text, const std::optional<audit::TreeHead>& saved) {
  std::istringstream in{std::string(text)};
  const auto exported = audit::ReadExport(in);
  CheckRefusal(exported);
  if (!exported) return;
  const auto lines = static_cast<std::size_t>(std::ranges::count(text, '\n')) + 1;
  Check(exported->entries.size() + exported->heads.size() <= lines);
  const auto report = audit::VerifyExport(*exported, fleetid::fuzz::VerifyKeys()[0].get(), saved);
  Check(report.entries == exported->entries.size());
  Check(report.heads_verified == 0);
  Check(report.problems.size() >= exported->heads.size() + (saved.has_value() ? 1 : 0));
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  Check(fleetid::fuzz::VerifyKeys()[0] != nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text = fleetid::fuzz::Text(data, size);
  FuzzHead(text);
  const std::string_view first_line = text.substr(0, text.find('\n'));
  const auto saved = audit::ParseHeadJson(first_line);
  FuzzExport(text, saved ? std::optional<audit::TreeHead>(*saved) : std::nullopt);
  return 0;
}
