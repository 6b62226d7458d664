// SQLite backend: WAL journal, one connection per concurrent transaction, cached statements.
#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <map>
#include <mutex>

#include "store/backends.h"
#include "store/pool.h"

namespace fleetid::store::internal {
namespace {

template <auto Fn>
struct Closer {
  void operator()(auto* p) const noexcept { Fn(p); }
};
using DbPtr = std::unique_ptr<sqlite3, Closer<&sqlite3_close_v2>>;
using StmtPtr = std::unique_ptr<sqlite3_stmt, Closer<&sqlite3_finalize>>;

Error SqliteError(sqlite3* db, int rc, std::string_view what) {
  const int primary = rc & 0xff;
  ErrorCode code = ErrorCode::kInternal;
  switch (primary) {
    case SQLITE_CONSTRAINT:
      code = ErrorCode::kConflict;
      break;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_CANTOPEN:
    case SQLITE_IOERR:
    case SQLITE_FULL:
    case SQLITE_READONLY:
      code = ErrorCode::kUnavailable;
      break;
    case SQLITE_TOOBIG:
    case SQLITE_MISMATCH:
    case SQLITE_RANGE:
      code = ErrorCode::kInvalidArgument;
      break;
    default:
      break;
  }
  const char* msg = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  return Error(code, fmt::format("{}: {}", what, msg));
}

struct Connection {
  DbPtr db;
  std::map<std::string, StmtPtr, std::less<>> statements;
};

class SqliteTransaction;

constexpr std::chrono::milliseconds kBusyTimeout{10000};

// OwnerOnly creates the database file |path| with mode 0600 if it does not exist, and narrows an
// existing one (and its -wal and -shm files) to 0600: it holds the registry, the CA's records and
// the audit log. SQLite gives the -wal and -shm files it creates the main file's mode.
// WARNING: an existing database file is never opened here. close() of any descriptor of a file
// drops every POSIX lock this process holds on it, SQLite's included (which lets another process
// take the WAL for its own and lose this one's commits).
Result<void> OwnerOnly(const std::string& path) {
  if (path.empty() || path == ":memory:" || path.starts_with("file:")) return {};
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd >= 0) {
    ::close(fd);  // a new, empty file: no connection can hold it yet
  } else if (errno != EEXIST) {
    return MakeError(ErrorCode::kUnavailable, "creating SQLite database '{}': {}", path,
                     std::strerror(errno));
  }
  for (const char* suffix : {"", "-wal", "-shm"}) {
    const std::string file = path + suffix;
    if (::chmod(file.c_str(), 0600) != 0 && errno != ENOENT) {
      return MakeError(ErrorCode::kUnavailable, "making '{}' owner-only: {}", file,
                       std::strerror(errno));
    }
  }
  return {};
}

class SqliteDatabase final : public Database {
 public:
  SqliteDatabase(std::string path, bool synchronous_full, int pool_size)
      : path_(std::move(path)), synchronous_full_(synchronous_full), pool_(pool_size) {}

  Dialect dialect() const override { return Dialect::kSqlite; }
  Result<std::unique_ptr<Transaction>> Begin(TxMode mode) override;

  Result<std::unique_ptr<Connection>> Connect() {
    FLEETID_CHECK_OK(OwnerOnly(path_));
    sqlite3* raw = nullptr;
    const int rc = sqlite3_open_v2(path_.c_str(), &raw,
                                   SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                                   nullptr);
    auto conn = std::make_unique<Connection>();
    conn->db.reset(raw);
    if (rc != SQLITE_OK) {
      return MakeError(SqliteError(raw, rc, fmt::format("opening SQLite database '{}'", path_)));
    }
    sqlite3_busy_timeout(raw, static_cast<int>(kBusyTimeout.count()));
    const std::string pragmas = fmt::format(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous={}; PRAGMA foreign_keys=ON;"
        // A page cache large enough that a big import's B-tree pages are not spilled and
        // re-read mid-transaction (the 2 MiB default made a 1M-device import I/O-bound), and
        // reads through mmap instead of pread.
        "PRAGMA cache_size=-65536; PRAGMA mmap_size=1073741824;",
        synchronous_full_ ? "FULL" : "NORMAL");
    if (int prc = sqlite3_exec(raw, pragmas.c_str(), nullptr, nullptr, nullptr); prc != SQLITE_OK) {
      return MakeError(SqliteError(raw, prc, "configuring SQLite"));
    }
    return conn;
  }

  void Release(std::unique_ptr<Connection> conn) { pool_.Put(std::move(conn)); }

 private:
  friend class SqliteTransaction;
  std::timed_mutex write_mu_;  // one writing transaction of this process at a time
  std::string path_;
  bool synchronous_full_;
  Pool<Connection> pool_;
};

class SqliteTransaction final : public Transaction {
 public:
  SqliteTransaction(SqliteDatabase* owner, std::unique_ptr<Connection> conn)
      : owner_(owner), conn_(std::move(conn)) {}

  ~SqliteTransaction() override {
    if (open_) sqlite3_exec(conn_->db.get(), "ROLLBACK", nullptr, nullptr, nullptr);
    owner_->Release(std::move(conn_));
  }

  Result<std::int64_t> Exec(std::string_view sql, std::span<const Value> params) override {
    FLEETID_TRY(stmt, Prepare(sql, params));
    const int rc = sqlite3_step(stmt);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) return Fail(rc, sql);
    sqlite3_reset(stmt);
    return std::int64_t{sqlite3_changes64(conn_->db.get())};
  }

  Result<std::vector<Row>> Query(std::string_view sql, std::span<const Value> params) override {
    std::vector<Row> rows;
    FLEETID_CHECK_OK(Step(sql, params, [&rows](Row&& row) -> Result<void> {
      rows.push_back(std::move(row));
      return {};
    }));
    return rows;
  }

  Result<void> QueryEach(std::string_view sql, std::span<const Value> params,
                         const RowFn& fn) override {
    return Step(sql, params, [&fn](Row&& row) { return fn(row); });
  }

  // Step runs |sql| and passes each row to |sink| as it is read.
  template <typename Sink>
  Result<void> Step(std::string_view sql, std::span<const Value> params, Sink&& sink) {
    FLEETID_TRY(stmt, Prepare(sql, params));
    // Reset on every way out, so the cached statement releases its read snapshot.
    const std::unique_ptr<sqlite3_stmt, decltype(&sqlite3_reset)> reset(stmt, &sqlite3_reset);
    const int columns = sqlite3_column_count(stmt);
    for (;;) {
      const int rc = sqlite3_step(stmt);
      if (rc == SQLITE_DONE) break;
      if (rc != SQLITE_ROW) return Fail(rc, sql);
      std::vector<Value> values;
      values.reserve(static_cast<std::size_t>(columns));
      for (int i = 0; i < columns; ++i) values.push_back(Column(stmt, i));
      FLEETID_CHECK_OK(sink(Row(std::move(values))));
    }
    return {};
  }

  static Value Column(sqlite3_stmt* stmt, int i) {
    switch (sqlite3_column_type(stmt, i)) {
      case SQLITE_NULL:
        return nullptr;
      case SQLITE_INTEGER:
        return std::int64_t{sqlite3_column_int64(stmt, i)};
      case SQLITE_BLOB: {
        const auto* p = static_cast<const std::uint8_t*>(sqlite3_column_blob(stmt, i));
        const int n = sqlite3_column_bytes(stmt, i);
        return Blob(p, p + n);
      }
      default: {
        const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt, i));
        const int n = sqlite3_column_bytes(stmt, i);
        return std::string(p != nullptr ? p : "", static_cast<std::size_t>(n));
      }
    }
  }

  Result<void> ExecScript(std::string_view sql) override {
    const std::string text(sql);
    if (int rc = sqlite3_exec(conn_->db.get(), text.c_str(), nullptr, nullptr, nullptr);
        rc != SQLITE_OK) {
      return MakeError(SqliteError(conn_->db.get(), rc, "running SQL script"));
    }
    return {};
  }

  Result<void> CommitWork() override {
    if (autocommit_) return {};
    if (!open_) return MakeError(ErrorCode::kInternal, "transaction already finished");
    const int rc = sqlite3_exec(conn_->db.get(), "COMMIT", nullptr, nullptr, nullptr);
    if (rc != SQLITE_OK) return MakeError(SqliteError(conn_->db.get(), rc, "commit"));
    open_ = false;
    if (write_lock_.owns_lock()) write_lock_.unlock();
    return {};
  }

  Result<void> Start(TxMode mode) {
    if (mode == TxMode::kAutocommit) {
      autocommit_ = true;
      return {};
    }
    const char* begin = mode == TxMode::kRead ? "BEGIN" : "BEGIN IMMEDIATE";
    if (mode != TxMode::kRead) {
      // Writers of this process queue here rather than in SQLite's busy handler, which sleeps
      // a millisecond or more per retry and so caps concurrent commits at a few hundred per
      // second. Other processes still meet the busy timeout.
      write_lock_ = std::unique_lock(owner_->write_mu_, std::defer_lock);
      if (!write_lock_.try_lock_for(kBusyTimeout)) {
        return MakeError(ErrorCode::kUnavailable, "begin: the database stayed busy for {} s",
                         kBusyTimeout.count() / 1000);
      }
    }
    if (int rc = sqlite3_exec(conn_->db.get(), begin, nullptr, nullptr, nullptr); rc != SQLITE_OK) {
      return MakeError(SqliteError(conn_->db.get(), rc, "begin"));
    }
    open_ = true;
    return {};
  }

 private:
  std::unexpected<Error> Fail(int rc, std::string_view sql) {
    return std::unexpected(SqliteError(conn_->db.get(), rc, Summary(sql)));
  }

  static std::string Summary(std::string_view sql) {
    return std::string(sql.substr(0, std::min<std::size_t>(sql.find(' ', 12), 48)));
  }

  Result<sqlite3_stmt*> Prepare(std::string_view sql, std::span<const Value> params) {
    sqlite3_stmt* stmt = nullptr;
    auto it = conn_->statements.find(sql);
    if (it != conn_->statements.end()) {
      stmt = it->second.get();
      sqlite3_clear_bindings(stmt);
    } else {
      const int rc = sqlite3_prepare_v3(conn_->db.get(), sql.data(), static_cast<int>(sql.size()),
                                        SQLITE_PREPARE_PERSISTENT, &stmt, nullptr);
      if (rc != SQLITE_OK) return Fail(rc, sql);
      conn_->statements.emplace(std::string(sql), StmtPtr(stmt));
    }
    if (static_cast<int>(params.size()) != sqlite3_bind_parameter_count(stmt)) {
      return MakeError(ErrorCode::kInternal, "{} parameters for {} placeholders", params.size(),
                       sqlite3_bind_parameter_count(stmt));
    }
    for (std::size_t i = 0; i < params.size(); ++i) {
      const int idx = static_cast<int>(i) + 1;
      int rc = SQLITE_OK;
      if (const auto* n = std::get_if<std::int64_t>(&params[i])) {
        rc = sqlite3_bind_int64(stmt, idx, *n);
      } else if (const auto* s = std::get_if<std::string>(&params[i])) {
        rc = sqlite3_bind_text64(stmt, idx, s->data(), s->size(), SQLITE_STATIC, SQLITE_UTF8);
      } else if (const auto* b = std::get_if<Blob>(&params[i])) {
        rc = sqlite3_bind_blob64(stmt, idx, b->data(), b->size(), SQLITE_STATIC);
      } else {
        rc = sqlite3_bind_null(stmt, idx);
      }
      if (rc != SQLITE_OK) return Fail(rc, sql);
    }
    return stmt;
  }

  SqliteDatabase* owner_;
  std::unique_ptr<Connection> conn_;
  std::unique_lock<std::timed_mutex> write_lock_;  // held from BEGIN to COMMIT or ROLLBACK
  bool open_ = false;
  bool autocommit_ = false;
};

Result<std::unique_ptr<Transaction>> SqliteDatabase::Begin(TxMode mode) {
  std::unique_ptr<Connection> conn = pool_.Take();
  if (!conn) {
    auto made = Connect();
    if (!made) {
      pool_.Put(nullptr);
      return MakeError(made.error());
    }
    conn = std::move(*made);
  }
  auto tx = std::make_unique<SqliteTransaction>(this, std::move(conn));
  FLEETID_CHECK_OK(tx->Start(mode));
  return tx;
}

}  // namespace

Result<std::unique_ptr<Database>> OpenSqlite(std::string_view path_and_options, int pool_size) {
  std::string_view path = path_and_options;
  bool full = false;
  if (auto q = path.find('?'); q != std::string_view::npos) {
    const std::string_view options = path.substr(q + 1);
    path = path.substr(0, q);
    if (options == "synchronous=full") {
      full = true;
    } else if (options != "synchronous=normal") {
      return MakeError(ErrorCode::kInvalidArgument, "unknown SQLite option '{}'", options);
    }
  }
  if (path.empty()) return MakeError(ErrorCode::kInvalidArgument, "SQLite URL without a path");
  auto db = std::make_unique<SqliteDatabase>(std::string(path), full, pool_size);
  // Connect once now, so a bad path fails at open, not at the first request.
  FLEETID_TRY(tx, db->Begin(TxMode::kRead));
  tx.reset();
  return std::unique_ptr<Database>(std::move(db));
}

}  // namespace fleetid::store::internal
