// Configuration of fleetid-server: defaults, then an optional JSON file, then command-line flags
// (applied by the binary), in that order of precedence. `fleetid-server --data DIR` needs no file.
#ifndef FLEETID_NODE_CONFIG_H_
#define FLEETID_NODE_CONFIG_H_

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "common/config.h"
#include "common/error.h"

namespace fleetid::node {

struct HostPort {
  std::string host;
  std::uint16_t port = 0;
  std::string ToString() const;
};

struct ServerConfig {
  std::filesystem::path data_dir = "./var";
  HostPort http_listen{"127.0.0.1", 8080};
  int threads = 2;
  std::string log_level = "info";
  // The registry's database: "sqlite:PATH" or "postgresql://..."; empty means
  // sqlite:<data_dir>/fleetid.db.
  std::string database_url;
  // The base URL relying parties use to reach this authority's plain-HTTP listener; written into
  // certificates (AIA OCSP and caIssuers, CRL distribution points). Empty: http://<http_listen>.
  std::string public_url;
  CustodyConfig custody;
  // The HTTPS front (EST and the operator API build on it; OCSP, CRLs and /healthz are served on
  // both listeners). Its certificate is issued by the authority's own hierarchy for tls_names.
  bool https_enabled = true;
  HostPort https_listen{"127.0.0.1", 8443};
  std::vector<std::string> tls_names;  // empty: "localhost" and https_listen's host
  // A full CRL is rebuilt for a status change at most this often (delta CRLs carry changes in
  // between); 0 rebuilds at the next fetch.
  int crl_min_interval_seconds = 60;

  // DatabaseUrl is database_url, or the embedded SQLite file under data_dir.
  std::string DatabaseUrl() const;
  std::string PublicUrl() const;
  std::vector<std::string> TlsNames() const;
};

// RedactUrl hides the password of a URL ("postgresql://u:secret@h/db" -> "postgresql://u:***@h/db")
// so it can be logged.
std::string RedactUrl(std::string_view url);

// ParseHostPort parses "host:port", "[v6]:port" or ":port" (host 127.0.0.1).
[[nodiscard]] Result<HostPort> ParseHostPort(std::string_view text);

// ApplyConfigJson merges the JSON document |text| into |config|. Unknown keys and wrong types are
// kInvalidArgument naming the key, so a typo never silently falls back to a default.
[[nodiscard]] Result<void> ApplyConfigJson(std::string_view text, ServerConfig& config);

// LoadConfigFile reads |path| and applies it to |config|; kNotFound if it does not exist.
[[nodiscard]] Result<void> LoadConfigFile(const std::filesystem::path& path, ServerConfig& config);

}  // namespace fleetid::node

#endif  // FLEETID_NODE_CONFIG_H_
