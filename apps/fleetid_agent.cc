// fleetid-agent: the device side. It keeps the device's keys in its secure element (a PKCS#11
// token), enrolls over EST with attested evidence, renews and rotates, keeps what it needs for
// offline use, and obeys a decommissioning order by destroying its keys.
#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>

#include <nlohmann/json.hpp>

#include "agent/agent.h"
#include "common/log.h"
#include "crypto/crypto.h"
#include "crypto/handles.h"
#include "crypto/suite.h"
#include "crypto/x509.h"

namespace fleetid {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

int Fail(const Error& error) {
  std::cerr << "fleetid-agent: " << error.ToString() << "\n";
  return 1;
}

// ReadPemCert reads a file holding exactly one PEM certificate and returns its DER.
Result<std::vector<std::uint8_t>> ReadPemCert(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return MakeError(ErrorCode::kNotFound, "cannot read '{}'", path);
  const std::string text((std::istreambuf_iterator<char>(in)), {});
  auto certs = crypto::ParseCertificatesPem(text);
  if (!certs) return MakeError(ErrorCode::kInvalidArgument, "'{}': {}", path, certs.error().message());
  if (certs->size() != 1) {
    return MakeError(ErrorCode::kInvalidArgument, "'{}' holds {} certificates, not one", path,
                     certs->size());
  }
  return crypto::CertificateDer(certs->front().get());
}

// StateJson is the agent's state and the LDevID keys in the token; with |once|, also what the
// last Once found (the device state, the current LDevID) and did.
Json StateJson(agent::Agent& a, bool once) {
  const agent::AgentState& s = a.state();
  Json keys = Json::array();
  if (auto labels = a.LdevidKeys()) keys = *labels;
  Json out{{"serial", a.serial()},
           {"device_state", s.device_state},
           {"current_key", s.current_label},
           {"current_cert", s.current_cert},
           {"pending_key", s.pending_label},
           {"pending_cert", s.pending_cert},
           {"renew_at", s.renew_at},
           {"decommissioned", s.decommissioned},
           {"receipt_delivered", s.receipt_delivered},
           {"ldevid_keys_in_token", keys}};
  if (once) {
    const agent::OnceReport& r = a.report();
    out["device_state"] = r.device_state;
    out["ldevid"] = agent::CredentialName(r.credential);
    out["action"] = r.action;
    if (!r.waiting_for.empty()) out["waiting_for"] = r.waiting_for;
    out["erased_keys"] = r.erased;
  }
  return out;
}

int PrintState(agent::Agent& a, bool once = false) {
  std::cout << StateJson(a, once).dump(2) << "\n";
  return 0;
}

int Finish(agent::Agent& a, const Result<void>& done, bool once = false) {
  if (!done) return Fail(done.error());
  return PrintState(a, once);
}

// RunForever keeps the identity alive until the device is retired; errors are logged and retried
// at the next wake.
int RunForever(agent::Agent& a, int poll_seconds) {
  for (;;) {
    if (auto r = a.Once(false); !r) {
      log::Warn("agent: will retry", {{"device", a.serial()}, {"error", r.error().ToString()}});
    }
    if (a.state().decommissioned && a.state().receipt_delivered) return 0;
    std::this_thread::sleep_until(std::chrono::system_clock::time_point(
        std::chrono::duration_cast<std::chrono::system_clock::duration>(
            a.NextWake(std::chrono::seconds(poll_seconds)).time_since_epoch())));
  }
}

// Simulate enrolls the first |count| devices of |batch| (all when 0) from |threads| threads and
// prints the rate: N devices, one token each, one process.
int Simulate(const std::shared_ptr<custody::Module>& module, const agent::AgentOptions& options,
             const std::string& batch, int count, int threads, bool per_request) {
  std::vector<fs::path> dirs;
  for (const auto& entry : fs::directory_iterator(fs::path(batch) / "devices")) {
    dirs.push_back(entry.path());
  }
  std::sort(dirs.begin(), dirs.end());
  if (count > 0 && static_cast<std::size_t>(count) < dirs.size()) {
    dirs.resize(static_cast<std::size_t>(count));
  }
  std::vector<std::unique_ptr<agent::Agent>> agents;
  for (const fs::path& dir : dirs) {
    auto a = agent::Agent::Open(module, dir, options, SystemClock::Instance(),
                                crypto::OpenSslRng::Instance());
    if (!a) return Fail(a.error().Wrap(dir.string()));
    // The device makes its key and CSR before it calls the authority (at boot); the clock
    // measures the enrollment itself.
    if (auto prepared = (*a)->PrepareEnrollment(); !prepared) return Fail(prepared.error());
    agents.push_back(std::move(*a));
  }
  std::atomic<std::size_t> next{0};
  std::atomic<int> failed{0};
  const auto start = std::chrono::steady_clock::now();
  {
    std::vector<std::jthread> workers;
    for (int t = 0; t < std::max(1, threads); ++t) {
      workers.emplace_back([&] {
        for (std::size_t i = next++; i < agents.size(); i = next++) {
          if (auto r = agents[i]->Enroll(per_request); !r) {
            if (failed++ < 3)
              std::cerr << agents[i]->serial() << ": " << r.error().ToString() << "\n";
          }
        }
      });
    }
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const auto enrolled = static_cast<std::int64_t>(agents.size()) - failed.load();
  std::cout << Json{{"devices", agents.size()},
                    {"enrolled", enrolled},
                    {"failed", failed.load()},
                    {"seconds", seconds},
                    {"connections", per_request ? "per-request" : "one-per-enrollment"},
                    {"enrollments_per_second", static_cast<double>(enrolled) / seconds}}
                   .dump()
            << "\n";
  return failed == 0 ? 0 : 1;
}

int Run(int argc, char** argv) {
  CLI::App app{"fleetid-agent: a device's identity, kept in its secure element"};
  app.require_subcommand(1);
  std::string batch = ".";
  std::string device;
  std::string server = "https://127.0.0.1:8443";
  std::string trust;
  std::string firmware;
  std::string suite_name = "ecdsa-p256-sha256";
  auto* se_init = app.add_subcommand(
      "se-init", "factory step: make each device's IDevID key in its secure element");
  se_init->add_option("--batch", batch, "batch directory (serials.txt, devices/)")->required();
  se_init->add_option("--suite", suite_name, "IDevID key suite");

  auto* once = app.add_subcommand(
      "once", "do what is due once: enroll, finish or start a rotation, poll, OCSP");
  bool force_rotate = false;
  once->add_flag("--rotate", force_rotate, "rotate now even if renewal is not due");
  auto* run = app.add_subcommand("run", "keep the identity alive: once, then again when due");
  int poll_seconds = 300;
  run->add_option("--poll", poll_seconds, "poll the authority at least this often (seconds)");
  auto* status =
      app.add_subcommand("status", "print the agent's state and the LDevID keys in the token");
  auto* enroll = app.add_subcommand("enroll", "enroll now with the IDevID and fresh evidence");
  auto* simulate = app.add_subcommand(
      "simulate", "enroll N devices of a batch from one process (load and demo)");
  int count = 0;
  int threads = 2;
  bool per_request = false;
  simulate->add_option("--count", count, "devices (default: all in the batch)");
  simulate->add_option("--threads", threads, "concurrent devices");
  simulate->add_flag("--per-request-connections", per_request,
                     "a fresh mutual-TLS connection for every request (as three curl calls would)");
  for (auto* sub : {once, run, status, enroll}) {
    sub->add_option("--device", device, "the device's serial (its directory in the batch)")
        ->required();
  }
  for (auto* sub : {once, run, status, enroll, simulate}) {
    sub->add_option("--batch", batch, "batch directory");
    sub->add_option("--server", server, "the authority's HTTPS front");
    sub->add_option("--trust", trust, "the authority's root certificate (PEM), given out of band")
        ->required();
    sub->add_option("--firmware", firmware,
                    "measure this firmware image instead of the factory's record");
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  if (se_init->parsed()) {
    auto suite = crypto::FindSuite(suite_name);
    if (!suite) return Fail(suite.error());
    auto made = agent::SeInit(batch, **suite, crypto::OpenSslRng::Instance());
    if (!made) return Fail(made.error());
    std::cerr << "fleetid-agent: " << *made << " secure elements ready\n";
    return 0;
  }

  agent::AgentOptions options;
  options.server = server;
  auto anchor = ReadPemCert(trust);
  if (!anchor) return Fail(anchor.error());
  options.trust_anchor = *anchor;
  if (!firmware.empty()) {
    std::ifstream in(firmware, std::ios::binary);
    if (!in) return Fail(Error(ErrorCode::kNotFound, "cannot read " + firmware));
    const std::string image((std::istreambuf_iterator<char>(in)), {});
    options.firmware_sha256 = crypto::Hex(crypto::Sha256(image));
  }
  auto module = agent::OpenSecureElements(batch);
  if (!module) return Fail(module.error());

  if (simulate->parsed()) return Simulate(*module, options, batch, count, threads, per_request);
  auto a = agent::Agent::Open(*module, fs::path(batch) / "devices" / device, options,
                              SystemClock::Instance(), crypto::OpenSslRng::Instance());
  if (!a) return Fail(a.error());
  agent::Agent& one = **a;
  if (status->parsed()) return PrintState(one);
  if (enroll->parsed()) return Finish(one, one.Enroll());
  if (once->parsed()) return Finish(one, one.Once(force_rotate), true);
  return RunForever(one, poll_seconds);
}

}  // namespace
}  // namespace fleetid

int main(int argc, char** argv) {
  try {
    return fleetid::Run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "fleetid-agent: unexpected exception: " << e.what() << "\n";
    return 70;
  }
}
