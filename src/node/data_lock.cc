#include "node/data_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <string>
#include <utility>

#include <fmt/format.h>

namespace fleetid::node {
namespace {

constexpr const char* kLockFile = "server.lock";

Result<int> OpenLockFile(const std::filesystem::path& dir) {
  const std::filesystem::path path = dir / kLockFile;
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) {
    return MakeError(ErrorCode::kUnavailable, "cannot open {}: {}", path.string(),
                     std::strerror(errno));
  }
  return fd;
}

// HolderPid reads the pid a server wrote into the lock file; 0 when it says none.
long HolderPid(int fd) {
  char text[32] = {};
  const ssize_t n = ::pread(fd, text, sizeof(text) - 1, 0);
  long pid = 0;
  if (n > 0) std::from_chars(text, text + n, pid);
  return pid;
}

}  // namespace

DataDirLock::~DataDirLock() {
  if (fd_ >= 0) ::close(fd_);  // closing the last descriptor releases the lock
}

DataDirLock::DataDirLock(DataDirLock&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}

DataDirLock& DataDirLock::operator=(DataDirLock&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

Result<DataDirLock> DataDirLock::ForServer(const std::filesystem::path& dir) {
  FLEETID_TRY(fd, OpenLockFile(dir));
  DataDirLock lock(fd);
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int error = errno;
    if (error != EWOULDBLOCK) {
      return MakeError(ErrorCode::kUnavailable, "cannot lock {}: {}", dir.string(),
                       std::strerror(error));
    }
    // Only a server holds it exclusively: if a shared hold is possible, commands hold it.
    const bool commands = ::flock(fd, LOCK_SH | LOCK_NB) == 0;
    return MakeError(ErrorCode::kConflict, "{} is in use: {}; one server per data directory",
                     dir.string(),
                     commands ? std::string("a fleetid command is changing it")
                              : fmt::format("fleetid-server (pid {}) holds it", HolderPid(fd)));
  }
  const std::string pid = fmt::format("{}\n", static_cast<long>(::getpid()));
  if (::ftruncate(fd, 0) != 0 ||
      ::pwrite(fd, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
    return MakeError(ErrorCode::kUnavailable, "cannot write {}: {}", (dir / kLockFile).string(),
                     std::strerror(errno));
  }
  return lock;
}

Result<DataDirLock::CommandHold> DataDirLock::ForCommand(const std::filesystem::path& dir) {
  FLEETID_TRY(fd, OpenLockFile(dir));
  CommandHold hold{.lock = DataDirLock(fd), .server_pid = std::nullopt};
  if (::flock(fd, LOCK_SH | LOCK_NB) == 0) return hold;
  const int error = errno;
  if (error != EWOULDBLOCK) {
    return MakeError(ErrorCode::kUnavailable, "cannot lock {}: {}", dir.string(),
                     std::strerror(error));
  }
  hold.server_pid = HolderPid(fd);
  hold.lock = DataDirLock();
  return hold;
}

}  // namespace fleetid::node
