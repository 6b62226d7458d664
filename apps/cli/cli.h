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
#include <vector>

#include "apps/cli/remote.h"
#include "apps/options.h"
#include "common/clock.h"
#include "common/error.h"
#include "common/time_text.h"
#include "node/config.h"
#include "node/data_lock.h"
#include "node/node.h"

namespace fleetid::cli {

using Json = nlohmann::json;

// Context is one invocation: the common flags, the configuration resolved from them once, the
// node opened once with the parts its command needs, and the command chosen on the command line.
class Context {
 public:
  Context();

  apps::CommonFlags flags;
  // --server, --profile, --json: the command is a client of the operator API (remote.h).
  RemoteFlags remote;
  // Who is acting (--operator; default $USER): recorded in the history and the audit log.
  std::string operator_name;
  // --break-glass: change the data directory although a server holds it (audited as such).
  bool break_glass = false;

  // Open resolves the configuration (defaults, file, flags) and opens the node with |parts|
  // (OpenOptions::Command). With the database, the data directory is created first
  // (apps::PrepareDataDir). Call it once per invocation: a command knows what it needs.
  // A command that opens the database to change it (any but ReadsOnly's) holds the directory's
  // lock while it runs
  // (node/data_lock.h); while a server holds it, the command is refused unless --break-glass,
  // and a break-glass command is audited as such (action "break_glass") before it acts.
  [[nodiscard]] Result<node::Node*> Open(node::Parts parts);

  // ReadsOnly says whether |command| ("devices show") only reads the data directory, or signs
  // an audit tree head as the server does (offline verification): those run next to a server.
  static bool ReadsOnly(std::string_view command);

  // OnParsed makes |command| the invocation's command when |sub| is on the command line; its
  // return value is the exit code.
  void OnParsed(CLI::App* sub, std::function<int()> command);
  int RunCommand() const;

 private:
  [[nodiscard]] Result<void> RecordBreakGlass(long server_pid);

  std::function<int()> command_;
  std::string command_name_;  // "devices provision"
  node::DataDirLock data_lock_;
  std::unique_ptr<node::Node> node_;
};

// Fail prints |error| to stderr as "fleetid: code: message" and returns the exit code 1.
int Fail(const Error& error);

// PrintJson prints |json| to stdout, indented, and a newline.
void PrintJson(const Json& json);

// PrintTable prints |rows| under |headers| in aligned columns, for people (--json is for scripts).
void PrintTable(const std::vector<std::string>& headers,
                const std::vector<std::vector<std::string>>& rows);

// FailRemote prints |error| like Fail and returns the exit code that tells it apart (remote.h).
int FailRemote(const Error& error);

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
void AddOperatorCommands(CLI::App& app, Context& context);    // operator (the API's client)

// The devices and policy commands as clients of the API, when a server is configured
// (operator.cc): one call as the profile's operator, its answer printed (a table, or --json).
int RemoteDeviceShow(Context& context, const std::string& serial);
// RemoteDeviceList lists a page of devices; |query| pairs with empty values are left out.
int RemoteDeviceList(Context& context,
                     const std::vector<std::pair<std::string, std::string>>& query);
int RemoteDeviceAction(Context& context, const std::string& serial, std::string_view action,
                       const Json& body);
int RemotePolicy(Context& context, std::string_view method, const std::string& path,
                 const Json& body);
// RemoteCertificate reads (GET) or changes (POST, |verb| hold, release or revoke) a certificate.
int RemoteCertificate(Context& context, std::string_view method, const std::string& serial,
                      const std::string& verb, const Json& body);
// QueryEscape percent-encodes everything but RFC 3986's unreserved characters (a path segment or
// a query value).
std::string QueryEscape(std::string_view text);
// RemoteCall makes one call (|path| under /api/v1/) and prints its answer: --json as it came,
// otherwise through |human|.
int RemoteCall(Context& context, std::string_view method, const std::string& path, const Json& body,
               const std::function<void(const Json&)>& human);
// RemoteApprove approves proposal |id| with a signature by the operator's key over its digest.
int RemoteApprove(Context& context, std::int64_t id, const std::string& reason);
// RemotePropose proposes |document| against version |base| (0: the active one, read first).
int RemotePropose(Context& context, const Json& document, std::int64_t base,
                  const std::string& reason);

}  // namespace fleetid::cli

#endif  // FLEETID_APPS_CLI_CLI_H_
