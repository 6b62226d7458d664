// Exporting the audit log to a file and verifying such a file offline, trusting nothing but the
// audit public key (and, optionally, a tree head saved earlier).
//
// The export is JSON Lines (docs/audit.md):
//   {"kind":"entry","seq":N,"leaf_hash":"<hex>","body":"<the canonical entry, as hashed>"}
//   {"kind":"head","size":N,"time_ms":T,"root":"<hex>","signature":"<hex>"}
#ifndef FLEETID_AUDIT_EXPORT_H_
#define FLEETID_AUDIT_EXPORT_H_

#include <iosfwd>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "audit/log.h"

namespace fleetid::audit {

struct ExportedEntry {
  std::uint64_t seq = 0;
  std::optional<Hash> leaf_hash;  // as recorded at append time
  std::string body;
};

struct Export {
  std::vector<ExportedEntry> entries;  // in file order
  std::vector<TreeHead> heads;
};

// WriteExport writes the entries of |log| still held (all of them unless some were archived)
// before |before|, and every signed head of a size up to |before|, to |out|. Returns the number
// of entries written.
[[nodiscard]] Result<std::uint64_t> WriteExport(
    Log& log, std::ostream& out,
    std::uint64_t before = std::numeric_limits<std::uint64_t>::max());

// ReadExport parses an export; kInvalidArgument naming the line for anything malformed.
[[nodiscard]] Result<Export> ReadExport(std::istream& in);
[[nodiscard]] std::string HeadJson(const TreeHead& head);
[[nodiscard]] Result<TreeHead> ParseHeadJson(std::string_view line);

struct VerifyReport {
  std::uint64_t entries = 0;
  std::uint64_t heads_verified = 0;
  std::vector<std::string> problems;  // each names the entry position or head size that fails
  bool ok() const { return problems.empty(); }
};

// VerifyExport recomputes the tree from the entries (an archive followed by a later export read
// into one Export verify as one log), checks that each entry is canonical, sits
// at the position its seq names and matches the leaf hash recorded when it was appended, and
// checks every head's signature with |audit_key| and its root against the recomputed tree. With
// |saved|, a head the verifier kept from earlier, it also checks that the log still extends it.
VerifyReport VerifyExport(const Export& exported, EVP_PKEY* audit_key,
                          const std::optional<TreeHead>& saved);

}  // namespace fleetid::audit

#endif  // FLEETID_AUDIT_EXPORT_H_
