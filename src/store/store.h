// The database seam: one interface over SQLite (embedded default, WAL) and PostgreSQL (several
// authority nodes), with pooled connections, transactions and numbered per-component migrations.
//
// SQL passed here uses `?` placeholders and the common subset of both dialects; where they differ
// (types in DDL, upserts), callers ask dialect() or give a migration one text per dialect.
#ifndef FLEETID_STORE_STORE_H_
#define FLEETID_STORE_STORE_H_

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "common/error.h"

namespace fleetid::store {

using Blob = std::vector<std::uint8_t>;
using Value = std::variant<std::nullptr_t, std::int64_t, std::string, Blob>;

// Row is one result row, values in column order. Accessors convert where it is lossless
// (an integer column read as text); a NULL reads as 0, "" or an empty blob.
class Row {
 public:
  explicit Row(std::vector<Value> values) : values_(std::move(values)) {}
  std::size_t size() const { return values_.size(); }
  bool IsNull(std::size_t i) const;
  std::int64_t Int(std::size_t i) const;
  std::string Text(std::size_t i) const;
  Blob Bytes(std::size_t i) const;
  const Value& at(std::size_t i) const { return values_.at(i); }

 private:
  std::vector<Value> values_;
};

enum class Dialect { kSqlite, kPostgres };

enum class TxMode {
  kRead,          // reads only
  kWrite,         // takes the write lock at BEGIN (SQLite: BEGIN IMMEDIATE) to avoid upgrade deadlocks
  kSerializable,  // PostgreSQL SERIALIZABLE; SQLite write transactions are serializable already
  kAutocommit,    // no BEGIN: each statement commits on its own (single-statement reads);
                  // Commit() is a no-op and nothing is rolled back
};

// Transaction is one database transaction on a pooled connection. It rolls back when destroyed
// without Commit(). Not thread-safe: one thread uses it at a time.
class Transaction {
 public:
  virtual ~Transaction() = default;
  // Exec runs one statement and returns the number of rows it changed.
  [[nodiscard]] virtual Result<std::int64_t> Exec(std::string_view sql,
                                                  std::span<const Value> params) = 0;
  [[nodiscard]] Result<std::int64_t> Exec(std::string_view sql,
                                          std::initializer_list<Value> params = {}) {
    return Exec(sql, std::span<const Value>(params.begin(), params.size()));
  }
  // Query runs one statement and returns every row.
  [[nodiscard]] virtual Result<std::vector<Row>> Query(std::string_view sql,
                                                       std::span<const Value> params) = 0;
  [[nodiscard]] Result<std::vector<Row>> Query(std::string_view sql,
                                               std::initializer_list<Value> params = {}) {
    return Query(sql, std::span<const Value>(params.begin(), params.size()));
  }
  // QueryEach runs one statement and hands |fn| each row as it is read, so a large result is
  // never held whole (SQLite steps row by row; the default fetches the result first). The first
  // error |fn| returns stops the query and is returned.
  using RowFn = std::function<Result<void>(const Row&)>;
  [[nodiscard]] virtual Result<void> QueryEach(std::string_view sql, std::span<const Value> params,
                                               const RowFn& fn);
  [[nodiscard]] Result<void> QueryEach(std::string_view sql, std::initializer_list<Value> params,
                                       const RowFn& fn) {
    return QueryEach(sql, std::span<const Value>(params.begin(), params.size()), fn);
  }
  // ExecScript runs several statements without parameters (migrations).
  [[nodiscard]] virtual Result<void> ExecScript(std::string_view sql) = 0;
  // Commit commits, then runs the AfterCommit actions in the order they were registered.
  [[nodiscard]] Result<void> Commit() {
    FLEETID_CHECK_OK(CommitWork());
    std::vector<std::function<void()>> actions = std::move(after_commit_);
    after_commit_.clear();
    for (const std::function<void()>& action : actions) action();
    return {};
  }
  // AfterCommit registers |action| to run on the committing thread once this transaction has
  // committed (publishing what it changed); a transaction that rolls back drops it.
  void AfterCommit(std::function<void()> action) { after_commit_.push_back(std::move(action)); }

 protected:
  [[nodiscard]] virtual Result<void> CommitWork() = 0;

 private:
  std::vector<std::function<void()>> after_commit_;
};

// Migration is one numbered schema step of a component. Versions start at 1 and are applied in
// order, each in its own transaction together with its record in schema_migrations.
struct Migration {
  int version;
  std::string_view name;
  std::string_view sqlite_sql;
  std::string_view postgres_sql;  // empty: the same text as sqlite_sql
};

// PostgresDdl translates schema text written for SQLite to PostgreSQL: a rowid alias
// "id INTEGER PRIMARY KEY," becomes an identity column, INTEGER becomes BIGINT and BLOB becomes
// BYTEA. Components write their migrations once and give this as the PostgreSQL text.
std::string PostgresDdl(std::string_view sqlite_ddl);

// Database is a connection pool. Thread-safe.
class Database {
 public:
  // Open connects to |url|:
  //   sqlite:PATH[?synchronous=normal|full]   (PATH may be relative; the file is created)
  //   postgresql://user@host:port/dbname?...    (libpq connection URI)
  // kInvalidArgument for an unknown scheme, kUnavailable if the database cannot be reached.
  [[nodiscard]] static Result<std::unique_ptr<Database>> Open(std::string_view url,
                                                              int pool_size = 4);
  virtual ~Database() = default;

  virtual Dialect dialect() const = 0;
  // Begin borrows a connection (waiting for one if all are busy) and starts a transaction.
  [[nodiscard]] virtual Result<std::unique_ptr<Transaction>> Begin(TxMode mode) = 0;

  // Migrate applies |component|'s migrations that are not applied yet and returns how many it
  // applied. Safe to run from several processes at once.
  [[nodiscard]] Result<int> Migrate(std::string_view component,
                                    std::span<const Migration> migrations);
};

}  // namespace fleetid::store

#endif  // FLEETID_STORE_STORE_H_
