// Fuzzes the HTTP routes of src/api dispatched by a server::Router as the node builds it (PKI,
// EST, attestation, device, audit and health routes), against a real backend made once in
// LLVMFuzzerInitialize: the CA's keys in a SoftHSM2 token and a SQLite database, both in a
// temporary directory, with one provisioned device whose IDevID chain a TLS request may carry.
// State-changing routes (nonces, evidence, enrollment, receipts) run for real.
//
// The input: one byte choosing the transport (plain HTTP; TLS without a client certificate; TLS
// as the provisioned device; TLS as a device no manifest names), then "METHOD TARGET", header
// lines "Name: value" up to an empty line, and the body. Bytes the request parser never lets
// through (controls in the target and header values, non-token methods) are dropped first.
//
// Invariants checked: Dispatch never throws; no answer is a 5xx, nor carries a header the
// server would refuse to send (which it turns into a 500); every 4xx is a JSON error object, or
// on an EST route the RFC 7030 text/plain form; JSON answers are JSON; OCSP routes answer
// 200 with a DER OCSPResponse (or 304, 405, 415), malformedRequest for every request the
// parser refuses, never internalError or tryLater.
#include <openssl/err.h>
#include <openssl/ocsp.h>
#include <openssl/x509.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "api/http_util.h"
#include "api/routes.h"
#include "audit/log.h"
#include "crypto/crypto.h"
#include "crypto/handles.h"
#include "crypto/keys.h"
#include "custody/store.h"
#include "enroll/factory.h"
#include "enroll/service.h"
#include "fuzz_check.h"
#include "pki/internal/ocsp_responder.h"
#include "registry/registry.h"
#include "store/store.h"

namespace {

namespace crypto = fleetid::crypto;
namespace enroll = fleetid::enroll;
namespace server = fleetid::server;
using fleetid::fuzz::Check;
using Json = nlohmann::json;

constexpr std::string_view kModel = "sensor-1";
const std::string kFirmware(64, 'a');

// Must reports a failed set-up step and stops: without a backend there is nothing to fuzz.
template <typename T>
void Must(const fleetid::Result<T>& result, const char* what) {
  if (result.has_value()) return;
  std::fprintf(stderr, "routes_fuzzer: %s: %s\n", what, result.error().ToString().c_str());
  std::abort();
}

struct Backend {
  std::filesystem::path dir;
  fleetid::FakeClock clock{fleetid::TimePoint(std::chrono::seconds(1'795'000'000))};
  std::optional<fleetid::custody::OpenedToken> token;
  std::unique_ptr<fleetid::store::Database> db;
  std::unique_ptr<fleetid::pki::Authority> authority;
  std::unique_ptr<enroll::PkiEffects> effects;
  std::unique_ptr<fleetid::registry::Registry> registry;
  std::unique_ptr<enroll::Service> service;
  std::unique_ptr<fleetid::audit::Log> audit_log;
  crypto::EvpPkeyPtr maker_key;
  std::vector<std::uint8_t> maker_ca;
  std::vector<enroll::ClientChain> chains;  // by the transport byte; [0] and [1] empty
  server::Router router;
};

Backend* backend = nullptr;  // made once, never destroyed (SoftHSM2 must outlive its users)

std::vector<std::uint8_t> CsrOf(EVP_PKEY* key) {
  crypto::X509ReqPtr req(X509_REQ_new());
  X509_REQ_set_pubkey(req.get(), key);
  X509_REQ_sign(req.get(), key, EVP_sha256());
  const int len = i2d_X509_REQ(req.get(), nullptr);
  std::vector<std::uint8_t> der(static_cast<std::size_t>(std::max(len, 0)));
  unsigned char* p = der.data();
  i2d_X509_REQ(req.get(), &p);
  return der;
}

// Idevid is the IDevID chain of a new device |serial| from the test manufacturer.
enroll::ClientChain Idevid(Backend& b, const std::string& serial) {
  const crypto::EvpPkeyPtr key(EVP_EC_gen("P-256"));
  auto cert = enroll::IssueIdevid(b.maker_key.get(), b.maker_ca, CsrOf(key.get()),
                                  {serial, std::string(kModel), "Acme"}, b.clock,
                                  crypto::OpenSslRng::Instance());
  Must(cert, "issuing an IDevID");
  return {*cert, b.maker_ca};
}

// Provision imports a manifest naming the device of |chain| and provisions it.
void Provision(Backend& b, const std::string& serial, const enroll::ClientChain& chain) {
  enroll::Manifest m{
      .batch = "batch-1",
      .manufacturer = "Acme",
      .model = std::string(kModel),
      .station = "line-1",
      .manufactured_at = 1'700'000'000,
      .devices = {{serial, crypto::Hex(crypto::Sha256(chain.front())), "1.0", kFirmware}}};
  auto jws = enroll::SignManifest(b.maker_key.get(), b.maker_ca, m);
  Must(jws, "signing the manifest");
  Must(b.service->ImportManifest(*jws, "fuzz"), "importing the manifest");
  auto device = b.registry->Get(serial);
  Must(device, "reading the device");
  fleetid::registry::TransitionRequest req;
  req.serial = serial;
  req.event = fleetid::registry::Event::kProvision;
  req.expected_version = device->version;
  req.actor = fleetid::registry::Actor{fleetid::registry::kOperator, "fuzz", {"admin"}};
  req.tenant = "acme";
  req.region = "eu";
  Must(b.registry->Transition(req), "provisioning the device");
}

void OpenComponents(Backend& b) {
  crypto::OpenSslRng& rng = crypto::OpenSslRng::Instance();
  auto token = fleetid::custody::OpenEmbedded(b.dir, "fleetid-fuzz", rng);
  Must(token, "opening the token");
  b.token = std::move(*token);
  auto db = fleetid::store::Database::Open("sqlite:" + (b.dir / "fleetid.db").string(), 4);
  Must(db, "opening the database");
  b.db = std::move(*db);
  Must(enroll::Service::Migrate(*b.db), "migrating");
  auto authority = fleetid::pki::Authority::Open(b.token->token, *b.db, b.clock, rng, {});
  Must(authority, "opening the CA");
  b.authority = std::move(*authority);
  b.effects = std::make_unique<enroll::PkiEffects>(*b.authority);
  b.registry = std::make_unique<fleetid::registry::Registry>(*b.db, b.clock, b.effects.get(),
                                                             fleetid::registry::RegistryOptions{});
  b.service = std::make_unique<enroll::Service>(*b.db, *b.registry, *b.authority, *b.effects,
                                                b.clock, rng, enroll::ServiceOptions{});
}

void AddManufacturer(Backend& b) {
  b.maker_key.reset(EVP_EC_gen("P-256"));
  auto ca = enroll::MakeManufacturerCa(b.maker_key.get(), "Acme", b.clock,
                                       crypto::OpenSslRng::Instance());
  Must(ca, "making the manufacturer CA");
  b.maker_ca = *ca;
  Must(b.service->AddManufacturer(b.maker_ca, "Acme", "operator:fuzz"), "adding the maker");
  Must(b.service->AddReferenceValue(kModel, kFirmware, "operator:fuzz"), "adding firmware");
}

std::string AuditPem(Backend& b) {
  auto signer = fleetid::audit::AuditSigner(*b.token->token, crypto::OpenSslRng::Instance());
  Must(signer, "making the audit signer");
  auto pem = crypto::PublicKeyPem((*signer)->public_key());
  Must(pem, "the audit key");
  b.audit_log = std::make_unique<fleetid::audit::Log>(*b.db, *signer, b.clock);
  return *pem;
}

void RemoveDir() {
  std::error_code ec;
  if (backend != nullptr) std::filesystem::remove_all(backend->dir, ec);
}

void MakeBackend() {
  backend = new Backend;  // NOLINT(cppcoreguidelines-owning-memory): lives until exit
  Backend& b = *backend;
  std::string templ = (std::filesystem::temp_directory_path() / "fleetid-fuzz-XXXXXX").string();
  if (::mkdtemp(templ.data()) == nullptr) std::abort();
  b.dir = templ;
  std::atexit(RemoveDir);
  OpenComponents(b);
  AddManufacturer(b);
  const std::string pem = AuditPem(b);
  b.chains = {{}, {}, Idevid(b, "SN-FUZZ-1"), Idevid(b, "SN-FUZZ-2")};
  Provision(b, "SN-FUZZ-1", b.chains[2]);
  fleetid::api::RegisterPkiRoutes(b.router, *b.authority, b.clock);
  fleetid::api::RegisterEstRoutes(b.router, *b.service);
  // The operator check before the audit entries (api::OperatorAuditGate) is tested in api_test
  // and end to end; here a gate that admits every TLS request keeps the entries route's query
  // reading under the fuzzer, and plain HTTP exercises the refusal.
  fleetid::api::RegisterAuditRoutes(
      b.router, *b.audit_log, pem,
      [](const fleetid::server::HttpRequest& req)
          -> fleetid::Result<fleetid::api::AuditEntryFilter> {
        // Over TLS the reader sees only even entries: both forms of an entry are served.
        if (req.tls) {
          return [](const fleetid::audit::StoredEntry& e) { return e.seq % 2 == 0; };
        }
        return fleetid::MakeError(fleetid::ErrorCode::kInvalidArgument, "HTTPS only");
      });
  fleetid::api::RegisterHealthRoute(b.router, *b.authority, "fuzz");
  ERR_clear_error();
}

bool IsTokenChar(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

// Visible keeps the bytes a parsed request line or field value can hold.
std::string Visible(std::string_view text, bool spaces) {
  std::string out;
  for (char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if ((u > 0x20 && u != 0x7f) || (spaces && (c == ' ' || c == '\t'))) out.push_back(c);
  }
  return out;
}

std::string_view NextLine(std::string_view& text) {
  const std::size_t nl = text.find('\n');
  const std::string_view line = text.substr(0, nl);
  text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
  return line;
}

void AddHeader(server::HttpRequest& req, std::string_view line) {
  const std::size_t colon = line.find(':');
  if (colon == std::string_view::npos || colon == 0) return;
  std::string name;
  for (char c : line.substr(0, colon)) {
    if (!IsTokenChar(c)) return;
    name.push_back(static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c));
  }
  std::string value = Visible(line.substr(colon + 1), true);
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.erase(0, 1);
  while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.pop_back();
  req.headers.emplace_back(std::move(name), std::move(value));
}

server::HttpRequest ToRequest(std::string_view text, std::uint8_t transport) {
  server::HttpRequest req;
  const std::string_view first = NextLine(text);
  const std::size_t space = first.find(' ');
  for (char c : first.substr(0, space)) {
    if (IsTokenChar(c)) req.method.push_back(c);
  }
  if (req.method.empty()) req.method = "GET";
  req.target = space == std::string_view::npos ? "/" : Visible(first.substr(space + 1), false);
  const std::size_t question = req.target.find('?');
  req.path = req.target.substr(0, question);
  if (question != std::string::npos) req.query = req.target.substr(question + 1);
  while (!text.empty()) {
    const std::string_view line = NextLine(text);
    if (line.empty() || line == "\r") break;
    AddHeader(req, line);
  }
  req.body = std::string(text);
  req.remote_address = "192.0.2.1:40000";
  req.tls = (transport & 3) != 0;
  req.client_chain = backend->chains[transport & 3];
  return req;
}

void CheckHeaders(const server::HttpResponse& r) {
  for (const auto& [name, value] : r.headers) {
    Check(!name.empty());
    for (char c : name) Check(IsTokenChar(c));
    Check(value.find_first_of(std::string_view("\r\n\0", 3)) == std::string::npos);
  }
}

bool IsJsonError(const server::HttpResponse& r) {
  if (r.content_type != "application/json") return false;
  const Json body = Json::parse(r.body, nullptr, false);
  return body.is_object() && body.contains("error") && body["error"].is_string();
}

void CheckClientError(const server::HttpRequest& req, const server::HttpResponse& r) {
  if (r.content_type.starts_with("text/plain")) {
    Check(req.path.starts_with("/.well-known/est/"));
    Check(r.body.size() > 1 && r.body.back() == '\n');
    return;
  }
  Check(IsJsonError(r));
}

// OcspRequestDer is the DER the OCSP route |req| reaches decodes to, if it reaches one.
std::optional<std::vector<std::uint8_t>> OcspRequestDer(const server::HttpRequest& req) {
  if (req.method == "POST" && req.path == "/ocsp") {
    if (!fleetid::api::internal::IsMediaType(req.Header("Content-Type"),
                                             "application/ocsp-request")) {
      return std::nullopt;
    }
    return std::vector<std::uint8_t>(req.body.begin(), req.body.end());
  }
  if ((req.method == "GET" || req.method == "HEAD") && req.path.starts_with("/ocsp/")) {
    auto der = fleetid::api::internal::OcspBase64Decode(
        fleetid::api::internal::PercentDecode(std::string_view(req.path).substr(6)));
    return der.value_or(std::vector<std::uint8_t>{});
  }
  return std::nullopt;
}

void CheckOcsp(const server::HttpRequest& req, const server::HttpResponse& r) {
  const auto der = OcspRequestDer(req);
  if (!der.has_value()) return;
  Check(r.status == 200 || r.status == 304);
  if (r.status == 304) return;
  Check(r.content_type == "application/ocsp-response");
  const unsigned char* p = reinterpret_cast<const unsigned char*>(r.body.data());
  const crypto::OcspResponsePtr response(
      d2i_OCSP_RESPONSE(nullptr, &p, static_cast<long>(r.body.size())));
  Check(response != nullptr);
  if (response == nullptr) return;
  const bool parses =
      fleetid::pki::internal::ParseOcspRequest(*der, fleetid::pki::Authority::kMaxOcspCertIds)
          .has_value();
  const int status = OCSP_response_status(response.get());
  // The backend is healthy: internalError (and tryLater, for a database that answers) would be
  // the responder's fault, whatever the request.
  Check(status != OCSP_RESPONSE_STATUS_INTERNALERROR && status != OCSP_RESPONSE_STATUS_TRYLATER);
  if (!parses) Check(status == OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
}

void CheckResponse(const server::HttpRequest& req, const server::HttpResponse& r) {
  Check(r.status >= 200 && r.status < 500);
  CheckHeaders(r);
  if (r.status >= 400) CheckClientError(req, r);
  if (r.status < 300 && r.content_type == "application/json") {
    Check(!Json::parse(r.body, nullptr, false).is_discarded());
  }
  CheckOcsp(req, r);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  MakeBackend();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const server::HttpRequest req = ToRequest(fleetid::fuzz::Text(data + 1, size - 1), data[0]);
  std::optional<server::HttpResponse> response;
  try {
    response = backend->router.Dispatch(req);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "routes_fuzzer: Dispatch threw: %s\n", e.what());
    Check(false);
  }
  if (response.has_value()) CheckResponse(req, *response);
  ERR_clear_error();
  return 0;
}
