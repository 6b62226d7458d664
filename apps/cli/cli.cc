#include "apps/cli/cli.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <optional>
#include <string_view>

#include "audit/log.h"
#include "store/store.h"

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
  std::optional<long> server_pid;
  // The database is the server's while it runs; the token is not (PKCS#11 tokens serve many
  // processes at once), so the keys commands are not held back.
  const bool database = parts.database || parts.authority || parts.audit_log;
  if (database && !ReadsOnly(command_name_) && std::filesystem::exists(config.data_dir)) {
    FLEETID_TRY(hold, node::DataDirLock::ForCommand(config.data_dir));
    if (hold.server_pid) {
      if (!break_glass) {
        return MakeError(ErrorCode::kConflict,
                         "fleetid-server (pid {}) holds {}: change it through the server's API "
                         "(--server or --profile; docs/cli.md), or stop the server; with "
                         "--break-glass, '{}' changes it directly, audited as break-glass",
                         *hold.server_pid, config.data_dir.string(), command_name_);
      }
      server_pid = hold.server_pid;
    }
    data_lock_ = std::move(hold.lock);
  }
  if (database) {
    FLEETID_TRY(dir, apps::PrepareDataDir(config));
    config.data_dir = dir;
  }
  FLEETID_TRY(opened, node::Node::Open(config, node::OpenOptions::Command(parts)));
  node_ = std::move(opened);
  if (server_pid) FLEETID_CHECK_OK(RecordBreakGlass(*server_pid));
  return node_.get();
}

Result<void> Context::RecordBreakGlass(long server_pid) {
  store::Database& db = node_->database();
  FLEETID_TRY(tx, db.Begin(store::TxMode::kWrite));
  FLEETID_TRY(seq, audit::Log::Append(
                       *tx,
                       {.actor = "operator:" + operator_name,
                        .action = "break_glass",
                        .subject = command_name_,
                        .before = nullptr,
                        .after = {{"command", command_name_}, {"server_pid", server_pid}},
                        .reason = "the data directory changed directly while a server held it",
                        .policy_version = node_->policy().CurrentHash(),
                        .evidence_digest = ""},
                       SystemClock::Instance()));
  static_cast<void>(seq);
  FLEETID_CHECK_OK(tx->Commit());
  std::cerr << "fleetid: break-glass: '" << command_name_ << "' changes the data directory while "
            << "fleetid-server (pid " << server_pid << ") holds it; recorded in the audit log\n";
  return {};
}

bool Context::ReadsOnly(std::string_view command) {
  static constexpr std::string_view kReads[] = {
      "ca certs",        "ca status",    "audit head",      "audit key",
      "audit export",    "audit verify", "audit proof",     "devices show",
      "devices history", "devices list", "devices counts",  "manufacturer list",
      "attest counters", "policy show",  "policy versions", "policy proposals",
      "policy check"};
  return std::ranges::find(kReads, command) != std::end(kReads);
}

void Context::OnParsed(CLI::App* sub, std::function<int()> command) {
  const CLI::App* parent = sub->get_parent();
  std::string name = sub->get_name();
  if (parent != nullptr && parent->get_parent() != nullptr) name = parent->get_name() + " " + name;
  sub->callback([this, name = std::move(name), command = std::move(command)] {
    command_name_ = name;
    command_ = command;
  });
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
