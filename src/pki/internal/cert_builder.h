// The pki-only helpers of the certificate builder (pki/cert_builder.h): the names the authority
// writes into its certificates.
#ifndef FLEETID_PKI_INTERNAL_CERT_BUILDER_H_
#define FLEETID_PKI_INTERNAL_CERT_BUILDER_H_

#include <string>
#include <string_view>

#include "crypto/handles.h"
#include "pki/cert_builder.h"
#include "pki/internal/guard.h"

namespace fleetid::pki::internal {

// Name is O=|organization| (left out when empty), CN=|common_name|.
crypto::X509NamePtr Name(std::string_view common_name, std::string_view organization);

// DeviceUri is the SAN URI urn:fleetid:device:<serial>. URN namespace-specific strings allow a
// limited alphabet (RFC 8141 §2); anything else in a device serial is percent-encoded, so a
// serial can never smuggle in another name.
std::string DeviceUri(std::string_view serial);

}  // namespace fleetid::pki::internal

#endif  // FLEETID_PKI_INTERNAL_CERT_BUILDER_H_
