// The audit log: an append-only sequence of canonical entries, each a leaf of an RFC 9162 Merkle
// tree, with signed tree heads from the authority's audit key in the token.
//
// Appends happen inside the caller's transaction (a registry transition, an issuance, a
// revocation), so the change and its entry commit or fail together; they only number the entry
// and store it with its leaf hash. Integrate() then adds every entry appended since the last
// call to the tree in one transaction — appends from concurrent requests become one tree update
// (Trillian's sequencer/integrator split) — storing each completed perfect subtree, so roots and
// proofs cost O(log n) reads and nothing is ever rehashed.
#ifndef FLEETID_AUDIT_LOG_H_
#define FLEETID_AUDIT_LOG_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <openssl/evp.h>

#include "audit/merkle.h"
#include "common/clock.h"
#include "common/mutex.h"
#include "common/rng.h"
#include "common/error.h"
#include "store/store.h"

namespace fleetid::custody {
class Signer;
class Token;
}  // namespace fleetid::custody

namespace fleetid::audit {

// Entry is one decision: who did what to which subject, from which state to which, why, under
// which policy version and with which evidence.
struct Entry {
  std::string actor;            // "operator:alice", "device:GW-0001", "system"
  std::string action;           // "registry.transition", "pki.issue", "pki.revoke", ...
  std::string subject;          // a device serial, a certificate serial
  nlohmann::json before;        // state before (null when none)
  nlohmann::json after;         // state after
  std::string reason;
  std::string policy_version;
  std::string evidence_digest;  // hex SHA-256 of the evidence, or empty
};

// Canonical encoding (docs/audit.md): JSON, keys sorted, no insignificant whitespace, integers
// only, strict UTF-8; fields seq, time (Unix milliseconds), and those of Entry.
[[nodiscard]] Result<std::string> EncodeEntry(std::uint64_t seq, std::int64_t time_ms,
                                              const Entry& entry);

struct StoredEntry {
  std::uint64_t seq = 0;
  std::string body;  // the canonical encoding, exactly as hashed
  Hash leaf_hash{};  // as computed when it was appended
};

// A signed tree head. The signature covers TreeHeadMessage(size, time_ms, root).
struct TreeHead {
  std::uint64_t size = 0;
  std::int64_t time_ms = 0;
  Hash root{};
  std::vector<std::uint8_t> signature;
};

// "fleetid-audit-tree-head-v1\n" || size (8 bytes big-endian) || time_ms (8 bytes big-endian) ||
// root (32 bytes).
std::vector<std::uint8_t> TreeHeadMessage(std::uint64_t size, std::int64_t time_ms, const Hash& root);

class Log {
 public:
  [[nodiscard]] static Result<void> Migrate(store::Database& db);

  // |signer| is the audit key's (custody); nullptr for a log that only appends and reads.
  Log(store::Database& db, std::shared_ptr<custody::Signer> signer, Clock& clock);

  // Append numbers |entry| and stores it in |tx|, the caller's transaction. Returns its sequence
  // number. kInvalidArgument if a field is not valid UTF-8.
  [[nodiscard]] static Result<std::uint64_t> Append(store::Transaction& tx, const Entry& entry,
                                                    Clock& clock);

  // Integrate adds every committed entry not yet in the tree, in one transaction, and returns
  // the tree's size.
  [[nodiscard]] Result<std::uint64_t> Integrate();

  // SignHead integrates, then signs and stores a head for the tree's size (or returns the stored
  // head if that size is signed already).
  [[nodiscard]] Result<TreeHead> SignHead();

  // LatestHead is the newest signed head; kNotFound before the first.
  [[nodiscard]] Result<TreeHead> LatestHead();
  [[nodiscard]] Result<std::vector<TreeHead>> Heads();

  // Entries [start, end), at most 1000.
  [[nodiscard]] Result<std::vector<StoredEntry>> Entries(std::uint64_t start, std::uint64_t end);

  [[nodiscard]] Result<std::vector<Hash>> InclusionProof(std::uint64_t seq, std::uint64_t size);
  [[nodiscard]] Result<std::vector<Hash>> ConsistencyProof(std::uint64_t first, std::uint64_t second);
  [[nodiscard]] Result<Hash> RootAt(std::uint64_t size);
  [[nodiscard]] Result<std::uint64_t> TreeSize();
  // FirstSeq is the oldest entry still held (entries before it were archived).
  [[nodiscard]] Result<std::uint64_t> FirstSeq();

  // Archive deletes the entries before |before| (which must already be in the tree). The tree's
  // stored nodes stay, so roots and proofs for archived entries still work; their bodies live on
  // in the archive file the caller wrote first (`fleetid audit archive`). Returns how many were
  // deleted.
  [[nodiscard]] Result<std::uint64_t> Archive(std::uint64_t before);

 private:
  store::Database& db_;
  std::shared_ptr<custody::Signer> signer_;
  Clock& clock_;
  Mutex integrate_mu_;  // one integration at a time in this process
};

// VerifyHead checks a head's signature with the audit public key.
bool VerifyHead(const TreeHead& head, EVP_PKEY* audit_key);

// The authority's audit key lives in its token under this label (ECDSA P-256).
inline constexpr std::string_view kAuditKeyLabel = "fleetid-audit";

// AuditSigner returns a signer for the audit key, generating the key in |token| first if it is
// not there yet.
[[nodiscard]] Result<std::shared_ptr<custody::Signer>> AuditSigner(custody::Token& token, Rng& rng);

}  // namespace fleetid::audit

#endif  // FLEETID_AUDIT_LOG_H_
