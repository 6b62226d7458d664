// The operator API under /api/v1 (docs/api.md): operators authenticated by their certificate from
// the operators' CA over HTTPS, every call authorized by the active policy version. Request bodies
// are read by the parsers of api/operator_requests.h.
#ifndef FLEETID_API_OPERATOR_API_H_
#define FLEETID_API_OPERATOR_API_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "api/operator_requests.h"
#include "api/routes.h"
#include "common/clock.h"
#include "common/error.h"
#include "common/rng.h"
#include "enroll/service.h"
#include "operators/operators.h"
#include "pki/pki.h"
#include "policy/versions.h"
#include "registry/registry.h"
#include "server/http_server.h"

namespace fleetid::api {

struct OperatorApi {
  operators::Operators& operators;
  policy::Versions& policy;
  registry::Registry& registry;
  pki::Authority& authority;
  enroll::Service&
      enrollment;  // an operator's hold, release or revocation of a device's credential
  Rng& rng;
  const Clock& clock;
  // Called once a manufacturer is registered (the server's: trust its devices at the HTTPS
  // front now, node::Maintenance::TrustNewManufacturers); may be empty.
  std::function<void()> manufacturers_changed = {};
};

// RegisterOperatorApi adds /api/v1/... . Every answer is JSON with an X-Request-Id header; every
// error is {"error","message","request_id"}. HTTPS only; the routes other than bootstrap and
// enroll (which take one-time codes) need an operator certificate.
void RegisterOperatorApi(server::Router& router, const OperatorApi& api);

// OperatorAuditGate admits requests to the audit log's entries (RegisterAuditRoutes) from
// operators over HTTPS allowed audit.read. One allowed it everywhere sees every entry; one
// allowed it only within a scope sees in full the entries about devices inside it (an entry's
// subject is the device, or a certificate of the device), and every other entry withheld.
// Anyone else gets 400 (plain HTTP), 401 (no operator certificate, or a revoked one) or 403
// (audited as access.denied).
AuditReadGate OperatorAuditGate(const OperatorApi& api);

}  // namespace fleetid::api

#endif  // FLEETID_API_OPERATOR_API_H_
