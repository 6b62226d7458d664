// Fuzzes the reader of fleetid-server's configuration file, ApplyConfigJson (JSON with
// comments), and ParseHostPort and RedactUrl, which take its listen addresses and database URL.
//
// Invariants checked: refusals are kInvalidArgument with a message and leave the configuration
// as it was; an accepted document sets only values within the documented bounds, and an integer
// it accepts is the one the document holds (no silent narrowing); a parsed host:port prints as
// text that parses to the same host and port.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "node/config.h"
#include "fuzz_check.h"

namespace {

using fleetid::node::ServerConfig;
using fleetid::fuzz::Check;
using fleetid::fuzz::CheckRefusal;
using Json = nlohmann::json;

bool Same(const ServerConfig& a, const ServerConfig& b) {
  return a.data_dir == b.data_dir && a.http_listen.ToString() == b.http_listen.ToString() &&
         a.threads == b.threads && a.log_level == b.log_level && a.database_url == b.database_url &&
         a.public_url == b.public_url && a.custody.module_path == b.custody.module_path &&
         a.custody.token_label == b.custody.token_label &&
         a.custody.pin_file == b.custody.pin_file && a.custody.pin_env == b.custody.pin_env &&
         a.https_enabled == b.https_enabled &&
         a.https_listen.ToString() == b.https_listen.ToString() && a.tls_names == b.tls_names &&
         a.crl_min_interval_seconds == b.crl_min_interval_seconds;
}

// CheckInteger checks that |config_value| is what |doc| holds under |key|, if it holds it.
void CheckInteger(const Json& doc, const char* key, int config_value) {
  const auto it = doc.find(key);
  if (it == doc.end()) return;
  Check(it->is_number_integer());
  Check(it->is_number_unsigned() ? it->get<std::uint64_t>() == std::uint64_t(config_value)
                                 : it->get<std::int64_t>() == config_value);
}

void CheckAccepted(std::string_view text, const ServerConfig& config) {
  Check(config.threads >= 1 && config.threads <= 256);
  Check(config.crl_min_interval_seconds >= 0 && config.crl_min_interval_seconds <= 86400);
  Check(config.public_url.empty() || config.public_url.starts_with("http://") ||
        config.public_url.starts_with("https://"));
  Check(!config.public_url.ends_with('/'));
  for (const std::string& name : config.tls_names) Check(!name.empty() && name.size() <= 253);
  const Json doc = Json::parse(text, nullptr, false, true);
  Check(doc.is_object());
  CheckInteger(doc, "threads", config.threads);
  CheckInteger(doc, "crl_min_interval_seconds", config.crl_min_interval_seconds);
}

void FuzzConfig(std::string_view text) {
  const ServerConfig defaults;
  ServerConfig config;
  const auto applied = fleetid::node::ApplyConfigJson(text, config);
  CheckRefusal(applied);
  if (applied) {
    CheckAccepted(text, config);
  } else {
    Check(Same(config, defaults));
  }
}

void FuzzHostPort(std::string_view text) {
  const auto parsed = fleetid::node::ParseHostPort(text);
  CheckRefusal(parsed);
  if (!parsed) return;
  Check(!parsed->host.empty());
  const auto again = fleetid::node::ParseHostPort(parsed->ToString());
  Check(again.has_value() && again->host == parsed->host && again->port == parsed->port);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text = fleetid::fuzz::Text(data, size);
  FuzzConfig(text);
  FuzzHostPort(text);
  (void)fleetid::node::RedactUrl(text);
  return 0;
}
