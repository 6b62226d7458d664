// testing/db.h: fresh databases for tests, on both backends: a new SQLite file, or a new schema in
// a throwaway PostgreSQL cluster (the CTest fixture's, or one this process starts and stops
// itself).
#ifndef FLEETID_TESTING_DB_H_
#define FLEETID_TESTING_DB_H_

#include <memory>
#include <string>

#include "store/store.h"

namespace fleetid::test {

enum class Backend { kSqlite, kPostgres };
std::string BackendName(Backend backend);

// TestDb owns one fresh, empty database and removes it when destroyed.
class TestDb {
 public:
  explicit TestDb(Backend backend, int pool_size = 4);
  ~TestDb();
  TestDb(const TestDb&) = delete;
  TestDb& operator=(const TestDb&) = delete;

  store::Database& db() { return *db_; }
  const std::string& url() const { return url_; }

 private:
  Backend backend_;
  std::string name_;
  std::string url_;
  std::unique_ptr<store::Database> db_;
};

// PostgresBaseUrl returns the URL of the test cluster (starting one if needed).
const std::string& PostgresBaseUrl();

}  // namespace fleetid::test

#endif  // FLEETID_TESTING_DB_H_
