// fleetid-server: the device identity authority.
#include <pthread.h>

#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "apps/options.h"
#include "common/log.h"
#include "crypto/crypto.h"
#include "custody/store.h"
#include "apps/pki_routes.h"
#include "pki/pki.h"
#include "registry/registry.h"
#include "store/store.h"
#include "server/http_server.h"

namespace fleetid {
namespace {

constexpr std::string_view kVersion = "0.1.0";

int Fail(const Error& error) {
  log::Error("fleetid-server: cannot start", {{"error", error.ToString()}});
  return 1;
}

int Run(int argc, char** argv) {
  CLI::App app{"fleetid-server: the fleetid device identity authority"};
  apps::CommonFlags flags;
  apps::AddCommonFlags(app, flags);
  std::optional<std::string> listen;
  std::optional<int> threads;
  app.add_option("-l,--listen", listen, "HTTP listen address host:port (default 127.0.0.1:8080)");
  app.add_option("--threads", threads, "server threads (default 2)")->check(CLI::Range(1, 256));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  auto config = apps::ResolveConfig(flags);
  if (!config) return Fail(config.error());
  if (listen) {
    auto parsed = ParseHostPort(*listen);
    if (!parsed) return Fail(parsed.error());
    config->http_listen = *parsed;
  }
  if (threads) config->threads = *threads;

  // Signals are taken synchronously by this thread (sigwait), so block them before any other
  // thread exists and inherits the mask.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  auto data_dir_or = apps::PrepareDataDir(*config);
  if (!data_dir_or) return Fail(data_dir_or.error());
  const std::filesystem::path& data_dir = *data_dir_or;
  config->data_dir = data_dir;
  log::Info("fleetid-server starting", {{"version", kVersion}, {"data", data_dir.string()}});

  auto custody = custody::OpenCustody(config->custody, data_dir, crypto::OpenSslRng::Instance());
  if (!custody) return Fail(custody.error());
  auto keys = custody->token->ListKeys();
  if (!keys) return Fail(keys.error());
  log::Info("custody ready", {{"module", custody->module_path.string()},
                              {"token", custody->token->label()},
                              {"embedded", custody->embedded},
                              {"store", custody->store_dir.string()},
                              {"created", custody->created},
                              {"keys", keys->size()}});

  const std::string db_url = config->DatabaseUrl();
  auto db = store::Database::Open(db_url, config->threads + 2);
  if (!db) return Fail(db.error());
  if (auto migrated = registry::Registry::Migrate(**db); !migrated) return Fail(migrated.error());
  auto counts = registry::Registry(**db, SystemClock::Instance(), nullptr, {}).CountByState();
  if (!counts) return Fail(counts.error());
  std::int64_t devices = 0;
  for (const auto& [state, n] : *counts) devices += n;
  log::Info("registry ready", {{"database", RedactUrl(db_url)}, {"devices", devices}});

  pki::AuthorityOptions ca_options;
  ca_options.base_url = config->PublicUrl();
  auto authority = pki::Authority::Open(custody->token, **db, SystemClock::Instance(),
                                        crypto::OpenSslRng::Instance(), ca_options);
  if (!authority) return Fail(authority.error());
  log::Info("certificate authority ready",
            {{"public_url", ca_options.base_url}, {"cas", fmt::format("{}", fmt::join((*authority)->CaNames(), ","))}});

  server::Router router;
  apps::AddPkiRoutes(router, **authority, SystemClock::Instance());
  router.Add("GET", "/healthz", [](const server::HttpRequest&) {
    return server::HttpResponse::Json(
        200, nlohmann::json{{"status", "ok"}, {"version", kVersion}}.dump());
  });
  server::HttpServerOptions options;
  options.address = config->http_listen.host;
  options.port = config->http_listen.port;
  options.threads = config->threads;
  auto http = server::HttpServer::Start(options, std::move(router));
  if (!http) return Fail(http.error());
  const HostPort bound{(*http)->address(), (*http)->port()};
  log::Info("listening", {{"http", "http://" + bound.ToString()}, {"threads", config->threads}});

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  log::Info("stopping", {{"signal", signal_number == SIGINT ? "SIGINT" : "SIGTERM"}});
  (*http)->Stop();
  http->reset();
  log::Info("stopped");
  return 0;
}

}  // namespace
}  // namespace fleetid

int main(int argc, char** argv) {
  try {
    return fleetid::Run(argc, argv);
  } catch (const std::exception& e) {
    fleetid::log::Error("fleetid-server: unexpected exception", {{"what", e.what()}});
    return 70;
  }
}
