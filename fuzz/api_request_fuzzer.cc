// Fuzzes the operator API's request bodies (api/operator_requests.h) exactly as /api/v1 reads
// them: the first byte picks the route's parser, the rest is the body (or, for the device
// listing, the query string). Bodies come from anyone
// who reaches the HTTPS listener (bootstrap and enroll take no certificate).
//
// Invariants checked: every refusal is kInvalidArgument with a message; an accepted body holds
// what its route needs (a code of at most 128 bytes and a non-empty CSR, 1 to 64 grants, a
// policy document that is a JSON object, a page size of 1 to 1000), and every scope it carries is
// written back and read again to the same scope. An approval's signature goes through
// operators::VerifyApproval.
#include <chrono>
#include <cstddef>
#include <cstdint>

#include "api/operator_requests.h"
#include "fuzz_check.h"
#include "operators/approval.h"

namespace {

using fleetid::fuzz::Check;
using fleetid::fuzz::CheckRefusal;
namespace api = fleetid::api;
namespace policy = fleetid::policy;

void CheckScope(const policy::Scope& scope) {
  auto again = policy::ParseScope(policy::ScopeToJson(scope));
  Check(again.has_value() && *again == scope);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::uint8_t route = data[0] % 15;
  if (route == 8) {
    // GET /api/v1/devices's query string.
    auto query = api::ParseDeviceQuery(fleetid::fuzz::Text(data + 1, size - 1),
                                       fleetid::TimePoint(std::chrono::seconds(1'800'000'000)));
    CheckRefusal(query);
    if (query) Check(query->limit >= 1 && query->limit <= 1000 && query->after >= 0);
    return 0;
  }
  auto body = api::ParseJsonBody(fleetid::fuzz::Text(data + 1, size - 1));
  CheckRefusal(body);
  if (!body) return 0;
  switch (route) {
    case 0:
    case 1: {
      auto exchange = api::ParseCodeExchange(*body, /*with_name=*/route == 0);
      CheckRefusal(exchange);
      if (exchange) Check(exchange->code.size() <= 128 && !exchange->csr_der.empty());
      break;
    }
    case 2: {
      auto invitation = api::ParseInvitation(*body);
      CheckRefusal(invitation);
      if (!invitation) break;
      Check(!invitation->grants.empty() && invitation->grants.size() <= 64);
      for (const policy::Grant& g : invitation->grants) CheckScope(g.scope);
      break;
    }
    case 3: {
      auto grant = api::ParseGrant(*body);
      CheckRefusal(grant);
      if (grant) CheckScope(grant->scope);
      break;
    }
    case 4: {
      auto proposal = api::ParseProposal(*body);
      CheckRefusal(proposal);
      if (proposal) Check(api::ParseJsonBody(proposal->document).has_value());
      break;
    }
    case 5:
      CheckRefusal(api::ParseReason(*body, /*required=*/(size & 1) != 0));
      break;
    case 6:
      CheckRefusal(api::ParseRenewal(*body));
      break;
    case 7: {
      auto approval = api::ParseApproval(*body);
      CheckRefusal(approval);
      if (approval && !approval->signature.empty()) {
        // A signature is verified as the route verifies it; any refusal must be a clean one.
        auto verified = fleetid::operators::VerifyApproval(approval->signature, "policy proposal 1",
                                                           "00", "approve");
        Check(verified.has_value() || !verified.error().message().empty());
      }
      break;
    }
    case 10:
      CheckRefusal(api::ParseCertificateAction(*body, /*revoke=*/(size & 1) != 0));
      break;
    case 11: {
      auto manufacturer = api::ParseManufacturer(*body);
      CheckRefusal(manufacturer);
      if (manufacturer) Check(!manufacturer->name.empty() && !manufacturer->certificate_der.empty());
      break;
    }
    case 12:
      CheckRefusal(api::ParseManifest(*body));
      break;
    case 13: {
      auto reference = api::ParseReferenceValue(*body);
      CheckRefusal(reference);
      if (reference) Check(reference->firmware_sha256.size() == 64 && !reference->model.empty());
      break;
    }
    case 14:
      CheckRefusal(api::ParseIssue(*body));
      break;
    default:
      CheckRefusal(api::ParseDeviceAction(*body, /*provision=*/(size & 1) != 0));
      break;
  }
  return 0;
}
