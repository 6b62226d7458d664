// Fuzzes the body of EST simpleenroll and simplereenroll (RFC 7030 §4.2.1) as the routes read
// it: api::internal::EstCsrBody (the Content-Type, then base64 with or without line breaks),
// then the checks enrollment makes of the DER request before any public-key operation
// (enroll::CheckCsrKey). The input is a small header block, "Name: value" lines up to an empty
// line (Content-Type and Content-Transfer-Encoding, as a client sends them), then the body; an
// input without an empty line is all body.
//
// Invariants checked: a body is accepted exactly when its Content-Type is absent or names
// application/pkcs10 (case-insensitively, parameters ignored: RFC 9110 §8.3.1) and its text is
// base64; what is accepted is the canonical base64 of the DER returned, whitespace and padding
// aside; a refusal is kInvalidArgument with a message, answered as an EST error (400,
// text/plain, the message and a newline); the DER's own checks refuse as a parser does.
#include <openssl/err.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "api/http_util.h"
#include "crypto/jws.h"
#include "crypto/suite.h"
#include "enroll/csr_check.h"
#include "fuzz_check.h"

namespace {

using fleetid::fuzz::Check;
using fleetid::fuzz::CheckRefusal;
using fleetid::server::HttpRequest;
namespace internal = fleetid::api::internal;

std::string Lower(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) {
    return static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  });
  return out;
}

// ToRequest reads the header block and body of |input| as the server would hand them over.
HttpRequest ToRequest(std::string_view input) {
  HttpRequest req;
  req.method = "POST";
  req.target = req.path = "/.well-known/est/simpleenroll";
  req.tls = true;
  const std::size_t end = input.find("\n\n");
  if (end == std::string_view::npos) {
    req.body = std::string(input);
    return req;
  }
  std::string_view block = input.substr(0, end);
  req.body = std::string(input.substr(end + 2));
  while (!block.empty()) {
    const std::size_t nl = block.find('\n');
    const std::string_view line = block.substr(0, nl);
    block = nl == std::string_view::npos ? std::string_view() : block.substr(nl + 1);
    const std::size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    std::string_view value = line.substr(colon + 1);
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t'))
      value.remove_prefix(1);
    req.headers.emplace_back(Lower(line.substr(0, colon)), std::string(value));
  }
  return req;
}

// Canonical is |text| without whitespace and padding, as the DER's base64 must then read.
std::string Canonical(std::string_view text) {
  std::string out;
  for (char c : text) {
    if (c != '\r' && c != '\n' && c != ' ' && c != '\t' && c != '=') out.push_back(c);
  }
  return out;
}

void CheckBody(const HttpRequest& req) {
  const auto der = internal::EstCsrBody(req);
  CheckRefusal(der);
  const std::string_view type = req.Header("content-type");
  const bool typed = type.empty() || internal::IsMediaType(type, "application/pkcs10");
  const bool base64 = fleetid::crypto::Base64Decode(req.body).has_value();
  Check(der.has_value() == (typed && base64));
  if (!der.has_value()) {
    const auto answer = internal::EstError(der.error());
    Check(answer.status == 400 && answer.content_type.starts_with("text/plain"));
    Check(answer.body == der.error().message() + "\n");
    return;
  }
  Check(Canonical(fleetid::crypto::Base64Encode(*der)) == Canonical(req.body));
  static const fleetid::crypto::SuitePolicy kEverySuite;
  CheckRefusal(fleetid::enroll::CheckCsrKey(*der, kEverySuite));
  ERR_clear_error();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  CheckBody(ToRequest(fleetid::fuzz::Text(data, size)));
  return 0;
}
