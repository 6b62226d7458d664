// Fuzzes enroll::ParseManifest, the reader of a factory's signed batch manifest (a JWS whose
// payload lists the batch's devices), and enroll::VerifyManifest over what it parses, against a
// manufacturer certificate made in this process. Each input is read as a compact JWS, and as
// the JSON payload of a JWS whose header names that certificate, so that mutations reach the
// device list.
//
// Invariants checked: refusals are kInvalidArgument with a message; an accepted manifest names
// a batch and at least one device, a manufactured_at a TimePoint holds, and the signer
// thumbprint is 64 hex digits; verification refuses every input (kPermissionDenied: no input
// was signed by the key made here).
#include <openssl/evp.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/rng.h"
#include "crypto/crypto.h"
#include "crypto/jws.h"
#include "enroll/factory.h"
#include "fuzz_check.h"
#include "fuzz_keys.h"

namespace {

namespace crypto = fleetid::crypto;
namespace enroll = fleetid::enroll;
using fleetid::ErrorCode;
using fleetid::fuzz::Check;
using fleetid::fuzz::CheckRefusal;

// The manufacturer certificate manifests are checked against: self-signed by the P-256 key of
// VerifyKeys().
const std::vector<std::uint8_t>& CaDer() {
  static const std::vector<std::uint8_t> der = [] {
    fleetid::SystemClock clock;
    fleetid::FakeRng rng(1);
    auto made = enroll::MakeManufacturerCa(fleetid::fuzz::VerifyKeys()[0].get(), "Fuzz Factory",
                                           clock, rng);
    Check(made.has_value());
    return made.value_or(std::vector<std::uint8_t>());
  }();
  return der;
}

std::string Wrap(std::string_view payload) {
  static const std::string kHeader = R"({"alg":"ES256","typ":"fleetid-batch+jws","x5t#S256":")" +
                                     crypto::Base64UrlEncode(crypto::Sha256(CaDer())) + R"("})";
  static const std::string kSignature(64, '\x5a');
  return crypto::Base64UrlEncode(crypto::AsBytes(kHeader)) + "." +
         crypto::Base64UrlEncode(crypto::AsBytes(payload)) + "." +
         crypto::Base64UrlEncode(crypto::AsBytes(kSignature));
}

void FuzzManifest(std::string_view text) {
  const auto parsed = enroll::ParseManifest(text);
  CheckRefusal(parsed);
  if (!parsed) return;
  Check(!parsed->manifest.batch.empty() && !parsed->manifest.devices.empty());
  Check(parsed->signer_sha256.size() == 64);
  Check(parsed->manifest.manufactured_at >= 0 &&
        parsed->manifest.manufactured_at <= enroll::kMaxManifestTime);
  const auto verified = enroll::VerifyManifest(*parsed, CaDer());
  Check(!verified && verified.error().code() == ErrorCode::kPermissionDenied);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  Check(!CaDer().empty());
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text = fleetid::fuzz::Text(data, size);
  FuzzManifest(text);
  FuzzManifest(Wrap(text));
  return 0;
}
