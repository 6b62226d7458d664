// DataDirLock: who holds a data directory. A running fleetid-server holds DIR/server.lock
// exclusively (flock(2); the file names its pid) for as long as it runs, so that a second server
// cannot open the same directory and the command line knows not to change it behind the server's
// back. A command that changes the directory holds the lock shared while it runs; a server does
// not start under it. The kernel drops a lock with its process, however the process ends: there
// is no stale lock to clean up. The file is opened close-on-exec, so no child inherits the lock.
#ifndef FLEETID_NODE_DATA_LOCK_H_
#define FLEETID_NODE_DATA_LOCK_H_

#include <filesystem>
#include <optional>

#include "common/error.h"

namespace fleetid::node {

class DataDirLock {
 public:
  DataDirLock() = default;
  ~DataDirLock();
  DataDirLock(DataDirLock&& other) noexcept;
  DataDirLock& operator=(DataDirLock&& other) noexcept;
  DataDirLock(const DataDirLock&) = delete;
  DataDirLock& operator=(const DataDirLock&) = delete;

  // ForServer takes |dir|'s lock exclusively and writes this process's pid into it. kConflict
  // naming the holder when another server, or a command, holds it.
  [[nodiscard]] static Result<DataDirLock> ForServer(const std::filesystem::path& dir);

  // ForCommand takes |dir|'s lock shared, for a command that changes the directory. When a
  // server holds it, nothing is taken and |server_pid| says whose it is.
  struct CommandHold;
  [[nodiscard]] static Result<CommandHold> ForCommand(const std::filesystem::path& dir);

 private:
  explicit DataDirLock(int fd) : fd_(fd) {}
  int fd_ = -1;
};

struct DataDirLock::CommandHold {
  DataDirLock lock;                // held shared, unless a server holds the directory
  std::optional<long> server_pid;  // the server that holds it
};

}  // namespace fleetid::node

#endif  // FLEETID_NODE_DATA_LOCK_H_
