#include "store/store.h"

#include <charconv>

#include "store/backends.h"
#include "store/pool.h"

namespace fleetid::store {

bool Row::IsNull(std::size_t i) const {
  return std::holds_alternative<std::nullptr_t>(values_.at(i));
}

std::int64_t Row::Int(std::size_t i) const {
  const Value& v = values_.at(i);
  if (const auto* n = std::get_if<std::int64_t>(&v)) return *n;
  if (const auto* s = std::get_if<std::string>(&v)) {
    std::int64_t out = 0;
    std::from_chars(s->data(), s->data() + s->size(), out);
    return out;
  }
  return 0;
}

std::string Row::Text(std::size_t i) const {
  const Value& v = values_.at(i);
  if (const auto* s = std::get_if<std::string>(&v)) return *s;
  if (const auto* n = std::get_if<std::int64_t>(&v)) return std::to_string(*n);
  if (const auto* b = std::get_if<Blob>(&v)) return {b->begin(), b->end()};
  return {};
}

Blob Row::Bytes(std::size_t i) const {
  const Value& v = values_.at(i);
  if (const auto* b = std::get_if<Blob>(&v)) return *b;
  if (const auto* s = std::get_if<std::string>(&v)) return {s->begin(), s->end()};
  return {};
}

Result<void> Transaction::QueryEach(std::string_view sql, std::span<const Value> params,
                                    const RowFn& fn) {
  FLEETID_TRY(rows, Query(sql, params));
  for (const Row& row : rows) FLEETID_CHECK_OK(fn(row));
  return {};
}

Result<std::unique_ptr<Database>> Database::Open(std::string_view url, int pool_size) {
  if (pool_size < 1) return MakeError(ErrorCode::kInvalidArgument, "pool size must be positive");
  if (url.starts_with("sqlite:")) return internal::OpenSqlite(url.substr(7), pool_size);
  if (url.starts_with("postgresql://") || url.starts_with("postgres://")) {
    return internal::OpenPostgres(url, pool_size);
  }
  // The URL itself is not echoed: a libpq key=value string put here by mistake holds a password.
  return MakeError(ErrorCode::kInvalidArgument,
                   "database URL must start with sqlite: or postgresql://");
}

Result<int> Database::Migrate(std::string_view component, std::span<const Migration> migrations) {
  {
    FLEETID_TRY(tx, Begin(TxMode::kWrite));
    FLEETID_CHECK_OK(tx->ExecScript(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " component TEXT NOT NULL, version INTEGER NOT NULL, name TEXT NOT NULL,"
        " PRIMARY KEY (component, version))"));
    FLEETID_CHECK_OK(tx->Commit());
  }
  int applied = 0;
  for (const Migration& m : migrations) {
    FLEETID_TRY(tx, Begin(TxMode::kWrite));
    if (dialect() == Dialect::kPostgres) {
      // Nodes starting together apply each migration once: the lock is held until commit.
      FLEETID_CHECK_OK(tx->Query("SELECT pg_advisory_xact_lock(?)", {std::int64_t{0x666c6565}}));
    }
    FLEETID_TRY(done, tx->Query("SELECT 1 FROM schema_migrations WHERE component = ? AND version = ?",
                                {std::string(component), std::int64_t{m.version}}));
    if (!done.empty()) continue;
    const std::string_view sql =
        dialect() == Dialect::kPostgres && !m.postgres_sql.empty() ? m.postgres_sql : m.sqlite_sql;
    if (auto r = tx->ExecScript(sql); !r) {
      return MakeError(r.error().Wrap(fmt::format("migration {} {} '{}'", component, m.version,
                                                  m.name)));
    }
    FLEETID_CHECK_OK(tx->Exec("INSERT INTO schema_migrations (component, version, name) "
                              "VALUES (?, ?, ?)",
                              {std::string(component), std::int64_t{m.version}, std::string(m.name)}));
    FLEETID_CHECK_OK(tx->Commit());
    ++applied;
  }
  return applied;
}

namespace internal {

std::string RewritePlaceholders(std::string_view sql) {
  std::string out;
  out.reserve(sql.size() + 16);
  int n = 0;
  char quote = 0;
  for (char c : sql) {
    if (quote != 0) {
      if (c == quote) quote = 0;
      out.push_back(c);
    } else if (c == '\'' || c == '"') {
      quote = c;
      out.push_back(c);
    } else if (c == '?') {
      out += fmt::format("${}", ++n);
    } else {
      out.push_back(c);
    }
  }
  return out;
}

}  // namespace internal
}  // namespace fleetid::store
