// The same suite against SQLite and a throwaway PostgreSQL 15.
#include "store/store.h"

#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <thread>

#include "store/pool.h"
#include "testing/db.h"
#include "testing/matchers.h"

namespace fleetid::store {
namespace {

using test::Backend;
using test::TestDb;

constexpr Migration kMigrations[] = {
    {1, "things",
     "CREATE TABLE things (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, data BLOB, n INTEGER)",
     "CREATE TABLE things (id BIGINT PRIMARY KEY, name TEXT NOT NULL UNIQUE, data BYTEA, n BIGINT)"},
    {2, "counter",
     "CREATE TABLE counter (k TEXT PRIMARY KEY, v INTEGER NOT NULL);"
     "INSERT INTO counter VALUES ('c', 0)",
     ""},
};

class StoreTest : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    db_ = std::make_unique<TestDb>(GetParam());
    auto applied = db().Migrate("test", kMigrations);
    ASSERT_TRUE(applied) << applied.error();
    ASSERT_EQ(*applied, 2);
  }
  Database& db() { return db_->db(); }

  std::int64_t Count() {
    auto tx = db().Begin(TxMode::kRead);
    EXPECT_TRUE(tx);
    auto rows = (*tx)->Query("SELECT COUNT(*) FROM things");
    EXPECT_TRUE(rows);
    return (*rows)[0].Int(0);
  }

  std::unique_ptr<TestDb> db_;
};

TEST_P(StoreTest, MigrationsApplyOnce) {
  auto again = db().Migrate("test", kMigrations);
  ASSERT_TRUE(again);
  EXPECT_EQ(*again, 0);
  auto tx = db().Begin(TxMode::kRead);
  ASSERT_TRUE(tx);
  auto rows = (*tx)->Query("SELECT version, name FROM schema_migrations WHERE component = ? "
                           "ORDER BY version",
                           {std::string("test")});
  ASSERT_TRUE(rows);
  ASSERT_EQ(rows->size(), 2u);
  EXPECT_EQ((*rows)[1].Int(0), 2);
  EXPECT_EQ((*rows)[1].Text(1), "counter");
}

TEST_P(StoreTest, ValuesRoundTrip) {
  const Blob blob = {0x00, 0xff, 0x00, 0x27, 0x5c};
  const std::string tricky = "it's \"quoted\" ? and ünïcode";
  {
    auto tx = db().Begin(TxMode::kWrite);
    ASSERT_TRUE(tx);
    auto n = (*tx)->Exec("INSERT INTO things (id, name, data, n) VALUES (?, ?, ?, ?)",
                         {std::int64_t{1}, tricky, blob, nullptr});
    ASSERT_TRUE(n) << n.error();
    EXPECT_EQ(*n, 1);
    ASSERT_TRUE((*tx)->Commit());
  }
  auto tx = db().Begin(TxMode::kRead);
  ASSERT_TRUE(tx);
  auto rows = (*tx)->Query("SELECT id, name, data, n FROM things WHERE name = ?", {tricky});
  ASSERT_TRUE(rows) << rows.error();
  ASSERT_EQ(rows->size(), 1u);
  const Row& r = (*rows)[0];
  EXPECT_EQ(r.Int(0), 1);
  EXPECT_EQ(r.Text(1), tricky);
  EXPECT_EQ(r.Bytes(2), blob);
  EXPECT_TRUE(r.IsNull(3));
  EXPECT_EQ(r.Int(3), 0);
}

TEST_P(StoreTest, UncommittedTransactionsRollBack) {
  {
    auto tx = db().Begin(TxMode::kWrite);
    ASSERT_TRUE(tx);
    ASSERT_TRUE((*tx)->Exec("INSERT INTO things (id, name) VALUES (?, ?)",
                            {std::int64_t{1}, std::string("a")}));
  }
  EXPECT_EQ(Count(), 0);
}

TEST_P(StoreTest, UniqueViolationIsAConflictAndNothingIsHalfApplied) {
  {
    auto tx = db().Begin(TxMode::kWrite);
    ASSERT_TRUE(tx);
    ASSERT_TRUE((*tx)->Exec("INSERT INTO things (id, name) VALUES (1, 'a')"));
    ASSERT_TRUE((*tx)->Commit());
  }
  auto tx = db().Begin(TxMode::kWrite);
  ASSERT_TRUE(tx);
  ASSERT_TRUE((*tx)->Exec("INSERT INTO things (id, name) VALUES (2, 'b')"));
  auto dup = (*tx)->Exec("INSERT INTO things (id, name) VALUES (3, 'a')");
  ASSERT_FALSE(dup);
  EXPECT_THAT(dup, test::HasCode(ErrorCode::kConflict));
  tx->reset();
  EXPECT_EQ(Count(), 1);
}

TEST_P(StoreTest, SyntaxErrorsAreInternalAndLeaveTheConnectionUsable) {
  {
    auto tx = db().Begin(TxMode::kWrite);
    ASSERT_TRUE(tx);
    auto bad = (*tx)->Exec("INSERT INTO no_such_table VALUES (1)");
    ASSERT_FALSE(bad);
    EXPECT_THAT(bad, test::HasCode(ErrorCode::kInternal));
  }
  EXPECT_EQ(Count(), 0);
}

TEST_P(StoreTest, ConcurrentWritersLoseNoUpdate) {
  constexpr int kThreads = 4;
  constexpr int kEach = 50;
  std::vector<std::thread> threads;
  threads.reserve(kThreads);
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kEach; ++i) {
        auto tx = db().Begin(TxMode::kWrite);
        if (!tx || !(*tx)->Exec("UPDATE counter SET v = v + 1 WHERE k = 'c'") ||
            !(*tx)->Commit()) {
          ++failures;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  auto tx = db().Begin(TxMode::kRead);
  ASSERT_TRUE(tx);
  auto rows = (*tx)->Query("SELECT v FROM counter WHERE k = 'c'");
  ASSERT_TRUE(rows);
  EXPECT_EQ((*rows)[0].Int(0), kThreads * kEach);
}

TEST_P(StoreTest, AfterCommitRunsOnlyOnceCommitted) {
  int ran = 0;
  {
    auto tx = db().Begin(TxMode::kWrite);
    ASSERT_TRUE(tx);
    ASSERT_TRUE((*tx)->Exec("INSERT INTO things (id, name) VALUES (1, 'a')"));
    (*tx)->AfterCommit([&ran] { ++ran; });
    // Destroyed without Commit: rolled back, and the action dropped.
  }
  EXPECT_EQ(ran, 0);
  auto tx = db().Begin(TxMode::kWrite);
  ASSERT_TRUE(tx);
  ASSERT_TRUE((*tx)->Exec("INSERT INTO things (id, name) VALUES (1, 'a')"));
  (*tx)->AfterCommit([&ran] { ran = ran * 10 + 1; });
  (*tx)->AfterCommit([&ran] { ran = ran * 10 + 2; });
  EXPECT_EQ(ran, 0);
  ASSERT_TRUE((*tx)->Commit());
  EXPECT_EQ(ran, 12);
}

// The database holds the registry, the CA's records and the audit log: its files are the
// owner's alone, the WAL and shared-memory files too.
TEST(SqliteFiles, AreCreatedOwnerOnly) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / fmt::format("fleetid-mode-{}", ::getpid());
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "fleetid.db").string();
  {
    auto db = Database::Open("sqlite:" + path, 2);
    ASSERT_TRUE(db) << db.error();
    ASSERT_TRUE((*db)->Migrate("test", kMigrations));
    auto tx = (*db)->Begin(TxMode::kWrite);
    ASSERT_TRUE(tx);
    ASSERT_TRUE((*tx)->Exec("INSERT INTO things (id, name) VALUES (1, 'a')"));
    ASSERT_TRUE((*tx)->Commit());
    for (const char* suffix : {"", "-wal", "-shm"}) {
      struct stat st {};
      ASSERT_EQ(::stat((path + suffix).c_str(), &st), 0) << suffix;
      EXPECT_EQ(st.st_mode & 0777, 0600u) << path << suffix;
    }
  }
  // A file left 0644 by an older version is narrowed when opened.
  ASSERT_EQ(::chmod(path.c_str(), 0644), 0);
  {
    auto db = Database::Open("sqlite:" + path, 2);
    ASSERT_TRUE(db) << db.error();
    auto tx = (*db)->Begin(TxMode::kRead);
    ASSERT_TRUE(tx);
    struct stat st {};
    ASSERT_EQ(::stat(path.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u);
  }
  std::filesystem::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Backends, StoreTest,
                         ::testing::Values(Backend::kSqlite, Backend::kPostgres),
                         [](const auto& param_info) {
                           return test::BackendName(param_info.param);
                         });

TEST(StoreOpenTest, BadUrls) {
  auto unknown = Database::Open("mysql://x");
  ASSERT_FALSE(unknown);
  EXPECT_THAT(unknown, test::HasCode(ErrorCode::kInvalidArgument));
  auto option = Database::Open("sqlite:/tmp/x.db?journal=delete");
  ASSERT_FALSE(option);
  EXPECT_THAT(option, test::HasCode(ErrorCode::kInvalidArgument));
  auto unwritable = Database::Open("sqlite:/nonexistent-dir/x.db");
  ASSERT_FALSE(unwritable);
  EXPECT_THAT(unwritable, test::HasCode(ErrorCode::kUnavailable));
  // Port 1 on loopback: nothing listens there.
  auto down = Database::Open("postgresql://postgres@127.0.0.1:1/fleetid?connect_timeout=2");
  ASSERT_FALSE(down);
  EXPECT_THAT(down, test::HasCode(ErrorCode::kUnavailable));
  EXPECT_NE(down.error().message().find("cannot connect to PostgreSQL"), std::string::npos);
}

TEST(StoreOpenTest, PlaceholdersAreRewrittenOutsideLiterals) {
  EXPECT_EQ(internal::RewritePlaceholders("SELECT ?, '?', \"a?\" FROM t WHERE x = ?"),
            "SELECT $1, '?', \"a?\" FROM t WHERE x = $2");
}

}  // namespace
}  // namespace fleetid::store
