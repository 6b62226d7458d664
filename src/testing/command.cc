#include "testing/command.h"

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <memory>

namespace fleetid::test {
namespace {

struct PipeCloser {
  void operator()(FILE* pipe) const noexcept { ::pclose(pipe); }
};

}  // namespace

CommandResult RunCommand(const std::string& command) {
  CommandResult result;
  const std::string full = command + " 2>&1";
  // NOLINTNEXTLINE(cert-env33-c): tests run the real curl and openssl on purpose.
  std::unique_ptr<FILE, PipeCloser> pipe(::popen(full.c_str(), "r"));
  if (pipe == nullptr) return result;
  std::array<char, 4096> chunk{};
  std::size_t n = 0;
  while ((n = std::fread(chunk.data(), 1, chunk.size(), pipe.get())) > 0) {
    result.output.append(chunk.data(), n);
  }
  const int rc = ::pclose(pipe.release());
  if (WIFEXITED(rc)) result.status = WEXITSTATUS(rc);
  return result;
}

}  // namespace fleetid::test
