// Certificate and request files for the ca, factory and manufacturer commands: PEM or DER in,
// PEM out, through the X.509 toolkit (crypto/x509.h).
#ifndef FLEETID_APPS_CLI_PEM_H_
#define FLEETID_APPS_CLI_PEM_H_

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/error.h"

namespace fleetid::cli {

// CertPem is the PEM of the DER certificate |der|; empty if it does not parse.
std::string CertPem(std::span<const std::uint8_t> der);

// CsrDer accepts a PKCS#10 request as PEM or DER.
[[nodiscard]] Result<std::vector<std::uint8_t>> CsrDer(const std::string& text);

// CertDerFromFile reads one certificate, PEM or DER (strictly: crypto/x509.h), from |path|.
[[nodiscard]] Result<std::vector<std::uint8_t>> CertDerFromFile(const std::string& path);

}  // namespace fleetid::cli

#endif  // FLEETID_APPS_CLI_PEM_H_
