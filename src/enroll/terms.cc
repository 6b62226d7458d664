#include "enroll/terms.h"

#include <algorithm>

namespace fleetid::enroll {

CredentialTerms BuiltInTerms() {
  CredentialTerms terms;
  terms.suites = std::make_shared<const crypto::SuitePolicy>();
  return terms;
}

Result<CredentialTerms> TermsFor(const policy::Policy& policy, const registry::Device& device) {
  const policy::Resource resource{.tenant = device.tenant,
                                  .region = device.region,
                                  .model = device.model,
                                  .labels = device.labels};
  auto found = policy.CredentialsFor(resource);
  if (!found) {
    return MakeError(ErrorCode::kPermissionDenied,
                     "no credential class of policy {} applies to '{}' (model {}, tenant '{}', "
                     "region '{}'): it gets no credential",
                     policy.Hash().substr(0, 12), device.serial, device.model, device.tenant,
                     device.region);
  }
  const policy::CredentialClass& c = **found;
  CredentialTerms terms;
  auto suites = std::make_shared<crypto::SuitePolicy>();
  for (const crypto::Suite& suite : crypto::AllSuites()) {
    const bool allowed = std::find(c.suites.begin(), c.suites.end(), suite.name) != c.suites.end();
    suites->Set(suite.id, !allowed                          ? crypto::SuiteStatus::kDisabled
                          : suite.name == c.preferred_suite ? crypto::SuiteStatus::kPreferred
                                                            : crypto::SuiteStatus::kAllowed);
  }
  terms.suites = std::move(suites);
  terms.ldevid_lifetime = std::chrono::seconds(c.ldevid_lifetime_seconds);
  terms.renew_at_percent = c.renew_at_percent;
  terms.attestation_required = c.attestation_required;
  terms.idevid_reenroll_after_lapse = c.idevid_reenroll_after_lapse;
  terms.nonce_ttl = std::chrono::seconds(c.nonce_lifetime_seconds);
  terms.evidence_ttl = std::chrono::seconds(c.evidence_lifetime_seconds);
  return terms;
}

Result<CredentialTerms> TermsOf(const CredentialTermsFn& fn, const registry::Device& device) {
  if (!fn) return BuiltInTerms();
  return fn(device);
}

}  // namespace fleetid::enroll
