// The JSON view of a certificate as the CA records it, one for every place that shows one: the
// operator API's /api/v1/ca/certificates routes and the command line's `fleetid ca`.
#ifndef FLEETID_PKI_RECORD_JSON_H_
#define FLEETID_PKI_RECORD_JSON_H_

#include <nlohmann/json.hpp>

#include "pki/pki.h"

namespace fleetid::pki {

// CertificateJson is {serial, issuer, device, suite, not_before, not_after, status}, with
// reason and revoked_at when the certificate has them (times in ISO 8601, UTC). The DER is left
// out.
nlohmann::json CertificateJson(const CertificateRecord& c);

}  // namespace fleetid::pki

#endif  // FLEETID_PKI_RECORD_JSON_H_
