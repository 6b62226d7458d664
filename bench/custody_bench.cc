// Signatures per second through the PKCS#11 token (SoftHSM2), per suite, on 1 and 2 threads.
// bench/run.sh prints these beside `openssl speed` for the same algorithms.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <optional>

#include "crypto/crypto.h"
#include "custody/store.h"

namespace fleetid {
namespace {

struct Fixture {
  std::filesystem::path dir;
  std::optional<custody::OpenedToken> opened;
  std::map<crypto::SuiteId, std::unique_ptr<custody::Signer>> signers;

  Fixture() {
    std::string templ = (std::filesystem::temp_directory_path() / "fleetid-bench-XXXXXX").string();
    if (::mkdtemp(templ.data()) == nullptr) std::abort();
    dir = templ;
    auto o = custody::OpenEmbedded(dir, "fleetid-bench", crypto::OpenSslRng::Instance());
    if (!o) {
      std::cerr << "bench: " << o.error() << "\n";
      std::abort();
    }
    opened = std::move(*o);
    for (const crypto::Suite& s : crypto::AllSuites()) {
      std::string label = "bench-" + std::string(s.name);
      if (!opened->token->GenerateKey(label, s, crypto::OpenSslRng::Instance())) std::abort();
      auto signer = opened->token->GetSigner(label);
      if (!signer) std::abort();
      signers[s.id] = std::move(*signer);
    }
  }
  ~Fixture() {
    signers.clear();
    opened.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
};

// Owned by main() and destroyed before exit(): SoftHSM2's static objects die before function-
// local statics constructed earlier, and closing sessions after that crashes.
std::unique_ptr<Fixture> fixture;

Fixture& GetFixture() { return *fixture; }

void BM_TokenSign(benchmark::State& state, crypto::SuiteId id) {
  custody::Signer& signer = *GetFixture().signers.at(id);
  // A typical device certificate's TBS is a few hundred bytes.
  std::vector<std::uint8_t> tbs(400, 0x5a);
  tbs[0] = static_cast<std::uint8_t>(state.thread_index());
  for (auto _ : state) {
    auto sig = signer.Sign(tbs);
    if (!sig) {
      state.SkipWithError(sig.error().ToString().c_str());
      break;
    }
    benchmark::DoNotOptimize(sig->data());
  }
  state.SetItemsProcessed(state.iterations());
}

void Register() {
  for (const crypto::Suite& s : crypto::AllSuites()) {
    benchmark::RegisterBenchmark(("token_sign/" + std::string(s.name)).c_str(), BM_TokenSign, s.id)
        ->Threads(1)
        ->Threads(2)
        ->UseRealTime()
        ->MinTime(1.0);
  }
}

}  // namespace
}  // namespace fleetid

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  fleetid::fixture = std::make_unique<fleetid::Fixture>();
  fleetid::Register();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  fleetid::fixture.reset();
  return 0;
}
