// fleetid: the operator's command line. Each command group registers its subcommands (one file
// each, apps/cli/*.cc); a command opens, through the Context, only the parts of the node it needs.
#include <CLI/CLI.hpp>

#include <exception>
#include <iostream>

#include "apps/cli/cli.h"
#include "crypto/crypto.h"

namespace fleetid::cli {
namespace {

void AddSuitesCommand(CLI::App& app, Context& context) {
  auto* suites = app.add_subcommand("suites", "list the algorithm suites fleetid supports");
  context.OnParsed(suites, [] {
    for (const crypto::Suite& s : crypto::AllSuites()) std::cout << s.name << "\n";
    return 0;
  });
}

int Run(int argc, char** argv) {
  Context context;  // before |app|, whose options and callbacks refer to it
  CLI::App app{"fleetid: operate a fleetid device identity authority"};
  app.require_subcommand(1);
  app.fallthrough();  // the root's flags (--json, --profile, --data, ...) may follow a subcommand
  apps::AddCommonFlags(app, context.flags);
  app.add_option("--server", context.remote.server,
                 "the authority's HTTPS URL: the command is a client of its operator API, as the "
                 "operator of the profile (docs/cli.md)");
  app.add_option("--profile", context.remote.profile,
                 "the operator's profile directory (default $FLEETID_PROFILE, else "
                 "~/.config/fleetid); giving it makes the command a client of the API");
  app.add_flag("--json", context.remote.json, "print JSON for scripts instead of tables");
  app.add_flag("--break-glass", context.break_glass,
               "change the data directory although a fleetid-server holds it (audited as "
               "break-glass; docs/cli.md)");
  AddSuitesCommand(app, context);
  AddKeysCommands(app, context);
  AddDevicesCommands(app, context);
  AddCaCommands(app, context);
  AddAuditCommands(app, context);
  AddFactoryCommands(app, context);
  AddEnrollmentCommands(app, context);
  AddPolicyCommands(app, context);
  AddOperatorCommands(app, context);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return context.RunCommand();
}

}  // namespace
}  // namespace fleetid::cli

int main(int argc, char** argv) {
  try {
    return fleetid::cli::Run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "fleetid: unexpected exception: " << e.what() << "\n";
    return 70;
  }
}
