#include "audit/log.h"

#include <algorithm>
#include <limits>

#include "crypto/suite.h"
#include "custody/custody.h"

namespace fleetid::audit {
namespace {

using store::TxMode;

constexpr std::string_view kSchema = R"sql(
CREATE TABLE audit_entries (
  seq INTEGER PRIMARY KEY,
  body BLOB NOT NULL,
  leaf_hash BLOB NOT NULL
);
CREATE TABLE audit_nodes (
  level INTEGER NOT NULL,
  idx INTEGER NOT NULL,
  hash BLOB NOT NULL,
  PRIMARY KEY (level, idx)
);
CREATE TABLE audit_heads (
  size INTEGER PRIMARY KEY,
  time_ms INTEGER NOT NULL,
  root BLOB NOT NULL,
  signature BLOB NOT NULL
);
CREATE TABLE audit_state (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  next_seq INTEGER NOT NULL,
  tree_size INTEGER NOT NULL
);
INSERT INTO audit_state (id, next_seq, tree_size) VALUES (1, 0, 0);
)sql";

std::int64_t Signed(std::uint64_t v) { return static_cast<std::int64_t>(v); }

Result<Hash> ToHash(const store::Blob& blob) {
  Hash out;
  if (blob.size() != out.size()) return MakeError(ErrorCode::kInternal, "stored hash is {} bytes", blob.size());
  std::copy(blob.begin(), blob.end(), out.begin());
  return out;
}

store::Blob ToBlob(const Hash& hash) { return {hash.begin(), hash.end()}; }

// Nodes of the stored tree, read in one transaction.
class StoredNodes : public NodeReader {
 public:
  explicit StoredNodes(store::Transaction& tx) : tx_(tx) {}
  Result<Hash> Node(NodeId id) override {
    FLEETID_TRY(rows, tx_.Query("SELECT hash FROM audit_nodes WHERE level = ? AND idx = ?",
                                {std::int64_t{id.level}, Signed(id.index)}));
    if (rows.empty()) {
      return MakeError(ErrorCode::kInternal, "audit tree node {}/{} is missing", id.level, id.index);
    }
    return ToHash(rows.front().Bytes(0));
  }

 private:
  store::Transaction& tx_;
};

Result<std::uint64_t> StoredTreeSize(store::Transaction& tx) {
  FLEETID_TRY(rows, tx.Query("SELECT tree_size FROM audit_state WHERE id = 1"));
  if (rows.empty()) return MakeError(ErrorCode::kInternal, "audit state is missing");
  return static_cast<std::uint64_t>(rows.front().Int(0));
}

TreeHead DecodeHead(const store::Row& r) {
  TreeHead head;
  head.size = static_cast<std::uint64_t>(r.Int(0));
  head.time_ms = r.Int(1);
  const store::Blob root = r.Bytes(2);
  std::copy_n(root.begin(), std::min(root.size(), head.root.size()), head.root.begin());
  head.signature = r.Bytes(3);
  return head;
}

void PutBigEndian(std::vector<std::uint8_t>& out, std::uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8) {
    out.push_back(static_cast<std::uint8_t>(v >> static_cast<unsigned>(shift)));
  }
}

}  // namespace

Result<std::string> EncodeEntry(std::uint64_t seq, std::int64_t time_ms, const Entry& entry) {
  // nlohmann::json objects keep their keys in a std::map: sorted, so dump() is canonical.
  const nlohmann::json doc = {{"seq", seq},
                              {"time", time_ms},
                              {"actor", entry.actor},
                              {"action", entry.action},
                              {"subject", entry.subject},
                              {"before", entry.before},
                              {"after", entry.after},
                              {"reason", entry.reason},
                              {"policy_version", entry.policy_version},
                              {"evidence_digest", entry.evidence_digest}};
  try {
    return doc.dump(-1, ' ', false, nlohmann::json::error_handler_t::strict);
  } catch (const nlohmann::json::exception&) {
    return MakeError(ErrorCode::kInvalidArgument, "an audit entry field is not valid UTF-8");
  }
}

std::vector<std::uint8_t> TreeHeadMessage(std::uint64_t size, std::int64_t time_ms, const Hash& root) {
  constexpr std::string_view kLabel = "fleetid-audit-tree-head-v1\n";
  std::vector<std::uint8_t> out(kLabel.begin(), kLabel.end());
  PutBigEndian(out, size);
  PutBigEndian(out, static_cast<std::uint64_t>(time_ms));
  out.insert(out.end(), root.begin(), root.end());
  return out;
}

Result<void> Log::Migrate(store::Database& db) {
  static const std::string pg = store::PostgresDdl(kSchema);
  const store::Migration migrations[] = {{1, "entries, nodes, heads", kSchema, pg}};
  FLEETID_TRY(applied, db.Migrate("audit", migrations));
  static_cast<void>(applied);
  return {};
}

Log::Log(store::Database& db, std::shared_ptr<custody::Signer> signer, Clock& clock)
    : db_(db), signer_(std::move(signer)), clock_(clock) {}

Result<std::uint64_t> Log::Append(store::Transaction& tx, const Entry& entry, Clock& clock) {
  // The counter row serialises appenders on both databases; its update commits or rolls back with
  // the caller's change.
  FLEETID_TRY(rows, tx.Query("UPDATE audit_state SET next_seq = next_seq + 1 WHERE id = 1 "
                             "RETURNING next_seq - 1"));
  if (rows.empty()) return MakeError(ErrorCode::kInternal, "audit state is missing");
  const auto seq = static_cast<std::uint64_t>(rows.front().Int(0));
  const std::int64_t time_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                   clock.Now().time_since_epoch())
                                   .count();
  FLEETID_TRY(body, EncodeEntry(seq, time_ms, entry));
  const auto* bytes = reinterpret_cast<const std::uint8_t*>(body.data());
  const Hash leaf = LeafHash({bytes, body.size()});
  FLEETID_CHECK_OK(tx.Exec("INSERT INTO audit_entries (seq, body, leaf_hash) VALUES (?, ?, ?)",
                           {Signed(seq), store::Blob(bytes, bytes + body.size()), ToBlob(leaf)}));
  return seq;
}

Result<std::uint64_t> Log::Integrate() {
  MutexLock lock(integrate_mu_);
  FLEETID_TRY(tx, db_.Begin(TxMode::kWrite));
  // Taking the state row first serialises integrators across processes and nodes (PostgreSQL
  // holds its row lock to commit; SQLite's write lock does the same).
  FLEETID_TRY(locked, tx->Exec("UPDATE audit_state SET tree_size = tree_size WHERE id = 1"));
  static_cast<void>(locked);
  FLEETID_TRY(state, tx->Query("SELECT next_seq, tree_size FROM audit_state WHERE id = 1"));
  if (state.empty()) return MakeError(ErrorCode::kInternal, "audit state is missing");
  const auto next = static_cast<std::uint64_t>(state.front().Int(0));
  const auto size = static_cast<std::uint64_t>(state.front().Int(1));
  if (next == size) return size;
  // The right edge of the current tree, then every new leaf onto it.
  std::vector<Hash> edge;
  StoredNodes nodes(*tx);
  for (const NodeId& id : CompactRange::Decompose(size)) {
    FLEETID_TRY(hash, nodes.Node(id));
    edge.push_back(hash);
  }
  CompactRange range(size, std::move(edge));
  std::vector<std::pair<NodeId, Hash>> made;
  FLEETID_CHECK_OK(tx->QueryEach(
      "SELECT seq, leaf_hash FROM audit_entries WHERE seq >= ? AND seq < ? ORDER BY seq",
      {Signed(size), Signed(next)}, [&](const store::Row& r) -> Result<void> {
        if (static_cast<std::uint64_t>(r.Int(0)) != range.size()) {
          return MakeError(ErrorCode::kInternal, "audit entry {} is missing", range.size());
        }
        FLEETID_TRY(leaf, ToHash(r.Bytes(1)));
        range.Append(leaf, [&made](NodeId id, const Hash& hash) { made.emplace_back(id, hash); });
        return {};
      }));
  if (range.size() != next) {
    return MakeError(ErrorCode::kInternal, "audit entries {} to {} are missing", range.size(), next);
  }
  for (const auto& [id, hash] : made) {
    FLEETID_CHECK_OK(tx->Exec("INSERT INTO audit_nodes (level, idx, hash) VALUES (?, ?, ?)",
                              {std::int64_t{id.level}, Signed(id.index), ToBlob(hash)}));
  }
  FLEETID_CHECK_OK(tx->Exec("UPDATE audit_state SET tree_size = ? WHERE id = 1", {Signed(next)}));
  FLEETID_CHECK_OK(tx->Commit());
  return next;
}

Result<TreeHead> Log::SignHead() {
  if (!signer_) return MakeError(ErrorCode::kPermissionDenied, "this audit log has no signing key");
  FLEETID_TRY(size, Integrate());
  FLEETID_TRY(tx, db_.Begin(TxMode::kWrite));
  FLEETID_TRY(existing, tx->Query("SELECT size, time_ms, root, signature FROM audit_heads "
                                  "WHERE size = ?",
                                  {Signed(size)}));
  if (!existing.empty()) return DecodeHead(existing.front());
  StoredNodes nodes(*tx);
  TreeHead head;
  head.size = size;
  head.time_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                     clock_.Now().time_since_epoch())
                     .count();
  FLEETID_TRY(root, Root(nodes, size));
  head.root = root;
  FLEETID_TRY(signature, signer_->Sign(TreeHeadMessage(head.size, head.time_ms, head.root)));
  head.signature = std::move(signature);
  FLEETID_CHECK_OK(tx->Exec("INSERT INTO audit_heads (size, time_ms, root, signature) "
                            "VALUES (?, ?, ?, ?)",
                            {Signed(head.size), head.time_ms, ToBlob(head.root),
                             store::Blob(head.signature)}));
  FLEETID_CHECK_OK(tx->Commit());
  return head;
}

Result<TreeHead> Log::LatestHead() {
  FLEETID_TRY(tx, db_.Begin(TxMode::kAutocommit));
  FLEETID_TRY(rows, tx->Query("SELECT size, time_ms, root, signature FROM audit_heads "
                              "ORDER BY size DESC LIMIT 1"));
  if (rows.empty()) return MakeError(ErrorCode::kNotFound, "no signed tree head yet");
  return DecodeHead(rows.front());
}

Result<std::vector<TreeHead>> Log::Heads() {
  FLEETID_TRY(tx, db_.Begin(TxMode::kAutocommit));
  FLEETID_TRY(rows, tx->Query("SELECT size, time_ms, root, signature FROM audit_heads ORDER BY size"));
  std::vector<TreeHead> out;
  for (const store::Row& r : rows) out.push_back(DecodeHead(r));
  return out;
}

Result<std::vector<StoredEntry>> Log::Entries(std::uint64_t start, std::uint64_t end) {
  // Sequence numbers are stored as signed 64-bit integers.
  constexpr std::uint64_t kMaxSeq = std::numeric_limits<std::int64_t>::max();
  if (end < start) return MakeError(ErrorCode::kInvalidArgument, "end {} before start {}", end, start);
  if (start > kMaxSeq || end > kMaxSeq) {
    return MakeError(ErrorCode::kInvalidArgument, "start and end are at most {}", kMaxSeq);
  }
  end = start + std::min<std::uint64_t>(end - start, 1000);
  FLEETID_TRY(tx, db_.Begin(TxMode::kAutocommit));
  FLEETID_TRY(rows, tx->Query("SELECT seq, body, leaf_hash FROM audit_entries WHERE seq >= ? "
                              "AND seq < ? ORDER BY seq",
                              {Signed(start), Signed(end)}));
  std::vector<StoredEntry> out;
  for (const store::Row& r : rows) {
    const store::Blob body = r.Bytes(1);
    FLEETID_TRY(leaf, ToHash(r.Bytes(2)));
    out.push_back({static_cast<std::uint64_t>(r.Int(0)), std::string(body.begin(), body.end()), leaf});
  }
  return out;
}

Result<std::uint64_t> Log::TreeSize() {
  FLEETID_TRY(tx, db_.Begin(TxMode::kAutocommit));
  return StoredTreeSize(*tx);
}

Result<std::uint64_t> Log::FirstSeq() {
  FLEETID_TRY(tx, db_.Begin(TxMode::kRead));
  FLEETID_TRY(rows, tx->Query("SELECT MIN(seq) FROM audit_entries"));
  if (!rows.empty() && !rows.front().IsNull(0)) return static_cast<std::uint64_t>(rows.front().Int(0));
  return StoredTreeSize(*tx);
}

Result<std::uint64_t> Log::Archive(std::uint64_t before) {
  FLEETID_TRY(tx, db_.Begin(TxMode::kWrite));
  FLEETID_TRY(size, StoredTreeSize(*tx));
  if (before > size) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "only entries already in the tree ({}) can be archived, not {}", size, before);
  }
  FLEETID_TRY(deleted, tx->Exec("DELETE FROM audit_entries WHERE seq < ?", {Signed(before)}));
  FLEETID_CHECK_OK(tx->Commit());
  return static_cast<std::uint64_t>(deleted);
}

namespace {

// InTree runs |fn| on the stored tree, in one read transaction, if the tree holds |size| entries.
template <typename Fn>
auto InTree(store::Database& db, std::uint64_t size, Fn&& fn) -> decltype(fn(std::declval<NodeReader&>())) {
  FLEETID_TRY(tx, db.Begin(TxMode::kRead));
  FLEETID_TRY(tree_size, StoredTreeSize(*tx));
  if (size > tree_size) {
    return MakeError(ErrorCode::kInvalidArgument, "the tree has {} entries, not {}", tree_size, size);
  }
  StoredNodes nodes(*tx);
  return fn(nodes);
}

}  // namespace

Result<std::vector<Hash>> Log::InclusionProof(std::uint64_t seq, std::uint64_t size) {
  return InTree(db_, size, [&](NodeReader& nodes) { return audit::InclusionProof(nodes, seq, size); });
}

Result<std::vector<Hash>> Log::ConsistencyProof(std::uint64_t first, std::uint64_t second) {
  return InTree(db_, second,
                [&](NodeReader& nodes) { return audit::ConsistencyProof(nodes, first, second); });
}

Result<Hash> Log::RootAt(std::uint64_t size) {
  return InTree(db_, size, [&](NodeReader& nodes) { return Root(nodes, size); });
}

Result<std::shared_ptr<custody::Signer>> AuditSigner(custody::Token& token, Rng& rng) {
  if (auto found = token.FindKey(kAuditKeyLabel); !found) {
    if (found.error().code() != ErrorCode::kNotFound) return MakeError(found.error());
    FLEETID_TRY(made, token.GenerateKey(kAuditKeyLabel,
                                        crypto::GetSuite(crypto::SuiteId::kEcdsaP256Sha256), rng));
    static_cast<void>(made);
  }
  FLEETID_TRY(signer, token.GetSigner(kAuditKeyLabel));
  return std::shared_ptr<custody::Signer>(std::move(signer));
}

bool VerifyHead(const TreeHead& head, EVP_PKEY* audit_key) {
  auto suite = crypto::SuiteOfPublicKey(audit_key);
  if (!suite) return false;
  return crypto::VerifySignature(**suite, audit_key,
                                 TreeHeadMessage(head.size, head.time_ms, head.root),
                                 head.signature)
      .has_value();
}

}  // namespace fleetid::audit
