// The relying-party HTTP endpoints of the CA, registered on the server's router: OCSP (RFC 6960
// Appendix A, POST and GET), CRLs at their distribution points, CA certificates for AIA.
#ifndef FLEETID_APPS_PKI_ROUTES_H_
#define FLEETID_APPS_PKI_ROUTES_H_

#include "pki/pki.h"
#include "server/http_server.h"

namespace fleetid::apps {

void AddPkiRoutes(server::Router& router, pki::Authority& authority, const Clock& clock);

// Base64Decode decodes standard base64 (RFC 4648 §4) through OpenSSL; nullopt if invalid.
std::optional<std::vector<std::uint8_t>> Base64Decode(std::string_view text);
std::string PercentDecode(std::string_view text);

}  // namespace fleetid::apps

#endif  // FLEETID_APPS_PKI_ROUTES_H_
