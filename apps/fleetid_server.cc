// fleetid-server: the device identity authority.
#include <pthread.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <optional>

#include "api/operator_api.h"
#include "api/routes.h"
#include "apps/options.h"
#include "common/log.h"
#include "crypto/crypto.h"
#include "node/data_lock.h"
#include "node/https_front.h"
#include "node/maintenance.h"
#include "node/node.h"
#include "server/http_server.h"

namespace fleetid {
namespace {

using node::HostPort;
using node::ParseHostPort;

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
  std::optional<std::string> https_listen;
  std::optional<int> threads;
  app.add_option("-l,--listen", listen, "HTTP listen address host:port (default 127.0.0.1:8080)");
  app.add_option("--https-listen", https_listen,
                 "HTTPS listen address host:port, or 'off' (default 127.0.0.1:8443)");
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
  if (https_listen && *https_listen == "off") {
    config->https_enabled = false;
  } else if (https_listen) {
    auto parsed = ParseHostPort(*https_listen);
    if (!parsed) return Fail(parsed.error());
    config->https_enabled = true;
    config->https_listen = *parsed;
  }

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
  // Held until Run returns: one server per data directory, and the command line refuses to
  // change the directory under it without --break-glass (node/data_lock.h).
  auto data_lock = node::DataDirLock::ForServer(data_dir);
  if (!data_lock) return Fail(data_lock.error());
  log::Info("fleetid-server starting", {{"version", kVersion}, {"data", data_dir.string()}});

  auto opened = node::Node::Open(*config);
  if (!opened) return Fail(opened.error());
  node::Node& components = **opened;
  auto manufacturers = components.enrollment().Manufacturers();
  if (!manufacturers) return Fail(manufacturers.error());

  server::Router router;
  // The maintenance thread starts once the listeners are up; until then a new manufacturer is
  // trusted at its first tick.
  std::atomic<node::Maintenance*> maintenance_ptr{nullptr};
  const api::OperatorApi operator_api{.operators = components.operators(),
                                      .policy = components.policy(),
                                      .registry = components.registry(),
                                      .authority = components.authority(),
                                      .enrollment = components.enrollment(),
                                      .rng = crypto::OpenSslRng::Instance(),
                                      .clock = SystemClock::Instance(),
                                      .manufacturers_changed = [&maintenance_ptr] {
                                        if (auto* m = maintenance_ptr.load()) {
                                          m->TrustNewManufacturers();
                                        }
                                      }};
  api::RegisterPkiRoutes(router, components.authority(), SystemClock::Instance());
  api::RegisterEstRoutes(router, components.enrollment());
  api::RegisterAuditRoutes(router, components.audit_log(), components.audit_public_key_pem(),
                           api::OperatorAuditGate(operator_api));
  api::RegisterHealthRoute(router, components.authority(), std::string(kVersion));
  api::RegisterOperatorApi(router, operator_api);
  // No default password: until the first administrator exists, a one-time code waits in a file
  // only this user can read (fleetid operator bootstrap exchanges it; docs/operators.md).
  const std::filesystem::path bootstrap_file = data_dir / "bootstrap-code";
  auto waiting = components.operators().PrepareBootstrap(bootstrap_file);
  if (!waiting) return Fail(waiting.error());
  if (*waiting) {
    log::Info("operator bootstrap code waiting",
              {{"file", bootstrap_file.string()},
               {"exchange_at", "POST /api/v1/operators/bootstrap on the HTTPS listener"}});
  }
  server::HttpServerOptions options;
  options.address = config->http_listen.host;
  options.port = config->http_listen.port;
  options.threads = config->threads;
  std::unique_ptr<server::HttpServer> https;
  node::HttpsIdentity https_identity;
  const std::vector<std::string> tls_names = config->TlsNames();
  if (config->https_enabled) {
    auto identity =
        node::OpenHttpsIdentity(components.token(), components.authority(), tls_names, false);
    if (!identity) return Fail(identity.error());
    https_identity = std::move(*identity);
    auto tls = node::ServerTls(components.authority(), https_identity, tls_names, *manufacturers);
    if (!tls) return Fail(tls.error());
    server::HttpServerOptions https_options = options;
    https_options.address = config->https_listen.host;
    https_options.port = config->https_listen.port;
    https_options.tls = std::move(*tls);
    auto started = server::HttpServer::Start(std::move(https_options), router);
    if (!started) return Fail(started.error());
    https = std::move(*started);
    node::RetireTlsKeys(components.token(), https_identity);
  }
  auto http = server::HttpServer::Start(options, std::move(router));
  if (!http) return Fail(http.error());
  const HostPort bound{(*http)->address(), (*http)->port()};
  log::Info("listening",
            {{"http", "http://" + bound.ToString()},
             {"https", https ? "https://" + HostPort{https->address(), https->port()}.ToString()
                             : std::string("off")},
             {"threads", config->threads}});

  // In the background: CRLs, the HTTPS certificate and trust anchors, audit heads, pruning.
  node::Maintenance maintenance({.authority = components.authority(),
                                 .audit_log = components.audit_log(),
                                 .enrollment = components.enrollment(),
                                 .policy = components.policy(),
                                 .token = components.token(),
                                 .https = https.get(),
                                 .https_identity = https ? &https_identity : nullptr,
                                 .tls_names = tls_names,
                                 .known_manufacturers = manufacturers->size()});
  maintenance_ptr.store(&maintenance);

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  log::Info("stopping", {{"signal", signal_number == SIGINT ? "SIGINT" : "SIGTERM"}});
  maintenance_ptr.store(nullptr);
  maintenance.Stop();
  if (https) https->Stop();
  (*http)->Stop();
  https.reset();
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
