// Fuzzes the two forms of OCSP request a relying party sends (RFC 6960 Appendix A): the DER
// OCSPRequest of a POST body, read by pki::internal::ParseOcspRequest, and the GET form
// /ocsp/{url-encoding of base64 of the DER}, decoded as the route does (api::internal::
// PercentDecode, then OcspBase64Decode) before the same parser. Every input is tried both ways:
// as the DER body, and as the text after "/ocsp/".
//
// Invariants checked: a refusal is always malformedRequest; an accepted request has 1 to
// max_cert_ids CertIDs, each with its hashes and a cache key, a serial in canonical lower-case
// hex and a copy OpenSSL can make (OCSP_CERTID_dup), and re-parses from its own DER encoding
// (when OpenSSL can read that) to the same CertIDs and nonce; a lower limit refuses exactly the
// requests with more CertIDs than it allows.
// Percent-decoding never grows the text; the base64 decoder accepts only padded base64 of at
// most 16384 characters, no whitespace nor padding inside, and yields the bytes
// crypto::Base64Decode reads from it.
#include <openssl/err.h>
#include <openssl/ocsp.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "api/http_util.h"
#include "crypto/handles.h"
#include "crypto/jws.h"
#include "fuzz_check.h"
#include "pki/internal/ocsp_responder.h"

namespace {

namespace crypto = fleetid::crypto;
using fleetid::fuzz::Check;
using fleetid::pki::internal::ParsedOcspRequest;
using fleetid::pki::internal::ParseOcspRequest;

constexpr int kMaxCertIds = 16;  // Authority::kMaxOcspCertIds
constexpr int kMalformed = OCSP_RESPONSE_STATUS_MALFORMEDREQUEST;
constexpr std::string_view kBase64Symbols =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

bool IsLowerHex(std::string_view text) {
  return std::all_of(text.begin(), text.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

void CheckCertIds(const ParsedOcspRequest& parsed) {
  Check(parsed.request != nullptr);
  Check(!parsed.ids.empty() && parsed.ids.size() <= kMaxCertIds);
  for (const auto& id : parsed.ids) {
    Check(id.id != nullptr && id.name_hash != nullptr && id.key_hash != nullptr);
    Check(id.serial_number != nullptr);
    Check(!id.cache_key.empty() && id.cache_key.size() % 2 == 0 && IsLowerHex(id.cache_key));
    // A positive serial in hex: whole octets, no leading zero octet; 0 and negatives are empty.
    const std::string serial = id.Serial();
    Check(serial.size() % 2 == 0 && IsLowerHex(serial));
    Check(!serial.starts_with("00"));
    Check(serial.size() <= 40);
    // An accepted CertID is one OpenSSL can copy into an answer (the parser skips the trial
    // copy for absent or NULL hash parameters: this says the shortcut is right).
    const crypto::OcspCertIdPtr copy(OCSP_CERTID_dup(id.id));
    ERR_clear_error();
    Check(copy != nullptr);
  }
}

std::vector<std::uint8_t> Reencode(OCSP_REQUEST* request) {
  unsigned char* der = nullptr;
  const int len = i2d_OCSP_REQUEST(request, &der);
  if (len <= 0) {
    ERR_clear_error();
    return {};
  }
  std::vector<std::uint8_t> out(der, der + len);
  OPENSSL_free(der);
  return out;
}

// CheckParse parses |der| with the server's limit and with a limit of one CertID.
void CheckParse(std::span<const std::uint8_t> der) {
  auto parsed = ParseOcspRequest(der, kMaxCertIds);
  auto single = ParseOcspRequest(der, 1);
  ERR_clear_error();
  if (!parsed.has_value()) {
    Check(parsed.error() == kMalformed);
    Check(!single.has_value() && single.error() == kMalformed);
    return;
  }
  CheckCertIds(*parsed);
  Check(single.has_value() == (parsed->ids.size() == 1));
  if (!single.has_value()) Check(single.error() == kMalformed);
  const std::vector<std::uint8_t> again = Reencode(parsed->request.get());
  if (again.empty()) return;
  auto reparsed = ParseOcspRequest(again, kMaxCertIds);
  ERR_clear_error();
  // OpenSSL does not always read back its own encoding (AlgorithmIdentifier parameters of a
  // constructed EOC are written as a primitive one, which it then refuses): only a re-encoding
  // OpenSSL reads must pass fleetid's own checks again.
  if (!reparsed.has_value()) {
    const unsigned char* p = again.data();
    const crypto::OcspRequestPtr openssl(
        d2i_OCSP_REQUEST(nullptr, &p, static_cast<long>(again.size())));
    ERR_clear_error();
    Check(openssl == nullptr);
    return;
  }
  Check(reparsed->has_nonce == parsed->has_nonce);
  Check(reparsed->ids.size() == parsed->ids.size());
  for (std::size_t i = 0; i < parsed->ids.size() && i < reparsed->ids.size(); ++i) {
    Check(reparsed->ids[i].Serial() == parsed->ids[i].Serial());
    Check(reparsed->ids[i].cache_key == parsed->ids[i].cache_key);
    Check(reparsed->ids[i].md_nid == parsed->ids[i].md_nid);
  }
}

// CheckGetPath decodes |suffix|, the path after "/ocsp/", as the GET route does.
void CheckGetPath(std::string_view suffix) {
  const std::string text = fleetid::api::internal::PercentDecode(suffix);
  Check(text.size() <= suffix.size());
  if (suffix.find('%') == std::string_view::npos) Check(text == suffix);
  const auto der = fleetid::api::internal::OcspBase64Decode(text);
  ERR_clear_error();
  if (!der.has_value()) return;
  Check(!text.empty() && text.size() % 4 == 0 && text.size() <= 16384);
  const std::size_t padding = text.ends_with("==") ? 2 : text.ends_with("=") ? 1 : 0;
  Check(der->size() == text.size() / 4 * 3 - padding);
  // Base64 symbols only, '=' only as the padding at the end, and the very bytes the strict
  // decoder of the rest of fleetid reads.
  Check(text.find_first_not_of(kBase64Symbols) >= text.size() - padding);
  const auto strict = fleetid::crypto::Base64Decode(text);
  Check(strict.has_value() && *strict == *der);
  CheckParse(*der);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  CheckParse({data, size});
  CheckGetPath(fleetid::fuzz::Text(data, size));
  return 0;
}
