// The audit log's throughput, on SQLite files and the embedded token, beside SHA-256 measured in
// the same run:
//   appends with durable commits (synchronous=FULL): one per transaction from 2 threads, and
//   batched 100 per transaction; integration of appended entries into the tree;
//   inclusion and consistency proof generation at each tree size asked for (default 1M, 10M);
//   export and offline verification of the whole log at the first size.
// Prints one JSON object per line.
#include <openssl/evp.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "audit/export.h"
#include "bench/bench_util.h"
#include "audit/log.h"
#include "crypto/crypto.h"
#include "custody/store.h"

namespace fleetid {
namespace {

using bench::Print;
using bench::Seconds;
using bench::Steady;

audit::Entry Sample(std::uint64_t i) {
  return {.actor = "operator:alice",
          .action = "registry.provision",
          .subject = fmt::format("GW-{:08}", i),
          .before = {{"state", "manufactured"}, {"version", 1}},
          .after = {{"state", "provisioned"}, {"version", 2}},
          .reason = "",
          .policy_version = "policy-1",
          .evidence_digest = ""};
}

int Fail(const Error& e) {
  std::fprintf(stderr, "%s\n", e.ToString().c_str());
  return 1;
}

// Appends |count| entries, |per_tx| to a transaction, from |threads| threads.
Result<double> Append(store::Database& db, std::uint64_t first, std::uint64_t count, int per_tx,
                      int threads) {
  std::atomic<std::uint64_t> next{first};
  std::atomic<bool> failed{false};
  const auto start = Steady::now();
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      for (;;) {
        const std::uint64_t at = next.fetch_add(static_cast<std::uint64_t>(per_tx));
        if (at >= first + count || failed) return;
        auto tx = db.Begin(store::TxMode::kWrite);
        if (!tx) return failed.store(true);
        for (std::uint64_t i = at; i < std::min(at + static_cast<std::uint64_t>(per_tx), first + count); ++i) {
          if (!audit::Log::Append(**tx, Sample(i), SystemClock::Instance())) return failed.store(true);
        }
        if (!(*tx)->Commit()) return failed.store(true);
      }
    });
  }
  for (auto& th : pool) th.join();
  if (failed) return MakeError(ErrorCode::kInternal, "an append failed");
  return Seconds(start);
}

int Run(const std::filesystem::path& dir, std::vector<std::uint64_t> sizes) {
  auto opened = custody::OpenEmbedded(dir, "fleetid-bench", crypto::OpenSslRng::Instance());
  if (!opened) return Fail(opened.error());
  auto signer = audit::AuditSigner(*opened->token, crypto::OpenSslRng::Instance());
  if (!signer) return Fail(signer.error());

  // Baseline: SHA-256 of entry-sized inputs, the work verification cannot avoid.
  {
    const std::string body = *audit::EncodeEntry(123456, 1798000000123, Sample(123456));
    std::vector<std::uint8_t> input(body.begin(), body.end());
    input.insert(input.begin(), 0);
    const int n = 2000000;
    unsigned char out[32];
    // The digest fetched once, as any careful caller would.
    const crypto::EvpMdPtr sha256(EVP_MD_fetch(nullptr, "SHA256", nullptr));
    const auto start = Steady::now();
    for (int i = 0; i < n; ++i) EVP_Digest(input.data(), input.size(), out, nullptr, sha256.get(), nullptr);
    Print("sha256_entry_sized", n, Seconds(start), fmt::format(",\"bytes\":{}", input.size()));
    const auto leaf_start = Steady::now();
    for (int i = 0; i < n; ++i) {
      const auto h = audit::LeafHash({input.data() + 1, input.size() - 1});
      static_cast<void>(h);
    }
    Print("leaf_hash", n, Seconds(leaf_start));
  }

  // Durable appends: synchronous=FULL, each commit fsynced.
  {
    auto db = store::Database::Open("sqlite:" + (dir / "durable.db").string() + "?synchronous=full", 4);
    if (!db || !audit::Log::Migrate(**db)) return 1;
    std::uint64_t done = 0;
    for (const auto& [per_tx, count] : {std::pair<int, std::uint64_t>{1, 5000}, {100, 200000}}) {
      auto took = Append(**db, done, count, per_tx, 2);
      if (!took) return Fail(took.error());
      Print(fmt::format("append_durable_{}_per_tx", per_tx), static_cast<double>(count), *took);
      done += count;
    }
    audit::Log log(**db, *signer, SystemClock::Instance());
    const auto start = Steady::now();
    auto size = log.Integrate();
    if (!size) return Fail(size.error());
    Print("integrate", static_cast<double>(*size), Seconds(start));
  }

  // A large log, grown to each size in turn; proofs timed at each.
  auto db = store::Database::Open("sqlite:" + (dir / "large.db").string(), 4);
  if (!db || !audit::Log::Migrate(**db)) return 1;
  audit::Log log(**db, *signer, SystemClock::Instance());
  std::uint64_t have = 0;
  std::mt19937_64 random(42);
  bool exported = false;
  for (std::uint64_t size : sizes) {
    const auto start = Steady::now();
    while (have < size) {
      const std::uint64_t chunk = std::min<std::uint64_t>(100000, size - have);
      auto took = Append(**db, have, chunk, 10000, 1);
      if (!took) return Fail(took.error());
      auto integrated = log.Integrate();
      if (!integrated) return Fail(integrated.error());
      have += chunk;
    }
    Print(fmt::format("grow_to_{}", size), static_cast<double>(size), Seconds(start),
          ",\"note\":\"appends in transactions of 10000, integrated every 100000\"");
    auto head = log.SignHead();
    if (!head) return Fail(head.error());
    const int n = 1000;
    auto proof_start = Steady::now();
    for (int i = 0; i < n; ++i) {
      auto proof = log.InclusionProof(random() % size, size);
      if (!proof) return Fail(proof.error());
    }
    const double inclusion = Seconds(proof_start);
    Print(fmt::format("inclusion_proof_at_{}", size), n, inclusion,
          fmt::format(",\"ms_per_proof\":{:.3f}", inclusion * 1000 / n));
    proof_start = Steady::now();
    for (int i = 0; i < n; ++i) {
      auto proof = log.ConsistencyProof(1 + random() % (size - 1), size);
      if (!proof) return Fail(proof.error());
    }
    const double consistency = Seconds(proof_start);
    Print(fmt::format("consistency_proof_at_{}", size), n, consistency,
          fmt::format(",\"ms_per_proof\":{:.3f}", consistency * 1000 / n));
    if (!exported) {
      exported = true;
      const auto path = dir / "export.jsonl";
      auto export_start = Steady::now();
      {
        std::ofstream out(path, std::ios::binary);
        auto written = audit::WriteExport(log, out);
        if (!written) return Fail(written.error());
      }
      Print("export", static_cast<double>(size), Seconds(export_start),
            fmt::format(",\"bytes\":{}", std::filesystem::file_size(path)));
      auto key = (*signer)->public_key();
      auto verify_start = Steady::now();
      std::ifstream in(path, std::ios::binary);
      auto parsed = audit::ReadExport(in);
      if (!parsed) return Fail(parsed.error());
      const audit::VerifyReport report = audit::VerifyExport(*parsed, key, std::nullopt);
      if (!report.ok()) {
        std::fprintf(stderr, "verification failed: %s\n", report.problems.front().c_str());
        return 1;
      }
      Print("verify_export", static_cast<double>(report.entries), Seconds(verify_start));
    }
  }
  return 0;
}

}  // namespace
}  // namespace fleetid

int main(int argc, char** argv) {
  std::vector<std::uint64_t> sizes;
  std::stringstream list(argc > 1 ? argv[1] : "1000000,10000000");
  for (std::string item; std::getline(list, item, ',');) sizes.push_back(std::stoull(item));
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / fmt::format("fleetid-audit-bench-{}", ::getpid());
  std::filesystem::create_directories(dir);
  const int rc = fleetid::Run(dir, sizes);
  std::filesystem::remove_all(dir);
  return rc;
}
