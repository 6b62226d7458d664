// The HTTPS front's identity: its key in the authority's token, labelled by generation, and its
// certificate from the authority's own hierarchy, renewed at two thirds of its life and replaced
// with a new key after a keyCompromise revocation. fleetid-server sets up its HTTPS listener with
// these and renews on the maintenance thread (node/maintenance.h).
#ifndef FLEETID_NODE_HTTPS_FRONT_H_
#define FLEETID_NODE_HTTPS_FRONT_H_

#include <memory>
#include <string>
#include <vector>

#include "custody/custody.h"
#include "enroll/service.h"
#include "pki/pki.h"
#include "server/http_server.h"

namespace fleetid::node {

// HttpsIdentity is the HTTPS front's key (in the token, labelled |label|) and the keeper of its
// certificate.
struct HttpsIdentity {
  std::string label;
  server::PkeyRef key;
  std::unique_ptr<pki::ServerCertificateKeeper> keeper;
};

// OpenHttpsIdentity returns the newest P-256 HTTPS key in the token with its certificate,
// generating the first if there is none. With |replace|, or when the newest key is refused as
// compromised (a key revoked for keyCompromise is never certified again), it generates the next
// generation instead. No key is destroyed here: the caller retires the older ones
// (RetireTlsKeys) once the new identity is serving; a new key that got no certificate is removed.
[[nodiscard]] Result<HttpsIdentity> OpenHttpsIdentity(custody::Token& token,
                                                      pki::Authority& authority,
                                                      const std::vector<std::string>& names,
                                                      bool replace);

// RetireTlsKeys destroys every HTTPS key in |token| but |identity|'s: called once |identity| is
// serving, so the server is never without a working key.
void RetireTlsKeys(custody::Token& token, const HttpsIdentity& identity);

// ServerTls sets up the HTTPS front: its key and certificate, and client certificates verified
// against the hierarchy and the registered manufacturers' CAs.
[[nodiscard]] Result<server::TlsOptions> ServerTls(
    pki::Authority& authority, const HttpsIdentity& identity, const std::vector<std::string>& names,
    const std::vector<enroll::Manufacturer>& manufacturers);

// RenewHttpsCertificate runs on the maintenance thread: a certificate past two thirds of its
// life, revoked or on hold is replaced, and new handshakes get the new one. A certificate
// revoked for keyCompromise cannot be renewed for the same key, so the key is replaced too.
void RenewHttpsCertificate(custody::Token& token, pki::Authority& authority,
                           server::HttpServer& https, HttpsIdentity& identity,
                           const std::vector<std::string>& names);

}  // namespace fleetid::node

#endif  // FLEETID_NODE_HTTPS_FRONT_H_
