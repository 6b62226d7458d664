#include "enroll/factory.h"

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <nlohmann/json.hpp>

#include "crypto/crypto.h"
#include "crypto/csr.h"
#include "crypto/jws.h"
#include "crypto/keys.h"
#include "pki/cert_builder.h"

namespace fleetid::enroll {
namespace {

using Json = nlohmann::json;
using crypto::X509Ptr;

Error Ossl(std::string_view what) { return crypto::OpenSslError(ErrorCode::kInternal, what); }

// SigningDigest is the digest the factory signs with under |key|: none for Ed25519.
const EVP_MD* SigningDigest(EVP_PKEY* key) {
  return EVP_PKEY_get_id(key) == EVP_PKEY_ED25519 ? nullptr : EVP_sha256();
}

// AddName appends |nid| = |value| to |name|.
bool AddName(X509_NAME* name, int nid, std::string_view value) {
  return X509_NAME_add_entry_by_NID(name, nid, MBSTRING_UTF8,
                                    reinterpret_cast<const unsigned char*>(value.data()),
                                    static_cast<int>(value.size()), -1, 0) == 1;
}

// BuildAndSign has pki's certificate builder make |spec| with |extensions| (basicConstraints,
// keyUsage) and sign it: the keyIdentifiers are the builder's (SHA-1 of the key bits).
Result<std::vector<std::uint8_t>> BuildAndSign(
    pki::CertSpec& spec, std::initializer_list<std::pair<int, const char*>> extensions,
    X509* issuer, EVP_PKEY* key) {
  std::vector<crypto::X509ExtensionPtr> owned;
  for (const auto& [nid, value] : extensions) {
    FLEETID_TRY(ext, pki::ConfExtension(nid, value));
    spec.extensions.push_back(ext.get());
    owned.push_back(std::move(ext));
  }
  FLEETID_TRY(cert, pki::BuildAndSign(spec, issuer, key, SigningDigest(key)));
  return crypto::CertificateDer(cert.get());
}

}  // namespace

Result<std::vector<std::uint8_t>> MakeManufacturerCa(EVP_PKEY* key, std::string_view name,
                                                    Clock& clock, Rng& rng) {
  if (name.empty() || name.size() > 64) {
    return MakeError(ErrorCode::kInvalidArgument, "a manufacturer name has 1 to 64 characters");
  }
  crypto::X509NamePtr subject(X509_NAME_new());
  if (!subject || !AddName(subject.get(), NID_organizationName, name) ||
      !AddName(subject.get(), NID_commonName, std::string(name) + " IDevID CA")) {
    return MakeError(Ossl("building the manufacturer CA"));
  }
  FLEETID_TRY(serial, pki::RandomSerial(rng));
  FLEETID_TRY(spki, crypto::PublicKeyDer(key));
  const TimePoint now = clock.Now();
  pki::CertSpec spec{.serial = std::move(serial),
                     .subject = subject.get(),
                     .not_before = now - std::chrono::seconds(300),
                     .not_after = now + std::chrono::hours(24 * 365 * 25),
                     .spki = spki};
  // Self-signed: the builder's authorityKeyIdentifier is the certificate's own key identifier.
  return BuildAndSign(spec,
                      {{NID_basic_constraints, "critical,CA:TRUE,pathlen:0"},
                       {NID_key_usage, "critical,keyCertSign,cRLSign"}},
                      nullptr, key);
}

Result<std::vector<std::uint8_t>> IssueIdevid(EVP_PKEY* ca_key, std::span<const std::uint8_t> ca_der,
                                             std::span<const std::uint8_t> csr_der,
                                             const IdevidSubject& subject, Clock& clock,
                                             Rng& rng) {
  if (subject.serial.empty() || subject.serial.size() > 64 || subject.model.empty() ||
      subject.manufacturer.empty()) {
    return MakeError(ErrorCode::kInvalidArgument, "an IDevID needs a serial, a model and a maker");
  }
  FLEETID_TRY(csr, crypto::VerifyCsr(csr_der));
  FLEETID_TRY(ca, crypto::ParseCertificateDer(ca_der));
  crypto::X509NamePtr name(X509_NAME_new());
  if (!name || !AddName(name.get(), NID_organizationName, subject.manufacturer) ||
      !AddName(name.get(), NID_commonName, subject.model) ||
      !AddName(name.get(), NID_serialNumber, subject.serial)) {
    return MakeError(Ossl("building the IDevID"));
  }
  // RFC 5280 §4.2.1.1: the authorityKeyIdentifier is the issuer's subjectKeyIdentifier.
  const ASN1_OCTET_STRING* ca_key_id = X509_get0_subject_key_id(ca.get());
  if (ca_key_id == nullptr) {
    return MakeError(ErrorCode::kInvalidArgument, "the manufacturer CA has no subjectKeyIdentifier");
  }
  FLEETID_TRY(aki, pki::AuthorityKeyIdExtension(
                       {ASN1_STRING_get0_data(ca_key_id),
                        static_cast<std::size_t>(ASN1_STRING_length(ca_key_id))}));
  FLEETID_TRY(serial, pki::RandomSerial(rng));
  pki::CertSpec spec{.serial = std::move(serial),
                     .subject = name.get(),
                     .not_before = clock.Now() - std::chrono::seconds(300),
                     .no_expiry = true,  // 802.1AR §8.5
                     .spki = csr.spki,
                     .authority_key_id = aki.get()};
  return BuildAndSign(spec,
                      {{NID_basic_constraints, "critical,CA:FALSE"},
                       {NID_key_usage, "critical,digitalSignature"}},
                      ca.get(), ca_key);
}

Result<std::string> SignManifest(EVP_PKEY* key, std::span<const std::uint8_t> ca_der,
                                 const Manifest& m) {
  Json devices = Json::array();
  for (const ManifestDevice& d : m.devices) {
    devices.push_back({{"serial", d.serial},
                       {"idevid_sha256", d.idevid_sha256},
                       {"firmware_version", d.firmware_version},
                       {"firmware_sha256", d.firmware_sha256}});
  }
  const Json payload{{"batch", m.batch},
                     {"manufacturer", m.manufacturer},
                     {"model", m.model},
                     {"station", m.station},
                     {"manufactured_at", m.manufactured_at},
                     {"devices", devices}};
  const crypto::Sha256Digest thumb = crypto::Sha256(ca_der);
  return crypto::SignJws(key, {{"typ", kManifestType}, {"x5t#S256", crypto::Base64UrlEncode(thumb)}},
                         payload.dump());
}

Result<SignedManifest> ParseManifest(std::string_view text) {
  FLEETID_TRY(jws, crypto::ParseJws(text, kMaxManifestBytes));
  const auto typ = jws.header.find("typ");
  if (typ == jws.header.end() || !typ->is_string() || typ->get<std::string>() != kManifestType ||
      !jws.header.contains("x5t#S256") || !jws.header["x5t#S256"].is_string()) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "not a fleetid batch manifest (typ {} with x5t#S256 expected)", kManifestType);
  }
  auto thumb = crypto::Base64UrlDecode(jws.header["x5t#S256"].get<std::string>());
  if (!thumb || thumb->size() != 32) {
    return MakeError(ErrorCode::kInvalidArgument, "the manifest's x5t#S256 is not a SHA-256");
  }
  const Json j = Json::parse(jws.payload, nullptr, false);
  SignedManifest out;
  out.signer_sha256 = crypto::Hex(*thumb);
  try {
    Manifest& m = out.manifest;
    m.batch = j.at("batch").get<std::string>();
    m.manufacturer = j.at("manufacturer").get<std::string>();
    m.model = j.at("model").get<std::string>();
    m.station = j.at("station").get<std::string>();
    const Json& at = j.at("manufactured_at");
    if (!at.is_number_integer() || at.get<std::int64_t>() < 0 ||
        at.get<std::int64_t>() > kMaxManifestTime) {
      return MakeError(ErrorCode::kInvalidArgument,
                       "the manifest's manufactured_at is not Unix seconds from 0 to {}",
                       kMaxManifestTime);
    }
    m.manufactured_at = at.get<std::int64_t>();
    for (const Json& d : j.at("devices")) {
      m.devices.push_back({d.at("serial").get<std::string>(), d.at("idevid_sha256").get<std::string>(),
                           d.at("firmware_version").get<std::string>(),
                           d.at("firmware_sha256").get<std::string>()});
    }
  } catch (const Json::exception& e) {
    return MakeError(ErrorCode::kInvalidArgument, "the manifest payload is malformed: {}", e.what());
  }
  if (out.manifest.batch.empty() || out.manifest.devices.empty()) {
    return MakeError(ErrorCode::kInvalidArgument, "the manifest names no batch or no devices");
  }
  out.jws = std::move(jws);
  return out;
}

Result<void> VerifyManifest(const SignedManifest& parsed, std::span<const std::uint8_t> ca_der) {
  if (parsed.signer_sha256 != crypto::Hex(crypto::Sha256(ca_der))) {
    return MakeError(ErrorCode::kPermissionDenied,
                     "the manifest names another signer than this manufacturer certificate");
  }
  FLEETID_TRY(ca, crypto::ParseCertificateDer(ca_der));
  EVP_PKEY* key = X509_get0_pubkey(ca.get());
  if (key == nullptr) return MakeError(Ossl("manufacturer public key"));
  auto ok = crypto::VerifyJws(parsed.jws, key);
  if (!ok) {
    return MakeError(ErrorCode::kPermissionDenied,
                     "the manifest signature does not verify with the manufacturer's key");
  }
  return {};
}

}  // namespace fleetid::enroll
