// Kill a process (SIGKILL) in the middle of a batch import and of a loop of transitions; the
// database must then hold only whole transactions, every registry invariant must hold, and the
// audit log (appended in the same transactions) must agree with the registry and verify.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <sstream>

#include "audit/export.h"
#include "audit/log.h"
#include "registry/registry.h"
#include "testing/db.h"

namespace fleetid::registry {
namespace {

using test::Backend;
using test::TestDb;

// Child runs the crash driver with |args| (and FLEETID_FAILPOINTS=|failpoints| when given) and
// returns its pid and a stream of its stdout.
struct Child {
  pid_t pid = -1;
  FILE* out = nullptr;

  explicit Child(std::vector<std::string> args, const std::string& failpoints = "") {
    int fds[2];
    if (::pipe(fds) != 0) std::abort();
    pid = ::fork();
    if (pid == 0) {
      if (!failpoints.empty()) ::setenv("FLEETID_FAILPOINTS", failpoints.c_str(), 1);
      ::dup2(fds[1], STDOUT_FILENO);
      ::close(fds[0]);
      ::close(fds[1]);
      std::vector<char*> argv;
      static std::string driver = FLEETID_CRASH_DRIVER;
      argv.push_back(driver.data());
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(driver.c_str(), argv.data());
      ::_exit(127);
    }
    ::close(fds[1]);
    out = ::fdopen(fds[0], "r");
  }
  ~Child() {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
    if (out != nullptr) static_cast<void>(std::fclose(out));
  }
  // WaitFor reads lines until one starts with |prefix|; false at EOF.
  bool WaitFor(std::string_view prefix, int count = 1) const {
    char line[256];
    while (std::fgets(line, sizeof(line), out) != nullptr) {
      if (std::string_view(line).starts_with(prefix) && --count == 0) return true;
    }
    return false;
  }
  void Kill() {
    ::kill(pid, SIGKILL);
    ExpectKilled();
  }
  // ExpectKilled waits for the child, which must have died of SIGKILL (a failpoint's or ours).
  void ExpectKilled() {
    int status = 0;
    ::waitpid(pid, &status, 0);
    pid = -1;
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "wait status " << status;
  }
};

class CrashTest : public ::testing::TestWithParam<Backend> {};

// ExpectAuditAgrees checks that the audit log and the registry agree after the crashes: one
// entry per recorded transition and per imported batch (each appended in the transaction that
// made the change), and the whole log, integrated now, verifies from an export.
void ExpectAuditAgrees(store::Database& db) {
  auto tx = db.Begin(store::TxMode::kRead);
  ASSERT_TRUE(tx);
  const std::int64_t transitions = (*(*tx)->Query("SELECT COUNT(*) FROM transitions"))[0].Int(0);
  const std::int64_t batches =
      (*(*tx)->Query("SELECT COUNT(*) FROM import_batches WHERE devices > 0"))[0].Int(0);
  tx->reset();
  FakeClock clock(SystemClock::Instance().Now());
  audit::Log log(db, nullptr, clock);
  auto size = log.Integrate();
  ASSERT_TRUE(size) << size.error();
  std::int64_t transition_entries = 0;
  std::int64_t import_entries = 0;
  for (std::uint64_t start = 0; start < *size; start += 1000) {
    auto entries = log.Entries(start, start + 1000);
    ASSERT_TRUE(entries);
    for (const audit::StoredEntry& e : *entries) {
      const std::string action = nlohmann::json::parse(e.body).at("action");
      (action == "registry.import" ? import_entries : transition_entries) += 1;
    }
  }
  EXPECT_EQ(transition_entries, transitions) << "a transition without its audit entry, or back";
  EXPECT_EQ(import_entries, batches);
  std::stringstream file;
  ASSERT_TRUE(audit::WriteExport(log, file));
  auto exported = audit::ReadExport(file);
  ASSERT_TRUE(exported);
  const audit::VerifyReport report = audit::VerifyExport(*exported, nullptr, std::nullopt);
  EXPECT_TRUE(report.ok()) << (report.problems.empty() ? "" : report.problems.front());
  EXPECT_EQ(report.entries, *size);
}

TEST_P(CrashTest, KilledBatchImportLeavesAllOrNothing) {
  TestDb db(GetParam());
  ASSERT_TRUE(Registry::Migrate(db.db()));
  constexpr int kDevices = 20000;
  // Killed with half the rows written, and with all of them written but not committed (a kill
  // after some sleep was tried first: on a fast machine the import had finished by then).
  for (const char* failpoint : {"registry-import-midway", "registry-import-before-commit"}) {
    Child child({db.url(), "import", std::to_string(kDevices)}, failpoint);
    ASSERT_TRUE(child.WaitFor("importing"));
    EXPECT_FALSE(child.WaitFor("imported")) << failpoint << " never fired";
    child.ExpectKilled();
    auto tx = db.db().Begin(store::TxMode::kRead);
    ASSERT_TRUE(tx);
    auto n = (*tx)->Query("SELECT COUNT(*) FROM devices WHERE batch = 'big-batch'");
    ASSERT_TRUE(n);
    const std::int64_t count = (*n)[0].Int(0);
    EXPECT_EQ(count, 0) << failpoint << ": a half-applied batch";
    auto batches = (*tx)->Query("SELECT devices FROM import_batches WHERE batch_id = 'big-batch'");
    ASSERT_TRUE(batches);
    EXPECT_TRUE(batches->empty()) << failpoint;
  }
  // Killed right after the commit, the whole batch is there; a clean re-run then completes and
  // imports nothing twice.
  {
    Child child({db.url(), "import", std::to_string(kDevices)}, "registry-import-after-commit");
    ASSERT_TRUE(child.WaitFor("importing"));
    EXPECT_FALSE(child.WaitFor("imported"));
    child.ExpectKilled();
  }
  {
    Child child({db.url(), "import", std::to_string(kDevices)});
    ASSERT_TRUE(child.WaitFor("imported ok"));
  }
  auto tx = db.db().Begin(store::TxMode::kRead);
  EXPECT_EQ((*(*tx)->Query("SELECT COUNT(*) FROM devices"))[0].Int(0), kDevices);
  tx->reset();
  ExpectAuditAgrees(db.db());
}

TEST_P(CrashTest, KilledTransitionLoopLeavesConsistentHistory) {
  TestDb db(GetParam());
  ASSERT_TRUE(Registry::Migrate(db.db()));
  FakeClock clock(SystemClock::Instance().Now());
  struct NoPki : CredentialEffects {
    Result<void> Apply(store::Transaction&, const Device&, CredentialAction,
                       const TransitionRequest&) override {
      return {};
    }
  } effects;
  Registry registry(db.db(), clock, &effects, RegistryOptions{});
  const Actor admin{kOperator, "setup", {"admin"}};
  std::vector<ManufacturingRecord> records(100);
  for (int i = 0; i < 100; ++i) {
    records[i].serial = fmt::format("SN-{}", i);
    records[i].model = "m";
    records[i].manufacturer = "acme";
    records[i].idevid_fingerprint = fmt::format("{:064x}", i + 1);
  }
  ASSERT_TRUE(registry.Import("b", records, admin));
  for (const auto& r : records) {
    for (Event e : {Event::kProvision, Event::kActivate}) {
      TransitionRequest req;
      req.serial = r.serial;
      req.event = e;
      req.expected_version = registry.Get(r.serial)->version;
      req.actor = e == Event::kActivate ? Actor{kDevice, r.serial, {}} : admin;
      req.tenant = "t";
      req.region = "r";
      req.evidence_digest = std::string(64, 'e');
      ASSERT_TRUE(registry.Transition(req));
    }
  }
  for (int crash = 0; crash < 3; ++crash) {
    Child child({db.url(), "transitions"});
    ASSERT_TRUE(child.WaitFor("committed", 150 + 97 * crash));
    child.Kill();
  }
  // Invariants: each device's version counts its history, and its state is where its last
  // recorded transition left it.
  for (const auto& r : records) {
    auto d = registry.Get(r.serial);
    ASSERT_TRUE(d);
    auto history = registry.History(r.serial);
    ASSERT_TRUE(history);
    EXPECT_EQ(d->version, 1 + static_cast<std::int64_t>(history->size())) << r.serial;
    EXPECT_EQ(d->state, history->back().to) << r.serial;
    for (std::size_t i = 0; i < history->size(); ++i) {
      EXPECT_EQ((*history)[i].version, static_cast<std::int64_t>(i) + 2);
      if (i > 0) {
        EXPECT_EQ((*history)[i].from, (*history)[i - 1].to);
      }
    }
  }
  ExpectAuditAgrees(db.db());
}

INSTANTIATE_TEST_SUITE_P(Backends, CrashTest,
                         ::testing::Values(Backend::kSqlite, Backend::kPostgres),
                         [](const auto& param_info) {
                           return test::BackendName(param_info.param);
                         });

}  // namespace
}  // namespace fleetid::registry
