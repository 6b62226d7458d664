// The fleetid operator tool's shared parts: the context every command runs in, and the helpers
// its command groups (one file each, registering their subcommands with CLI11) print with.
#ifndef FLEETID_APPS_CLI_CLI_H_
#define FLEETID_APPS_CLI_CLI_H_

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "apps/options.h"
#include "common/clock.h"
#include "common/error.h"
#include "common/time_text.h"
#include "node/config.h"
#include "node/node.h"

namespace fleetid::cli {

using Json = nlohmann::json;

// Context is one invocation: the common flags, the configuration resolved from them once, the
// node opened once with the parts its command needs, and the command chosen on the command line.
class Context {
 public:
  Context();

  apps::CommonFlags flags;
  // Who is acting (--operator; default $USER): recorded in the history and the audit log.
  std::string operator_name;

  // Open resolves the configuration (defaults, file, flags) and opens the node with |parts|
  // (OpenOptions::Command). With the database, the data directory is created first
  // (apps::PrepareDataDir). Call it once per invocation: a command knows what it needs.
  [[nodiscard]] Result<node::Node*> Open(node::Parts parts);

  // OnParsed makes |command| the invocation's command when |sub| is on the command line; its
  // return value is the exit code.
  void OnParsed(CLI::App* sub, std::function<int()> command);
  int RunCommand() const;

 private:
  std::function<int()> command_;
  std::unique_ptr<node::Node> node_;
};

// Fail prints |error| to stderr as "fleetid: code: message" and returns the exit code 1.
int Fail(const Error& error);

// PrintJson prints |json| to stdout, indented, and a newline.
void PrintJson(const Json& json);

[[nodiscard]] Result<std::string> ReadAll(const std::string& path);

// AddOperatorOption adds --operator to |sub|, saying where the name is recorded.
void AddOperatorOption(CLI::App* sub, Context& context, const std::string& recorded_in);

// The command groups.
void AddKeysCommands(CLI::App& app, Context& context);        // keys
void AddDevicesCommands(CLI::App& app, Context& context);     // devices
void AddCaCommands(CLI::App& app, Context& context);          // ca
void AddAuditCommands(CLI::App& app, Context& context);       // audit
void AddFactoryCommands(CLI::App& app, Context& context);     // factory
void AddEnrollmentCommands(CLI::App& app, Context& context);  // manufacturer, attest
void AddPolicyCommands(CLI::App& app, Context& context);      // policy

}  // namespace fleetid::cli

#endif  // FLEETID_APPS_CLI_CLI_H_
