// The data directory's lock with real flock(2) on a real directory: locks taken through separate
// open(2) calls conflict within one process as they do between processes.
#include "node/data_lock.h"

#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "testing/matchers.h"

namespace fleetid::node {
namespace {

using ::testing::HasSubstr;

class DataDirLockTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (std::filesystem::temp_directory_path() / "fleetid-lock-XXXXXX").string();
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::filesystem::path dir_;
};

TEST_F(DataDirLockTest, OneServerPerDirectoryAndCommandsStandAsideWhileItRuns) {
  const long pid = static_cast<long>(::getpid());
  {
    // Commands share the directory while no server runs, and a server does not start under them.
    auto command = DataDirLock::ForCommand(dir_);
    ASSERT_TRUE(command) << command.error();
    EXPECT_FALSE(command->server_pid.has_value());
    auto another = DataDirLock::ForCommand(dir_);
    ASSERT_TRUE(another) << another.error();
    EXPECT_FALSE(another->server_pid.has_value());
    auto server = DataDirLock::ForServer(dir_);
    EXPECT_THAT(server, test::HasCode(ErrorCode::kConflict));
    EXPECT_THAT(server.error().message(), HasSubstr("a fleetid command is changing it"));
  }
  auto server = DataDirLock::ForServer(dir_);
  ASSERT_TRUE(server) << server.error();
  std::string written;
  std::getline(std::ifstream(dir_ / "server.lock"), written);
  EXPECT_EQ(written, std::to_string(pid));
  struct stat st {};
  ASSERT_EQ(::stat((dir_ / "server.lock").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  auto second = DataDirLock::ForServer(dir_);
  EXPECT_THAT(second, test::HasCode(ErrorCode::kConflict));
  EXPECT_THAT(second.error().message(),
              HasSubstr(fmt::format("fleetid-server (pid {}) holds it", pid)));
  auto command = DataDirLock::ForCommand(dir_);
  ASSERT_TRUE(command) << command.error();
  EXPECT_EQ(command->server_pid, pid) << "the command learns whose the directory is";

  // The server's end (here: its lock released) frees the directory; no stale lock remains.
  *server = DataDirLock();
  auto after = DataDirLock::ForCommand(dir_);
  ASSERT_TRUE(after) << after.error();
  EXPECT_FALSE(after->server_pid.has_value());
}

TEST_F(DataDirLockTest, ADirectoryThatCannotHoldTheLockIsAnError) {
  auto missing = DataDirLock::ForServer(dir_ / "no-such-dir");
  EXPECT_THAT(missing, test::HasCode(ErrorCode::kUnavailable));
  EXPECT_THAT(missing.error().message(), HasSubstr("server.lock"));
}

}  // namespace
}  // namespace fleetid::node
