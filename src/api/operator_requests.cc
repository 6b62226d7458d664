#include "api/operator_requests.h"

#include <fmt/format.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <algorithm>
#include <charconv>
#include <initializer_list>
#include <limits>
#include <utility>

#include "api/http_util.h"
#include "crypto/handles.h"
#include "crypto/jws.h"
#include "crypto/x509.h"

namespace fleetid::api {
namespace {

using Json = nlohmann::json;

constexpr std::size_t kMaxReason = 1024;
constexpr std::size_t kMaxCode = 128;
constexpr std::size_t kMaxCsrText = 16384;
constexpr std::size_t kMaxSignature = 16384;  // a JWS with a chain of operator certificates
constexpr std::size_t kMaxGrants = 64;
constexpr std::size_t kMaxManifest = 4 << 20;  // a batch of some ten thousand devices

std::unexpected<Error> Bad(std::string message) {
  return std::unexpected(Error(ErrorCode::kInvalidArgument, std::move(message)));
}

// OnlyKeys refuses a body that is not an object, has a key outside |allowed|, or lacks one of
// |required|.
Result<void> OnlyKeys(const Json& body, std::initializer_list<std::string_view> allowed,
                      std::initializer_list<std::string_view> required) {
  if (!body.is_object()) return Bad("the request body must be a JSON object");
  for (const auto& [key, value] : body.items()) {
    if (std::ranges::find(allowed, std::string_view(key)) == allowed.end()) {
      return Bad(fmt::format("unknown field '{}'", key.substr(0, 64)));
    }
  }
  for (std::string_view key : required) {
    if (!body.contains(key)) return Bad(fmt::format("the field '{}' is required", key));
  }
  return {};
}

Result<std::string> Text(const Json& body, std::string_view key, std::size_t max_bytes,
                         bool required) {
  if (!body.contains(key)) {
    if (required) return Bad(fmt::format("the field '{}' is required", key));
    return std::string();
  }
  const Json& value = body.at(std::string(key));
  if (!value.is_string()) return Bad(fmt::format("the field '{}' must be a string", key));
  std::string text = value.get<std::string>();
  if (text.size() > max_bytes) {
    return Bad(fmt::format("the field '{}' is longer than {} bytes", key, max_bytes));
  }
  return text;
}

}  // namespace

Result<Json> ParseJsonBody(std::string_view body) {
  if (body.empty()) return Json::object();
  FLEETID_TRY(parsed, policy::ParseStrictJson(body, "the request body"));
  if (!parsed.is_object()) return Bad("the request body must be a JSON object");
  return parsed;
}

Result<std::vector<std::uint8_t>> ParseCsr(std::string_view text) {
  if (text.find("-----BEGIN") != std::string_view::npos) {
    crypto::BioPtr bio(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
    X509_REQ* req = PEM_read_bio_X509_REQ(bio.get(), nullptr, nullptr, nullptr);
    if (req == nullptr) {
      ERR_clear_error();
      return Bad("the field 'csr' is not a PEM CERTIFICATE REQUEST");
    }
    unsigned char* der = nullptr;
    const int len = i2d_X509_REQ(req, &der);
    X509_REQ_free(req);
    if (len <= 0) return Bad("the field 'csr' does not encode");
    std::vector<std::uint8_t> out(der, der + len);
    OPENSSL_free(der);
    return out;
  }
  auto der = crypto::Base64Decode(text);
  if (!der || der->empty()) return Bad("the field 'csr' is neither PEM nor base64 DER");
  return der;
}

Result<CodeExchange> ParseCodeExchange(const Json& body, bool with_name) {
  if (with_name) {
    FLEETID_CHECK_OK(OnlyKeys(body, {"code", "name", "csr"}, {"code", "name", "csr"}));
  } else {
    FLEETID_CHECK_OK(OnlyKeys(body, {"code", "csr"}, {"code", "csr"}));
  }
  CodeExchange out;
  FLEETID_TRY(code, Text(body, "code", kMaxCode, true));
  out.code = std::move(code);
  if (with_name) {
    FLEETID_TRY(name, Text(body, "name", 64, true));
    out.name = std::move(name);
  }
  FLEETID_TRY(text, Text(body, "csr", kMaxCsrText, true));
  FLEETID_TRY(csr, ParseCsr(text));
  out.csr_der = std::move(csr);
  return out;
}

Result<policy::Grant> ParseGrant(const Json& body) {
  FLEETID_CHECK_OK(OnlyKeys(body, {"role", "scope"}, {"role"}));
  FLEETID_TRY(role, Text(body, "role", 64, true));
  policy::Grant grant{.role = std::move(role), .scope = {}};
  if (body.contains("scope")) {
    auto scope = policy::ScopeFromJson(body.at("scope"));
    if (!scope) return Bad(scope.error().message());
    grant.scope = std::move(*scope);
  }
  return grant;
}

Result<InvitationRequest> ParseInvitation(const Json& body) {
  FLEETID_CHECK_OK(OnlyKeys(body, {"name", "grants", "lifetime_seconds"}, {"name", "grants"}));
  InvitationRequest out;
  FLEETID_TRY(name, Text(body, "name", 64, true));
  out.name = std::move(name);
  const Json& grants = body.at("grants");
  if (!grants.is_array() || grants.empty() || grants.size() > kMaxGrants) {
    return Bad(fmt::format("the field 'grants' must be a list of 1 to {} grants", kMaxGrants));
  }
  for (const Json& g : grants) {
    FLEETID_TRY(grant, ParseGrant(g));
    out.grants.push_back(std::move(grant));
  }
  out.lifetime = std::chrono::hours(24);
  if (body.contains("lifetime_seconds")) {
    const Json& v = body.at("lifetime_seconds");
    if (!v.is_number_integer()) return Bad("the field 'lifetime_seconds' must be an integer");
    out.lifetime = std::chrono::seconds(v.get<std::int64_t>());
  }
  return out;
}

Result<ProposalRequest> ParseProposal(const Json& body) {
  FLEETID_CHECK_OK(OnlyKeys(body, {"document", "base", "reason"}, {"document", "base"}));
  ProposalRequest out;
  const Json& document = body.at("document");
  if (!document.is_object()) return Bad("the field 'document' must be a policy (a JSON object)");
  out.document = document.dump();
  const Json& base = body.at("base");
  if (!base.is_number_integer()) return Bad("the field 'base' must be a version number");
  out.base = base.get<std::int64_t>();
  FLEETID_TRY(reason, Text(body, "reason", kMaxReason, false));
  out.reason = std::move(reason);
  return out;
}

Result<ApprovalRequest> ParseApproval(const Json& body) {
  FLEETID_CHECK_OK(OnlyKeys(body, {"reason", "signature"}, {}));
  ApprovalRequest out;
  FLEETID_TRY(reason, Text(body, "reason", kMaxReason, false));
  FLEETID_TRY(signature, Text(body, "signature", kMaxSignature, false));
  out.reason = std::move(reason);
  out.signature = std::move(signature);
  return out;
}

namespace {

// QueryNumber reads query parameter |name|'s decimal |text|, from |low| to |high|.
Result<std::int64_t> QueryNumber(std::string_view name, const std::string& text, std::int64_t low,
                                 std::int64_t high) {
  std::int64_t n = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || n < low ||
      n > high) {
    return Bad(fmt::format("query parameter '{}' must be a number from {} to {}", name, low, high));
  }
  return n;
}

// SetDeviceFilter applies one known parameter of the device listing to |q|. (One function per
// step keeps each small: clang-tidy's optional-access analysis grew without bound on the loop
// with every branch inlined.)
Result<void> SetDeviceFilter(registry::DeviceQuery& q, const std::string& name,
                             const std::string& value, TimePoint now) {
  constexpr std::int64_t kMaxWindow = std::int64_t{10} * 366 * 24 * 3600;
  if (name == "state") {
    FLEETID_TRY(state, registry::ParseState(value));
    q.state = state;
  } else if (name == "tenant") {
    q.tenant = value;
  } else if (name == "region") {
    q.region = value;
  } else if (name == "model") {
    q.model = value;
  } else if (name == "firmware") {
    q.firmware_version = value;
  } else if (name == "label") {
    const std::size_t colon = value.find(':');
    if (colon == std::string::npos || colon == 0)
      return Bad("query parameter 'label' is KEY:VALUE");
    q.label_key = value.substr(0, colon);
    q.label_value = value.substr(colon + 1);
  } else if (name == "expires_within") {
    FLEETID_TRY(seconds, QueryNumber(name, value, 1, kMaxWindow));
    q.expires_before = now + std::chrono::seconds(seconds);
  } else if (name == "limit") {
    FLEETID_TRY(limit, QueryNumber(name, value, 1, 1000));
    q.limit = static_cast<int>(limit);
  } else {
    FLEETID_TRY(after, QueryNumber(name, value, 0, std::numeric_limits<std::int64_t>::max()));
    q.after = after;
  }
  return {};
}

}  // namespace

Result<registry::DeviceQuery> ParseDeviceQuery(std::string_view query, TimePoint now) {
  constexpr std::size_t kMaxQueryValue = 256;
  static constexpr std::string_view kNames[] = {"state",          "tenant",   "region",
                                                "model",          "firmware", "label",
                                                "expires_within", "limit",    "after"};
  registry::DeviceQuery out;
  std::vector<std::string> seen;
  while (!query.empty()) {
    const std::size_t amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (pair.empty()) continue;
    const std::size_t eq = pair.find('=');
    const std::string name(pair.substr(0, eq));
    if (std::ranges::find(kNames, name) == std::end(kNames)) {
      return Bad(
          fmt::format("unknown query parameter '{}' (state, tenant, region, model, "
                      "firmware, label, expires_within, limit, after)",
                      name.substr(0, 32)));
    }
    if (std::ranges::find(seen, name) != seen.end()) {
      return Bad(fmt::format("query parameter '{}' is given twice", name));
    }
    seen.push_back(name);
    const std::string value =
        internal::PercentDecode(eq == std::string_view::npos ? "" : pair.substr(eq + 1));
    if (value.empty() || value.size() > kMaxQueryValue) {
      return Bad(fmt::format("query parameter '{}' must hold 1 to {} bytes", name, kMaxQueryValue));
    }
    FLEETID_CHECK_OK(SetDeviceFilter(out, name, value, now));
  }
  return out;
}

Result<CertificateActionRequest> ParseCertificateAction(const Json& body, bool revoke) {
  CertificateActionRequest out;
  if (revoke) {
    FLEETID_CHECK_OK(
        OnlyKeys(body, {"revocation_reason", "reason"}, {"revocation_reason", "reason"}));
    FLEETID_TRY(name, Text(body, "revocation_reason", 64, true));
    out.revocation_reason = std::move(name);
  } else {
    FLEETID_CHECK_OK(OnlyKeys(body, {"reason"}, {"reason"}));
  }
  FLEETID_TRY(reason, Text(body, "reason", kMaxReason, true));
  out.reason = std::move(reason);
  return out;
}

Result<std::string> ParseReason(const Json& body, bool required) {
  FLEETID_CHECK_OK(OnlyKeys(body, {"reason"}, {}));
  return Text(body, "reason", kMaxReason, required);
}

Result<std::vector<std::uint8_t>> ParseRenewal(const Json& body) {
  FLEETID_CHECK_OK(OnlyKeys(body, {"csr"}, {"csr"}));
  FLEETID_TRY(text, Text(body, "csr", kMaxCsrText, true));
  return ParseCsr(text);
}

Result<ManufacturerRequest> ParseManufacturer(const Json& body) {
  FLEETID_CHECK_OK(OnlyKeys(body, {"name", "certificate"}, {"name", "certificate"}));
  FLEETID_TRY(name, Text(body, "name", 128, true));
  if (name.empty()) return Bad("the field 'name' must not be empty");
  FLEETID_TRY(pem, Text(body, "certificate", kMaxCsrText, true));
  auto certs = crypto::ParseCertificatesPem(pem);
  if (!certs) return Bad(fmt::format("the field 'certificate': {}", certs.error().message()));
  if (certs->size() != 1) return Bad("the field 'certificate' must hold exactly one certificate");
  FLEETID_TRY(der, crypto::CertificateDer(certs->front().get()));
  return ManufacturerRequest{.name = std::move(name), .certificate_der = std::move(der)};
}

Result<std::string> ParseManifest(const Json& body) {
  FLEETID_CHECK_OK(OnlyKeys(body, {"manifest"}, {"manifest"}));
  FLEETID_TRY(jws, Text(body, "manifest", kMaxManifest, true));
  if (jws.empty()) return Bad("the field 'manifest' must not be empty");
  return jws;
}

Result<ReferenceValueRequest> ParseReferenceValue(const Json& body) {
  FLEETID_CHECK_OK(OnlyKeys(body, {"model", "firmware_sha256"}, {"model", "firmware_sha256"}));
  FLEETID_TRY(model, Text(body, "model", 64, true));
  FLEETID_TRY(digest, Text(body, "firmware_sha256", 64, true));
  const bool hex = digest.size() == 64 && std::ranges::all_of(digest, [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
  });
  if (model.empty()) return Bad("the field 'model' must not be empty");
  if (!hex) return Bad("the field 'firmware_sha256' must be 64 lower-case hex digits");
  return ReferenceValueRequest{.model = std::move(model), .firmware_sha256 = std::move(digest)};
}

Result<std::vector<std::uint8_t>> ParseIssue(const Json& body) {
  FLEETID_CHECK_OK(OnlyKeys(body, {"csr"}, {"csr"}));
  FLEETID_TRY(text, Text(body, "csr", kMaxCsrText, true));
  return ParseCsr(text);
}

Result<DeviceActionRequest> ParseDeviceAction(const Json& body, bool provision) {
  if (provision) {
    FLEETID_CHECK_OK(OnlyKeys(body, {"reason", "tenant", "region"}, {"tenant", "region"}));
  } else {
    FLEETID_CHECK_OK(OnlyKeys(body, {"reason"}, {"reason"}));
  }
  DeviceActionRequest out;
  FLEETID_TRY(reason, Text(body, "reason", kMaxReason, !provision));
  out.reason = std::move(reason);
  if (provision) {
    FLEETID_TRY(tenant, Text(body, "tenant", 64, true));
    FLEETID_TRY(region, Text(body, "region", 64, true));
    out.tenant = std::move(tenant);
    out.region = std::move(region);
  }
  return out;
}

}  // namespace fleetid::api
