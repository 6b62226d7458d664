// testing/command.h: runs a real client (curl, openssl) through the shell, as a test's peer.
#ifndef FLEETID_TESTING_COMMAND_H_
#define FLEETID_TESTING_COMMAND_H_

#include <string>

namespace fleetid::test {

struct CommandResult {
  int status = -1;     // The exit status, or -1 if the command could not start or did not exit.
  std::string output;  // stdout, with stderr folded in unless the command redirects it itself.
};

// RunCommand runs |command| through /bin/sh with stderr appended to stdout ("2>&1" is added) and
// returns its exit status and output. WARNING: |command| is shell text; quote what it embeds.
CommandResult RunCommand(const std::string& command);

}  // namespace fleetid::test

#endif  // FLEETID_TESTING_COMMAND_H_
