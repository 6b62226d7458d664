#include "apps/cli/cli.h"

#include <algorithm>
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
  if (!remote.server.empty() || !remote.profile.empty()) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "this command opens the data directory and is not offered through the API; "
                     "run it without --server and --profile on the authority's machine");
  }
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

void PrintTable(const std::vector<std::string>& headers,
                const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> widths(headers.size());
  for (std::size_t i = 0; i < headers.size(); ++i) widths[i] = headers[i].size();
  for (const auto& row : rows) {
    for (std::size_t i = 0; i < row.size() && i < widths.size(); ++i) {
      widths[i] = std::max(widths[i], row[i].size());
    }
  }
  auto line = [&](const std::vector<std::string>& cells) {
    std::string out;
    for (std::size_t i = 0; i < widths.size(); ++i) {
      const std::string& cell = i < cells.size() ? cells[i] : std::string();
      out += cell;
      if (i + 1 < widths.size()) out += std::string(widths[i] - cell.size() + 2, ' ');
    }
    while (!out.empty() && out.back() == ' ') out.pop_back();
    std::cout << out << "\n";
  };
  line(headers);
  for (const auto& row : rows) line(row);
}

int FailRemote(const Error& error) {
  std::cerr << "fleetid: " << error.ToString() << "\n";
  return ExitCodeOf(error);
}

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
