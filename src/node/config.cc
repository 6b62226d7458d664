#include "node/config.h"

#include <charconv>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

namespace fleetid::node {
namespace {

using Json = nlohmann::json;

Result<std::string> GetString(const Json& value, std::string_view key) {
  if (!value.is_string()) {
    return MakeError(ErrorCode::kInvalidArgument, "config key '{}' must be a string", key);
  }
  return value.get<std::string>();
}

Result<void> ApplyCustody(const Json& object, CustodyConfig& custody) {
  if (!object.is_object()) {
    return MakeError(ErrorCode::kInvalidArgument, "config key 'custody' must be an object");
  }
  const std::map<std::string, std::string*, std::less<>> fields = {
      {"module_path", &custody.module_path},
      {"token_label", &custody.token_label},
      {"pin_file", &custody.pin_file},
      {"pin_env", &custody.pin_env}};
  for (const auto& [key, value] : object.items()) {
    auto it = fields.find(key);
    if (it == fields.end()) {
      return MakeError(ErrorCode::kInvalidArgument, "unknown config key 'custody.{}'", key);
    }
    FLEETID_TRY(text, GetString(value, "custody." + key));
    *it->second = std::move(text);
  }
  return {};
}

}  // namespace

std::string HostPort::ToString() const {
  if (host.find(':') != std::string::npos) return fmt::format("[{}]:{}", host, port);
  return fmt::format("{}:{}", host, port);
}

std::string ServerConfig::DatabaseUrl() const {
  if (!database_url.empty()) return database_url;
  return "sqlite:" + (data_dir / "fleetid.db").string();
}

std::string ServerConfig::PublicUrl() const {
  if (!public_url.empty()) return public_url;
  return "http://" + http_listen.ToString();
}

std::vector<std::string> ServerConfig::TlsNames() const {
  if (!tls_names.empty()) return tls_names;
  std::vector<std::string> names = {"localhost"};
  const std::string& host = https_listen.host;
  if (host != "0.0.0.0" && host != "::" && host != "localhost") names.push_back(host);
  return names;
}

std::string RedactUrl(std::string_view url) {
  std::string out(url);
  // user:password@ in the authority part.
  if (const std::size_t scheme = out.find("://"); scheme != std::string::npos) {
    const std::size_t at = out.find('@', scheme + 3);
    const std::size_t colon = out.find(':', scheme + 3);
    if (at != std::string::npos && colon != std::string::npos && colon < at) {
      out.replace(colon + 1, at - colon - 1, "***");
    }
  }
  // password=... among the query parameters (libpq accepts it there too).
  for (std::size_t p = out.find("password="); p != std::string::npos;
       p = out.find("password=", p + 1)) {
    const std::size_t value = p + 9;
    const std::size_t end = out.find('&', value);
    out.replace(value, (end == std::string::npos ? out.size() : end) - value, "***");
  }
  return out;
}

Result<HostPort> ParseHostPort(std::string_view text) {
  std::size_t colon = text.rfind(':');
  if (colon == std::string_view::npos) {
    return MakeError(ErrorCode::kInvalidArgument, "listen address '{}' is not host:port", text);
  }
  std::string_view host = text.substr(0, colon);
  std::string_view port_text = text.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  } else if (host.find(':') != std::string_view::npos) {
    return MakeError(ErrorCode::kInvalidArgument, "IPv6 listen address must be [addr]:port");
  }
  unsigned port = 0;
  auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (ec != std::errc() || end != port_text.data() + port_text.size() || port > 65535) {
    return MakeError(ErrorCode::kInvalidArgument, "listen port '{}' is not a number in 0-65535",
                     port_text);
  }
  HostPort out;
  out.host = host.empty() ? "127.0.0.1" : std::string(host);
  out.port = static_cast<std::uint16_t>(port);
  return out;
}

Result<void> ApplyConfigJson(std::string_view text, ServerConfig& config) {
  Json doc = Json::parse(text, nullptr, /*allow_exceptions=*/false, /*ignore_comments=*/true);
  if (doc.is_discarded()) {
    return MakeError(ErrorCode::kInvalidArgument, "config is not valid JSON");
  }
  if (!doc.is_object()) {
    return MakeError(ErrorCode::kInvalidArgument, "config must be a JSON object");
  }
  ServerConfig next = config;
  for (const auto& [key, value] : doc.items()) {
    if (key == "data_dir") {
      FLEETID_TRY(dir, GetString(value, key));
      next.data_dir = dir;
    } else if (key == "http_listen") {
      FLEETID_TRY(listen, GetString(value, key));
      FLEETID_TRY(parsed, ParseHostPort(listen));
      next.http_listen = parsed;
    } else if (key == "threads") {
      if (!value.is_number_integer() || value.get<std::int64_t>() < 1 ||
          value.get<std::int64_t>() > 256) {
        return MakeError(ErrorCode::kInvalidArgument,
                         "config key 'threads' must be an integer from 1 to 256");
      }
      next.threads = value.get<int>();
    } else if (key == "log_level") {
      FLEETID_TRY(level, GetString(value, key));
      next.log_level = level;
    } else if (key == "public_url") {
      FLEETID_TRY(url, GetString(value, key));
      if (!url.starts_with("http://") && !url.starts_with("https://")) {
        return MakeError(ErrorCode::kInvalidArgument, "config key 'public_url' must be an http(s) URL");
      }
      while (url.ends_with('/')) url.pop_back();
      next.public_url = url;
    } else if (key == "https_listen") {
      FLEETID_TRY(listen, GetString(value, key));
      if (listen == "off") {
        next.https_enabled = false;
      } else {
        FLEETID_TRY(parsed, ParseHostPort(listen));
        next.https_enabled = true;
        next.https_listen = parsed;
      }
    } else if (key == "tls_names") {
      if (!value.is_array() || value.empty()) {
        return MakeError(ErrorCode::kInvalidArgument,
                         "config key 'tls_names' must be a non-empty array of host names");
      }
      std::vector<std::string> names;
      for (const Json& name : value) {
        FLEETID_TRY(host, GetString(name, key));
        if (host.empty() || host.size() > 253) {
          return MakeError(ErrorCode::kInvalidArgument, "config key 'tls_names' has a bad name");
        }
        names.push_back(host);
      }
      next.tls_names = std::move(names);
    } else if (key == "crl_min_interval_seconds") {
      if (!value.is_number_integer() || value.get<std::int64_t>() < 0 ||
          value.get<std::int64_t>() > 86400) {
        return MakeError(ErrorCode::kInvalidArgument,
                         "config key 'crl_min_interval_seconds' must be an integer from 0 to 86400");
      }
      next.crl_min_interval_seconds = value.get<int>();
    } else if (key == "database") {
      FLEETID_TRY(url, GetString(value, key));
      next.database_url = url;
    } else if (key == "custody") {
      FLEETID_CHECK_OK(ApplyCustody(value, next.custody));
    } else {
      return MakeError(ErrorCode::kInvalidArgument, "unknown config key '{}'", key);
    }
  }
  config = std::move(next);
  return {};
}

Result<void> LoadConfigFile(const std::filesystem::path& path, ServerConfig& config) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return MakeError(ErrorCode::kNotFound, "config file '{}' cannot be read", path.string());
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (auto applied = ApplyConfigJson(text.str(), config); !applied) {
    return MakeError(applied.error().Wrap(fmt::format("config file '{}'", path.string())));
  }
  return {};
}

}  // namespace fleetid::node
