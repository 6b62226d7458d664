// Credential terms: how one device gets its credentials, as the credential class of the active
// policy version that applies to it says (docs/policy.md, "Credentials"): the key suites it may
// use, its LDevID lifetime and renewal point, whether its enrollments need attestation, whether
// its IDevID may enroll again after its LDevID lapsed, and how long nonces and evidence live.
// The enrollment service and the CA read these, per device, instead of constants.
#ifndef FLEETID_ENROLL_TERMS_H_
#define FLEETID_ENROLL_TERMS_H_

#include <chrono>
#include <functional>
#include <memory>

#include "common/error.h"
#include "crypto/suite.h"
#include "policy/policy.h"
#include "registry/registry.h"

namespace fleetid::enroll {

struct CredentialTerms {
  std::shared_ptr<const crypto::SuitePolicy> suites;  // never null
  std::chrono::seconds ldevid_lifetime{24 * 3600};
  int renew_at_percent = 66;
  bool attestation_required = true;
  bool idevid_reenroll_after_lapse = true;
  std::chrono::seconds nonce_ttl{60};
  // A passing appraisal must be used by an enrollment within this.
  std::chrono::seconds evidence_ttl{300};
};

// CredentialTermsFn answers the terms for a device: the server's reads the active policy
// version's classes (TermsFor).
using CredentialTermsFn = std::function<Result<CredentialTerms>(const registry::Device&)>;

// BuiltInTerms are the terms of the built-in policy's one class (every suite, P-256 preferred,
// one day, renewal at 66 %, attestation required), for a service given no CredentialTermsFn.
CredentialTerms BuiltInTerms();

// TermsFor is |device|'s terms under |policy|: its first credential class whose match takes the
// device. A device that no class matches gets no credential: kPermissionDenied naming it.
[[nodiscard]] Result<CredentialTerms> TermsFor(const policy::Policy& policy,
                                               const registry::Device& device);

// TermsOf answers |fn|'s terms for |device|, or BuiltInTerms when |fn| is empty.
[[nodiscard]] Result<CredentialTerms> TermsOf(const CredentialTermsFn& fn,
                                              const registry::Device& device);

}  // namespace fleetid::enroll

#endif  // FLEETID_ENROLL_TERMS_H_
