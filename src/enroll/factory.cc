#include "enroll/factory.h"

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <nlohmann/json.hpp>

#include "crypto/crypto.h"
#include "crypto/csr.h"
#include "crypto/jws.h"

namespace fleetid::enroll {
namespace {

using Json = nlohmann::json;
using crypto::X509Ptr;

Error Ossl(std::string_view what) { return crypto::OpenSslError(ErrorCode::kInternal, what); }

std::int64_t Unix(TimePoint t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

Result<crypto::Asn1IntegerPtr> RandomSerial(Rng& rng) {
  FLEETID_TRY(bytes, rng.Bytes(16));
  bytes[0] = static_cast<std::uint8_t>((bytes[0] & 0x7f) | 0x01);
  crypto::Asn1IntegerPtr serial(ASN1_INTEGER_new());
  if (!serial || ASN1_STRING_set(serial.get(), bytes.data(), static_cast<int>(bytes.size())) != 1) {
    return MakeError(Ossl("serial"));
  }
  return serial;
}

Result<void> AddExt(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  crypto::X509ExtensionPtr ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value));
  if (!ext || X509_add_ext(cert, ext.get(), -1) != 1) return MakeError(Ossl("certificate extension"));
  return {};
}

Result<void> Sign(X509* cert, EVP_PKEY* key) {
  const EVP_MD* md = EVP_PKEY_get_id(key) == EVP_PKEY_ED25519 ? nullptr : EVP_sha256();
  if (X509_sign(cert, key, md) <= 0) return MakeError(Ossl("signing the certificate in the token"));
  return {};
}

}  // namespace

Result<X509Ptr> ParseCertificate(std::span<const std::uint8_t> der) {
  const unsigned char* p = der.data();
  X509Ptr cert(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
  if (!cert || p != der.data() + der.size()) {
    return MakeError(ErrorCode::kInvalidArgument, "not a DER X.509 certificate");
  }
  return cert;
}

std::vector<std::uint8_t> CertificateDer(X509* cert) {
  const int len = i2d_X509(cert, nullptr);
  std::vector<std::uint8_t> der(static_cast<std::size_t>(std::max(len, 0)));
  unsigned char* p = der.data();
  i2d_X509(cert, &p);
  return der;
}

Result<std::vector<std::uint8_t>> SpkiDer(const X509* cert) {
  unsigned char* der = nullptr;
  const int len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), &der);
  const crypto::OpenSslBytesPtr owner(der);
  if (len <= 0) return MakeError(Ossl("public key"));
  return std::vector<std::uint8_t>(der, der + len);
}

Result<std::vector<std::uint8_t>> MakeManufacturerCa(EVP_PKEY* key, std::string_view name,
                                                    Clock& clock, Rng& rng) {
  if (name.empty() || name.size() > 64) {
    return MakeError(ErrorCode::kInvalidArgument, "a manufacturer name has 1 to 64 characters");
  }
  X509Ptr cert(X509_new());
  crypto::X509NamePtr subject(X509_NAME_new());
  const std::string cn = std::string(name) + " IDevID CA";
  FLEETID_TRY(serial, RandomSerial(rng));
  const std::int64_t now = Unix(clock.Now());
  crypto::Asn1TimePtr nb(ASN1_TIME_set(nullptr, static_cast<time_t>(now - 300)));
  crypto::Asn1TimePtr na(ASN1_TIME_set(nullptr, static_cast<time_t>(now + 25LL * 365 * 86400)));
  const auto* o = reinterpret_cast<const unsigned char*>(name.data());
  const auto* c = reinterpret_cast<const unsigned char*>(cn.data());
  if (!cert || !subject || !nb || !na ||
      X509_NAME_add_entry_by_NID(subject.get(), NID_organizationName, MBSTRING_UTF8, o,
                                 static_cast<int>(name.size()), -1, 0) != 1 ||
      X509_NAME_add_entry_by_NID(subject.get(), NID_commonName, MBSTRING_UTF8, c,
                                 static_cast<int>(cn.size()), -1, 0) != 1 ||
      X509_set_version(cert.get(), X509_VERSION_3) != 1 ||
      X509_set_serialNumber(cert.get(), serial.get()) != 1 ||
      X509_set_subject_name(cert.get(), subject.get()) != 1 ||
      X509_set_issuer_name(cert.get(), subject.get()) != 1 ||
      X509_set1_notBefore(cert.get(), nb.get()) != 1 || X509_set1_notAfter(cert.get(), na.get()) != 1 ||
      X509_set_pubkey(cert.get(), key) != 1) {
    return MakeError(Ossl("building the manufacturer CA"));
  }
  FLEETID_CHECK_OK(AddExt(cert.get(), cert.get(), NID_basic_constraints, "critical,CA:TRUE,pathlen:0"));
  FLEETID_CHECK_OK(AddExt(cert.get(), cert.get(), NID_key_usage, "critical,keyCertSign,cRLSign"));
  FLEETID_CHECK_OK(AddExt(cert.get(), cert.get(), NID_subject_key_identifier, "hash"));
  FLEETID_CHECK_OK(AddExt(cert.get(), cert.get(), NID_authority_key_identifier, "keyid:always"));
  FLEETID_CHECK_OK(Sign(cert.get(), key));
  return CertificateDer(cert.get());
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
  FLEETID_TRY(ca, ParseCertificate(ca_der));
  X509Ptr cert(X509_new());
  crypto::X509NamePtr name(X509_NAME_new());
  FLEETID_TRY(serial, RandomSerial(rng));
  crypto::Asn1TimePtr nb(ASN1_TIME_set(nullptr, static_cast<time_t>(Unix(clock.Now()) - 300)));
  crypto::Asn1TimePtr na(ASN1_TIME_new());
  auto add = [&](int nid, const std::string& v) {
    return X509_NAME_add_entry_by_NID(name.get(), nid, MBSTRING_UTF8,
                                      reinterpret_cast<const unsigned char*>(v.data()),
                                      static_cast<int>(v.size()), -1, 0) == 1;
  };
  if (!cert || !name || !nb || !na || ASN1_TIME_set_string(na.get(), "99991231235959Z") != 1 ||
      !add(NID_organizationName, subject.manufacturer) || !add(NID_commonName, subject.model) ||
      !add(NID_serialNumber, subject.serial) || X509_set_version(cert.get(), X509_VERSION_3) != 1 ||
      X509_set_serialNumber(cert.get(), serial.get()) != 1 ||
      X509_set_subject_name(cert.get(), name.get()) != 1 ||
      X509_set_issuer_name(cert.get(), X509_get_subject_name(ca.get())) != 1 ||
      X509_set1_notBefore(cert.get(), nb.get()) != 1 || X509_set1_notAfter(cert.get(), na.get()) != 1) {
    return MakeError(Ossl("building the IDevID"));
  }
  FLEETID_CHECK_OK(crypto::SetSubjectPublicKey(cert.get(), csr.spki));
  FLEETID_CHECK_OK(AddExt(cert.get(), ca.get(), NID_basic_constraints, "critical,CA:FALSE"));
  FLEETID_CHECK_OK(AddExt(cert.get(), ca.get(), NID_key_usage, "critical,digitalSignature"));
  FLEETID_CHECK_OK(AddExt(cert.get(), ca.get(), NID_subject_key_identifier, "hash"));
  FLEETID_CHECK_OK(AddExt(cert.get(), ca.get(), NID_authority_key_identifier, "keyid:always"));
  FLEETID_CHECK_OK(Sign(cert.get(), ca_key));
  return CertificateDer(cert.get());
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
  FLEETID_TRY(ca, ParseCertificate(ca_der));
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
