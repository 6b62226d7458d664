// Conversions the CA's parts share: Unix seconds, DER of certificates, serial forms, entity tags.
#ifndef FLEETID_PKI_INTERNAL_UTIL_H_
#define FLEETID_PKI_INTERNAL_UTIL_H_

#include <openssl/x509.h>

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/error.h"
#include "crypto/handles.h"
#include "crypto/suite.h"
#include "crypto/x509.h"
#include "pki/internal/guard.h"

namespace fleetid::pki::internal {


// Ossl is a kInternal error carrying OpenSSL's error queue.
Error Ossl(std::string_view what);

// ParseCert parses a certificate this authority stored with crypto::ParseCertificateDer; as the
// authority wrote it, failure is kInternal.
[[nodiscard]] Result<crypto::X509Ptr> ParseCert(std::span<const std::uint8_t> der);

// DigestOf is |suite|'s signature digest; nullptr for Ed25519.
const EVP_MD* DigestOf(const crypto::Suite& suite);

// EntityTag is the quoted hex SHA-1 of |der|, the entity tag RFC 5019 §6.2 recommends.
std::string EntityTag(std::span<const std::uint8_t> der);

// CacheSerial is the hex of |serial|'s DER encoding: the exact INTEGER, sign included.
std::string CacheSerial(const ASN1_INTEGER* serial);
std::string CacheSerialOfHex(const std::string& serial_hex);

}  // namespace fleetid::pki::internal

#endif  // FLEETID_PKI_INTERNAL_UTIL_H_
