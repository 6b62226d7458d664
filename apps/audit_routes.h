// The audit log's read API (docs/audit.md), shaped after RFC 9162 §5: the latest signed tree
// head, entries by range, an entry's inclusion proof and a consistency proof between two sizes.
#ifndef FLEETID_APPS_AUDIT_ROUTES_H_
#define FLEETID_APPS_AUDIT_ROUTES_H_

#include <string>

#include "audit/log.h"
#include "server/http_server.h"

namespace fleetid::apps {

// |public_key_pem| is the audit key's, served at /audit/v1/key for verifiers.
void AddAuditRoutes(server::Router& router, audit::Log& log, std::string public_key_pem);

}  // namespace fleetid::apps

#endif  // FLEETID_APPS_AUDIT_ROUTES_H_
