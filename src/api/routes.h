// fleetid::api: the HTTP routes of the authority, registered on a server::Router. The transport
// (server) knows nothing of the domain; these bind its requests to the components that judge
// them and map their Results onto HTTP, EST (RFC 7030) and OCSP (RFC 6960) answers. Every
// handler is thread-safe if the component it calls is; the components are borrowed and must
// outlive the Router (and every HttpServer serving it). Wire formats: docs/enrollment.md,
// docs/pki.md, docs/audit.md.
#ifndef FLEETID_API_ROUTES_H_
#define FLEETID_API_ROUTES_H_

#include <functional>
#include <string>

#include "audit/log.h"
#include "common/clock.h"
#include "enroll/service.h"
#include "pki/pki.h"
#include "server/http_server.h"

namespace fleetid::api {

// RegisterPkiRoutes adds the relying-party endpoints of the CA, served on both listeners: OCSP
// (RFC 6960 Appendix A, POST /ocsp and GET /ocsp/{base64}), CRLs at their distribution points
// (GET /crl/{issuer}/{partition}[-delta].crl) and CA certificates for AIA (GET /ca/{name}.crt).
void RegisterPkiRoutes(server::Router& router, pki::Authority& authority, const Clock& clock);

// RegisterEstRoutes adds EST under /.well-known/est/ and the attestation and device endpoints
// around it (/attest/v1/..., /device/v1/...). They answer only requests that arrived over TLS:
// the caller's identity is its verified client chain.
void RegisterEstRoutes(server::Router& router, enroll::Service& service);

// AuditEntryFilter says whether the reader a gate admitted sees an entry in full; an entry it
// does not see is served withheld: its seq and leaf hash (which inclusion proofs reveal anyway),
// no body. An empty filter shows every entry.
using AuditEntryFilter = std::function<bool(const audit::StoredEntry&)>;

// AuditReadGate admits a request to the audit log's entries with the filter of what its reader
// sees, or refuses it with the error to answer (the server's: an operator over HTTPS allowed
// audit.read, everywhere or within a scope, OperatorAuditGate in operator_api.h).
using AuditReadGate = std::function<Result<AuditEntryFilter>(const server::HttpRequest&)>;

// RegisterAuditRoutes adds the audit log's read API under /audit/v1/, shaped after RFC 9162 §5:
// the latest signed tree head, entries by range, inclusion and consistency proofs, and
// |public_key_pem|, the audit key's public half, at /audit/v1/key for verifiers. Heads, proofs
// and the key carry only hashes and are public, so that anyone can watch the log for
// consistency; entries name devices, tenants, regions and operators, and are served only to the
// requests |entries_gate| admits (before their query is read).
void RegisterAuditRoutes(server::Router& router, audit::Log& log, std::string public_key_pem,
                         AuditReadGate entries_gate);

// RegisterHealthRoute adds GET /healthz: {"status":"ok","version":|version|}, and over HTTPS
// with a client certificate the client's subject, serial and certificate status as |authority|
// knows it (the handshake verified the chain, not its revocation).
void RegisterHealthRoute(server::Router& router, pki::Authority& authority, std::string version);

}  // namespace fleetid::api

#endif  // FLEETID_API_ROUTES_H_
