// The operator API's OpenAPI 3.1 document, docs/openapi.json, built into the server so that
// GET /api/v1/openapi.json serves exactly the file the repository keeps (and the integration
// tests check the API's answers against).
#ifndef FLEETID_API_OPENAPI_DOCUMENT_H_
#define FLEETID_API_OPENAPI_DOCUMENT_H_

#include <string_view>

namespace fleetid::api {

std::string_view OpenApiDocument();

}  // namespace fleetid::api

#endif  // FLEETID_API_OPENAPI_DOCUMENT_H_
