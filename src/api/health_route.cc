#include <openssl/x509.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "api/routes.h"
#include "crypto/crypto.h"
#include "crypto/handles.h"
#include "crypto/x509.h"

namespace fleetid::api {
namespace {

// ClientIdentity describes a client's leaf certificate: its subject (RFC 2253), its serial and
// its status at |authority| ("unknown" for a certificate it did not issue).
nlohmann::json ClientIdentity(pki::Authority& authority, std::span<const std::uint8_t> leaf_der) {
  auto leaf = crypto::ParseCertificateDer(leaf_der);
  if (!leaf) return {{"error", "unparsable certificate"}};
  crypto::BioPtr bio(BIO_new(BIO_s_mem()));
  X509_NAME_print_ex(bio.get(), X509_get_subject_name(leaf->get()), 0, XN_FLAG_RFC2253);
  char* text = nullptr;
  const long len = BIO_get_mem_data(bio.get(), &text);
  // A zero or negative serial is not one fleetid issues: shown empty, its status "unknown".
  const std::string serial_hex =
      crypto::SerialHex(X509_get0_serialNumber(leaf->get())).value_or("");
  auto record = authority.Get(serial_hex);
  return {
      {"subject", std::string(text, static_cast<std::size_t>(std::max(len, 0L)))},
      {"serial", serial_hex},
      {"certificate_status", record ? std::string(pki::StatusName(record->status)) : "unknown"}};
}

}  // namespace

void RegisterHealthRoute(server::Router& router, pki::Authority& authority, std::string version) {
  router.Add("GET", "/healthz",
             [&authority, version = std::move(version)](const server::HttpRequest& req) {
               nlohmann::json body{{"status", "ok"}, {"version", version}};
               if (!req.client_chain.empty()) {
                 body["client"] = ClientIdentity(authority, req.client_chain.front());
               }
               return server::HttpResponse::Json(200, body.dump());
             });
}

}  // namespace fleetid::api
