// Registry throughput on one database, beside the raw rates of the same database measured in the
// same run through its own C API (no fleetid code in the baseline):
//   registry_bench URL DEVICES
// prints one JSON object per line: {"db":..., "figure":..., "per_second":..., ...}.
#include <libpq-fe.h>
#include <sqlite3.h>

#include <chrono>
#include <cstdio>
#include <random>
#include <string>

#include "common/clock.h"
#include "registry/registry.h"

namespace fleetid {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

void Print(const std::string& db, const std::string& figure, double n, double seconds) {
  std::printf("{\"db\":\"%s\",\"figure\":\"%s\",\"count\":%.0f,\"seconds\":%.3f,\"per_second\":%.1f}\n",
              db.c_str(), figure.c_str(), n, seconds, n / seconds);
  std::fflush(stdout);
}

std::string Payload(int i) {
  // About the size of a device row: serial, model, manufacturer, two SHA-256 hex digests.
  return fmt::format("SN-{:08d}|gw-100|acme|{:064x}|1.0.0|{:064x}", i, i + 1, 7);
}

// Raw SQLite: one transaction, a prepared INSERT per row, then prepared point lookups.
void RawSqlite(const std::string& path, int n) {
  sqlite3* db = nullptr;
  sqlite3_open(path.c_str(), &db);
  sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; DROP TABLE IF EXISTS raw;"
               "CREATE TABLE raw (id INTEGER PRIMARY KEY, k TEXT NOT NULL UNIQUE, v TEXT NOT NULL)",
               nullptr, nullptr, nullptr);
  sqlite3_stmt* ins = nullptr;
  sqlite3_prepare_v2(db, "INSERT INTO raw (k, v) VALUES (?, ?)", -1, &ins, nullptr);
  auto start = Clock::now();
  sqlite3_exec(db, "BEGIN", nullptr, nullptr, nullptr);
  for (int i = 0; i < n; ++i) {
    const std::string k = fmt::format("SN-{:08d}", i);
    const std::string v = Payload(i);
    sqlite3_bind_text(ins, 1, k.data(), static_cast<int>(k.size()), SQLITE_STATIC);
    sqlite3_bind_text(ins, 2, v.data(), static_cast<int>(v.size()), SQLITE_STATIC);
    sqlite3_step(ins);
    sqlite3_reset(ins);
  }
  sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr);
  Print("sqlite", "raw_insert", n, Seconds(start));
  sqlite3_finalize(ins);
  sqlite3_stmt* sel = nullptr;
  sqlite3_prepare_v2(db, "SELECT id, k, v FROM raw WHERE k = ?", -1, &sel, nullptr);
  std::mt19937 rng(1);
  const int lookups = 200000;
  start = Clock::now();
  for (int i = 0; i < lookups; ++i) {
    const std::string k = fmt::format("SN-{:08d}", static_cast<int>(rng() % static_cast<unsigned>(n)));
    sqlite3_bind_text(sel, 1, k.data(), static_cast<int>(k.size()), SQLITE_STATIC);
    while (sqlite3_step(sel) == SQLITE_ROW) {
    }
    sqlite3_reset(sel);
  }
  Print("sqlite", "raw_lookup", lookups, Seconds(start));
  sqlite3_finalize(sel);
  sqlite3_exec(db, "DROP TABLE raw", nullptr, nullptr, nullptr);
  sqlite3_close(db);
}

// Raw PostgreSQL through libpq: one transaction, a prepared INSERT per row, prepared lookups.
void RawPostgres(const std::string& url, int n) {
  PGconn* c = PQconnectdb(url.c_str());
  PQclear(PQexec(c, "DROP TABLE IF EXISTS raw; CREATE TABLE raw (id BIGSERIAL PRIMARY KEY, "
                    "k TEXT NOT NULL UNIQUE, v TEXT NOT NULL)"));
  PQclear(PQprepare(c, "ins", "INSERT INTO raw (k, v) VALUES ($1, $2)", 2, nullptr));
  PQclear(PQprepare(c, "sel", "SELECT id, k, v FROM raw WHERE k = $1", 1, nullptr));
  auto start = Clock::now();
  PQclear(PQexec(c, "BEGIN"));
  for (int i = 0; i < n; ++i) {
    const std::string k = fmt::format("SN-{:08d}", i);
    const std::string v = Payload(i);
    const char* params[] = {k.c_str(), v.c_str()};
    PQclear(PQexecPrepared(c, "ins", 2, params, nullptr, nullptr, 0));
  }
  PQclear(PQexec(c, "COMMIT"));
  Print("postgres", "raw_insert", n, Seconds(start));
  std::mt19937 rng(1);
  const int lookups = 100000;
  start = Clock::now();
  for (int i = 0; i < lookups; ++i) {
    const std::string k = fmt::format("SN-{:08d}", static_cast<int>(rng() % static_cast<unsigned>(n)));
    const char* params[] = {k.c_str()};
    PQclear(PQexecPrepared(c, "sel", 1, params, nullptr, nullptr, 0));
  }
  Print("postgres", "raw_lookup", lookups, Seconds(start));
  PQclear(PQexec(c, "DROP TABLE raw"));
  PQfinish(c);
}

constexpr const char* kRawDeviceInsert =
    "INSERT INTO devices (serial, model, manufacturer, idevid_fingerprint, firmware_version, "
    "firmware_digest, labels, state, resume_state, version, batch, station, manufactured_at, "
    "updated_at) VALUES (?1, 'gw-100', 'acme', ?2, '1.0.0', ?3, '{}', 'manufactured', "
    "'manufactured', 1, 'raw', 'line-3', 0, 0)";

// The same rows inserted straight into the registry's own devices table (same columns, same
// indexes) through the database's C API, committed, then deleted: what the database itself can
// do for this schema, without fleetid's layers.
void RawDevicesSqlite(const std::string& path, int n) {
  sqlite3* db = nullptr;
  sqlite3_open(path.c_str(), &db);
  sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; "
               "PRAGMA cache_size=-65536; PRAGMA mmap_size=1073741824;",
               nullptr, nullptr, nullptr);
  sqlite3_stmt* ins = nullptr;
  sqlite3_prepare_v2(db, kRawDeviceInsert, -1, &ins, nullptr);
  const std::string fw = fmt::format("{:064x}", 7);
  auto start = Clock::now();
  sqlite3_exec(db, "BEGIN", nullptr, nullptr, nullptr);
  for (int i = 0; i < n; ++i) {
    const std::string serial = fmt::format("RAW-{:08d}", i);
    const std::string fp = fmt::format("{:064x}", 0x7000000 + i);
    sqlite3_bind_text(ins, 1, serial.data(), static_cast<int>(serial.size()), SQLITE_STATIC);
    sqlite3_bind_text(ins, 2, fp.data(), static_cast<int>(fp.size()), SQLITE_STATIC);
    sqlite3_bind_text(ins, 3, fw.data(), static_cast<int>(fw.size()), SQLITE_STATIC);
    sqlite3_step(ins);
    sqlite3_reset(ins);
  }
  sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr);
  Print("sqlite", "raw_insert_devices_schema", n, Seconds(start));
  sqlite3_finalize(ins);
  sqlite3_exec(db, "DELETE FROM devices; PRAGMA wal_checkpoint(TRUNCATE);", nullptr, nullptr,
               nullptr);
  sqlite3_close(db);
}

void RawDevicesPostgres(const std::string& url, int n) {
  PGconn* c = PQconnectdb(url.c_str());
  std::string sql = kRawDeviceInsert;
  for (const char* p : {"?1", "?2", "?3"}) sql.replace(sql.find(p), 2, std::string("$") + p[1]);
  PQclear(PQprepare(c, "rawdev", sql.c_str(), 3, nullptr));
  const std::string fw = fmt::format("{:064x}", 7);
  auto start = Clock::now();
  PQclear(PQexec(c, "BEGIN"));
  for (int i = 0; i < n; ++i) {
    const std::string serial = fmt::format("RAW-{:08d}", i);
    const std::string fp = fmt::format("{:064x}", 0x7000000 + i);
    const char* params[] = {serial.c_str(), fp.c_str(), fw.c_str()};
    PQclear(PQexecPrepared(c, "rawdev", 3, params, nullptr, nullptr, 0));
  }
  PQclear(PQexec(c, "COMMIT"));
  Print("postgres", "raw_insert_devices_schema", n, Seconds(start));
  PQclear(PQexec(c, "DELETE FROM devices"));
  PQfinish(c);
}

constexpr const char* kRawDeviceLookup =
    "SELECT id, serial, model, manufacturer, idevid_fingerprint, firmware_version, "
    "firmware_digest, tenant, region, labels, state, resume_state, version, batch, station, "
    "manufactured_at, updated_at, grace_until FROM devices WHERE serial = ?1";

// Point lookups of the registry's own rows (same table, same columns) through the C API.
void RawDeviceLookupsSqlite(const std::string& path, int n, int lookups) {
  sqlite3* db = nullptr;
  sqlite3_open(path.c_str(), &db);
  sqlite3_exec(db, "PRAGMA cache_size=-65536; PRAGMA mmap_size=1073741824;", nullptr, nullptr,
               nullptr);
  sqlite3_stmt* sel = nullptr;
  sqlite3_prepare_v2(db, kRawDeviceLookup, -1, &sel, nullptr);
  std::mt19937 rng(2);
  auto start = Clock::now();
  for (int i = 0; i < lookups; ++i) {
    const std::string k = fmt::format("SN-{:08d}", static_cast<int>(rng() % static_cast<unsigned>(n)));
    sqlite3_bind_text(sel, 1, k.data(), static_cast<int>(k.size()), SQLITE_STATIC);
    while (sqlite3_step(sel) == SQLITE_ROW) {
    }
    sqlite3_reset(sel);
  }
  Print("sqlite", "raw_lookup_devices_schema", lookups, Seconds(start));
  sqlite3_finalize(sel);
  sqlite3_close(db);
}

void RawDeviceLookupsPostgres(const std::string& url, int n, int lookups) {
  PGconn* c = PQconnectdb(url.c_str());
  std::string sql = kRawDeviceLookup;
  sql.replace(sql.find("?1"), 2, "$1");
  PQclear(PQprepare(c, "rawsel", sql.c_str(), 1, nullptr));
  std::mt19937 rng(2);
  auto start = Clock::now();
  for (int i = 0; i < lookups; ++i) {
    const std::string k = fmt::format("SN-{:08d}", static_cast<int>(rng() % static_cast<unsigned>(n)));
    const char* params[] = {k.c_str()};
    PQclear(PQexecPrepared(c, "rawsel", 1, params, nullptr, nullptr, 0));
  }
  Print("postgres", "raw_lookup_devices_schema", lookups, Seconds(start));
  PQfinish(c);
}

int Run(const std::string& url, int n) {
  const bool sqlite = url.starts_with("sqlite:");
  const std::string name = sqlite ? "sqlite" : "postgres";
  if (sqlite) {
    RawSqlite(url.substr(7), n);
  } else {
    RawPostgres(url, n);
  }

  auto db = store::Database::Open(url, 2);
  if (!db || !registry::Registry::Migrate(**db)) {
    std::fprintf(stderr, "cannot open %s\n", url.c_str());
    return 1;
  }
  struct NoPki : registry::CredentialEffects {
    Result<void> Apply(store::Transaction&, const registry::Device&, registry::CredentialAction,
                       const registry::TransitionRequest&) override {
      return {};
    }
  } effects;
  FakeClock clock(SystemClock::Instance().Now());
  registry::Registry reg(**db, clock, &effects, registry::RegistryOptions{});
  const registry::Actor admin{registry::kOperator, "bench", {"admin"}};
  if (sqlite) {
    RawDevicesSqlite(url.substr(7), n);
  } else {
    RawDevicesPostgres(url, n);
  }

  std::vector<registry::ManufacturingRecord> records(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) {
    auto& r = records[static_cast<std::size_t>(i)];
    r.serial = fmt::format("SN-{:08d}", i);
    r.model = i % 2 == 0 ? "gw-100" : "sensor-7";
    r.manufacturer = "acme";
    r.idevid_fingerprint = fmt::format("{:064x}", i + 1);
    r.firmware_version = "1.0.0";
    r.firmware_digest = fmt::format("{:064x}", 7);
    r.station = "line-3";
  }
  auto start = Clock::now();
  auto report = reg.Import("bench-batch", records, admin);
  if (!report) {
    std::fprintf(stderr, "import: %s\n", report.error().ToString().c_str());
    return 1;
  }
  Print(name, "import", static_cast<double>(report->imported), Seconds(start));

  const int lookups = sqlite ? 200000 : 100000;
  if (sqlite) {
    RawDeviceLookupsSqlite(url.substr(7), n, lookups);
  } else {
    RawDeviceLookupsPostgres(url, n, lookups);
  }
  std::mt19937 rng(1);
  start = Clock::now();
  for (int i = 0; i < lookups; ++i) {
    auto d = reg.Get(records[rng() % records.size()].serial);
    if (!d) return 1;
  }
  Print(name, "lookup", lookups, Seconds(start));

  registry::DeviceQuery q;
  q.limit = 1000;
  std::int64_t seen = 0;
  int pages = 0;
  start = Clock::now();
  for (;;) {
    auto page = reg.Query(q);
    if (!page) return 1;
    seen += static_cast<std::int64_t>(page->devices.size());
    ++pages;
    if (page->next == 0) break;
    q.after = page->next;
  }
  const double paged = Seconds(start);
  Print(name, "paged_query_devices", static_cast<double>(seen), paged);
  Print(name, "paged_query_pages", pages, paged);

  // Transitions: provision devices (manufactured -> provisioned), each with its history row.
  const int transitions = sqlite ? 20000 : 10000;
  start = Clock::now();
  for (int i = 0; i < transitions; ++i) {
    registry::TransitionRequest req;
    req.serial = records[static_cast<std::size_t>(i)].serial;
    req.event = registry::Event::kProvision;
    req.expected_version = 1;
    req.actor = admin;
    req.tenant = "tenant-a";
    req.region = "eu-west";
    if (auto r = reg.Transition(req); !r) {
      std::fprintf(stderr, "transition: %s\n", r.error().ToString().c_str());
      return 1;
    }
  }
  Print(name, "transition", transitions, Seconds(start));
  return 0;
}

}  // namespace
}  // namespace fleetid

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: registry_bench URL DEVICES\n");
    return 2;
  }
  return fleetid::Run(argv[1], std::atoi(argv[2]));
}
