#include "apps/cli/cli.h"


#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <iterator>

namespace fleetid::cli {

Context::Context() {
  const char* user = std::getenv("USER");
  operator_name = user != nullptr ? user : "operator";
}

Result<node::Node*> Context::Open(node::Parts parts) {
  FLEETID_TRY(config, apps::ResolveConfig(flags));
  if (parts.database || parts.authority || parts.audit_log) {
    FLEETID_TRY(dir, apps::PrepareDataDir(config));
    config.data_dir = dir;
  }
  FLEETID_TRY(opened, node::Node::Open(config, node::OpenOptions::Command(parts)));
  node_ = std::move(opened);
  return node_.get();
}

void Context::OnParsed(CLI::App* sub, std::function<int()> command) {
  sub->callback([this, command = std::move(command)] { command_ = command; });
}

int Context::RunCommand() const { return command_ ? command_() : 0; }

int Fail(const Error& error) {
  std::cerr << "fleetid: " << error.ToString() << "\n";
  return 1;
}

void PrintJson(const Json& json) { std::cout << json.dump(2) << "\n"; }

Result<std::string> ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return MakeError(ErrorCode::kNotFound, "cannot read '{}'", path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void AddOperatorOption(CLI::App* sub, Context& context, const std::string& recorded_in) {
  sub->add_option("--operator", context.operator_name,
                  "who is acting (recorded in the " + recorded_in + ")");
}

}  // namespace fleetid::cli
