// The operator API under /api/v1 (docs/api.md): operators authenticated by their certificate from
// the operators' CA over HTTPS, every call authorized by the active policy version. Request bodies
// are read by the parsers below, strictly (unknown fields, wrong types and oversized values are
// refused), so the fuzzer reads them exactly as the routes do.
#ifndef FLEETID_API_OPERATOR_API_H_
#define FLEETID_API_OPERATOR_API_H_

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/clock.h"
#include "common/error.h"
#include "common/rng.h"
#include "operators/operators.h"
#include "pki/pki.h"
#include "policy/versions.h"
#include "registry/registry.h"
#include "server/http_server.h"

namespace fleetid::api {

struct OperatorApi {
  operators::Operators& operators;
  policy::Versions& policy;
  registry::Registry& registry;
  pki::Authority& authority;
  Rng& rng;
};

// RegisterOperatorApi adds /api/v1/... . Every answer is JSON with an X-Request-Id header; every
// error is {"error","message","request_id"}. HTTPS only; the routes other than bootstrap and
// enroll (which take one-time codes) need an operator certificate.
void RegisterOperatorApi(server::Router& router, const OperatorApi& api);

// The request bodies, parsed strictly. Each refusal is kInvalidArgument naming the field.
struct CodeExchange {  // POST /api/v1/operators/bootstrap and /enroll
  std::string code;
  std::string name;  // bootstrap only
  std::vector<std::uint8_t> csr_der;
};
struct InvitationRequest {  // POST /api/v1/operators/invitations
  std::string name;
  std::vector<policy::Grant> grants;
  std::chrono::seconds lifetime{0};
};
struct ProposalRequest {  // POST /api/v1/policy/proposals
  std::string document;   // the policy, as JSON text
  std::int64_t base = 0;
  std::string reason;
};

[[nodiscard]] Result<nlohmann::json> ParseJsonBody(std::string_view body);
[[nodiscard]] Result<CodeExchange> ParseCodeExchange(const nlohmann::json& body, bool with_name);
[[nodiscard]] Result<InvitationRequest> ParseInvitation(const nlohmann::json& body);
[[nodiscard]] Result<policy::Grant> ParseGrant(const nlohmann::json& body);
[[nodiscard]] Result<ProposalRequest> ParseProposal(const nlohmann::json& body);
// ParseReason reads {"reason": "..."} (the reason may be required).
[[nodiscard]] Result<std::string> ParseReason(const nlohmann::json& body, bool required);
// ParseCsr reads a PKCS#10 request given as PEM or as base64 DER.
[[nodiscard]] Result<std::vector<std::uint8_t>> ParseCsr(std::string_view text);

}  // namespace fleetid::api

#endif  // FLEETID_API_OPERATOR_API_H_
