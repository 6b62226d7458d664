// EST (RFC 7030) under /.well-known/est/, and the attestation and device endpoints around it
// (/attest/v1/..., /device/v1/...), on the HTTPS front. Wire formats: docs/enrollment.md.
#ifndef FLEETID_APPS_EST_ROUTES_H_
#define FLEETID_APPS_EST_ROUTES_H_

#include "enroll/service.h"
#include "server/http_server.h"

namespace fleetid::apps {

void AddEstRoutes(server::Router& router, enroll::Service& service);

}  // namespace fleetid::apps

#endif  // FLEETID_APPS_EST_ROUTES_H_
