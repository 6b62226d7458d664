// fleetid-server: the device identity authority.
#include <pthread.h>

#include <fmt/ranges.h>
#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <optional>

#include "api/routes.h"
#include "apps/options.h"
#include "audit/log.h"
#include "common/log.h"
#include "crypto/crypto.h"
#include "crypto/keys.h"
#include "custody/store.h"
#include "enroll/service.h"
#include "node/https_front.h"
#include "node/maintenance.h"
#include "pki/pki.h"
#include "registry/registry.h"
#include "server/http_server.h"
#include "store/store.h"

namespace fleetid {
namespace {

using node::HostPort;
using node::ParseHostPort;
using node::RedactUrl;

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
  if (auto migrated = enroll::Service::Migrate(**db); !migrated) return Fail(migrated.error());
  auto counts = registry::Registry(**db, SystemClock::Instance(), nullptr, {}).CountByState();
  if (!counts) return Fail(counts.error());
  std::int64_t devices = 0;
  for (const auto& [state, n] : *counts) devices += n;
  log::Info("registry ready", {{"database", RedactUrl(db_url)}, {"devices", devices}});

  pki::AuthorityOptions ca_options;
  ca_options.base_url = config->PublicUrl();
  ca_options.crl_min_interval = std::chrono::seconds(config->crl_min_interval_seconds);
  auto authority = pki::Authority::Open(custody->token, **db, SystemClock::Instance(),
                                        crypto::OpenSslRng::Instance(), ca_options);
  if (!authority) return Fail(authority.error());
  log::Info("certificate authority ready",
            {{"public_url", ca_options.base_url},
             {"cas", fmt::format("{}", fmt::join((*authority)->CaNames(), ","))}});

  // The audit log: every registry transition, issuance and revocation appends to it in its own
  // transaction; the server integrates and signs tree heads on a cadence.
  auto audit_signer = audit::AuditSigner(*custody->token, crypto::OpenSslRng::Instance());
  if (!audit_signer) return Fail(audit_signer.error());
  auto audit_pem = crypto::PublicKeyPem((*audit_signer)->public_key());
  if (!audit_pem) return Fail(audit_pem.error());
  audit::Log audit_log(**db, *audit_signer, SystemClock::Instance());
  auto first_head = audit_log.SignHead();
  if (!first_head) return Fail(first_head.error());
  log::Info("audit log ready",
            {{"size", first_head->size}, {"root", audit::HashHex(first_head->root)}});

  // Enrollment: the registry acts on credentials through the CA in its own transactions.
  enroll::PkiEffects effects(**authority);
  registry::Registry registry(**db, SystemClock::Instance(), &effects, {});
  enroll::Service enrollment(**db, registry, **authority, effects, SystemClock::Instance(),
                             crypto::OpenSslRng::Instance(), {});
  auto manufacturers = enrollment.Manufacturers();
  if (!manufacturers) return Fail(manufacturers.error());

  server::Router router;
  api::RegisterPkiRoutes(router, **authority, SystemClock::Instance());
  api::RegisterEstRoutes(router, enrollment);
  api::RegisterAuditRoutes(router, audit_log, *audit_pem);
  api::RegisterHealthRoute(router, **authority, std::string(kVersion));
  server::HttpServerOptions options;
  options.address = config->http_listen.host;
  options.port = config->http_listen.port;
  options.threads = config->threads;
  std::unique_ptr<server::HttpServer> https;
  node::HttpsIdentity https_identity;
  const std::vector<std::string> tls_names = config->TlsNames();
  if (config->https_enabled) {
    auto identity = node::OpenHttpsIdentity(*custody->token, **authority, tls_names, false);
    if (!identity) return Fail(identity.error());
    https_identity = std::move(*identity);
    auto tls = node::ServerTls(**authority, https_identity, tls_names, *manufacturers);
    if (!tls) return Fail(tls.error());
    server::HttpServerOptions https_options = options;
    https_options.address = config->https_listen.host;
    https_options.port = config->https_listen.port;
    https_options.tls = std::move(*tls);
    auto started = server::HttpServer::Start(std::move(https_options), router);
    if (!started) return Fail(started.error());
    https = std::move(*started);
    node::RetireTlsKeys(*custody->token, https_identity);
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
  node::Maintenance maintenance({.authority = **authority,
                                 .audit_log = audit_log,
                                 .enrollment = enrollment,
                                 .token = *custody->token,
                                 .https = https.get(),
                                 .https_identity = https ? &https_identity : nullptr,
                                 .tls_names = tls_names,
                                 .known_manufacturers = manufacturers->size()});

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  log::Info("stopping", {{"signal", signal_number == SIGINT ? "SIGINT" : "SIGTERM"}});
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
