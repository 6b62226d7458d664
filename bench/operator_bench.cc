// Authorized device.suspend through the operator API beside the raw registry transition, for
// bench/operator_bench.sh (make bench). Two modes, each printing one JSON object per figure:
//
//   operator_bench raw DB_URL DEVICES SECONDS THREADS
//     In process, no HTTP: a fresh authority (embedded SoftHSM2 token in a temporary directory)
//     on DB_URL, DEVICES devices imported, provisioned and activated with a certificate each; then
//     THREADS threads, each on its own devices, alternate suspend and resume (the device read,
//     then registry::Registry::Transition with the PKI's holds and releases in its transaction,
//     and the audit entry) for SECONDS. This is what one API call costs below the API.
//
//   operator_bench api URL ROOT_PEM CHAIN_PEM KEY_PEM SERIALS_FILE SECONDS THREADS
//     THREADS keep-alive mutual-TLS connections to a running fleetid-server, as the operator whose
//     certificate chain and key are given, alternating POST /api/v1/devices/S/suspend and
//     /resume on the devices of SERIALS_FILE (each thread its own) for SECONDS: every call
//     authenticated, authorized by the active policy, applied and audited.
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "agent/https_client.h"
#include "common/clock.h"
#include "crypto/crypto.h"
#include "crypto/csr.h"
#include "crypto/x509.h"
#include "custody/store.h"
#include "enroll/service.h"
#include "pki/pki.h"
#include "registry/registry.h"
#include "store/store.h"

namespace fleetid {
namespace {

namespace fs = std::filesystem;
using Steady = std::chrono::steady_clock;

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "operator_bench: %s\n", what.c_str());
  std::exit(1);
}

template <typename T>
T Must(Result<T> r, const std::string& what) {
  if (!r) Die(fmt::format("{}: {}", what, r.error().ToString()));
  return std::move(*r);
}

void Must(Result<void> r, const std::string& what) {
  if (!r) Die(fmt::format("{}: {}", what, r.error().ToString()));
}

void Print(const std::string& mode, const std::string& db, long calls, long failed, double seconds,
           int threads) {
  std::printf(
      "{\"figure\":\"device_suspend_resume\",\"mode\":\"%s\",\"db\":\"%s\",\"threads\":%d,"
      "\"calls\":%ld,\"failed\":%ld,\"seconds\":%.3f,\"per_second\":%.1f}\n",
      mode.c_str(), db.c_str(), threads, calls, failed, seconds,
      static_cast<double>(calls) / seconds);
  std::fflush(stdout);
}

// RunThreads runs |work|(thread index, stop flag) on |threads| threads for |seconds| and returns
// the calls made, the failures and the time taken.
template <typename Work>
void RunThreads(int threads, int seconds, Work work, long* calls, long* failed, double* taken) {
  std::atomic<bool> stop{false};
  std::atomic<long> done{0};
  std::atomic<long> bad{0};
  const auto start = Steady::now();
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] { work(t, stop, done, bad); });
  }
  std::this_thread::sleep_for(std::chrono::seconds(seconds));
  stop = true;
  for (std::thread& th : pool) th.join();
  *taken = std::chrono::duration<double>(Steady::now() - start).count();
  *calls = done;
  *failed = bad;
}

int Raw(const std::string& url, int devices, int seconds, int threads) {
  const fs::path dir = fs::temp_directory_path() / fmt::format("fleetid-opbench-{}", ::getpid());
  fs::create_directories(dir);
  crypto::OpenSslRng& rng = crypto::OpenSslRng::Instance();
  auto opened = Must(custody::OpenEmbedded(dir, "fleetid-bench", rng), "token");
  auto db = Must(store::Database::Open(url, threads + 2), "database");
  Must(enroll::Service::Migrate(*db), "migrate");
  auto authority =
      Must(pki::Authority::Open(opened.token, *db, SystemClock::Instance(), rng, {}), "authority");
  enroll::PkiEffects effects(*authority);
  registry::Registry reg(*db, SystemClock::Instance(), &effects, registry::RegistryOptions{});
  std::vector<registry::ManufacturingRecord> records;
  for (int i = 0; i < devices; ++i) {
    records.push_back({.serial = fmt::format("OPB-{:06d}", i),
                       .model = "sensor-1",
                       .manufacturer = "acme",
                       .idevid_fingerprint = fmt::format("{:064x}", i + 1),
                       .firmware_version = "1.0",
                       .firmware_digest = std::string(64, 'a'),
                       .station = "line-1",
                       .manufactured_at = SystemClock::Instance().Now(),
                       .labels = {}});
  }
  const registry::Actor op{.kind = registry::kOperator, .id = "bench", .roles = {"admin"}};
  Must(reg.Import("bench", records, op), "import");
  for (const registry::ManufacturingRecord& r : records) {
    registry::TransitionRequest req;
    req.serial = r.serial;
    req.event = registry::Event::kProvision;
    req.expected_version = Must(reg.Get(r.serial), "get").version;
    req.actor = op;
    req.tenant = "acme";
    req.region = "eu";
    Must(reg.Transition(req), "provision");
    crypto::EvpPkeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
    const auto der = Must(crypto::MakeCsr(key.get(), key.get(), NID_commonName, r.serial), "csr");
    const crypto::VerifiedCsr csr = Must(crypto::VerifyCsr(der), "verify csr");
    req.event = registry::Event::kActivate;
    req.expected_version = Must(reg.Get(r.serial), "get").version;
    req.actor = {.kind = registry::kDevice, .id = r.serial, .roles = {}};
    req.evidence_digest = std::string(64, 'e');
    req.csr = &csr;
    Must(reg.Transition(req), "activate");
  }
  long calls = 0;
  long failed = 0;
  double taken = 0;
  RunThreads(
      threads, seconds,
      [&](int t, std::atomic<bool>& stop, std::atomic<long>& done, std::atomic<long>& bad) {
        bool suspend = true;
        while (!stop) {
          for (int i = t; i < devices && !stop; i += threads) {
            const std::string serial = records[static_cast<std::size_t>(i)].serial;
            auto device = reg.Get(serial);
            registry::TransitionRequest req;
            req.serial = serial;
            req.event = suspend ? registry::Event::kSuspend : registry::Event::kResume;
            req.expected_version = device ? device->version : 0;
            req.actor = {.kind = registry::kOperator,
                         .id = "bench#0",
                         .roles = {},
                         .authorized_by_policy = true};
            req.reason = "bench";
            (device && reg.Transition(req) ? done : bad)++;
          }
          suspend = !suspend;
        }
      },
      &calls, &failed, &taken);
  Print("raw", url.starts_with("sqlite") ? "sqlite" : "postgresql", calls, failed, taken, threads);
  std::error_code ignored;
  fs::remove_all(dir, ignored);
  return 0;
}

std::string ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) Die("cannot read " + path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::vector<std::vector<std::uint8_t>> PemDer(const std::string& path) {
  std::vector<std::vector<std::uint8_t>> out;
  for (const crypto::X509Ptr& c : Must(crypto::ParseCertificatesPem(ReadText(path)), path)) {
    out.push_back(Must(crypto::CertificateDer(c.get()), path));
  }
  return out;
}

int Api(const std::string& url_text, const std::string& root, const std::string& chain,
        const std::string& key_path, const std::string& serials_path, int seconds, int threads,
        const std::string& db_name) {
  const agent::Url url = Must(agent::ParseUrl(url_text), "url");
  const std::string key_pem = ReadText(key_path);
  crypto::BioPtr bio(BIO_new_mem_buf(key_pem.data(), static_cast<int>(key_pem.size())));
  crypto::EvpPkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (!key) Die("cannot read the operator's key");
  auto tls = Must(agent::ClientTls::Make(PemDer(root), PemDer(chain), std::move(key)), "tls");
  std::vector<std::string> serials;
  std::ifstream in(serials_path);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) serials.push_back(line);
  }
  if (serials.empty()) Die("no serials");
  long calls = 0;
  long failed = 0;
  double taken = 0;
  RunThreads(
      threads, seconds,
      [&](int t, std::atomic<bool>& stop, std::atomic<long>& done, std::atomic<long>& bad) {
        auto conn = Must(agent::Connection::Connect(url.host, url.port, tls), "connect");
        // Whether each device is suspended as far as this thread knows: an earlier round may
        // have stopped between a device's suspension and its resumption, and the server's 409
        // then says so (the call is not counted; the next one takes the other direction).
        std::vector<bool> suspended(serials.size(), false);
        const std::string body = R"({"reason":"bench"})";
        while (!stop) {
          for (std::size_t i = static_cast<std::size_t>(t); i < serials.size() && !stop;
               i += static_cast<std::size_t>(threads)) {
            auto reply = conn->Request("POST",
                                       fmt::format("/api/v1/devices/{}/{}", serials[i],
                                                   suspended[i] ? "resume" : "suspend"),
                                       body, "application/json");
            if (reply && (reply->status == 200 || reply->status == 409)) {
              suspended[i] = !suspended[i];
              if (reply->status == 200) done++;
            } else {
              bad++;
            }
          }
        }
      },
      &calls, &failed, &taken);
  Print("api", db_name, calls, failed, taken, threads);
  return 0;
}

}  // namespace
}  // namespace fleetid

int main(int argc, char** argv) {
  const std::vector<std::string> args(argv + 1, argv + argc);
  if (args.size() == 5 && args[0] == "raw") {
    return fleetid::Raw(args[1], std::stoi(args[2]), std::stoi(args[3]), std::stoi(args[4]));
  }
  if (args.size() == 9 && args[0] == "api") {
    return fleetid::Api(args[1], args[2], args[3], args[4], args[5], std::stoi(args[6]),
                        std::stoi(args[7]), args[8]);
  }
  std::fprintf(stderr,
               "usage: operator_bench raw DB_URL DEVICES SECONDS THREADS\n"
               "       operator_bench api URL ROOT CHAIN KEY SERIALS SECONDS THREADS DB_NAME\n");
  return 2;
}
