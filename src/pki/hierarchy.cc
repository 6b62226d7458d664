#include "pki/internal/hierarchy.h"

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <utility>

#include "crypto/keys.h"
#include "custody/provider.h"
#include "pki/internal/cert_builder.h"
#include "pki/internal/util.h"

namespace fleetid::pki::internal {

using crypto::EvpPkeyPtr;
using crypto::Suite;
using crypto::X509ExtensionPtr;
using crypto::X509Ptr;
using store::TxMode;

struct Hierarchy::Want {
  std::string name;
  std::string role;  // "root", "issuing" or "ocsp"
  const Suite* suite;
};

namespace {

// KeyFor returns the token key labelled |label|, generating it first if it does not exist.
Result<EvpPkeyPtr> KeyFor(custody::Token& token, std::string_view label, const Suite& suite,
                          Rng& rng) {
  auto found = token.FindKey(label);
  if (!found && found.error().code() == ErrorCode::kNotFound) {
    FLEETID_TRY(made, token.GenerateKey(label, suite, rng));
    (void)made;
  } else if (!found) {
    return MakeError(found.error());
  } else if (found->suite->id != suite.id) {
    return MakeError(ErrorCode::kConflict, "token key '{}' is {}, not {}", label,
                     found->suite->name, suite.name);
  }
  FLEETID_TRY(signer, token.GetSigner(label));
  return custody::TokenPkey(std::shared_ptr<custody::Signer>(std::move(signer)));
}

void ComputeIds(Ca& ca) {
  auto digest = [](auto fn, X509* cert, const EVP_MD* md) {
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    fn(cert, md, out, &len);
    return std::vector<std::uint8_t>(out, out + len);
  };
  auto name_digest = [](X509* cert, const EVP_MD* md, unsigned char* out, unsigned int* len) {
    X509_NAME_digest(X509_get_subject_name(cert), md, out, len);
  };
  ca.name_sha1 = digest(name_digest, ca.cert.get(), EVP_sha1());
  ca.name_sha256 = digest(name_digest, ca.cert.get(), EVP_sha256());
  ca.key_sha1 = digest(X509_pubkey_digest, ca.cert.get(), EVP_sha1());
  ca.key_sha256 = digest(X509_pubkey_digest, ca.cert.get(), EVP_sha256());
}

// Stored returns the stored certificate of CA |name| checked against its token key, or nullptr
// when none is stored.
Result<X509Ptr> Stored(store::Transaction& tx, const std::string& name, const std::string& label,
                       EVP_PKEY* key) {
  FLEETID_TRY(rows, tx.Query("SELECT der FROM ca_certificates WHERE name = ?", {name}));
  if (rows.empty()) return X509Ptr();
  FLEETID_TRY(cert, ParseCert(rows.front().Bytes(0)));
  if (X509_check_private_key(cert.get(), key) != 1) {
    ERR_clear_error();
    return MakeError(ErrorCode::kConflict,
                     "the stored certificate of CA '{}' does not match token key '{}'", name,
                     label);
  }
  return cert;
}

}  // namespace

std::int64_t PartitionOf(const AuthorityOptions& options, CertificateClass klass,
                         TimePoint issued) {
  if (klass == CertificateClass::kDevice) return UnixSeconds(issued) / options.partition_span.count();
  return -1 - UnixSeconds(issued) / options.long_partition_span.count();
}

bool PartitionLive(const AuthorityOptions& options, std::int64_t partition, TimePoint now) {
  // A partition holds certificates issued within its span; the last of them expires one
  // lifetime after the span ends.
  std::int64_t span = options.partition_span.count();
  std::int64_t lifetime = options.leaf_lifetime.count();
  std::int64_t index = partition;
  if (partition < 0) {
    span = options.long_partition_span.count();
    lifetime = std::max(options.server_lifetime, options.ocsp_signer_lifetime).count();
    index = -1 - partition;
  }
  const std::int64_t current = UnixSeconds(now) / span;
  return index <= current && (index + 1) * span + lifetime > UnixSeconds(now);
}

std::string CrlUrl(const AuthorityOptions& options, std::string_view issuer, std::int64_t partition,
                   bool delta) {
  return fmt::format("{}/crl/{}/{}{}.crl", options.base_url, issuer, partition,
                     delta ? "-delta" : "");
}

Result<void> Hierarchy::Load(custody::Token& token, store::Database& db, Clock& clock, Rng& rng) {
  const TimePoint now = clock.Now();
  std::vector<Want> wants = {{"root", "root", &crypto::GetSuite(options_.root_suite)}};
  for (crypto::SuiteId id : options_.issuing_suites) {
    const Suite& s = crypto::GetSuite(id);
    wants.push_back({std::string(s.name), "issuing", &s});
    wants.push_back({"ocsp-" + std::string(s.name), "ocsp", &s});
  }
  // The operators' CA comes last, so a hierarchy made before it existed only gains it.
  const Suite& operators = crypto::GetSuite(crypto::SuiteId::kEcdsaP256Sha256);
  wants.push_back({std::string(kOperatorCa), "issuing", &operators});
  wants.push_back({"ocsp-" + std::string(kOperatorCa), "ocsp", &operators});
  for (const Want& want : wants) {
    const std::string label = "fleetid-" + want.name;
    FLEETID_TRY(key, KeyFor(token, label, *want.suite, rng));
    FLEETID_TRY(tx, db.Begin(TxMode::kWrite));
    FLEETID_TRY(cert, Stored(*tx, want.name, label, key.get()));
    if (!cert) {
      FLEETID_TRY(created, Create(want, key.get(), now, rng));
      cert = std::move(created);
      FLEETID_TRY(der, crypto::CertificateDer(cert.get()));
      FLEETID_CHECK_OK(
          tx->Exec("INSERT INTO ca_certificates (name, role, suite, key_label, der) "
                   "VALUES (?, ?, ?, ?, ?)",
                   {want.name, want.role, std::string(want.suite->name), label,
                    store::Blob(std::move(der))}));
      FLEETID_CHECK_OK(tx->Commit());
    }
    FLEETID_CHECK_OK(Adopt(want, std::move(cert), std::move(key)));
  }
  return {};
}

// Create makes the certificate of |want|, whose key is |key|: the root signs itself, an issuing
// CA is signed by the root, an OCSP signer by the issuing CA loaded just before it.
Result<X509Ptr> Hierarchy::Create(const Want& want, EVP_PKEY* key, TimePoint now, Rng& rng) {
  CertSpec spec;
  FLEETID_TRY(serial, RandomSerial(rng));
  spec.serial = std::move(serial);
  FLEETID_TRY(spki, crypto::PublicKeyDer(key));
  spec.spki = spki;
  crypto::X509NamePtr subject;
  Ca* parent = nullptr;  // nullptr: the self-signed root
  std::vector<std::pair<int, std::string>> conf;
  spec.not_before = now - options_.backdate;
  if (want.role == "root") {
    subject = Name("fleetid Root CA", "fleetid");
    spec.not_after = now + std::chrono::hours(24 * 365 * 20);
    conf = {{NID_basic_constraints, "critical,CA:TRUE"},
            {NID_key_usage, "critical,keyCertSign,cRLSign"}};
  } else if (want.role == "issuing") {
    parent = cas_.front().get();
    subject = want.name == kOperatorCa
                  ? Name("fleetid Operator CA", "fleetid")
                  : Name(fmt::format("fleetid Issuing CA {}", want.suite->name), "fleetid");
    spec.not_after = now + std::chrono::hours(24 * 365 * 5);
    conf = {{NID_basic_constraints, "critical,CA:TRUE,pathlen:0"},
            {NID_key_usage, "critical,keyCertSign,cRLSign"},
            {NID_info_access, fmt::format("caIssuers;URI:{}/ca/root.crt", options_.base_url)},
            {NID_crl_distribution_points, fmt::format("URI:{}/crl/root/0.crl", options_.base_url)}};
  } else {
    parent = cas_.back().get();
    subject = Name(fmt::format("fleetid OCSP {}", cas_.back()->name), "fleetid");
    spec.not_after = now + options_.ocsp_signer_lifetime;
    // RFC 6960 §4.2.2.2.1: the delegated responder's own status is not checked.
    conf = {{NID_basic_constraints, "critical,CA:FALSE"},
            {NID_key_usage, "critical,digitalSignature"},
            {NID_ext_key_usage, "critical,OCSPSigning"},
            {NID_id_pkix_OCSP_noCheck, "ignored"}};
  }
  std::vector<X509ExtensionPtr> extensions;
  for (const auto& [nid, value] : conf) {
    FLEETID_TRY(ext, ConfExtension(nid, value));
    spec.extensions.push_back(ext.get());
    extensions.push_back(std::move(ext));
  }
  spec.subject = subject.get();
  if (parent != nullptr) spec.authority_key_id = parent->authority_key_id.get();
  FLEETID_TRY(built, BuildAndSign(spec, parent != nullptr ? parent->cert.get() : nullptr,
                                  parent != nullptr ? parent->key.get() : key,
                                  DigestOf(parent != nullptr ? *parent->suite : *want.suite)));
  // Parsed back from its encoding, so the certificate in memory is the stored one with its
  // public key decoded (BuildAndSign sets the key's bits only).
  FLEETID_TRY(der, crypto::CertificateDer(built.get()));
  return ParseCert(der);
}

// Adopt makes |cert| and |key| the CA |want| names: an OCSP signer joins the issuing CA loaded
// just before it.
Result<void> Hierarchy::Adopt(const Want& want, X509Ptr cert, EvpPkeyPtr key) {
  if (want.role == "ocsp") {
    cas_.back()->ocsp_cert = std::move(cert);
    cas_.back()->ocsp_key = std::move(key);
    return {};
  }
  auto ca = std::make_unique<Ca>();
  ca->name = want.name;
  ca->for_operators = want.name == kOperatorCa;
  ca->suite = want.suite;
  ca->md = DigestOf(*want.suite);
  FLEETID_TRY(der, crypto::CertificateDer(cert.get()));
  FLEETID_TRY(serial, crypto::SerialHex(X509_get0_serialNumber(cert.get())));
  ca->der = std::move(der);
  ca->serial = std::move(serial);
  ca->cert = std::move(cert);
  ca->key = std::move(key);
  ComputeIds(*ca);
  FLEETID_TRY(aki, AuthorityKeyIdExtension(KeyId(X509_get0_pubkey_bitstr(ca->cert.get()))));
  ca->authority_key_id = std::move(aki);
  if (want.role == "issuing") {
    for (const auto& [nid, value] : std::initializer_list<std::pair<int, std::string>>{
             {NID_basic_constraints, "critical,CA:FALSE"},
             {NID_key_usage, "critical,digitalSignature"},
             {NID_ext_key_usage, "clientAuth"},
             {NID_info_access, fmt::format("OCSP;URI:{0}/ocsp,caIssuers;URI:{0}/ca/{1}.crt",
                                           options_.base_url, ca->name)}}) {
      FLEETID_TRY(ext, ConfExtension(nid, value));
      ca->device_extensions.push_back(std::move(ext));
    }
  }
  cas_.push_back(std::move(ca));
  return {};
}

Ca* Hierarchy::Find(std::string_view name) const {
  for (const auto& ca : cas_) {
    if (ca->name == name) return ca.get();
  }
  return nullptr;
}

Result<Ca*> Hierarchy::IssuingCa(const Suite& suite) const {
  for (const auto& ca : Issuing()) {
    if (!ca->for_operators && ca->suite->id == suite.id) return ca.get();
  }
  return MakeError(ErrorCode::kInvalidArgument, "no issuing CA for suite '{}' is enabled",
                   suite.name);
}

Ca& Hierarchy::OperatorCa() const { return *cas_.back(); }

Result<const X509_EXTENSION*> Hierarchy::DistributionPoint(Ca& ca, std::int64_t partition) {
  MutexLock lock(ca.cdp_mu);
  auto it = ca.cdp_by_partition.find(partition);
  if (it == ca.cdp_by_partition.end()) {
    FLEETID_TRY(ext, ConfExtension(NID_crl_distribution_points,
                                   "URI:" + CrlUrl(options_, ca.name, partition, false)));
    it = ca.cdp_by_partition.emplace(partition, std::move(ext)).first;
  }
  return it->second.get();
}

void Hierarchy::PruneDistributionPoints(TimePoint now) {
  for (const auto& ca : Issuing()) {
    MutexLock lock(ca->cdp_mu);
    std::erase_if(ca->cdp_by_partition,
                  [&](const auto& entry) { return !PartitionLive(options_, entry.first, now); });
  }
}

Result<std::vector<std::uint8_t>> Hierarchy::CaCertificate(std::string_view name) const {
  for (const auto& ca : cas_) {
    if (ca->name == name) return ca->der;
    if (ca->ocsp_cert && "ocsp-" + ca->name == name) {
      return crypto::CertificateDer(ca->ocsp_cert.get());
    }
  }
  return MakeError(ErrorCode::kNotFound, "no CA named '{}'", name);
}

std::vector<std::string> Hierarchy::CaNames() const {
  std::vector<std::string> names;
  names.reserve(cas_.size());
  for (const auto& ca : cas_) names.push_back(ca->name);
  return names;
}

}  // namespace fleetid::pki::internal
