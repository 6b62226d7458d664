// The operator API's request bodies (docs/api.md), read strictly: strict JSON (no repeated keys,
// no comments), unknown fields, wrong types and oversized values refused with kInvalidArgument
// naming the field. The routes (api/operator_api.cc) and the fuzzer
// (fuzz/api_request_fuzzer.cc) read them with the same functions.
#ifndef FLEETID_API_OPERATOR_REQUESTS_H_
#define FLEETID_API_OPERATOR_REQUESTS_H_

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/clock.h"
#include "common/error.h"
#include "policy/policy.h"
#include "registry/registry.h"

namespace fleetid::api {

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

struct ManufacturerRequest {  // POST /api/v1/manufacturers
  std::string name;
  std::vector<std::uint8_t> certificate_der;  // the manufacturer CA's certificate
};
struct ReferenceValueRequest {  // POST /api/v1/reference-values
  std::string model;
  std::string firmware_sha256;  // 64 lower-case hex digits
};

[[nodiscard]] Result<nlohmann::json> ParseJsonBody(std::string_view body);
// ParseManufacturer reads {"name","certificate"}: one PEM CERTIFICATE.
[[nodiscard]] Result<ManufacturerRequest> ParseManufacturer(const nlohmann::json& body);
// ParseManifest reads {"manifest"}: the signed batch manifest, a compact JWS.
[[nodiscard]] Result<std::string> ParseManifest(const nlohmann::json& body);
// ParseReferenceValue reads {"model","firmware_sha256"}.
[[nodiscard]] Result<ReferenceValueRequest> ParseReferenceValue(const nlohmann::json& body);
// ParseIssue reads {"csr"} (PEM or base64 DER) for a device's certificate.
[[nodiscard]] Result<std::vector<std::uint8_t>> ParseIssue(const nlohmann::json& body);
[[nodiscard]] Result<CodeExchange> ParseCodeExchange(const nlohmann::json& body, bool with_name);
[[nodiscard]] Result<InvitationRequest> ParseInvitation(const nlohmann::json& body);
[[nodiscard]] Result<policy::Grant> ParseGrant(const nlohmann::json& body);
[[nodiscard]] Result<ProposalRequest> ParseProposal(const nlohmann::json& body);
struct DeviceActionRequest {  // POST /api/v1/devices/{serial}/{action}
  std::string reason;
  std::string tenant;  // provision only
  std::string region;  // provision only
};

// ParseRenewal reads {"csr": ...} (POST /api/v1/operators/renew).
[[nodiscard]] Result<std::vector<std::uint8_t>> ParseRenewal(const nlohmann::json& body);
// ParseDeviceAction reads {"reason"} ({"tenant","region","reason"?} to provision).
[[nodiscard]] Result<DeviceActionRequest> ParseDeviceAction(const nlohmann::json& body,
                                                            bool provision);
struct ApprovalRequest {  // POST /api/v1/policy/proposals/{id}/approve
  std::string reason;
  std::string signature;  // a compact JWS (operators/approval.h), or empty
};
// ParseApproval reads {"reason"?, "signature"?}.
[[nodiscard]] Result<ApprovalRequest> ParseApproval(const nlohmann::json& body);
// ParseDeviceQuery reads GET /api/v1/devices's query: state, tenant, region, model, firmware,
// label (KEY:VALUE), expires_within (seconds from |now|), limit (1-1000, default 100) and after
// (the previous page's cursor), each at most once, percent-encoded values of at most 256 bytes.
// Anything else is kInvalidArgument naming the parameter.
[[nodiscard]] Result<registry::DeviceQuery> ParseDeviceQuery(std::string_view query, TimePoint now);

struct CertificateActionRequest {  // POST /api/v1/ca/certificates/{serial}/hold|revoke|release
  std::string revocation_reason;   // revoke only: an RFC 5280 reason name (pki::ParseReason)
  std::string reason;              // why, for the record
};
// ParseCertificateAction reads {"reason"} for a hold or release, and {"revocation_reason",
// "reason"} for a revocation (both required).
[[nodiscard]] Result<CertificateActionRequest> ParseCertificateAction(const nlohmann::json& body,
                                                                      bool revoke);

// ParseReason reads {"reason": "..."} (the reason may be required).
[[nodiscard]] Result<std::string> ParseReason(const nlohmann::json& body, bool required);
// ParseCsr reads a PKCS#10 request given as PEM or as base64 DER.
[[nodiscard]] Result<std::vector<std::uint8_t>> ParseCsr(std::string_view text);

}  // namespace fleetid::api

#endif  // FLEETID_API_OPERATOR_REQUESTS_H_
