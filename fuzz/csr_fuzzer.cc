// Fuzzes the two readers of a PKCS#10 request an enrolling device sends (DER, the EST body
// once base64-decoded): enroll::CheckDer and enroll::CheckCsrKey, the checks made before any
// public-key operation, and crypto::VerifyCsr, which parses the request and verifies its
// signature.
//
// Invariants checked: every refusal is kInvalidArgument with a message (a suite a policy
// disables is kPermissionDenied, and a policy allowing nothing refuses every key so); a request
// CheckCsrKey accepts is DER by CheckDer, and its SubjectPublicKeyInfo is non-empty DER; when
// VerifyCsr also accepts it, both name the same SubjectPublicKeyInfo bytes.
#include <cstddef>
#include <cstdint>
#include <span>

#include "crypto/csr.h"
#include "crypto/suite.h"
#include "enroll/csr_check.h"
#include "fuzz_check.h"

namespace {

using fleetid::ErrorCode;
using fleetid::fuzz::Check;
using fleetid::fuzz::CheckRefusal;

const fleetid::crypto::SuitePolicy& NothingAllowed() {
  static fleetid::crypto::SuitePolicy policy;
  static const bool disabled = [] {
    for (const auto& suite : fleetid::crypto::AllSuites()) {
      policy.Set(suite.id, fleetid::crypto::SuiteStatus::kDisabled);
    }
    return true;
  }();
  (void)disabled;
  return policy;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::uint8_t> der(data, size);
  const auto is_der = fleetid::enroll::CheckDer(der);
  CheckRefusal(is_der);

  static const fleetid::crypto::SuitePolicy kEverySuite;
  const auto checked = fleetid::enroll::CheckCsrKey(der, kEverySuite);
  CheckRefusal(checked);
  const auto refused = fleetid::enroll::CheckCsrKey(der, NothingAllowed());
  Check(!refused);
  if (checked) {
    Check(is_der.has_value());
    Check(!checked->spki.empty() && fleetid::enroll::CheckDer(checked->spki).has_value());
    Check(refused.error().code() == ErrorCode::kPermissionDenied);
  }

  const auto verified = fleetid::crypto::VerifyCsr(der);
  CheckRefusal(verified);
  if (verified) Check(verified->key != nullptr && !verified->spki.empty());
  if (checked && verified) Check(checked->spki == verified->spki);
  return 0;
}
