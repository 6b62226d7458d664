#include "operators/approval.h"

#include <nlohmann/json.hpp>

#include "crypto/jws.h"
#include "crypto/x509.h"

namespace fleetid::operators {
namespace {

using Json = nlohmann::json;

constexpr std::string_view kPayloadType = "fleetid.approval/v1";
constexpr std::size_t kMaxChain = 4;

Json Payload(std::string_view request, std::string_view digest, std::string_view decision) {
  return {{"type", kPayloadType}, {"request", request}, {"digest", digest}, {"decision", decision}};
}

}  // namespace

Result<std::string> SignApproval(EVP_PKEY* key,
                                 const std::vector<std::vector<std::uint8_t>>& chain_der,
                                 std::string_view request, std::string_view digest,
                                 std::string_view decision) {
  if (chain_der.empty() || chain_der.size() > kMaxChain) {
    return MakeError(ErrorCode::kInvalidArgument, "an approval carries 1 to {} certificates",
                     kMaxChain);
  }
  Json x5c = Json::array();
  for (const auto& der : chain_der) x5c.push_back(crypto::Base64Encode(der));  // RFC 7515 §4.1.6
  return crypto::SignJws(key, {{"typ", kApprovalType}, {"x5c", x5c}},
                         Payload(request, digest, decision).dump());
}

Result<VerifiedApproval> VerifyApproval(std::string_view jws, std::string_view request,
                                        std::string_view digest, std::string_view decision) {
  FLEETID_TRY(parsed, crypto::ParseJws(jws));
  const Json& header = parsed.header;
  if (header.value("typ", "") != kApprovalType || !header.contains("x5c") ||
      !header["x5c"].is_array() || header["x5c"].empty() || header["x5c"].size() > kMaxChain) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "not a fleetid approval signature (typ {} with x5c expected)", kApprovalType);
  }
  VerifiedApproval out;
  for (const Json& c : header["x5c"]) {
    if (!c.is_string()) return MakeError(ErrorCode::kInvalidArgument, "x5c holds a non-string");
    FLEETID_TRY(der, crypto::Base64Decode(c.get<std::string>()));
    out.chain_der.push_back(std::move(der));
  }
  FLEETID_TRY(leaf, crypto::ParseCertificateDer(out.chain_der.front()));
  EVP_PKEY* key = X509_get0_pubkey(leaf.get());
  if (key == nullptr) {
    return MakeError(ErrorCode::kInvalidArgument, "the approval's certificate has no usable key");
  }
  FLEETID_CHECK_OK(crypto::VerifyJws(parsed, key));
  const Json payload = Json::parse(parsed.payload, nullptr, false);
  if (!payload.is_object() || payload != Payload(request, digest, decision)) {
    return MakeError(ErrorCode::kUnauthenticated,
                     "the signature is over another request, digest or decision than {} of {}",
                     decision, request);
  }
  return out;
}

}  // namespace fleetid::operators
