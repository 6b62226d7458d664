// Command-line options shared by fleetid-server and the fleetid operator tool: both reach the
// same data directory and the same token, configured the same way.
#ifndef FLEETID_APPS_OPTIONS_H_
#define FLEETID_APPS_OPTIONS_H_

#include <CLI/CLI.hpp>

#include <filesystem>
#include <optional>
#include <string>

#include "common/log.h"
#include "node/config.h"

namespace fleetid::apps {

struct CommonFlags {
  std::string config_file;
  std::optional<std::string> data_dir;
  std::optional<std::string> module_path;
  std::optional<std::string> token_label;
  std::optional<std::string> pin_file;
  std::optional<std::string> pin_env;
  std::optional<std::string> log_level;
  std::optional<std::string> database;
  std::optional<std::string> public_url;
};

inline void AddCommonFlags(CLI::App& app, CommonFlags& flags) {
  app.add_option("-c,--config", flags.config_file, "JSON configuration file (optional)");
  app.add_option("-d,--data", flags.data_dir, "data directory (default ./var)");
  app.add_option("--module", flags.module_path,
                 "PKCS#11 module of the authority's HSM (default: embedded SoftHSM2 under the "
                 "data directory)");
  app.add_option("--public-url", flags.public_url,
                 "base URL written into certificates for OCSP, CRLs and CA certificates "
                 "(default http://<listen address>)");
  app.add_option("--token", flags.token_label, "label of the authority's token");
  app.add_option("--pin-file", flags.pin_file, "file holding the token's user PIN (mode 0600)");
  app.add_option("--pin-env", flags.pin_env, "environment variable holding the token's user PIN");
  app.add_option("--log-level", flags.log_level, "debug, info, warn, error or off");
  app.add_option("--database", flags.database,
                 "registry database: sqlite:PATH or postgresql://... (default sqlite under the "
                 "data directory)");
}

// ResolveConfig applies defaults, then the config file, then the flags.
[[nodiscard]] inline Result<node::ServerConfig> ResolveConfig(const CommonFlags& flags) {
  node::ServerConfig config;
  if (!flags.config_file.empty()) FLEETID_CHECK_OK(node::LoadConfigFile(flags.config_file, config));
  if (flags.data_dir) config.data_dir = *flags.data_dir;
  if (flags.module_path) config.custody.module_path = *flags.module_path;
  if (flags.token_label) config.custody.token_label = *flags.token_label;
  if (flags.pin_file) config.custody.pin_file = *flags.pin_file;
  if (flags.pin_env) config.custody.pin_env = *flags.pin_env;
  if (flags.log_level) config.log_level = *flags.log_level;
  if (flags.database) config.database_url = *flags.database;
  if (flags.public_url) config.public_url = *flags.public_url;
  log::Level level;
  if (!log::ParseLevel(config.log_level, &level)) {
    return MakeError(ErrorCode::kInvalidArgument, "unknown log level '{}'", config.log_level);
  }
  log::Init(level);
  return config;
}

// PrepareDataDir creates the data directory (mode 0700) if it is missing and returns its absolute
// path.
[[nodiscard]] inline Result<std::filesystem::path> PrepareDataDir(
    const node::ServerConfig& config) {
  std::error_code ec;
  std::filesystem::create_directories(config.data_dir, ec);
  if (ec) {
    return MakeError(ErrorCode::kUnavailable, "cannot create data directory '{}': {}",
                     config.data_dir.string(), ec.message());
  }
  std::filesystem::path dir = std::filesystem::absolute(config.data_dir, ec).lexically_normal();
  if (!dir.has_filename()) dir = dir.parent_path();  // "var/" -> "var"
  std::filesystem::permissions(dir, std::filesystem::perms::owner_all,
                               std::filesystem::perm_options::replace, ec);
  return dir;
}

}  // namespace fleetid::apps

#endif  // FLEETID_APPS_OPTIONS_H_
