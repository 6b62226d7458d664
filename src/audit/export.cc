#include "audit/export.h"

#include <algorithm>
#include <istream>
#include <map>
#include <ostream>

#include "crypto/crypto.h"

namespace fleetid::audit {
namespace {

using Json = nlohmann::json;

std::string Hex(std::span<const std::uint8_t> bytes) { return crypto::Hex(bytes); }

std::span<const std::uint8_t> Bytes(const std::string& s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

Result<TreeHead> HeadFromJson(const Json& doc) {
  try {
    if (!doc.at("size").is_number_integer() || !doc.at("time_ms").is_number_integer()) {
      return MakeError(ErrorCode::kInvalidArgument, "a tree head's size and time_ms are integers");
    }
    TreeHead head;
    head.size = doc.at("size").get<std::uint64_t>();
    head.time_ms = doc.at("time_ms").get<std::int64_t>();
    FLEETID_TRY(root, HashFromHex(doc.at("root").get<std::string>()));
    head.root = root;
    FLEETID_TRY(signature, crypto::Unhex(doc.at("signature").get<std::string>()));
    head.signature = std::move(signature);
    return head;
  } catch (const Json::exception&) {
    return MakeError(ErrorCode::kInvalidArgument, "a tree head needs size, time_ms, root and signature");
  }
}

}  // namespace

std::string HeadJson(const TreeHead& head) {
  return Json{{"kind", "head"},
              {"size", head.size},
              {"time_ms", head.time_ms},
              {"root", HashHex(head.root)},
              {"signature", Hex(head.signature)}}
      .dump();
}

Result<TreeHead> ParseHeadJson(std::string_view line) {
  const Json doc = Json::parse(line, nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) {
    return MakeError(ErrorCode::kInvalidArgument, "a tree head is a JSON object");
  }
  return HeadFromJson(doc);
}

Result<std::uint64_t> WriteExport(Log& log, std::ostream& out, std::uint64_t before) {
  // Everything committed is exported, integrated first: the verifier recomputes the tree.
  FLEETID_TRY(integrated, log.Integrate());
  const std::uint64_t end = std::min(integrated, before);
  FLEETID_TRY(first, log.FirstSeq());
  std::uint64_t written = 0;
  for (std::uint64_t start = first; start < end; start += 1000) {
    FLEETID_TRY(batch, log.Entries(start, std::min(end, start + 1000)));
    for (const StoredEntry& e : batch) {
      out << Json{{"kind", "entry"},
                  {"seq", e.seq},
                  {"leaf_hash", HashHex(e.leaf_hash)},
                  {"body", e.body}}
                 .dump()
          << '\n';
      ++written;
    }
  }
  FLEETID_TRY(heads, log.Heads());
  for (const TreeHead& head : heads) {
    if (head.size <= before) out << HeadJson(head) << '\n';
  }
  if (!out) return MakeError(ErrorCode::kUnavailable, "writing the export failed");
  return written;
}

Result<Export> ReadExport(std::istream& in) {
  Export out;
  std::string line;
  for (std::size_t number = 1; std::getline(in, line); ++number) {
    if (line.empty()) continue;
    const Json doc = Json::parse(line, nullptr, false);
    if (doc.is_discarded() || !doc.is_object() || !doc.contains("kind") ||
        !doc["kind"].is_string()) {
      return MakeError(ErrorCode::kInvalidArgument, "line {}: not an export record", number);
    }
    const std::string kind = doc.value("kind", "");
    if (kind == "entry") {
      try {
        if (!doc.at("seq").is_number_integer()) {
          return MakeError(ErrorCode::kInvalidArgument, "line {}: an entry's seq is an integer",
                           number);
        }
        ExportedEntry entry;
        entry.seq = doc.at("seq").get<std::uint64_t>();
        entry.body = doc.at("body").get<std::string>();
        if (doc.contains("leaf_hash")) {
          FLEETID_TRY(hash, HashFromHex(doc.at("leaf_hash").get<std::string>()));
          entry.leaf_hash = hash;
        }
        out.entries.push_back(std::move(entry));
      } catch (const Json::exception&) {
        return MakeError(ErrorCode::kInvalidArgument, "line {}: an entry needs seq and body", number);
      }
    } else if (kind == "head") {
      auto head = HeadFromJson(doc);
      if (!head) return MakeError(head.error().Wrap(fmt::format("line {}", number)));
      out.heads.push_back(std::move(*head));
    } else {
      return MakeError(ErrorCode::kInvalidArgument, "line {}: unknown kind", number);
    }
  }
  return out;
}

VerifyReport VerifyExport(const Export& exported, EVP_PKEY* audit_key,
                          const std::optional<TreeHead>& saved) {
  VerifyReport report;
  auto problem = [&report](std::string text) { report.problems.push_back(std::move(text)); };

  // Heads by size; each checked when the recomputed tree reaches it.
  struct Pending {
    const TreeHead* head;
    bool saved;
  };
  std::multimap<std::uint64_t, Pending> pending;
  for (const TreeHead& head : exported.heads) {
    if (!VerifyHead(head, audit_key)) {
      problem(fmt::format("head at size {}: its signature does not verify with the audit key", head.size));
      continue;
    }
    pending.emplace(head.size, Pending{&head, false});
  }
  if (const TreeHead* kept = saved.has_value() ? &saved.value() : nullptr; kept != nullptr) {
    if (!VerifyHead(*kept, audit_key)) {
      problem(fmt::format("saved head at size {}: its signature does not verify", kept->size));
    } else {
      pending.emplace(kept->size, Pending{kept, true});
    }
  }

  CompactRange range;
  std::uint64_t last_good = 0;
  auto check_heads = [&]() {
    const auto [first, last] = pending.equal_range(range.size());
    if (first == last) return;
    const Hash root = range.Root();
    for (auto it = first; it != last; ++it) {
      const TreeHead& head = *it->second.head;
      if (head.root != root) {
        problem(fmt::format(
            "{}head at size {}: its root does not match the entries: an entry at a position from "
            "{} to {} was changed, removed or reordered",
            it->second.saved ? "saved " : "", head.size, last_good, head.size - 1));
      } else {
        ++report.heads_verified;
        last_good = head.size;
      }
    }
    pending.erase(first, last);
  };
  check_heads();  // a head of size 0

  for (std::size_t position = 0; position < exported.entries.size(); ++position) {
    const ExportedEntry& entry = exported.entries[position];
    if (entry.seq != position) {
      problem(fmt::format("position {}: the entry there is seq {} (an entry was deleted, inserted "
                          "or reordered)",
                          position, entry.seq));
    }
    const Json doc = Json::parse(entry.body, nullptr, false);
    if (doc.is_discarded() || !doc.is_object()) {
      problem(fmt::format("entry {}: its body is not JSON", position));
    } else {
      if (doc.dump() != entry.body) problem(fmt::format("entry {}: its body is not canonical", position));
      if (!doc.contains("seq") || !doc["seq"].is_number_unsigned() ||
          doc["seq"].get<std::uint64_t>() != position) {
        problem(fmt::format("entry {}: its body names another seq", position));
      }
    }
    const Hash leaf = LeafHash(Bytes(entry.body));
    if (entry.leaf_hash && *entry.leaf_hash != leaf) {
      problem(fmt::format("entry {}: its body is not what was appended (the leaf hash recorded "
                          "at append time differs)",
                          position));
    }
    range.Append(leaf);
    ++report.entries;
    check_heads();
  }
  // (No structured binding here: clang-tidy 16's optional-access analysis crashes on one.)
  for (const auto& left : pending) {
    problem(fmt::format("{}head at size {}: the export holds only {} entries (the log was rolled "
                        "back or truncated)",
                        left.second.saved ? "saved " : "", left.first, range.size()));
  }
  return report;
}

}  // namespace fleetid::audit
