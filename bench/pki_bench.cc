// CA throughput in process, on the embedded token and SQLite:
//   issuance: CSR in (parsed, signature verified), certificate built, signed in the token,
//             record committed — on 1 and 2 threads;
//   OCSP: answers from the pre-signed cache;
//   CRL: building and signing a CRL of N revoked certificates, with its time and peak memory.
// Prints one JSON object per line.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <thread>

#include <openssl/err.h>
#include <openssl/ocsp.h>

#include "bench/bench_util.h"
#include "crypto/crypto.h"
#include "custody/store.h"
#include "pki/pki.h"

namespace fleetid {
namespace {

using bench::MaxRssKb;
using bench::Print;
using bench::Seconds;
using Clock = bench::Steady;

std::vector<std::uint8_t> Csr(EVP_PKEY* key) {
  crypto::X509ReqPtr req(X509_REQ_new());
  X509_REQ_set_pubkey(req.get(), key);
  X509_REQ_sign(req.get(), key, EVP_sha256());
  std::vector<std::uint8_t> der(static_cast<std::size_t>(i2d_X509_REQ(req.get(), nullptr)));
  unsigned char* p = der.data();
  i2d_X509_REQ(req.get(), &p);
  return der;
}

int Run(const std::filesystem::path& dir, int crl_entries) {
  auto opened = custody::OpenEmbedded(dir, "fleetid-bench", crypto::OpenSslRng::Instance());
  if (!opened) return 1;
  auto db = store::Database::Open("sqlite:" + (dir / "pki.db").string(), 4);
  if (!db) return 1;
  auto authority = pki::Authority::Open(opened->token, **db, SystemClock::Instance(),
                                        crypto::OpenSslRng::Instance(), {});
  if (!authority) {
    std::fprintf(stderr, "%s\n", authority.error().ToString().c_str());
    return 1;
  }
  pki::Authority& ca = **authority;
  crypto::SuitePolicy policy;

  constexpr int kCsrs = 256;
  std::vector<std::vector<std::uint8_t>> csrs;
  for (int i = 0; i < kCsrs; ++i) {
    crypto::EvpPkeyPtr key(EVP_EC_gen("P-256"));
    csrs.push_back(Csr(key.get()));
  }
  std::vector<std::string> serials;
  for (int threads : {1, 2}) {
    const int per_thread = 3000 / threads;
    std::atomic<int> failed{0};
    std::mutex mu;
    auto start = Clock::now();
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        for (int i = 0; i < per_thread; ++i) {
          auto rec = ca.Issue(csrs[static_cast<std::size_t>((t * per_thread + i) % kCsrs)],
                              {fmt::format("BENCH-{}-{}", t, i), "bench"}, policy);
          if (!rec) {
            ++failed;
          } else if (i < 50) {
            std::lock_guard lock(mu);
            serials.push_back(rec->serial);
          }
        }
      });
    }
    for (auto& th : pool) th.join();
    Print(fmt::format("issue_threads_{}", threads), per_thread * threads, Seconds(start),
          fmt::format(",\"failed\":{}", failed.load()));
  }

  // OCSP answers from the cache: the same request shape relying parties send (SHA-1 CertID).
  {
    auto rec = ca.Get(serials.front());
    const unsigned char* p = rec->der.data();
    crypto::X509Ptr leaf(d2i_X509(nullptr, &p, static_cast<long>(rec->der.size())));
    auto issuer_der = ca.CaCertificate(rec->issuer);
    p = issuer_der->data();
    crypto::X509Ptr issuer(d2i_X509(nullptr, &p, static_cast<long>(issuer_der->size())));
    OCSP_REQUEST* req = OCSP_REQUEST_new();
    OCSP_request_add0_id(req, OCSP_cert_to_id(EVP_sha1(), leaf.get(), issuer.get()));
    std::vector<std::uint8_t> der(static_cast<std::size_t>(i2d_OCSP_REQUEST(req, nullptr)));
    unsigned char* out = der.data();
    i2d_OCSP_REQUEST(req, &out);
    OCSP_REQUEST_free(req);
    const int n = 200000;
    auto start = Clock::now();
    std::size_t bytes = 0;
    if (auto first = ca.Ocsp(der).der; first.size() < 16) {
      std::fprintf(stderr, "OCSP answer is an error: status %d\n", first.back());
      return 1;
    }
    for (int i = 0; i < n; ++i) bytes += ca.Ocsp(der).der.size();
    Print("ocsp_cached_in_process", n, Seconds(start),
          fmt::format(",\"response_bytes\":{}", bytes / n));

    // The same answer for requests the cache has not seen byte for byte (each carries a
    // different non-critical extension, which the responder ignores): every one is parsed,
    // looked up and remembered, the path a request takes the first time.
    constexpr int kUnseen = 100000;
    std::vector<std::vector<std::uint8_t>> unseen;
    unseen.reserve(kUnseen);
    for (int i = 0; i < kUnseen; ++i) {
      crypto::OcspRequestPtr r(OCSP_REQUEST_new());
      OCSP_request_add0_id(r.get(), OCSP_cert_to_id(EVP_sha1(), leaf.get(), issuer.get()));
      crypto::Asn1OctetStringPtr value(ASN1_OCTET_STRING_new());
      ASN1_OCTET_STRING_set(value.get(), reinterpret_cast<const unsigned char*>(&i), sizeof(i));
      X509_EXTENSION* ext = X509_EXTENSION_create_by_NID(
          nullptr, NID_id_pkix_OCSP_serviceLocator, 0, value.get());
      OCSP_REQUEST_add_ext(r.get(), ext, -1);
      X509_EXTENSION_free(ext);
      std::vector<std::uint8_t>& out_der = unseen.emplace_back(
          static_cast<std::size_t>(i2d_OCSP_REQUEST(r.get(), nullptr)));
      unsigned char* w = out_der.data();
      i2d_OCSP_REQUEST(r.get(), &w);
    }
    if (ca.Ocsp(unseen.front()).der.size() != bytes / n) {
      std::fprintf(stderr, "an unseen request was not answered from the cache\n");
      return 1;
    }
    start = Clock::now();
    bytes = 0;
    for (const auto& request : unseen) bytes += ca.Ocsp(request).der.size();
    Print("ocsp_cached_unseen_request", kUnseen, Seconds(start),
          fmt::format(",\"response_bytes\":{}", bytes / kUnseen));
  }

  // A CRL of |crl_entries| revoked certificates in one partition.
  {
    auto tx = (*db)->Begin(store::TxMode::kWrite);
    // This hour's partition: the authority serves CRLs only for partitions that can hold
    // unexpired certificates.
    const std::int64_t partition =
        std::chrono::duration_cast<std::chrono::hours>(
            SystemClock::Instance().Now().time_since_epoch())
            .count();
    const std::int64_t far = 4102444800;  // 2100-01-01
    for (int i = 0; i < crl_entries; ++i) {
      if (!(*tx)->Exec("INSERT INTO certificates (serial, issuer, device, suite, not_before, "
                       "not_after, status, reason, revoked_at, partition_id, der) VALUES "
                       "(?, 'ecdsa-p256-sha256', 'x', 'ecdsa-p256-sha256', 0, ?, 'revoked', 1, "
                       "1800000000, ?, X'00')",
                       {fmt::format("{:032x}", 0x100000000ULL + static_cast<unsigned>(i)), far,
                        partition})) {
        return 1;
      }
    }
    if (!(*tx)->Commit()) return 1;
    const long rss_before = MaxRssKb();
    auto start = Clock::now();
    auto crl = ca.Crl("ecdsa-p256-sha256", partition);
    const double took = Seconds(start);
    const long rss_after = MaxRssKb();
    if (!crl) {
      std::fprintf(stderr, "%s\n", crl.error().ToString().c_str());
      return 1;
    }
    // Outside the timing: the CRL is what OpenSSL reads back, signed by the issuing CA.
    const unsigned char* der = crl->der.data();
    crypto::X509CrlPtr parsed(d2i_X509_CRL(nullptr, &der, static_cast<long>(crl->der.size())));
    auto ca_der = ca.CaCertificate("ecdsa-p256-sha256");
    der = ca_der->data();
    crypto::X509Ptr ca_cert(d2i_X509(nullptr, &der, static_cast<long>(ca_der->size())));
    if (!parsed || sk_X509_REVOKED_num(X509_CRL_get_REVOKED(parsed.get())) != crl_entries ||
        X509_CRL_verify(parsed.get(), X509_get0_pubkey(ca_cert.get())) != 1) {
      std::fprintf(stderr, "the CRL does not parse (%d), count (%d) or verify\n", parsed ? 1 : 0, parsed ? sk_X509_REVOKED_num(X509_CRL_get_REVOKED(parsed.get())) : -1);
      ERR_print_errors_fp(stderr);
      return 1;
    }
    Print("crl_build", crl_entries, took,
          fmt::format(",\"crl_bytes\":{},\"peak_rss_growth_mb\":{:.1f}", crl->der.size(),
                      static_cast<double>(rss_after - rss_before) / 1024.0));
  }
  return 0;
}

}  // namespace
}  // namespace fleetid

int main(int argc, char** argv) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / fmt::format("fleetid-pki-bench-{}", ::getpid());
  std::filesystem::create_directories(dir);
  const int rc = fleetid::Run(dir, argc > 1 ? std::atoi(argv[1]) : 1000000);
  std::filesystem::remove_all(dir);
  return rc;
}
