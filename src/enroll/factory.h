// The factory side of a device's identity (IEEE 802.1AR): a manufacturer CA whose key lives in
// the factory's token, IDevID certificates for keys generated inside each device's secure
// element, and the signed batch manifest the authority imports.
#ifndef FLEETID_ENROLL_FACTORY_H_
#define FLEETID_ENROLL_FACTORY_H_

#include <openssl/types.h>

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/error.h"
#include "common/rng.h"
#include "crypto/handles.h"
#include "crypto/jws.h"
#include "crypto/x509.h"

namespace fleetid::enroll {

inline constexpr std::string_view kManufacturerKeyLabel = "manufacturer-ca";
inline constexpr std::string_view kManifestType = "fleetid-batch+jws";
// A manifest lists a whole batch: about 330 bytes per device once signed, so this is room for
// 100,000 devices, the most `fleetid factory make` makes at once.
inline constexpr std::size_t kMaxManifestBytes = std::size_t{64} << 20;
// The latest manufactured_at a manifest may carry: the last second a TimePoint (nanoseconds
// since 1970 in 64 bits) holds, in 2262.
inline constexpr std::int64_t kMaxManifestTime =
    std::chrono::duration_cast<std::chrono::seconds>(TimePoint::max().time_since_epoch()).count();

// MakeManufacturerCa self-signs the manufacturer's CA certificate for |key| (a token key):
// subject O=|name|, CN=|name| IDevID CA; CA:TRUE, pathlen 0; valid for 25 years.
[[nodiscard]] Result<std::vector<std::uint8_t>> MakeManufacturerCa(EVP_PKEY* key,
                                                                  std::string_view name,
                                                                  Clock& clock, Rng& rng);

struct IdevidSubject {
  std::string serial;        // the device serial: the subject's serialNumber (802.1AR §8.6)
  std::string model;         // CN
  std::string manufacturer;  // O
};

// IssueIdevid verifies |csr_der| (made inside the device's secure element, so its signature
// proves the element holds the key) and issues the IDevID: the subject above, the CSR's key,
// notAfter 99991231235959Z (802.1AR §8.5: no well-defined expiry), keyUsage digitalSignature.
[[nodiscard]] Result<std::vector<std::uint8_t>> IssueIdevid(EVP_PKEY* ca_key,
                                                           std::span<const std::uint8_t> ca_der,
                                                           std::span<const std::uint8_t> csr_der,
                                                           const IdevidSubject& subject,
                                                           Clock& clock, Rng& rng);

struct ManifestDevice {
  std::string serial;
  std::string idevid_sha256;    // hex SHA-256 of the IDevID certificate (DER)
  std::string firmware_version;
  std::string firmware_sha256;  // hex SHA-256 of the firmware image
};

struct Manifest {
  std::string batch;
  std::string manufacturer;
  std::string model;
  std::string station;
  std::int64_t manufactured_at = 0;  // Unix seconds
  std::vector<ManifestDevice> devices;
};

// SignManifest serialises |manifest| as JSON and signs it as a compact JWS with the
// manufacturer key; the header names the manufacturer certificate by "x5t#S256".
[[nodiscard]] Result<std::string> SignManifest(EVP_PKEY* key, std::span<const std::uint8_t> ca_der,
                                               const Manifest& manifest);

// ParseManifest reads a manifest JWS without verifying it, returning the certificate thumbprint
// (hex SHA-256) its header names, the manifest and the parsed JWS. VerifyManifest checks the
// signature with the manufacturer certificate |ca_der| and that the thumbprint is that
// certificate's.
// NOLINTNEXTLINE(bugprone-exception-escape): holds a Jws (json members), like crypto::Jws
struct SignedManifest {
  std::string signer_sha256;
  Manifest manifest;
  crypto::Jws jws;
};
[[nodiscard]] Result<SignedManifest> ParseManifest(std::string_view text);
[[nodiscard]] Result<void> VerifyManifest(const SignedManifest& parsed,
                                          std::span<const std::uint8_t> ca_der);


}  // namespace fleetid::enroll

#endif  // FLEETID_ENROLL_FACTORY_H_
