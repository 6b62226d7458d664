// PostgreSQL backend over libpq: pooled connections, statements prepared once per connection,
// text parameters except bytea (binary), text results decoded by column type.
#include <libpq-fe.h>

#include <map>

#include "store/backends.h"
#include "store/pool.h"

namespace fleetid::store::internal {
namespace {

constexpr Oid kBoolOid = 16;
constexpr Oid kByteaOid = 17;
constexpr Oid kInt8Oid = 20;
constexpr Oid kInt2Oid = 21;
constexpr Oid kInt4Oid = 23;

template <auto Fn>
struct Closer {
  void operator()(auto* p) const noexcept { Fn(p); }
};
using ConnPtr = std::unique_ptr<PGconn, Closer<&PQfinish>>;
using ResultPtr = std::unique_ptr<PGresult, Closer<&PQclear>>;

std::string FirstLine(const char* message) {
  std::string m = message != nullptr ? message : "";
  if (auto nl = m.find('\n'); nl != std::string::npos) m.resize(nl);
  return m;
}

// Maps a SQLSTATE (PostgreSQL Appendix A) onto what the caller should do.
ErrorCode CodeForState(std::string_view state) {
  if (state == "23505" || state == "23P01" || state == "40001" || state == "40P01" ||
      state == "55P03") {
    return ErrorCode::kConflict;  // unique/exclusion violation, serialization failure, deadlock
  }
  if (state.starts_with("23")) return ErrorCode::kConflict;  // other integrity constraints
  if (state.starts_with("22")) return ErrorCode::kInvalidArgument;
  if (state.starts_with("08") || state.starts_with("53") || state.starts_with("57")) {
    return ErrorCode::kUnavailable;
  }
  return ErrorCode::kInternal;
}

struct Connection {
  ConnPtr conn;
  std::map<std::string, std::string, std::less<>> prepared;  // fleetid SQL -> statement name
  bool broken = false;
};

class PostgresDatabase final : public Database {
 public:
  PostgresDatabase(std::string url, int pool_size) : url_(std::move(url)), pool_(pool_size) {}

  Dialect dialect() const override { return Dialect::kPostgres; }
  Result<std::unique_ptr<Transaction>> Begin(TxMode mode) override;

  Result<std::unique_ptr<Connection>> Connect() {
    auto c = std::make_unique<Connection>();
    c->conn.reset(PQconnectdb(url_.c_str()));
    if (!c->conn || PQstatus(c->conn.get()) != CONNECTION_OK) {
      return MakeError(ErrorCode::kUnavailable, "cannot connect to PostgreSQL: {}",
                       FirstLine(c->conn ? PQerrorMessage(c->conn.get()) : "out of memory"));
    }
    return c;
  }

  void Release(std::unique_ptr<Connection> c) {
    if (c && (c->broken || PQstatus(c->conn.get()) != CONNECTION_OK)) c.reset();
    pool_.Put(std::move(c));
  }

 private:
  std::string url_;
  Pool<Connection> pool_;
};

class PostgresTransaction final : public Transaction {
 public:
  PostgresTransaction(PostgresDatabase* owner, std::unique_ptr<Connection> c)
      : owner_(owner), c_(std::move(c)) {}

  ~PostgresTransaction() override {
    if (open_) {
      ResultPtr r(PQexec(c_->conn.get(), "ROLLBACK"));
      if (PQresultStatus(r.get()) != PGRES_COMMAND_OK) c_->broken = true;
    }
    owner_->Release(std::move(c_));
  }

  Result<std::int64_t> Exec(std::string_view sql, std::span<const Value> params) override {
    FLEETID_TRY(r, Run(sql, params));
    const char* n = PQcmdTuples(r.get());
    return std::int64_t{n != nullptr && *n != '\0' ? std::stoll(n) : 0};
  }

  Result<std::vector<Row>> Query(std::string_view sql, std::span<const Value> params) override {
    FLEETID_TRY(r, Run(sql, params));
    const int nrows = PQntuples(r.get());
    const int ncols = PQnfields(r.get());
    std::vector<Row> rows;
    rows.reserve(static_cast<std::size_t>(nrows));
    for (int i = 0; i < nrows; ++i) {
      std::vector<Value> values;
      values.reserve(static_cast<std::size_t>(ncols));
      for (int j = 0; j < ncols; ++j) {
        if (PQgetisnull(r.get(), i, j)) {
          values.emplace_back(nullptr);
          continue;
        }
        const char* text = PQgetvalue(r.get(), i, j);
        switch (PQftype(r.get(), j)) {
          case kInt2Oid:
          case kInt4Oid:
          case kInt8Oid:
            values.emplace_back(std::int64_t{std::stoll(text)});
            break;
          case kBoolOid:
            values.emplace_back(std::int64_t{text[0] == 't' ? 1 : 0});
            break;
          case kByteaOid: {
            std::size_t len = 0;
            unsigned char* raw =
                PQunescapeBytea(reinterpret_cast<const unsigned char*>(text), &len);
            if (raw == nullptr) return MakeError(ErrorCode::kInternal, "cannot decode bytea");
            values.emplace_back(Blob(raw, raw + len));
            PQfreemem(raw);
            break;
          }
          default:
            values.emplace_back(std::string(text, static_cast<std::size_t>(PQgetlength(r.get(), i, j))));
            break;
        }
      }
      rows.emplace_back(std::move(values));
    }
    return rows;
  }

  Result<void> ExecScript(std::string_view sql) override {
    ResultPtr r(PQexec(c_->conn.get(), std::string(sql).c_str()));
    return Check(r.get(), "running SQL script");
  }

  Result<void> CommitWork() override {
    if (autocommit_) return {};
    if (!open_) return MakeError(ErrorCode::kInternal, "transaction already finished");
    ResultPtr r(PQexec(c_->conn.get(), "COMMIT"));
    open_ = false;
    FLEETID_CHECK_OK(Check(r.get(), "commit"));
    // A COMMIT of a failed transaction answers ROLLBACK, not an error.
    if (std::string_view(PQcmdStatus(r.get())) == "ROLLBACK") {
      return MakeError(ErrorCode::kConflict, "commit: the transaction was rolled back");
    }
    return {};
  }

  Result<void> Start(TxMode mode) {
    if (mode == TxMode::kAutocommit) {
      autocommit_ = true;
      return {};
    }
    const char* begin = mode == TxMode::kSerializable ? "BEGIN ISOLATION LEVEL SERIALIZABLE"
                        : mode == TxMode::kRead       ? "BEGIN READ ONLY"
                                                      : "BEGIN";
    ResultPtr r(PQexec(c_->conn.get(), begin));
    FLEETID_CHECK_OK(Check(r.get(), "begin"));
    open_ = true;
    return {};
  }

 private:
  Result<void> Check(PGresult* r, std::string_view what) {
    const ExecStatusType status = PQresultStatus(r);
    if (status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK) return {};
    if (r == nullptr || status == PGRES_FATAL_ERROR) {
      if (PQstatus(c_->conn.get()) != CONNECTION_OK) c_->broken = true;
    }
    const char* state = r != nullptr ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
    const ErrorCode code = state != nullptr ? CodeForState(state) : ErrorCode::kUnavailable;
    return MakeError(code, "{}: {}", what,
                     FirstLine(r != nullptr ? PQresultErrorMessage(r) : PQerrorMessage(c_->conn.get())));
  }

  Result<ResultPtr> Run(std::string_view sql, std::span<const Value> params) {
    auto it = c_->prepared.find(sql);
    if (it == c_->prepared.end()) {
      const std::string name = fmt::format("s{}", c_->prepared.size());
      const std::string text = RewritePlaceholders(sql);
      ResultPtr prep(PQprepare(c_->conn.get(), name.c_str(), text.c_str(), 0, nullptr));
      FLEETID_CHECK_OK(Check(prep.get(), "prepare"));
      it = c_->prepared.emplace(std::string(sql), name).first;
    }
    std::vector<std::string> text_values(params.size());
    std::vector<const char*> values(params.size(), nullptr);
    std::vector<int> lengths(params.size(), 0);
    std::vector<int> formats(params.size(), 0);
    for (std::size_t i = 0; i < params.size(); ++i) {
      if (const auto* n = std::get_if<std::int64_t>(&params[i])) {
        text_values[i] = std::to_string(*n);
        values[i] = text_values[i].c_str();
      } else if (const auto* s = std::get_if<std::string>(&params[i])) {
        values[i] = s->c_str();
      } else if (const auto* b = std::get_if<Blob>(&params[i])) {
        values[i] = reinterpret_cast<const char*>(b->data());
        lengths[i] = static_cast<int>(b->size());
        formats[i] = 1;
      }
    }
    ResultPtr r(PQexecPrepared(c_->conn.get(), it->second.c_str(), static_cast<int>(params.size()),
                               values.data(), lengths.data(), formats.data(), 0));
    FLEETID_CHECK_OK(Check(r.get(), sql.substr(0, std::min<std::size_t>(sql.size(), 48))));
    return r;
  }

  PostgresDatabase* owner_;
  std::unique_ptr<Connection> c_;
  bool open_ = false;
  bool autocommit_ = false;
};

Result<std::unique_ptr<Transaction>> PostgresDatabase::Begin(TxMode mode) {
  std::unique_ptr<Connection> c = pool_.Take();
  if (!c) {
    auto made = Connect();
    if (!made) {
      pool_.Put(nullptr);
      return MakeError(made.error());
    }
    c = std::move(*made);
  }
  auto tx = std::make_unique<PostgresTransaction>(this, std::move(c));
  FLEETID_CHECK_OK(tx->Start(mode));
  return tx;
}

}  // namespace

Result<std::unique_ptr<Database>> OpenPostgres(std::string_view url, int pool_size) {
  auto db = std::make_unique<PostgresDatabase>(std::string(url), pool_size);
  FLEETID_TRY(tx, db->Begin(TxMode::kRead));
  tx.reset();
  return std::unique_ptr<Database>(std::move(db));
}

}  // namespace fleetid::store::internal
