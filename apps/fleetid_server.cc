// fleetid-server: the device identity authority.
#include <pthread.h>

#include <fmt/ranges.h>
#include <CLI/CLI.hpp>
#include <algorithm>
#include <charconv>
#include <condition_variable>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <optional>
#include <stop_token>
#include <thread>

#include "api/routes.h"
#include "apps/options.h"
#include "audit/log.h"
#include "common/log.h"
#include "crypto/crypto.h"
#include "crypto/keys.h"
#include "custody/provider.h"
#include "custody/store.h"
#include "enroll/service.h"
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

constexpr std::string_view kTlsKeyLabel = "fleetid-server-tls";
constexpr int kAuditHeadSeconds = 5;  // how often the audit log's head is signed

Result<crypto::X509Ptr> ParseDer(std::span<const std::uint8_t> der) {
  const unsigned char* p = der.data();
  crypto::X509Ptr cert(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
  if (!cert) return MakeError(ErrorCode::kInternal, "a stored certificate does not parse");
  return cert;
}

// HttpsIdentity is the HTTPS front's key (in the token, labelled |label|) and the keeper of its
// certificate.
struct HttpsIdentity {
  std::string label;
  server::PkeyRef key;
  std::unique_ptr<pki::ServerCertificateKeeper> keeper;
};

// The HTTPS key's generations: 0 is labelled kTlsKeyLabel, n > 0 kTlsKeyLabel.n. A replacement
// is the next generation, so the key in use stays until its successor is serving.
std::string TlsKeyLabel(std::uint64_t generation) {
  return generation == 0 ? std::string(kTlsKeyLabel)
                         : fmt::format("{}.{}", kTlsKeyLabel, generation);
}

std::optional<std::uint64_t> TlsKeyGeneration(std::string_view label) {
  if (label == kTlsKeyLabel) return 0;
  if (!label.starts_with(kTlsKeyLabel) || label.size() <= kTlsKeyLabel.size() + 1 ||
      label[kTlsKeyLabel.size()] != '.') {
    return std::nullopt;
  }
  std::uint64_t n = 0;
  const std::string_view digits = label.substr(kTlsKeyLabel.size() + 1);
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), n);
  if (ec != std::errc() || end != digits.data() + digits.size()) return std::nullopt;
  return n;
}

// TlsKeyGenerations lists the generations of HTTPS keys in |token|, ascending.
Result<std::vector<std::uint64_t>> TlsKeyGenerations(custody::Token& token) {
  FLEETID_TRY(keys, token.ListKeys());
  std::vector<std::uint64_t> out;
  for (const custody::KeyAttributes& k : keys) {
    if (auto g = TlsKeyGeneration(k.label)) out.push_back(*g);
  }
  std::ranges::sort(out);
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

// IdentityOf gets the token key |label| a certificate from the authority's own hierarchy (reused
// across restarts while it has a third of its life left). kPermissionDenied: the key was revoked
// as compromised.
Result<HttpsIdentity> IdentityOf(custody::Token& token, pki::Authority& authority,
                                 const std::vector<std::string>& names, const std::string& label) {
  FLEETID_TRY(public_key, token.PublicKey(label));
  FLEETID_TRY(spki, crypto::PublicKeyDer(public_key.get()));
  FLEETID_TRY(signer, token.GetSigner(label));
  FLEETID_TRY(key, custody::TokenPkey(std::shared_ptr<custody::Signer>(std::move(signer))));
  HttpsIdentity identity{label, server::PkeyRef(key.get()),
                         std::make_unique<pki::ServerCertificateKeeper>(
                             authority, SystemClock::Instance(), std::move(spki), names)};
  FLEETID_TRY(first, identity.keeper->Check());
  static_cast<void>(first);
  return identity;
}

// OpenHttpsIdentity returns the newest P-256 HTTPS key in the token with its certificate,
// generating the first if there is none. With |replace|, or when the newest key is refused as
// compromised (a key revoked for keyCompromise is never certified again), it generates the next
// generation instead. No key is destroyed here: the caller retires the older ones
// (RetireTlsKeys) once the new identity is serving; a new key that got no certificate is removed.
Result<HttpsIdentity> OpenHttpsIdentity(custody::Token& token, pki::Authority& authority,
                                        const std::vector<std::string>& names, bool replace) {
  FLEETID_TRY(generations, TlsKeyGenerations(token));
  if (!generations.empty() && !replace) {
    auto identity = IdentityOf(token, authority, names, TlsKeyLabel(generations.back()));
    if (identity || identity.error().code() != ErrorCode::kPermissionDenied) return identity;
    log::Warn("https key compromised: replacing it", {{"error", identity.error().ToString()}});
  }
  const std::string label = TlsKeyLabel(generations.empty() ? 0 : generations.back() + 1);
  const crypto::Suite& suite = crypto::GetSuite(crypto::SuiteId::kEcdsaP256Sha256);
  FLEETID_TRY(made, token.GenerateKey(label, suite, crypto::OpenSslRng::Instance()));
  static_cast<void>(made);
  auto identity = IdentityOf(token, authority, names, label);
  if (!identity) {
    if (auto destroyed = token.DestroyKey(label); !destroyed) {
      log::Warn("an uncertified https key could not be removed",
                {{"label", label}, {"error", destroyed.error().ToString()}});
    }
  }
  return identity;
}

// RetireTlsKeys destroys every HTTPS key in |token| but |identity|'s: called once |identity| is
// serving, so the server is never without a working key.
void RetireTlsKeys(custody::Token& token, const HttpsIdentity& identity) {
  auto generations = TlsKeyGenerations(token);
  if (!generations) {
    log::Warn("https keys could not be listed", {{"error", generations.error().ToString()}});
    return;
  }
  for (std::uint64_t g : *generations) {
    const std::string label = TlsKeyLabel(g);
    if (label == identity.label) continue;
    if (auto destroyed = token.DestroyKey(label); !destroyed) {
      log::Warn("a retired https key could not be destroyed",
                {{"label", label}, {"error", destroyed.error().ToString()}});
    } else {
      log::Info("retired https key destroyed", {{"label", label}});
    }
  }
}

// ServedChain is what the listener sends: the leaf and its issuing CA.
Result<std::vector<server::X509Ref>> ServedChain(pki::Authority& authority,
                                                 const pki::CertificateRecord& record) {
  FLEETID_TRY(leaf, ParseDer(record.der));
  FLEETID_TRY(issuing_der, authority.CaCertificate(record.issuer));
  FLEETID_TRY(issuing, ParseDer(issuing_der));
  std::vector<server::X509Ref> chain;
  chain.emplace_back(leaf.get());
  chain.emplace_back(issuing.get());
  return chain;
}

void LogCertificate(std::string_view what, const pki::CertificateRecord& record,
                    const std::vector<std::string>& names) {
  log::Info(what, {{"serial", record.serial},
                   {"names", fmt::format("{}", fmt::join(names, ","))},
                   {"not_after", std::to_string(std::chrono::duration_cast<std::chrono::seconds>(
                                                    record.not_after.time_since_epoch())
                                                    .count())}});
}

// ServerTls sets up the HTTPS front: its key and certificate, and client certificates verified
// against the hierarchy and the registered manufacturers' CAs.
Result<server::TlsOptions> ServerTls(pki::Authority& authority, const HttpsIdentity& identity,
                                     const std::vector<std::string>& names,
                                     const std::vector<enroll::Manufacturer>& manufacturers) {
  server::TlsOptions tls;
  FLEETID_TRY(chain, ServedChain(authority, identity.keeper->Current()));
  tls.certificate_chain = std::move(chain);
  tls.private_key = identity.key;
  for (const std::string& name : authority.CaNames()) {
    FLEETID_TRY(der, authority.CaCertificate(name));
    FLEETID_TRY(anchor, ParseDer(der));
    tls.client_trust_anchors.emplace_back(anchor.get());
  }
  // IDevIDs chain to a registered manufacturer's CA; which anchor verified a chain decides what
  // the client may do (enroll with an IDevID, renew with an LDevID).
  for (const enroll::Manufacturer& m : manufacturers) {
    FLEETID_TRY(anchor, ParseDer(m.der));
    tls.client_trust_anchors.emplace_back(anchor.get());
  }
  tls.client_auth = server::TlsOptions::ClientAuth::kOptional;
  LogCertificate("https certificate", identity.keeper->Current(), names);
  return tls;
}

// RenewHttpsCertificate runs on the maintenance thread: a certificate past two thirds of its
// life, revoked or on hold is replaced, and new handshakes get the new one. A certificate
// revoked for keyCompromise cannot be renewed for the same key, so the key is replaced too.
void RenewHttpsCertificate(custody::Token& token, pki::Authority& authority,
                           server::HttpServer& https, HttpsIdentity& identity,
                           const std::vector<std::string>& names) {
  auto renewed = identity.keeper->Check();
  std::optional<HttpsIdentity> replacement;
  if (!renewed && renewed.error().code() == ErrorCode::kPermissionDenied) {
    log::Warn("https key compromised: replacing it", {{"error", renewed.error().ToString()}});
    auto replaced = OpenHttpsIdentity(token, authority, names, /*replace=*/true);
    if (!replaced) {
      log::Warn("https key replacement failed", {{"error", replaced.error().ToString()}});
      return;
    }
    renewed = replaced->keeper->Current();
    replacement = std::move(*replaced);
  }
  if (!renewed) {
    log::Warn("https certificate renewal failed", {{"error", renewed.error().ToString()}});
    return;
  }
  const auto& due = *renewed;
  if (!due.has_value()) return;
  auto chain = ServedChain(authority, *due);
  if (!chain) {
    log::Warn("https certificate renewal failed", {{"error", chain.error().ToString()}});
    return;
  }
  const server::PkeyRef& key = replacement ? replacement->key : identity.key;
  if (auto set = https.SetCertificate(std::move(*chain), key); !set) {
    log::Warn("https certificate could not be loaded", {{"error", set.error().ToString()}});
    return;
  }
  LogCertificate("https certificate renewed", *due, names);
  if (replacement) {
    identity = std::move(*replacement);
    RetireTlsKeys(token, identity);
  }
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
  HttpsIdentity https_identity;
  const std::vector<std::string> tls_names = config->TlsNames();
  if (config->https_enabled) {
    auto identity = OpenHttpsIdentity(*custody->token, **authority, tls_names, false);
    if (!identity) return Fail(identity.error());
    https_identity = std::move(*identity);
    auto tls = ServerTls(**authority, https_identity, tls_names, *manufacturers);
    if (!tls) return Fail(tls.error());
    server::HttpServerOptions https_options = options;
    https_options.address = config->https_listen.host;
    https_options.port = config->https_listen.port;
    https_options.tls = std::move(*tls);
    auto started = server::HttpServer::Start(std::move(https_options), router);
    if (!started) return Fail(started.error());
    https = std::move(*started);
    RetireTlsKeys(*custody->token, https_identity);
  }
  auto http = server::HttpServer::Start(options, std::move(router));
  if (!http) return Fail(http.error());
  const HostPort bound{(*http)->address(), (*http)->port()};
  log::Info("listening",
            {{"http", "http://" + bound.ToString()},
             {"https", https ? "https://" + HostPort{https->address(), https->port()}.ToString()
                             : std::string("off")},
             {"threads", config->threads}});

  // In the background: CRLs that relying parties fetch are rebuilt when due (so a fetch rarely
  // waits for a build), and the audit log is integrated and its head signed every few seconds.
  // Manufacturers registered while the server runs (by `fleetid manufacturer add`) become
  // client trust anchors within a second. The HTTPS certificate is renewed at two thirds of its
  // life, and within a second of its revocation.
  std::size_t known_manufacturers = manufacturers->size();
  custody::Token& token = *custody->token;
  std::jthread background([&authority, &audit_log, &enrollment, &https, &known_manufacturers,
                           &token, &https_identity, &tls_names](const std::stop_token& stop) {
    std::mutex mu;
    std::condition_variable_any wake;
    std::unique_lock lock(mu);
    for (int tick = 1;; ++tick) {
      wake.wait_for(lock, stop, std::chrono::seconds(1), [] { return false; });
      if (stop.stop_requested()) return;
      (*authority)->RefreshCrls();
      if (https) RenewHttpsCertificate(token, **authority, *https, https_identity, tls_names);
      if (auto makers = enrollment.Manufacturers();
          https && makers && makers->size() != known_manufacturers) {
        for (const enroll::Manufacturer& m : *makers) {
          const unsigned char* p = m.der.data();
          crypto::X509Ptr cert(d2i_X509(nullptr, &p, static_cast<long>(m.der.size())));
          if (!cert) continue;
          if (auto added = https->AddClientTrustAnchor(server::X509Ref(cert.get())); !added) {
            log::Warn("enroll: a manufacturer CA could not be trusted",
                      {{"manufacturer", m.name}, {"error", added.error().ToString()}});
          }
        }
        known_manufacturers = makers->size();
        log::Info("enroll: manufacturer trust anchors", {{"count", known_manufacturers}});
      }
      if (tick % kAuditHeadSeconds == 0) {
        if (auto head = audit_log.SignHead(); !head) {
          log::Warn("audit: signing a tree head failed", {{"error", head.error().ToString()}});
        }
      }
      if (tick % 60 == 0) {  // expired nonces and idle rate buckets (docs/security.md)
        if (auto pruned = enrollment.Prune(); !pruned) {
          log::Warn("enroll: pruning failed", {{"error", pruned.error().ToString()}});
        }
      }
    }
  });

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  log::Info("stopping", {{"signal", signal_number == SIGINT ? "SIGINT" : "SIGTERM"}});
  background.request_stop();
  background.join();
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
