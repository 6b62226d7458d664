#include "testing/db.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace fleetid::test {
namespace {

std::string Unique(std::string_view prefix) {
  static std::atomic<int> n{0};
  return fmt::format("{}_{}_{}", prefix, ::getpid(), n++);
}

// Starts a cluster for this process when no fixture provided one; stopped at test tear-down.
class OwnCluster : public ::testing::Environment {
 public:
  static OwnCluster* instance;
  std::string dir;
  void TearDown() override {
    if (dir.empty()) return;
    const char* sh = std::getenv("FLEETID_PG_SH");
    const std::string script = sh != nullptr ? sh : FLEETID_SOURCE_DIR "/tests/pg/pg.sh";
    std::system(fmt::format("{} stop {}", script, dir).c_str());  // NOLINT(cert-env33-c)
  }
};
OwnCluster* OwnCluster::instance =
    static_cast<OwnCluster*>(::testing::AddGlobalTestEnvironment(new OwnCluster));  // NOLINT

std::string ReadUrlFile(const char* path) {
  if (path == nullptr) return {};
  std::ifstream in(path);
  std::string url;
  std::getline(in, url);
  return url;
}

}  // namespace

std::string BackendName(Backend backend) {
  return backend == Backend::kSqlite ? "sqlite" : "postgres";
}

const std::string& PostgresBaseUrl() {
  static const std::string url = [] {
    if (const char* env = std::getenv("FLEETID_TEST_PG_URL")) return std::string(env);
    if (std::string from_file = ReadUrlFile(std::getenv("FLEETID_TEST_PG_URL_FILE"));
        !from_file.empty()) {
      return from_file;
    }
    const char* sh = std::getenv("FLEETID_PG_SH");
    const std::string script = sh != nullptr ? sh : FLEETID_SOURCE_DIR "/tests/pg/pg.sh";
    OwnCluster::instance->dir = fmt::format("/tmp/fleetid-pg-own-{}", ::getpid());
    const std::string cmd = fmt::format("{} start {}", script, OwnCluster::instance->dir);
    if (std::system(cmd.c_str()) != 0) {  // NOLINT(cert-env33-c): the test harness's own script
      ADD_FAILURE() << "could not start a PostgreSQL test cluster: " << cmd;
      std::abort();
    }
    return ReadUrlFile((OwnCluster::instance->dir + "/url").c_str());
  }();
  return url;
}

TestDb::TestDb(Backend backend, int pool_size) : backend_(backend), name_(Unique("t")) {
  if (backend == Backend::kSqlite) {
    url_ = "sqlite:" +
           (std::filesystem::temp_directory_path() / ("fleetid-" + name_ + ".db")).string();
  } else {
    auto admin = store::Database::Open(PostgresBaseUrl(), 1);
    if (!admin) {
      ADD_FAILURE() << admin.error();
      std::abort();
    }
    auto tx = (*admin)->Begin(store::TxMode::kWrite);
    if (!tx || !(*tx)->ExecScript("CREATE SCHEMA " + name_) || !(*tx)->Commit()) std::abort();
    url_ = PostgresBaseUrl() + "?options=-csearch_path%3D" + name_;
  }
  auto db = store::Database::Open(url_, pool_size);
  if (!db) {
    ADD_FAILURE() << db.error();
    std::abort();
  }
  db_ = std::move(*db);
}

TestDb::~TestDb() {
  db_.reset();
  if (backend_ == Backend::kSqlite) {
    const std::string path = url_.substr(7);
    std::error_code ec;
    for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(path + suffix, ec);
  } else if (auto admin = store::Database::Open(PostgresBaseUrl(), 1)) {
    if (auto tx = (*admin)->Begin(store::TxMode::kWrite)) {
      if ((*tx)->ExecScript("DROP SCHEMA " + name_ + " CASCADE")) (void)(*tx)->Commit();
    }
  }
}

}  // namespace fleetid::test
