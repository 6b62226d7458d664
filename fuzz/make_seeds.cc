// make_seeds writes the signed seeds of the JWS, claims and manifest fuzzers with fleetid's own
// signing code (crypto::SignJws, enroll::SignManifest), as the agent and `fleetid factory` make
// them: `make_seeds fuzz/corpus` (fuzz/make_seeds.sh runs it). The keys are made here and
// thrown away; the fuzzers verify against their own, so these seeds parse but never verify.
#include <openssl/evp.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "common/clock.h"
#include "common/rng.h"
#include "crypto/crypto.h"
#include "crypto/handles.h"
#include "crypto/jws.h"
#include "enroll/claims.h"
#include "enroll/factory.h"

namespace {

namespace crypto = fleetid::crypto;
namespace enroll = fleetid::enroll;
namespace fs = std::filesystem;
using Json = nlohmann::json;

constexpr std::string_view kSha =
    "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
constexpr std::string_view kNonce = "q2F9ZQd3m1o8Zc7yXW0r4Jv5bS6tP1uKeLhN0aGiD2E";

void Write(const fs::path& path, std::string_view text) {
  std::ofstream(path, std::ios::binary) << text;
}

std::string Sign(EVP_PKEY* key, const Json& header, const Json& payload) {
  auto jws = crypto::SignJws(key, header, payload.dump());
  if (!jws) {
    std::fprintf(stderr, "signing: %s\n", jws.error().ToString().c_str());
    std::exit(1);
  }
  return *jws;
}

Json Evidence() {
  return {{"eat_profile", enroll::kEvidenceProfile},
          {"eat_nonce", kNonce},
          {"serial", "SN-0001"},
          {"fw_sha256", kSha},
          {"key_sha256", kSha},
          {"hwmodel", "Gateway X1"},
          {"swname", "fleetid-agent"},
          {"swversion", "1.2.3"}};
}

Json Receipt() {
  return {{"serial", "SN-0001"},
          {"order", kSha},
          {"iat", 1780000000},
          {"destroyed", Json::array({{{"label", "ldevid-1"}, {"key_sha256", kSha}},
                                     {{"label", "ldevid-2"}, {"key_sha256", kSha}}})}};
}

void WriteClaims(const fs::path& dir, EVP_PKEY* key, std::string_view alg) {
  const std::string name(alg);
  const Json evidence_header{{"typ", enroll::kEvidenceType}};
  const Json receipt_header{{"typ", enroll::kReceiptType}, {"kid", "5a1f0c"}};
  Write(dir / "claims" / ("evidence_" + name), Sign(key, evidence_header, Evidence()));
  Write(dir / "claims" / ("receipt_" + name), Sign(key, receipt_header, Receipt()));
  Write(dir / "jws" / ("evidence_" + name), Sign(key, evidence_header, Evidence()));
  Write(dir / "jws" / ("receipt_" + name), Sign(key, receipt_header, Receipt()));
}

void WriteManifest(const fs::path& dir, EVP_PKEY* key) {
  fleetid::SystemClock clock;
  fleetid::FakeRng rng(7);
  auto ca = enroll::MakeManufacturerCa(key, "Acme Devices", clock, rng);
  if (!ca) std::exit(1);
  enroll::Manifest m{.batch = "B-2026-001",
                     .manufacturer = "Acme Devices",
                     .model = "Gateway-X1",
                     .station = "line-3",
                     .manufactured_at = 1780000000,
                     .devices = {}};
  for (int i = 1; i <= 3; ++i) {
    m.devices.push_back(
        {"SN-000" + std::to_string(i), std::string(kSha), "1.2.3", std::string(kSha)});
  }
  auto signed_manifest = enroll::SignManifest(key, *ca, m);
  if (!signed_manifest) std::exit(1);
  Write(dir / "manifest" / "batch_of_three", *signed_manifest);
  Write(dir / "jws" / "manifest", *signed_manifest);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_seeds CORPUS_DIR\n");
    return 2;
  }
  const fs::path dir = argv[1];
  const crypto::EvpPkeyPtr p256(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  const crypto::EvpPkeyPtr p384(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-384"));
  const crypto::EvpPkeyPtr ed25519(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"));
  WriteClaims(dir, p256.get(), "es256");
  WriteClaims(dir, p384.get(), "es384");
  WriteClaims(dir, ed25519.get(), "eddsa");
  WriteManifest(dir, p256.get());
  return 0;
}
