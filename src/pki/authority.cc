#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/ocsp.h>
#include <openssl/sha.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <array>
#include <limits>
#include <mutex>

#include "audit/log.h"
#include "common/identifier.h"
#include "common/log.h"
#include "crypto/crypto.h"
#include "crypto/csr.h"
#include "crypto/keys.h"
#include "custody/provider.h"
#include "pki/pki.h"

namespace fleetid::pki {

struct Authority::CertSpec {
  std::vector<std::uint8_t> serial;
  X509_NAME* subject = nullptr;
  TimePoint not_before;
  TimePoint not_after;
  std::span<const std::uint8_t> spki;  // the subject's SubjectPublicKeyInfo (DER)
  bool refuse_compromised = false;     // refuse |spki| if in compromised_keys; false for CA keys
  std::vector<const X509_EXTENSION*> extensions;
  const X509_EXTENSION* authority_key_id = nullptr;  // nullptr: self-signed, made from the key
  std::vector<std::pair<int, std::string>> subject_alt_names;  // GEN_URI, GEN_DNS, GEN_IPADD
};
namespace {

using crypto::EvpPkeyPtr;
using crypto::Suite;
using crypto::X509NamePtr;
using crypto::X509Ptr;
using store::TxMode;

using crypto::Asn1TimePtr;
using crypto::GeneralNamesPtr;
using crypto::OcspBasicRespPtr;
using crypto::OcspCertIdPtr;
using crypto::OcspRequestPtr;
using crypto::OcspResponsePtr;
using crypto::X509CrlPtr;
using crypto::X509ExtensionPtr;
using crypto::X509RevokedPtr;

constexpr std::string_view kSchema = R"sql(
CREATE TABLE ca_certificates (
  name TEXT PRIMARY KEY,
  role TEXT NOT NULL,
  suite TEXT NOT NULL,
  key_label TEXT NOT NULL,
  der BLOB NOT NULL
);
CREATE TABLE certificates (
  serial TEXT PRIMARY KEY,
  issuer TEXT NOT NULL,
  device TEXT NOT NULL,
  suite TEXT NOT NULL,
  not_before INTEGER NOT NULL,
  not_after INTEGER NOT NULL,
  status TEXT NOT NULL,
  reason INTEGER,
  revoked_at INTEGER,
  partition_id INTEGER NOT NULL,
  der BLOB NOT NULL
);
CREATE INDEX certificates_by_device ON certificates (device);
CREATE INDEX certificates_by_crl ON certificates (issuer, partition_id, status);
CREATE TABLE certificate_changes (
  id INTEGER PRIMARY KEY,
  serial TEXT NOT NULL
);
CREATE TABLE crl_numbers (
  issuer TEXT NOT NULL,
  partition_id INTEGER NOT NULL,
  number INTEGER NOT NULL,
  PRIMARY KEY (issuer, partition_id)
);
)sql";

// When a status changed: the revocation date of a removeFromCRL entry in a delta CRL.
constexpr std::string_view kChangeTimes = R"sql(
ALTER TABLE certificate_changes ADD COLUMN changed_at INTEGER;
)sql";

// Public keys revoked for keyCompromise or cACompromise, by the SHA-256 of their DER
// SubjectPublicKeyInfo: never certified again.
constexpr std::string_view kCompromisedKeys = R"sql(
CREATE TABLE compromised_keys (
  spki_sha256 TEXT PRIMARY KEY,
  serial TEXT NOT NULL,
  reason INTEGER NOT NULL,
  recorded_at INTEGER NOT NULL
);
)sql";

std::int64_t ToUnix(TimePoint t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}
TimePoint FromUnix(std::int64_t s) { return TimePoint(std::chrono::seconds(s)); }

std::int64_t ASN1TimeToUnix(const ASN1_TIME* t) {
  int days = 0;
  int secs = 0;
  const Asn1TimePtr epoch(ASN1_TIME_set(nullptr, 0));
  if (ASN1_TIME_diff(&days, &secs, epoch.get(), t) != 1) return 0;
  return std::int64_t{days} * 86400 + secs;
}

Error Ossl(std::string_view what) { return crypto::OpenSslError(ErrorCode::kInternal, what); }

std::vector<std::uint8_t> CertDer(X509* cert) {
  const int len = i2d_X509(cert, nullptr);
  std::vector<std::uint8_t> der(static_cast<std::size_t>(std::max(len, 0)));
  unsigned char* p = der.data();
  i2d_X509(cert, &p);
  return der;
}

Result<X509Ptr> ParseCert(std::span<const std::uint8_t> der) {
  const unsigned char* p = der.data();
  X509Ptr cert(d2i_X509(nullptr, &p, static_cast<long>(der.size())));
  if (!cert) return MakeError(Ossl("stored CA certificate does not parse"));
  return cert;
}

const EVP_MD* DigestOf(const Suite& suite) {
  return suite.digest_name.empty() ? nullptr
                                   : EVP_get_digestbyname(std::string(suite.digest_name).c_str());
}

// URN namespace-specific strings allow a limited alphabet (RFC 8141 §2); anything else in a
// device serial is percent-encoded, so a serial can never smuggle in another name.
std::string DeviceUri(std::string_view serial) {
  std::string out = "urn:fleetid:device:";
  for (unsigned char c : serial) {
    if (std::isalnum(c) != 0 || c == '-' || c == '.' || c == '_') {
      out.push_back(static_cast<char>(c));
    } else {
      out += fmt::format("%{:02X}", c);
    }
  }
  return out;
}

// Extensions are built once (per CA, per profile, per CRL partition) and copied into each
// certificate: parsing OpenSSL's configuration syntax per certificate is most of the cost of a
// naive issuance path (RECIPES.md §8).
Result<X509ExtensionPtr> ConfExtension(int nid, const std::string& value) {
  X509ExtensionPtr ext(X509V3_EXT_conf_nid(nullptr, nullptr, nid, value.c_str()));
  if (!ext) return MakeError(Ossl(fmt::format("certificate extension {}", OBJ_nid2sn(nid))));
  return ext;
}

// RFC 5280 §4.2.1.2 method (1): the key identifier is the SHA-1 of the subjectPublicKey bits.
std::vector<std::uint8_t> KeyId(const ASN1_BIT_STRING* key_bits) {
  unsigned char out[SHA_DIGEST_LENGTH];
  SHA1(ASN1_STRING_get0_data(key_bits), static_cast<std::size_t>(ASN1_STRING_length(key_bits)),
       out);
  return {out, out + sizeof(out)};
}

Result<X509ExtensionPtr> AuthorityKeyIdExtension(std::span<const std::uint8_t> key_id) {
  AUTHORITY_KEYID* akid = AUTHORITY_KEYID_new();
  crypto::Asn1OctetStringPtr id(ASN1_OCTET_STRING_new());
  X509ExtensionPtr ext;
  if (akid != nullptr && id &&
      ASN1_OCTET_STRING_set(id.get(), key_id.data(), static_cast<int>(key_id.size())) == 1) {
    akid->keyid = id.release();
    ext.reset(X509V3_EXT_i2d(NID_authority_key_identifier, 0, akid));
  }
  AUTHORITY_KEYID_free(akid);
  if (!ext) return MakeError(Ossl("authorityKeyIdentifier"));
  return ext;
}

// BuildAndSign makes the certificate |spec| describes, issued by |issuer| (nullptr: self-signed),
// and signs it with |signing_key| (a token key) under |signing_md|.
Result<X509Ptr> BuildAndSign(const Authority::CertSpec& spec, X509* issuer, EVP_PKEY* signing_key,
                             const EVP_MD* signing_md) {
  X509Ptr cert(X509_new());
  crypto::Asn1IntegerPtr serial_int(ASN1_INTEGER_new());
  Asn1TimePtr nb(ASN1_TIME_set(nullptr, static_cast<time_t>(ToUnix(spec.not_before))));
  Asn1TimePtr na(ASN1_TIME_set(nullptr, static_cast<time_t>(ToUnix(spec.not_after))));
  // The serial is positive (its top bit is clear), so its bytes are the INTEGER's content.
  if (!cert || !serial_int || !nb || !na || spec.serial.empty() || (spec.serial[0] & 0x80) != 0 ||
      ASN1_STRING_set(serial_int.get(), spec.serial.data(), static_cast<int>(spec.serial.size())) !=
          1 ||
      X509_set_version(cert.get(), X509_VERSION_3) != 1 ||
      X509_set_serialNumber(cert.get(), serial_int.get()) != 1 ||
      X509_set_subject_name(cert.get(), spec.subject) != 1 ||
      X509_set_issuer_name(cert.get(),
                           issuer != nullptr ? X509_get_subject_name(issuer) : spec.subject) != 1 ||
      X509_set1_notBefore(cert.get(), nb.get()) != 1 ||
      X509_set1_notAfter(cert.get(), na.get()) != 1) {
    return MakeError(Ossl("building certificate"));
  }
  FLEETID_CHECK_OK(crypto::SetSubjectPublicKey(cert.get(), spec.spki));
  for (const X509_EXTENSION* ext : spec.extensions) {
    if (X509_add_ext(cert.get(), const_cast<X509_EXTENSION*>(ext), -1) != 1) {  // copies |ext|
      return MakeError(Ossl("adding a certificate extension"));
    }
  }
  const std::vector<std::uint8_t> key_id = KeyId(X509_get0_pubkey_bitstr(cert.get()));
  crypto::Asn1OctetStringPtr ski(ASN1_OCTET_STRING_new());
  if (!ski ||
      ASN1_OCTET_STRING_set(ski.get(), key_id.data(), static_cast<int>(key_id.size())) != 1 ||
      X509_add1_ext_i2d(cert.get(), NID_subject_key_identifier, ski.get(), 0, 0) != 1) {
    return MakeError(Ossl("subjectKeyIdentifier"));
  }
  if (spec.authority_key_id != nullptr) {
    if (X509_add_ext(cert.get(), const_cast<X509_EXTENSION*>(spec.authority_key_id), -1) != 1) {
      return MakeError(Ossl("authorityKeyIdentifier"));
    }
  } else {
    FLEETID_TRY(aki, AuthorityKeyIdExtension(key_id));
    if (X509_add_ext(cert.get(), aki.get(), -1) != 1)
      return MakeError(Ossl("authorityKeyIdentifier"));
  }
  if (!spec.subject_alt_names.empty()) {
    GeneralNamesPtr names(sk_GENERAL_NAME_new_null());
    if (!names) return MakeError(Ossl("building subjectAltName"));
    for (const auto& [type, value] : spec.subject_alt_names) {
      GENERAL_NAME* name = GENERAL_NAME_new();
      ASN1_STRING* str = type == GEN_IPADD ? a2i_IPADDRESS(value.c_str()) : ASN1_IA5STRING_new();
      if (name == nullptr || str == nullptr ||
          (type != GEN_IPADD &&
           ASN1_STRING_set(str, value.data(), static_cast<int>(value.size())) != 1) ||
          sk_GENERAL_NAME_push(names.get(), name) <= 0) {
        GENERAL_NAME_free(name);
        ASN1_STRING_free(str);
        return MakeError(Ossl("building subjectAltName"));
      }
      GENERAL_NAME_set0_value(name, type, str);
    }
    if (X509_add1_ext_i2d(cert.get(), NID_subject_alt_name, names.get(), 0, 0) != 1) {
      return MakeError(Ossl("adding subjectAltName"));
    }
  }
  if (X509_sign(cert.get(), signing_key, signing_md) <= 0) {
    return MakeError(crypto::OpenSslError(ErrorCode::kUnavailable, "signing in the token"));
  }
  return cert;
}

X509NamePtr Name(std::string_view common_name, std::string_view organization) {
  X509NamePtr name(X509_NAME_new());
  if (!organization.empty()) {
    X509_NAME_add_entry_by_NID(name.get(), NID_organizationName, MBSTRING_UTF8,
                               reinterpret_cast<const unsigned char*>(organization.data()),
                               static_cast<int>(organization.size()), -1, 0);
  }
  X509_NAME_add_entry_by_NID(name.get(), NID_commonName, MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>(common_name.data()),
                             static_cast<int>(common_name.size()), -1, 0);
  return name;
}

std::string EntityTag(std::span<const std::uint8_t> der) {
  unsigned char digest[SHA_DIGEST_LENGTH];
  SHA1(der.data(), der.size(), digest);
  return "\"" + crypto::Hex(digest) + "\"";
}

// CacheSerial is the hex of |serial|'s DER encoding: the exact INTEGER, sign included.
std::string CacheSerial(const ASN1_INTEGER* serial) {
  unsigned char* der = nullptr;
  const int len = i2d_ASN1_INTEGER(serial, &der);
  if (len <= 0) return {};
  const crypto::OpenSslBytesPtr owner(der);
  return crypto::Hex({der, static_cast<std::size_t>(len)});
}

std::string CacheSerialOfHex(const std::string& serial_hex) {
  BIGNUM* raw = nullptr;
  if (BN_hex2bn(&raw, serial_hex.c_str()) == 0) return {};
  crypto::BignumPtr bn(raw);
  crypto::Asn1IntegerPtr serial(BN_to_ASN1_INTEGER(bn.get(), nullptr));
  return serial ? CacheSerial(serial.get()) : std::string();
}

std::string SerialHex(const ASN1_INTEGER* serial) {
  crypto::BignumPtr bn(ASN1_INTEGER_to_BN(serial, nullptr));
  if (!bn || BN_is_negative(bn.get())) return {};
  std::vector<std::uint8_t> bytes(static_cast<std::size_t>(BN_num_bytes(bn.get())));
  BN_bn2bin(bn.get(), bytes.data());
  return crypto::Hex(bytes);
}

// KeyFingerprints are the compromised_keys keys |spki| is looked up under: crypto::KeyFingerprint,
// and the SHA-256 of the SPKI bytes as given, under which RSA and Ed25519 keys were recorded
// before crypto::KeyFingerprint existed (EC rows were already in its form).
Result<std::pair<std::string, std::string>> KeyFingerprints(std::span<const std::uint8_t> spki) {
  FLEETID_TRY(canonical, crypto::KeyFingerprint(spki));
  return std::pair{std::move(canonical), crypto::Hex(crypto::Sha256(spki))};
}

Result<bool> CompromisedIn(store::Transaction& tx, std::span<const std::uint8_t> spki) {
  FLEETID_TRY(fingerprints, KeyFingerprints(spki));
  FLEETID_TRY(rows, tx.Query("SELECT 1 FROM compromised_keys WHERE spki_sha256 IN (?, ?)",
                             {fingerprints.first, fingerprints.second}));
  return !rows.empty();
}

// RefusePssKey is kInvalidArgument for a key whose SPKI names id-RSASSA-PSS: the
// rsa3072-pss-sha256 suite's keys are rsaEncryption keys (RSASSA-PSS is how they sign), and no
// suite certifies a PSS-restricted key, so an RSA key is certified under one encoding only.
Result<void> RefusePssKey(EVP_PKEY* key) {
  if (EVP_PKEY_get_base_id(key) != EVP_PKEY_RSA_PSS) return {};
  return MakeError(ErrorCode::kInvalidArgument,
                   "an RSA key is an rsaEncryption SubjectPublicKeyInfo, not id-RSASSA-PSS");
}

}  // namespace

Result<bool> Authority::KeyCompromisedIn(store::Transaction& tx,
                                         std::span<const std::uint8_t> spki) {
  return CompromisedIn(tx, spki);
}

// ---------------------------------------------------------------------------------------------

struct Authority::Ca {
  std::string name;    // "root" or the issuing suite's name
  std::string serial;  // its certificate's serial (lower-case hex)
  const Suite* suite = nullptr;
  X509Ptr cert;
  std::vector<std::uint8_t> der;
  EvpPkeyPtr key;
  const EVP_MD* md = nullptr;  // the suite's digest; nullptr for Ed25519
  X509Ptr ocsp_cert;           // issuing CAs only
  EvpPkeyPtr ocsp_key;
  // Extension templates: the authorityKeyIdentifier of everything this CA signs, what every
  // device certificate carries, and the CRL distribution point of each issuance partition.
  X509ExtensionPtr authority_key_id;
  std::vector<X509ExtensionPtr> device_extensions;
  std::mutex cdp_mu;
  std::map<std::int64_t, X509ExtensionPtr> cdp_by_partition;
  // CertID matching (RFC 6960 §4.1.1): hashes of the issuer's name and public key.
  std::vector<std::uint8_t> name_sha1, key_sha1, name_sha256, key_sha256;
};

struct Authority::OcspCache {
  std::shared_mutex mu;
  // (CA name, hash NID, hex of the serial's DER INTEGER) -> pre-signed answer. Only serials this
  // authority issued: their number bounds the cache, and the exact INTEGER (sign included) keeps
  // 0 and -1 apart.
  std::map<std::tuple<std::string, int, std::string>, OcspAnswer> answers;

  // A token bucket of signatures, refilled at |per_second| up to as many, by the injected clock.
  class Budget {
   public:
    bool Take(TimePoint now, int per_second) {
      std::lock_guard lock(mu_);
      const double cap = std::max(per_second, 0);
      if (tokens_ < 0) {
        tokens_ = cap;
      } else if (now > refilled_) {
        tokens_ = std::min(
            cap, tokens_ + std::chrono::duration<double>(now - refilled_).count() * per_second);
      }
      refilled_ = std::max(refilled_, now);
      if (tokens_ < 1) return false;
      tokens_ -= 1;
      return true;
    }

   private:
    std::mutex mu_;
    double tokens_ = -1;  // < 0: full at first use
    TimePoint refilled_;
  };
  Budget unknown;  // signed "unknown" answers: ocsp_unknown_per_second
  Budget fresh;    // answers no cache can hold (nonced, multi-CertID): ocsp_fresh_per_second
  std::atomic<std::uint64_t> signatures{0};
};

struct Authority::CrlEntry {
  CrlAnswer answer;
  std::int64_t cursor = 0;  // certificate_changes read up to here when it was built
  bool dirty = false;       // a status in its scope changed since it was built
};

struct Authority::CrlCache {
  using Entry = CrlEntry;
  std::mutex mu;  // held while a CRL is built, so concurrent fetches build it once
  std::map<std::tuple<std::string, std::int64_t, bool>, Entry> crls;  // (issuer, partition, delta)

  void MarkDirty(const std::string& issuer, std::int64_t partition) {
    std::lock_guard lock(mu);
    for (bool delta : {false, true}) {
      if (auto it = crls.find({issuer, partition, delta}); it != crls.end())
        it->second.dirty = true;
    }
  }
};

std::string_view ReasonName(Reason reason) {
  switch (reason) {
    case Reason::kUnspecified:
      return "unspecified";
    case Reason::kKeyCompromise:
      return "keyCompromise";
    case Reason::kCaCompromise:
      return "cACompromise";
    case Reason::kAffiliationChanged:
      return "affiliationChanged";
    case Reason::kSuperseded:
      return "superseded";
    case Reason::kCessationOfOperation:
      return "cessationOfOperation";
    case Reason::kCertificateHold:
      return "certificateHold";
    case Reason::kRemoveFromCrl:
      return "removeFromCRL";
    case Reason::kPrivilegeWithdrawn:
      return "privilegeWithdrawn";
    case Reason::kAaCompromise:
      return "aACompromise";
  }
  return "unspecified";
}

Result<Reason> ParseReason(std::string_view name) {
  for (Reason r : {Reason::kUnspecified, Reason::kKeyCompromise, Reason::kCaCompromise,
                   Reason::kAffiliationChanged, Reason::kSuperseded, Reason::kCessationOfOperation,
                   Reason::kCertificateHold, Reason::kPrivilegeWithdrawn, Reason::kAaCompromise}) {
    if (ReasonName(r) == name) return r;
  }
  return MakeError(ErrorCode::kInvalidArgument, "unknown revocation reason '{}'", name);
}

std::string_view StatusName(Status status) {
  switch (status) {
    case Status::kGood:
      return "good";
    case Status::kRevoked:
      return "revoked";
    case Status::kOnHold:
      return "hold";
  }
  return "good";
}

Authority::Authority(std::shared_ptr<custody::Token> token, store::Database& db, Clock& clock,
                     Rng& rng, AuthorityOptions options)
    : token_(std::move(token)),
      db_(db),
      clock_(clock),
      rng_(rng),
      options_(std::move(options)),
      ocsp_cache_(std::make_unique<OcspCache>()),
      crl_cache_(std::make_unique<CrlCache>()) {}

Authority::~Authority() = default;

Result<void> Authority::Migrate(store::Database& db) {
  // Every issuance and status change appends to the audit log in its own transaction.
  FLEETID_CHECK_OK(audit::Log::Migrate(db));
  static const std::string pg = store::PostgresDdl(kSchema);
  static const std::string pg2 = store::PostgresDdl(kChangeTimes);
  static const std::string pg3 = store::PostgresDdl(kCompromisedKeys);
  const store::Migration migrations[] = {{1, "ca, certificates, crl numbers", kSchema, pg},
                                         {2, "status change times", kChangeTimes, pg2},
                                         {3, "compromised keys", kCompromisedKeys, pg3}};
  FLEETID_TRY(applied, db.Migrate("pki", migrations));
  (void)applied;
  return {};
}

Result<std::unique_ptr<Authority>> Authority::Open(std::shared_ptr<custody::Token> token,
                                                   store::Database& db, Clock& clock, Rng& rng,
                                                   AuthorityOptions options) {
  FLEETID_CHECK_OK(Migrate(db));
  std::unique_ptr<Authority> authority(
      new Authority(std::move(token), db, clock, rng, std::move(options)));  // NOLINT
  FLEETID_CHECK_OK(authority->LoadOrCreate());
  // Changes made before this start are already reflected in what the database says.
  FLEETID_TRY(tx, db.Begin(TxMode::kAutocommit));
  FLEETID_TRY(max, tx->Query("SELECT COALESCE(MAX(id), 0) FROM certificate_changes"));
  authority->change_cursor_.store(max.front().Int(0));
  return authority;
}

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

Result<void> ComputeIds(Authority::Ca& ca) {
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
  return {};
}

}  // namespace

Result<void> Authority::LoadOrCreate() {
  const TimePoint now = clock_.Now();
  struct Want {
    std::string name;
    std::string role;
    const Suite* suite;
  };
  std::vector<Want> wants = {{"root", "root", &crypto::GetSuite(options_.root_suite)}};
  for (crypto::SuiteId id : options_.issuing_suites) {
    const Suite& s = crypto::GetSuite(id);
    wants.push_back({std::string(s.name), "issuing", &s});
    wants.push_back({"ocsp-" + std::string(s.name), "ocsp", &s});
  }
  for (const Want& want : wants) {
    const std::string label = "fleetid-" + want.name;
    FLEETID_TRY(key, KeyFor(*token_, label, *want.suite, rng_));
    FLEETID_TRY(tx, db_.Begin(TxMode::kWrite));
    FLEETID_TRY(rows, tx->Query("SELECT der FROM ca_certificates WHERE name = ?", {want.name}));
    X509Ptr cert;
    if (!rows.empty()) {
      FLEETID_TRY(parsed, ParseCert(rows.front().Bytes(0)));
      cert = std::move(parsed);
      if (X509_check_private_key(cert.get(), key.get()) != 1) {
        ERR_clear_error();
        return MakeError(ErrorCode::kConflict,
                         "the stored certificate of CA '{}' does not match token key '{}'",
                         want.name, label);
      }
    } else {
      Authority::CertSpec spec;
      FLEETID_TRY(serial, rng_.Bytes(16));
      serial[0] = static_cast<std::uint8_t>((serial[0] & 0x7f) | 0x01);
      spec.serial = serial;
      FLEETID_TRY(spki, crypto::PublicKeyDer(key.get()));
      spec.spki = spki;
      X509NamePtr subject;
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
        subject = Name(fmt::format("fleetid Issuing CA {}", want.suite->name), "fleetid");
        spec.not_after = now + std::chrono::hours(24 * 365 * 5);
        conf = {
            {NID_basic_constraints, "critical,CA:TRUE,pathlen:0"},
            {NID_key_usage, "critical,keyCertSign,cRLSign"},
            {NID_info_access, fmt::format("caIssuers;URI:{}/ca/root.crt", options_.base_url)},
            {NID_crl_distribution_points, fmt::format("URI:{}/crl/root/0.crl", options_.base_url)}};
      } else {
        parent = cas_.back().get();
        subject = Name(fmt::format("fleetid OCSP {}", want.suite->name), "fleetid");
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
                                      parent != nullptr ? parent->key.get() : key.get(),
                                      DigestOf(parent != nullptr ? *parent->suite : *want.suite)));
      // Parsed back from its encoding, so the certificate in memory is the stored one with its
      // public key decoded (BuildAndSign sets the key's bits only).
      FLEETID_TRY(reparsed, ParseCert(CertDer(built.get())));
      cert = std::move(reparsed);
      FLEETID_CHECK_OK(
          tx->Exec("INSERT INTO ca_certificates (name, role, suite, key_label, der) "
                   "VALUES (?, ?, ?, ?, ?)",
                   {want.name, want.role, std::string(want.suite->name), label,
                    store::Blob(CertDer(cert.get()))}));
      FLEETID_CHECK_OK(tx->Commit());
    }
    if (want.role == "ocsp") {
      cas_.back()->ocsp_cert = std::move(cert);
      cas_.back()->ocsp_key = std::move(key);
      continue;
    }
    auto ca = std::make_unique<Ca>();
    ca->name = want.name;
    ca->suite = want.suite;
    ca->md = DigestOf(*want.suite);
    ca->der = CertDer(cert.get());
    ca->serial = SerialHex(X509_get0_serialNumber(cert.get()));
    ca->cert = std::move(cert);
    ca->key = std::move(key);
    FLEETID_CHECK_OK(ComputeIds(*ca));
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
  }
  return {};
}

// RecordCaIn makes the certificate record of the issuing CA or OCSP signer whose serial is
// |serial|, with its pki.issue audit entry, inside |tx|: an issuing CA is a certificate of the
// root (partition 0), an OCSP signer a long-lived certificate of its issuing CA. It is made when
// the certificate is first revoked, so it can be revoked, listed and answered for like any
// other. kNotFound when no CA certificate has that serial.
Result<void> Authority::RecordCaIn(store::Transaction& tx, std::string_view serial) {
  for (std::size_t i = 1; i < cas_.size(); ++i) {
    const Ca& ca = *cas_[i];
    struct Recorded {
      X509* cert;
      std::string issuer;
      std::string subject;
    };
    for (const Recorded& r : {Recorded{ca.cert.get(), "root", "ca:" + ca.name},
                              Recorded{ca.ocsp_cert.get(), ca.name, "ca:ocsp-" + ca.name}}) {
      if (r.cert == nullptr || SerialHex(X509_get0_serialNumber(r.cert)) != serial) continue;
      const std::int64_t not_before = ASN1TimeToUnix(X509_get0_notBefore(r.cert));
      const std::int64_t not_after = ASN1TimeToUnix(X509_get0_notAfter(r.cert));
      const std::int64_t partition =
          r.issuer == "root" ? 0 : PartitionOf(CertificateClass::kLongLived, FromUnix(not_before));
      FLEETID_CHECK_OK(tx.Exec(
          "INSERT INTO certificates (serial, issuer, device, suite, not_before, not_after, status, "
          "reason, revoked_at, partition_id, der) VALUES (?, ?, ?, ?, ?, ?, 'good', NULL, NULL, "
          "?, ?)",
          {std::string(serial), r.issuer, r.subject, std::string(ca.suite->name), not_before,
           not_after, partition, store::Blob(CertDer(r.cert))}));
      FLEETID_TRY(seq, audit::Log::Append(tx,
                                          {"system",
                                           "pki.issue",
                                           std::string(serial),
                                           nullptr,
                                           {{"device", r.subject},
                                            {"issuer", r.issuer},
                                            {"suite", std::string(ca.suite->name)},
                                            {"not_after", not_after},
                                            {"status", "good"}},
                                           "",
                                           "",
                                           ""},
                                          clock_));
      static_cast<void>(seq);
      return {};
    }
  }
  return MakeError(ErrorCode::kNotFound, "no certificate with serial {}", serial);
}

std::int64_t Authority::PartitionOf(CertificateClass klass, TimePoint issued) const {
  if (klass == CertificateClass::kDevice) return ToUnix(issued) / options_.partition_span.count();
  return -1 - ToUnix(issued) / options_.long_partition_span.count();
}

bool Authority::PartitionLive(std::int64_t partition, TimePoint now) const {
  // A partition holds certificates issued within its span; the last of them expires one
  // lifetime after the span ends.
  std::int64_t span = options_.partition_span.count();
  std::int64_t lifetime = options_.leaf_lifetime.count();
  std::int64_t index = partition;
  if (partition < 0) {
    span = options_.long_partition_span.count();
    lifetime = std::max(options_.server_lifetime, options_.ocsp_signer_lifetime).count();
    index = -1 - partition;
  }
  const std::int64_t current = ToUnix(now) / span;
  return index <= current && (index + 1) * span + lifetime > ToUnix(now);
}

std::vector<std::string> Authority::CaNames() const {
  std::vector<std::string> names;
  names.reserve(cas_.size());
  for (const auto& ca : cas_) names.push_back(ca->name);
  return names;
}

const std::vector<std::uint8_t>& Authority::RootDer() const { return cas_.front()->der; }

Result<std::vector<std::uint8_t>> Authority::CaCertificate(std::string_view name) const {
  for (const auto& ca : cas_) {
    if (ca->name == name) return ca->der;
    if (ca->ocsp_cert && "ocsp-" + ca->name == name) return CertDer(ca->ocsp_cert.get());
  }
  return MakeError(ErrorCode::kNotFound, "no CA named '{}'", name);
}

namespace {

Result<CertificateRecord> DecodeRecord(const store::Row& r) {
  CertificateRecord c;
  c.serial = r.Text(0);
  c.issuer = r.Text(1);
  c.device = r.Text(2);
  c.suite = r.Text(3);
  c.not_before = FromUnix(r.Int(4));
  c.not_after = FromUnix(r.Int(5));
  const std::string status = r.Text(6);
  c.status = status == "revoked" ? Status::kRevoked
             : status == "hold"  ? Status::kOnHold
                                 : Status::kGood;
  if (!r.IsNull(7)) c.reason = static_cast<Reason>(r.Int(7));
  if (!r.IsNull(8)) c.revoked_at = FromUnix(r.Int(8));
  c.partition = r.Int(9);
  c.der = r.Bytes(10);
  return c;
}

constexpr std::string_view kRecordColumns =
    "serial, issuer, device, suite, not_before, not_after, status, reason, revoked_at, "
    "partition_id, der";

}  // namespace

Result<Authority::Ca*> Authority::IssuingCa(const Suite& suite) {
  for (std::size_t i = 1; i < cas_.size(); ++i) {
    if (cas_[i]->suite->id == suite.id) return cas_[i].get();
  }
  return MakeError(ErrorCode::kInvalidArgument, "no issuing CA for suite '{}' is enabled",
                   suite.name);
}

Result<const X509_EXTENSION*> Authority::DistributionPoint(Ca& ca, std::int64_t partition) {
  std::lock_guard lock(ca.cdp_mu);
  auto it = ca.cdp_by_partition.find(partition);
  if (it == ca.cdp_by_partition.end()) {
    FLEETID_TRY(ext, ConfExtension(NID_crl_distribution_points,
                                   "URI:" + CrlUrl(ca.name, partition, false)));
    it = ca.cdp_by_partition.emplace(partition, std::move(ext)).first;
  }
  return it->second.get();
}

std::string Authority::CrlUrl(std::string_view issuer, std::int64_t partition, bool delta) const {
  return fmt::format("{}/crl/{}/{}{}.crl", options_.base_url, issuer, partition,
                     delta ? "-delta" : "");
}

Result<CertificateRecord> Authority::SignAndRecord(CertSpec& spec, Ca& issuing,
                                                   std::string_view subject_id, const Suite& suite,
                                                   std::int64_t partition,
                                                   const AuditContext& audit,
                                                   store::Transaction* outer, bool hold) {
  for (int attempt = 0;; ++attempt) {
    FLEETID_TRY(serial, rng_.Bytes(16));
    serial[0] = static_cast<std::uint8_t>((serial[0] & 0x7f) | 0x01);  // positive, 16 bytes
    spec.serial = serial;
    FLEETID_TRY(cert, BuildAndSign(spec, issuing.cert.get(), issuing.key.get(), issuing.md));
    CertificateRecord record;
    record.serial = crypto::Hex(serial);
    record.issuer = issuing.name;
    record.device = std::string(subject_id);
    record.suite = std::string(suite.name);
    record.not_before = spec.not_before;
    record.not_after = spec.not_after;
    record.partition = partition;
    record.der = CertDer(cert.get());
    std::unique_ptr<store::Transaction> own;
    if (outer == nullptr) {
      FLEETID_TRY(begun, db_.Begin(TxMode::kWrite));
      own = std::move(begun);
    }
    store::Transaction* tx = outer != nullptr ? outer : own.get();
    // A revoked issuing CA signs nothing more: relying parties would refuse it anyway.
    FLEETID_TRY(ca_rows,
                tx->Query("SELECT status FROM certificates WHERE serial = ?", {issuing.serial}));
    if (!ca_rows.empty() && ca_rows.front().Text(0) != StatusName(Status::kGood)) {
      return MakeError(ErrorCode::kUnavailable,
                       "issuing CA '{}' is revoked or on hold: it issues nothing more",
                       issuing.name);
    }
    // A key revoked for keyCompromise is never certified again, for anyone.
    if (spec.refuse_compromised) {
      FLEETID_TRY(compromised, CompromisedIn(*tx, spec.spki));
      if (compromised) {
        return MakeError(ErrorCode::kPermissionDenied,
                         "this public key was revoked as compromised and is never certified again");
      }
    }
    store::Value reason = nullptr;
    store::Value revoked_at = nullptr;
    if (hold) {
      record.status = Status::kOnHold;
      record.reason = Reason::kCertificateHold;
      record.revoked_at = std::chrono::floor<std::chrono::seconds>(clock_.Now());
      reason = static_cast<std::int64_t>(Reason::kCertificateHold);
      revoked_at = ToUnix(*record.revoked_at);
    }
    auto inserted = tx->Exec(
        "INSERT INTO certificates (serial, issuer, device, suite, not_before, not_after, status, "
        "reason, revoked_at, partition_id, der) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        {record.serial, record.issuer, record.device, record.suite,
         ToUnix(std::chrono::floor<std::chrono::seconds>(record.not_before)),
         ToUnix(std::chrono::floor<std::chrono::seconds>(record.not_after)),
         std::string(StatusName(record.status)), reason, revoked_at, partition,
         store::Blob(record.der)});
    // The serial is unique by the table's primary key; a collision of 127 random bits draws
    // again (in a transaction of our own: a failed statement may end the caller's).
    if (!inserted && inserted.error().code() == ErrorCode::kConflict && attempt < 3 && own)
      continue;
    if (!inserted) return MakeError(inserted.error());
    if (hold) {
      FLEETID_CHECK_OK(
          tx->Exec("INSERT INTO certificate_changes (serial, changed_at) VALUES (?, ?)",
                   {record.serial, ToUnix(clock_.Now())}));
    }
    FLEETID_TRY(seq, audit::Log::Append(*tx,
                                        {std::string(audit.actor),
                                         "pki.issue",
                                         record.serial,
                                         nullptr,
                                         {{"device", record.device},
                                          {"issuer", record.issuer},
                                          {"suite", record.suite},
                                          {"not_after", ToUnix(record.not_after)},
                                          {"status", StatusName(record.status)}},
                                         "",
                                         "",
                                         audit.evidence_digest},
                                        clock_));
    static_cast<void>(seq);
    if (own) FLEETID_CHECK_OK(own->Commit());
    if (hold && own) crl_cache_->MarkDirty(record.issuer, record.partition);
    // The first OCSP query signs and caches the answer; signing two CertID forms here would
    // triple the token signatures of every issuance.
    return record;
  }
}

Result<CertificateRecord> Authority::Issue(std::span<const std::uint8_t> csr_der,
                                           const DeviceIdentity& device,
                                           const crypto::SuitePolicy& policy,
                                           std::string_view actor) {
  return IssueImpl(nullptr, csr_der, device, policy, actor, false);
}

Result<CertificateRecord> Authority::IssueIn(store::Transaction& tx,
                                             std::span<const std::uint8_t> csr_der,
                                             const DeviceIdentity& device,
                                             const crypto::SuitePolicy& policy,
                                             std::string_view actor, bool pending) {
  return IssueImpl(&tx, csr_der, device, policy, actor, pending);
}

Result<CertificateRecord> Authority::IssueImpl(store::Transaction* tx,
                                               std::span<const std::uint8_t> csr_der,
                                               const DeviceIdentity& device,
                                               const crypto::SuitePolicy& policy,
                                               std::string_view actor, bool pending) {
  // What goes into the subject and subjectAltName: the registry's character set, enforced here
  // too so no caller can put ',', '=', NUL or a line break into a name.
  FLEETID_CHECK_OK(CheckIdentifier("device serial", device.serial));
  if (!device.tenant.empty()) FLEETID_CHECK_OK(CheckIdentifier("tenant", device.tenant));
  FLEETID_TRY(csr, crypto::VerifyCsr(csr_der));
  FLEETID_CHECK_OK(RefusePssKey(csr.key.get()));
  FLEETID_TRY(suite, crypto::SuiteOfPublicKey(csr.key.get()));
  FLEETID_CHECK_OK(policy.CheckUsable(*suite));
  FLEETID_TRY(issuing, IssuingCa(*suite));
  const TimePoint now = clock_.Now();
  const std::int64_t partition = PartitionOf(CertificateClass::kDevice, now);
  CertSpec spec;
  X509NamePtr subject = Name(device.serial, device.tenant);
  spec.subject = subject.get();
  spec.spki = csr.spki;
  spec.refuse_compromised = true;
  spec.not_before = now - options_.backdate;
  spec.not_after = now + options_.leaf_lifetime;
  for (const X509ExtensionPtr& ext : issuing->device_extensions)
    spec.extensions.push_back(ext.get());
  FLEETID_TRY(cdp, DistributionPoint(*issuing, partition));
  spec.extensions.push_back(cdp);
  spec.authority_key_id = issuing->authority_key_id.get();
  spec.subject_alt_names = {{GEN_URI, DeviceUri(device.serial)}};
  const std::string evidence = crypto::Hex(crypto::Sha256(csr_der));
  return SignAndRecord(spec, *issuing, device.serial, *suite, partition, {actor, evidence}, tx,
                       pending);
}

Result<CertificateRecord> Authority::ServerCertificate(std::span<const std::uint8_t> spki,
                                                       const std::vector<std::string>& names) {
  if (names.empty())
    return MakeError(ErrorCode::kInvalidArgument, "a server certificate needs a name");
  const TimePoint now = clock_.Now();
  {
    FLEETID_TRY(tx, db_.Begin(TxMode::kRead));
    FLEETID_TRY(rows,
                tx->Query(fmt::format("SELECT {} FROM certificates WHERE device = ? AND "
                                      "status = 'good' AND not_after > ? "
                                      "ORDER BY not_after DESC LIMIT 1",
                                      kRecordColumns),
                          {"server:" + names.front(), ToUnix(now + options_.server_lifetime / 3)}));
    if (!rows.empty()) {
      FLEETID_TRY(record, DecodeRecord(rows.front()));
      FLEETID_TRY(cert, ParseCert(record.der));
      // Reused only for the same key and exactly the same names.
      unsigned char* der = nullptr;
      const int len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert.get()), &der);
      const crypto::OpenSslBytesPtr owner(der);
      bool same = len > 0 && std::equal(spki.begin(), spki.end(), der, der + len);
      for (const std::string& name : names) {
        crypto::Asn1OctetStringPtr ip(a2i_IPADDRESS(name.c_str()));
        ERR_clear_error();
        same = same && (ip ? X509_check_ip_asc(cert.get(), name.c_str(), 0) == 1
                           : X509_check_host(cert.get(), name.c_str(), name.size(),
                                             X509_CHECK_FLAG_NO_WILDCARDS, nullptr) == 1);
      }
      // Never reuse a certificate of a key since revoked for compromise under another serial.
      FLEETID_TRY(compromised, CompromisedIn(*tx, spki));
      if (compromised) {
        return MakeError(ErrorCode::kPermissionDenied,
                         "this public key was revoked as compromised and is never certified again");
      }
      if (same) return record;
    }
  }
  return IssueServer(spki, names);
}

Result<CertificateRecord> Authority::IssueServer(std::span<const std::uint8_t> spki,
                                                 const std::vector<std::string>& names) {
  if (names.empty())
    return MakeError(ErrorCode::kInvalidArgument, "a server certificate needs a name");
  FLEETID_TRY(key, crypto::PublicKeyFromDer(spki));
  FLEETID_CHECK_OK(RefusePssKey(key.get()));
  FLEETID_TRY(suite, crypto::SuiteOfPublicKey(key.get()));
  FLEETID_TRY(issuing, IssuingCa(*suite));
  const TimePoint now = clock_.Now();
  const std::int64_t partition = PartitionOf(CertificateClass::kLongLived, now);
  CertSpec spec;
  X509NamePtr subject = Name(names.front(), "fleetid");
  spec.subject = subject.get();
  spec.spki = spki;
  spec.refuse_compromised = true;
  spec.not_before = now - options_.backdate;
  spec.not_after = now + options_.server_lifetime;
  std::vector<X509ExtensionPtr> extensions;
  for (const auto& [nid, value] : std::initializer_list<std::pair<int, std::string>>{
           {NID_basic_constraints, "critical,CA:FALSE"},
           {NID_key_usage, "critical,digitalSignature"},
           {NID_ext_key_usage, "serverAuth"},
           {NID_info_access, fmt::format("OCSP;URI:{0}/ocsp,caIssuers;URI:{0}/ca/{1}.crt",
                                         options_.base_url, issuing->name)}}) {
    FLEETID_TRY(ext, ConfExtension(nid, value));
    spec.extensions.push_back(ext.get());
    extensions.push_back(std::move(ext));
  }
  FLEETID_TRY(cdp, DistributionPoint(*issuing, partition));
  spec.extensions.push_back(cdp);
  spec.authority_key_id = issuing->authority_key_id.get();
  for (const std::string& name : names) {
    crypto::Asn1OctetStringPtr ip(a2i_IPADDRESS(name.c_str()));
    ERR_clear_error();
    spec.subject_alt_names.emplace_back(ip ? GEN_IPADD : GEN_DNS, name);
  }
  return SignAndRecord(spec, *issuing, "server:" + names.front(), *suite, partition,
                       {"system:fleetid-server", ""}, nullptr, false);
}

bool RenewalDue(const CertificateRecord& current, TimePoint now) {
  if (current.status != Status::kGood) return true;
  return now >= current.not_before + (current.not_after - current.not_before) * 2 / 3;
}

ServerCertificateKeeper::ServerCertificateKeeper(Authority& authority, const Clock& clock,
                                                 std::vector<std::uint8_t> spki,
                                                 std::vector<std::string> names)
    : authority_(authority), clock_(clock), spki_(std::move(spki)), names_(std::move(names)) {}

Result<std::optional<CertificateRecord>> ServerCertificateKeeper::Check() {
  if (!current_.serial.empty()) {
    // Read afresh: a revocation by another process (the operator tool) is in the database.
    FLEETID_TRY(latest, authority_.Get(current_.serial));
    current_ = std::move(latest);
    if (!RenewalDue(current_, clock_.Now())) return std::nullopt;
  }
  FLEETID_TRY(next, authority_.ServerCertificate(spki_, names_));
  if (next.serial == current_.serial) return std::nullopt;
  current_ = std::move(next);
  return current_;
}

namespace {

bool IsSerialHex(std::string_view s) {
  return !s.empty() && s.size() <= 40 && std::ranges::all_of(s, [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
  });
}

}  // namespace

Result<CertificateRecord> Authority::Get(std::string_view serial) {
  if (!IsSerialHex(serial)) {
    return MakeError(ErrorCode::kInvalidArgument, "a serial is lower-case hex");
  }
  FLEETID_TRY(tx, db_.Begin(TxMode::kAutocommit));
  FLEETID_TRY(rows,
              tx->Query(fmt::format("SELECT {} FROM certificates WHERE serial = ?", kRecordColumns),
                        {std::string(serial)}));
  if (rows.empty()) return MakeError(ErrorCode::kNotFound, "no certificate with serial {}", serial);
  return DecodeRecord(rows.front());
}

Result<CertificateRecord> Authority::Revoke(std::string_view serial, Reason reason,
                                            std::string_view actor) {
  if (reason == Reason::kRemoveFromCrl) {
    return MakeError(ErrorCode::kInvalidArgument, "removeFromCRL is not a revocation reason");
  }
  return ChangeStatus(serial, reason, actor);
}

Result<CertificateRecord> Authority::Release(std::string_view serial, std::string_view actor) {
  return ChangeStatus(serial, std::nullopt, actor);
}

Result<CertificateRecord> Authority::ChangeStatus(std::string_view serial,
                                                  std::optional<Reason> reason,
                                                  std::string_view actor) {
  FLEETID_TRY(tx, db_.Begin(TxMode::kWrite));
  FLEETID_TRY(next, ChangeStatusIn(*tx, serial, reason, actor));
  FLEETID_CHECK_OK(tx->Commit());
  Publish(next);
  return next;
}

Result<CertificateRecord> Authority::GetIn(store::Transaction& tx, std::string_view serial) {
  if (!IsSerialHex(serial)) {
    return MakeError(ErrorCode::kInvalidArgument, "a serial is lower-case hex");
  }
  FLEETID_TRY(rows,
              tx.Query(fmt::format("SELECT {} FROM certificates WHERE serial = ?", kRecordColumns),
                       {std::string(serial)}));
  if (rows.empty()) return MakeError(ErrorCode::kNotFound, "no certificate with serial {}", serial);
  return DecodeRecord(rows.front());
}

Result<CertificateRecord> Authority::ChangeStatusIn(store::Transaction& tx, std::string_view serial,
                                                    std::optional<Reason> reason,
                                                    std::string_view actor) {
  if (reason == Reason::kRemoveFromCrl) {
    return MakeError(ErrorCode::kInvalidArgument, "removeFromCRL is not a revocation reason");
  }
  auto found = GetIn(tx, serial);
  if (!found && found.error().code() == ErrorCode::kNotFound) {
    FLEETID_CHECK_OK(RecordCaIn(tx, serial));
    found = GetIn(tx, serial);
  }
  FLEETID_TRY(current, std::move(found));
  const TimePoint now = clock_.Now();
  const auto compromise = [](std::optional<Reason> r) {
    return r == Reason::kKeyCompromise || r == Reason::kCaCompromise;
  };
  if (reason) {
    // A revoked certificate's reason can still be raised to a compromise, found later (a key
    // superseded first, then found stolen): the key must still be listed as compromised. Its
    // revocation date stays (RFC 5280 §5.3.1 reasonCode changes, revocationDate does not).
    if (current.status == Status::kRevoked &&
        (!compromise(reason) || compromise(current.reason))) {
      return MakeError(ErrorCode::kConflict, "certificate {} is already revoked", serial);
    }
    if (current.status == Status::kOnHold && *reason == Reason::kCertificateHold) {
      return MakeError(ErrorCode::kConflict, "certificate {} is already on hold", serial);
    }
  } else if (current.status != Status::kOnHold) {
    return MakeError(ErrorCode::kConflict, "certificate {} is not on hold", serial);
  }
  CertificateRecord next = current;
  if (reason) {
    next.status = *reason == Reason::kCertificateHold ? Status::kOnHold : Status::kRevoked;
    next.reason = reason;
    // A hold turned into a revocation keeps the original revocation time (RFC 5280 §5.3.2).
    if (!current.revoked_at) next.revoked_at = std::chrono::floor<std::chrono::seconds>(now);
  } else {
    next.status = Status::kGood;
    next.reason.reset();
    next.revoked_at.reset();
  }
  store::Value reason_value = nullptr;
  store::Value revoked_value = nullptr;
  if (next.reason) reason_value = static_cast<std::int64_t>(*next.reason);
  if (next.revoked_at) revoked_value = ToUnix(*next.revoked_at);
  FLEETID_TRY(changed, tx.Exec("UPDATE certificates SET status = ?, reason = ?, revoked_at = ? "
                               "WHERE serial = ? AND status = ?",
                               {std::string(StatusName(next.status)), reason_value, revoked_value,
                                std::string(serial), std::string(StatusName(current.status))}));
  if (changed != 1) {
    return MakeError(ErrorCode::kConflict, "certificate {} changed concurrently", serial);
  }
  // Other processes and nodes serving OCSP for this database pick the change up from here.
  FLEETID_CHECK_OK(tx.Exec("INSERT INTO certificate_changes (serial, changed_at) VALUES (?, ?)",
                           {std::string(serial), ToUnix(now)}));
  if (reason == Reason::kKeyCompromise || reason == Reason::kCaCompromise) {
    FLEETID_TRY(cert, ParseCert(current.der));
    unsigned char* der = nullptr;
    const int len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert.get()), &der);
    const crypto::OpenSslBytesPtr owner(der);
    if (len <= 0) return MakeError(Ossl("the certificate's public key"));
    FLEETID_TRY(fingerprint, crypto::KeyFingerprint({der, static_cast<std::size_t>(len)}));
    FLEETID_CHECK_OK(tx.Exec(
        "INSERT INTO compromised_keys (spki_sha256, serial, reason, "
        "recorded_at) VALUES (?, ?, ?, ?) ON CONFLICT (spki_sha256) DO NOTHING",
        {fingerprint, std::string(serial), static_cast<std::int64_t>(*reason), ToUnix(now)}));
  }
  auto state = [](const CertificateRecord& r) {
    nlohmann::json out{{"status", StatusName(r.status)}};
    if (r.reason) out["reason"] = ReasonName(*r.reason);
    return out;
  };
  FLEETID_TRY(seq, audit::Log::Append(tx,
                                      {std::string(actor), reason ? "pki.revoke" : "pki.release",
                                       std::string(serial), state(current), state(next),
                                       reason ? std::string(ReasonName(*reason)) : "", "", ""},
                                      clock_));
  static_cast<void>(seq);
  return next;
}

void Authority::Publish(const CertificateRecord& changed) {
  crl_cache_->MarkDirty(changed.issuer, changed.partition);
  RefreshOcsp(changed);
}

// ---------------------------------------------------------------------------------------------
// OCSP (RFC 6960)

namespace {

std::vector<std::uint8_t> ResponseDer(OCSP_RESPONSE* response) {
  const int len = i2d_OCSP_RESPONSE(response, nullptr);
  std::vector<std::uint8_t> der(static_cast<std::size_t>(std::max(len, 0)));
  unsigned char* p = der.data();
  i2d_OCSP_RESPONSE(response, &p);
  return der;
}

OcspAnswer ErrorAnswer(int status) {
  OcspResponsePtr response(OCSP_response_create(status, nullptr));
  OcspAnswer answer;
  answer.der = ResponseDer(response.get());
  return answer;
}

bool Equal(const ASN1_OCTET_STRING* s, const std::vector<std::uint8_t>& v) {
  return s != nullptr && static_cast<std::size_t>(ASN1_STRING_length(s)) == v.size() &&
         std::equal(v.begin(), v.end(), ASN1_STRING_get0_data(s));
}

}  // namespace

void Authority::RefreshOcsp(const CertificateRecord& record) {
  // Replace the pre-signed answers for this serial (SHA-1 and SHA-256 CertIDs) before the caller
  // returns, so no stale "good" is ever served after a revocation.
  Ca* ca = nullptr;
  for (std::size_t i = 1; i < cas_.size(); ++i) {
    if (cas_[i]->name == record.issuer) ca = cas_[i].get();
  }
  if (ca == nullptr) return;
  const unsigned char* p = record.der.data();
  X509Ptr cert(d2i_X509(nullptr, &p, static_cast<long>(record.der.size())));
  if (!cert) return;
  for (const EVP_MD* md : {EVP_sha1(), EVP_sha256()}) {
    OcspCertIdPtr id(OCSP_cert_to_id(md, cert.get(), ca->cert.get()));
    OcspRequestPtr req(OCSP_REQUEST_new());
    if (!id || !req || OCSP_request_add0_id(req.get(), id.get()) == nullptr) continue;
    static_cast<void>(id.release());  // owned by |req|
    const int len = i2d_OCSP_REQUEST(req.get(), nullptr);
    std::vector<std::uint8_t> der(static_cast<std::size_t>(std::max(len, 0)));
    unsigned char* out = der.data();
    i2d_OCSP_REQUEST(req.get(), &out);
    {
      std::unique_lock lock(ocsp_cache_->mu);
      ocsp_cache_->answers.erase({ca->name, EVP_MD_get_type(md), CacheSerialOfHex(record.serial)});
    }
    static_cast<void>(Ocsp(der));  // signs and caches
  }
}

void Authority::SyncChanges() {
  const auto now = std::chrono::steady_clock::now().time_since_epoch().count();
  auto last = last_sync_.load(std::memory_order_relaxed);
  if (now - last <
          std::chrono::duration_cast<std::chrono::steady_clock::duration>(kChangePollInterval)
              .count() ||
      !last_sync_.compare_exchange_strong(last, now)) {
    return;
  }
  auto tx = db_.Begin(TxMode::kAutocommit);
  if (!tx) return;
  auto rows = (*tx)->Query(
      "SELECT c.id, c.serial, r.issuer, r.partition_id FROM certificate_changes c "
      "JOIN certificates r ON r.serial = c.serial WHERE c.id > ? ORDER BY c.id",
      {change_cursor_.load()});
  if (!rows) return;
  for (const store::Row& r : *rows) {
    {
      std::unique_lock lock(ocsp_cache_->mu);
      const std::string key = CacheSerialOfHex(r.Text(1));
      for (int nid : {NID_sha1, NID_sha256}) ocsp_cache_->answers.erase({r.Text(2), nid, key});
    }
    crl_cache_->MarkDirty(r.Text(2), r.Int(3));
    change_cursor_.store(std::max(change_cursor_.load(), r.Int(0)));
  }
}

namespace {

// RFC 5280 §4.1.2.2: certificate users must handle serials of up to 20 octets; no conforming
// CA issues a longer one.
constexpr int kMaxSerialOctets = 20;
// RFC 8954 §2.1: Nonce ::= OCTET STRING(SIZE(1..32)).
constexpr int kMaxNonceOctets = 32;

// NonceLength is the length of a nonce extension's value: the content of the OCTET STRING that
// RFC 8954 puts in extnValue, or the raw extnValue of clients that send the bytes bare.
int NonceLength(const X509_EXTENSION* ext) {
  const ASN1_OCTET_STRING* value = X509_EXTENSION_get_data(const_cast<X509_EXTENSION*>(ext));
  const unsigned char* p = ASN1_STRING_get0_data(value);
  const long len = ASN1_STRING_length(value);
  crypto::Asn1OctetStringPtr inner(d2i_ASN1_OCTET_STRING(nullptr, &p, len));
  if (inner && p == ASN1_STRING_get0_data(value) + len) return ASN1_STRING_length(inner.get());
  ERR_clear_error();
  return static_cast<int>(len);
}

// RequestExtensionsOk applies RFC 6960 §4.4 to the request's extensions (|top|) or a single
// request's: a nonce is understood (top level only, 1 to 32 octets), any other extension is
// ignored unless it is critical.
template <typename GetCount, typename GetExt>
bool RequestExtensionsOk(GetCount count, GetExt get, bool top) {
  for (int i = 0; i < count(); ++i) {
    const X509_EXTENSION* ext = get(i);
    if (ext == nullptr) return false;
    const int nid = OBJ_obj2nid(X509_EXTENSION_get_object(const_cast<X509_EXTENSION*>(ext)));
    if (top && nid == NID_id_pkix_OCSP_Nonce) {
      const int len = NonceLength(ext);
      if (len < 1 || len > kMaxNonceOctets) return false;
      continue;
    }
    if (X509_EXTENSION_get_critical(ext) != 0) return false;
  }
  return true;
}

}  // namespace

std::uint64_t Authority::OcspSignatures() const {
  return ocsp_cache_->signatures.load(std::memory_order_relaxed);
}

std::size_t Authority::OcspCacheSize() const {
  std::shared_lock lock(ocsp_cache_->mu);
  return ocsp_cache_->answers.size();
}

OcspAnswer Authority::Ocsp(std::span<const std::uint8_t> request_der) {
  SyncChanges();
  const unsigned char* p = request_der.data();
  OcspRequestPtr req(d2i_OCSP_REQUEST(nullptr, &p, static_cast<long>(request_der.size())));
  if (!req || p != request_der.data() + request_der.size()) {
    ERR_clear_error();
    return ErrorAnswer(OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
  }
  const int count = OCSP_request_onereq_count(req.get());
  if (count <= 0 || count > kMaxOcspCertIds) {
    return ErrorAnswer(OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
  }
  if (!RequestExtensionsOk([&] { return OCSP_REQUEST_get_ext_count(req.get()); },
                           [&](int i) { return OCSP_REQUEST_get_ext(req.get(), i); }, true)) {
    return ErrorAnswer(OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
  }
  bool has_nonce = OCSP_REQUEST_get_ext_by_NID(req.get(), NID_id_pkix_OCSP_Nonce, -1) >= 0;

  struct One {
    OCSP_CERTID* id;
    int md_nid;
    std::string serial;     // lower-case hex of a positive serial, empty for 0 and negatives
    std::string cache_key;  // CacheSerial
  };
  std::vector<One> ones;
  Ca* ca = nullptr;
  for (int i = 0; i < count; ++i) {
    OCSP_ONEREQ* one = OCSP_request_onereq_get0(req.get(), i);
    OCSP_CERTID* id = OCSP_onereq_get0_id(one);
    ASN1_OCTET_STRING* name_hash = nullptr;
    ASN1_OCTET_STRING* key_hash = nullptr;
    ASN1_OBJECT* md = nullptr;
    ASN1_INTEGER* serial = nullptr;
    if (id == nullptr || OCSP_id_get0_info(&name_hash, &md, &key_hash, &serial, id) != 1 ||
        serial == nullptr || ASN1_STRING_length(serial) > kMaxSerialOctets ||
        !RequestExtensionsOk([&] { return OCSP_ONEREQ_get_ext_count(one); },
                             [&](int e) { return OCSP_ONEREQ_get_ext(one, e); }, false)) {
      return ErrorAnswer(OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
    }
    const int nid = OBJ_obj2nid(md);
    Ca* match = nullptr;
    for (std::size_t c = 1; c < cas_.size(); ++c) {
      Ca& cand = *cas_[c];
      if ((nid == NID_sha1 && Equal(name_hash, cand.name_sha1) && Equal(key_hash, cand.key_sha1)) ||
          (nid == NID_sha256 && Equal(name_hash, cand.name_sha256) &&
           Equal(key_hash, cand.key_sha256))) {
        match = &cand;
      }
    }
    // One response has one signer: every CertID must name the same issuing CA we run.
    if (match == nullptr || (ca != nullptr && match != ca)) {
      return ErrorAnswer(OCSP_RESPONSE_STATUS_UNAUTHORIZED);
    }
    ca = match;
    ones.push_back({id, nid, SerialHex(serial), CacheSerial(serial)});
  }

  const TimePoint now = clock_.Now();
  // Every answer the cache cannot hold costs a database read and a token signature: charged to
  // the fresh budget, past which a nonced request is answered from the cache without its nonce.
  if ((has_nonce || ones.size() > 1) &&
      !ocsp_cache_->fresh.Take(now, options_.ocsp_fresh_per_second)) {
    if (ones.size() > 1) return ErrorAnswer(OCSP_RESPONSE_STATUS_UNAUTHORIZED);
    has_nonce = false;
  }
  if (!has_nonce && ones.size() == 1) {
    std::shared_lock lock(ocsp_cache_->mu);
    auto it = ocsp_cache_->answers.find({ca->name, ones[0].md_nid, ones[0].cache_key});
    // RFC 5019 §6: refresh once half of the validity has passed.
    if (it != ocsp_cache_->answers.end() &&
        now < it->second.this_update + options_.ocsp_validity / 2) {
      return it->second;
    }
  }

  OcspBasicRespPtr basic(OCSP_BASICRESP_new());
  const TimePoint this_update = std::chrono::floor<std::chrono::seconds>(now);
  const TimePoint next_update = this_update + options_.ocsp_validity;
  Asn1TimePtr this_time(ASN1_TIME_set(nullptr, static_cast<time_t>(ToUnix(this_update))));
  Asn1TimePtr next_time(ASN1_TIME_set(nullptr, static_cast<time_t>(ToUnix(next_update))));
  bool never_issued = false;
  for (const One& one : ones) {
    int status = V_OCSP_CERTSTATUS_UNKNOWN;
    int reason = -1;
    Asn1TimePtr revoked_time;
    if (!one.serial.empty()) {
      auto record = Get(one.serial);
      if (record && record->issuer == ca->name) {
        if (record->status == Status::kGood) {
          status = V_OCSP_CERTSTATUS_GOOD;
        } else {
          status = V_OCSP_CERTSTATUS_REVOKED;
          reason = static_cast<int>(record->reason.value_or(Reason::kUnspecified));
          revoked_time.reset(ASN1_TIME_set(
              nullptr, static_cast<time_t>(ToUnix(record->revoked_at.value_or(this_update)))));
        }
      } else if (!record && record.error().code() != ErrorCode::kNotFound) {
        return ErrorAnswer(OCSP_RESPONSE_STATUS_TRYLATER);
      }
    }
    never_issued = never_issued || status == V_OCSP_CERTSTATUS_UNKNOWN;
    if (OCSP_basic_add1_status(basic.get(), one.id, status, reason, revoked_time.get(),
                               this_time.get(), next_time.get()) == nullptr) {
      ERR_clear_error();
      return ErrorAnswer(OCSP_RESPONSE_STATUS_INTERNALERROR);
    }
  }
  // A stream of made-up serials must not buy a token signature each: past the budget it gets
  // RFC 5019 §2.2.3's unsigned unauthorized (tryLater would invite retries).
  if (never_issued && !ocsp_cache_->unknown.Take(now, options_.ocsp_unknown_per_second)) {
    return ErrorAnswer(OCSP_RESPONSE_STATUS_UNAUTHORIZED);
  }
  if (has_nonce && OCSP_copy_nonce(basic.get(), req.get()) <= 0) {
    ERR_clear_error();
    return ErrorAnswer(OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
  }
  if (OCSP_basic_sign(basic.get(), ca->ocsp_cert.get(), ca->ocsp_key.get(), ca->md, nullptr,
                      OCSP_RESPID_KEY) != 1) {
    ERR_clear_error();
    return ErrorAnswer(OCSP_RESPONSE_STATUS_TRYLATER);
  }
  ocsp_cache_->signatures.fetch_add(1, std::memory_order_relaxed);
  OcspResponsePtr response(OCSP_response_create(OCSP_RESPONSE_STATUS_SUCCESSFUL, basic.get()));
  OcspAnswer answer;
  answer.der = ResponseDer(response.get());
  answer.etag = EntityTag(answer.der);
  // Answers about issued serials are cached; "unknown" ones never are, so made-up serials
  // cannot grow the cache.
  answer.cacheable = !has_nonce && ones.size() == 1 && !never_issued;
  answer.this_update = this_update;
  answer.next_update = next_update;
  if (answer.cacheable) {
    std::unique_lock lock(ocsp_cache_->mu);
    ocsp_cache_->answers[{ca->name, ones[0].md_nid, ones[0].cache_key}] = answer;
  }
  return answer;
}

// ---------------------------------------------------------------------------------------------
// CRLs (RFC 5280 §5)

namespace {

// RevokedList encodes a CRL's revokedCertificates as rows stream in: each entry is set on a
// reusable X509_REVOKED (one per reason) and DER-encoded by OpenSSL straight into one buffer. A
// CRL of a million entries is then about 45 MB of DER rather than a million OpenSSL objects
// (over 500 MB, and seconds to encode twice and free). Entries are unsorted: RFC 5280 asks for
// no order, and readers index the list themselves.
class RevokedList {
 public:
  Result<void> Add(std::string_view serial_hex, std::int64_t revoked_at, Reason reason) {
    std::uint8_t bytes[kMaxSerial];
    if (serial_hex.empty() || serial_hex.size() / 2 > kMaxSerial ||
        !crypto::Unhex(serial_hex, std::span(bytes, serial_hex.size() / 2))) {
      return MakeError(ErrorCode::kInternal, "stored serial '{}' is not hex", serial_hex);
    }
    // An INTEGER's content is minimal: no leading zero bytes (the sign is in the type).
    std::size_t skip = 0;
    while (skip + 1 < serial_hex.size() / 2 && bytes[skip] == 0) ++skip;
    FLEETID_TRY(entry, Template(reason));
    if (ASN1_STRING_set(serial_.get(), bytes + skip,
                        static_cast<int>(serial_hex.size() / 2 - skip)) != 1 ||
        X509_REVOKED_set_serialNumber(entry, serial_.get()) != 1 ||
        ASN1_TIME_set(time_.get(), static_cast<time_t>(revoked_at)) == nullptr ||
        X509_REVOKED_set_revocationDate(entry, time_.get()) != 1) {
      return MakeError(Ossl("CRL entry"));
    }
    // An entry is at most a 64-byte serial, a GeneralizedTime, one reasonCode and headers.
    const std::size_t at = der_.size();
    der_.resize(at + kMaxEntry);
    unsigned char* out = der_.data() + at;
    const int len = i2d_X509_REVOKED(entry, &out);
    if (len <= 0 || static_cast<std::size_t>(len) > kMaxEntry) {
      return MakeError(Ossl("encoding a CRL entry"));
    }
    der_.resize(at + static_cast<std::size_t>(len));
    ++count_;
    return {};
  }

  const std::vector<std::uint8_t>& der() const { return der_; }
  std::size_t count() const { return count_; }

 private:
  static constexpr std::size_t kMaxSerial = 64;
  static constexpr std::size_t kMaxEntry = 192;

  // Template returns the reusable entry for |reason|: RFC 5280 §5.3.1 leaves the reasonCode out
  // rather than saying unspecified.
  Result<X509_REVOKED*> Template(Reason reason) {
    const auto i = static_cast<std::size_t>(reason);
    if (i >= templates_.size()) return MakeError(ErrorCode::kInternal, "bad reason {}", i);
    if (!templates_[i]) {
      X509RevokedPtr entry(X509_REVOKED_new());
      crypto::Asn1EnumeratedPtr value(ASN1_ENUMERATED_new());
      if (!entry || !value || ASN1_ENUMERATED_set(value.get(), static_cast<long>(reason)) != 1 ||
          (reason != Reason::kUnspecified &&
           X509_REVOKED_add1_ext_i2d(entry.get(), NID_crl_reason, value.get(), 0, 0) != 1)) {
        return MakeError(Ossl("CRL reason"));
      }
      templates_[i] = std::move(entry);
    }
    return templates_[i].get();
  }

  crypto::Asn1IntegerPtr serial_{ASN1_INTEGER_new()};
  Asn1TimePtr time_{ASN1_TIME_new()};
  std::array<X509RevokedPtr, 11> templates_;
  std::vector<std::uint8_t> der_;
  std::size_t count_ = 0;
};

std::unexpected<Error> BadTbs() {
  return MakeError(ErrorCode::kInternal, "unexpected TBSCertList encoding");
}

// SignWithEntries returns the DER CertificateList of |shell| (a CRL with every field and
// extension set but no entries, signed once so OpenSSL has filled in its signature algorithm)
// with |revoked| (DER RevokedCertificate elements) as its revokedCertificates, signed anew with
// |key|. Every header is read and written by OpenSSL's ASN1_get_object / ASN1_put_object; the
// only thing decided here is where the list goes: after nextUpdate, before the [0] extensions.
Result<std::vector<std::uint8_t>> SignWithEntries(X509_CRL* shell, const RevokedList& revoked,
                                                  EVP_PKEY* key, const EVP_MD* md) {
  unsigned char* tbs_raw = nullptr;
  const int tbs_len = i2d_re_X509_CRL_tbs(shell, &tbs_raw);
  if (tbs_len <= 0) return MakeError(Ossl("encoding TBSCertList"));
  const crypto::OpenSslBytesPtr tbs_owner(tbs_raw);

  const unsigned char* p = tbs_raw;
  long content_len = 0;
  int tag = 0;
  int xclass = 0;
  int r = ASN1_get_object(&p, &content_len, &tag, &xclass, tbs_len);
  if ((r & 0x80) != 0 || (r & V_ASN1_CONSTRUCTED) == 0 || tag != V_ASN1_SEQUENCE) return BadTbs();
  const unsigned char* content = p;
  const unsigned char* end = p + content_len;
  if (end != tbs_raw + tbs_len) return BadTbs();
  const unsigned char* insert_at = end;
  while (p < end) {
    const unsigned char* element = p;
    long len = 0;
    r = ASN1_get_object(&p, &len, &tag, &xclass, end - p);
    if ((r & 0x80) != 0) return BadTbs();
    if (xclass == V_ASN1_CONTEXT_SPECIFIC && tag == 0) {
      insert_at = element;
      break;
    }
    p += len;
  }
  const std::vector<std::uint8_t>& entries = revoked.der();
  const std::size_t list_size = entries.empty()
                                    ? 0
                                    : static_cast<std::size_t>(ASN1_object_size(
                                          1, static_cast<int>(entries.size()), V_ASN1_SEQUENCE));
  const std::size_t new_content = static_cast<std::size_t>(content_len) + list_size;
  if (new_content > static_cast<std::size_t>(std::numeric_limits<int>::max() / 2)) {
    return MakeError(ErrorCode::kInvalidArgument, "CRL too large");
  }
  std::vector<std::uint8_t> tbs(static_cast<std::size_t>(
      ASN1_object_size(1, static_cast<int>(new_content), V_ASN1_SEQUENCE)));
  unsigned char* out = tbs.data();
  ASN1_put_object(&out, 1, static_cast<int>(new_content), V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL);
  out = std::copy(content, insert_at, out);
  if (!entries.empty()) {
    ASN1_put_object(&out, 1, static_cast<int>(entries.size()), V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL);
    out = std::copy(entries.begin(), entries.end(), out);
  }
  out = std::copy(insert_at, end, out);
  if (out != tbs.data() + tbs.size()) return BadTbs();

  // Sign the TBSCertList the way X509_CRL_sign did for the shell (same key, same digest), so
  // the signature algorithm it wrote stays true.
  crypto::EvpMdCtxPtr ctx(EVP_MD_CTX_new());
  std::size_t sig_len = 0;
  if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, md, nullptr, key) != 1 ||
      EVP_DigestSign(ctx.get(), nullptr, &sig_len, tbs.data(), tbs.size()) != 1) {
    return MakeError(crypto::OpenSslError(ErrorCode::kUnavailable, "signing the CRL in the token"));
  }
  std::vector<std::uint8_t> sig(sig_len);
  if (EVP_DigestSign(ctx.get(), sig.data(), &sig_len, tbs.data(), tbs.size()) != 1) {
    return MakeError(crypto::OpenSslError(ErrorCode::kUnavailable, "signing the CRL in the token"));
  }
  sig.resize(sig_len);

  const ASN1_BIT_STRING* shell_sig = nullptr;
  const X509_ALGOR* algorithm = nullptr;
  X509_CRL_get0_signature(shell, &shell_sig, &algorithm);
  crypto::Asn1BitStringPtr bits(ASN1_BIT_STRING_new());
  if (!bits || ASN1_BIT_STRING_set(bits.get(), sig.data(), static_cast<int>(sig.size())) != 1) {
    return MakeError(Ossl("CRL signature"));
  }
  bits->flags = (bits->flags & ~0x07L) | ASN1_STRING_FLAG_BITS_LEFT;  // whole bytes: no unused bits
  const int alg_len = i2d_X509_ALGOR(algorithm, nullptr);
  const int bits_len = i2d_ASN1_BIT_STRING(bits.get(), nullptr);
  if (alg_len <= 0 || bits_len <= 0) return MakeError(Ossl("CRL signature"));
  const int body = static_cast<int>(tbs.size()) + alg_len + bits_len;
  std::vector<std::uint8_t> der(
      static_cast<std::size_t>(ASN1_object_size(1, body, V_ASN1_SEQUENCE)));
  out = der.data();
  ASN1_put_object(&out, 1, body, V_ASN1_SEQUENCE, V_ASN1_UNIVERSAL);
  out = std::copy(tbs.begin(), tbs.end(), out);
  i2d_X509_ALGOR(algorithm, &out);
  i2d_ASN1_BIT_STRING(bits.get(), &out);
  if (out != der.data() + der.size()) return MakeError(ErrorCode::kInternal, "CRL length");
  return der;
}

Result<void> AddCrlExtension(X509_CRL* crl, Result<X509ExtensionPtr> ext) {
  if (!ext) return MakeError(ext.error());
  if (X509_CRL_add_ext(crl, ext->get(), -1) != 1) return MakeError(Ossl("CRL extension"));
  return {};
}

Result<void> AddCrlInteger(X509_CRL* crl, int nid, std::int64_t value, bool critical) {
  crypto::Asn1IntegerPtr n(ASN1_INTEGER_new());
  if (!n || ASN1_INTEGER_set_int64(n.get(), value) != 1 ||
      X509_CRL_add1_ext_i2d(crl, nid, n.get(), critical ? 1 : 0, 0) != 1) {
    return MakeError(Ossl(fmt::format("CRL extension {}", OBJ_nid2sn(nid))));
  }
  return {};
}

}  // namespace

Result<CrlAnswer> Authority::Crl(std::string_view issuer, std::int64_t partition, bool delta) {
  Ca* ca = nullptr;
  for (const auto& c : cas_) {
    if (c->name == issuer) ca = c.get();
  }
  if (ca == nullptr) return MakeError(ErrorCode::kNotFound, "no CA named '{}'", issuer);
  if (ca == cas_.front().get() && (partition != 0 || delta)) {
    return MakeError(ErrorCode::kNotFound, "the root CA publishes one full CRL, partition 0");
  }
  if (ca != cas_.front().get()) {
    // Only partitions that can hold unexpired certificates: a CRL is built (and numbered) for
    // each one asked for, so the range bounds what a stranger can make the authority do.
    if (!PartitionLive(partition, clock_.Now())) {
      return MakeError(ErrorCode::kNotFound, "no CRL partition {} of {} is current", partition,
                       issuer);
    }
  }
  SyncChanges();
  std::lock_guard lock(crl_cache_->mu);
  return CrlLocked(*ca, partition, delta);
}

std::size_t Authority::CrlCacheSize() const {
  std::lock_guard lock(crl_cache_->mu);
  return crl_cache_->crls.size();
}

void Authority::RefreshCrls() {
  SyncChanges();
  const TimePoint now = clock_.Now();
  // OCSP answers past their validity would be re-signed at the next query anyway; dropping them
  // (at most once a minute) keeps the cache to the serials asked for lately.
  const std::int64_t minute = ToUnix(now) / 60;
  if (std::int64_t last = last_prune_.load();
      minute != last && last_prune_.compare_exchange_strong(last, minute)) {
    std::unique_lock lock(ocsp_cache_->mu);
    std::erase_if(ocsp_cache_->answers, [&](const auto& entry) {
      return entry.second.this_update + options_.ocsp_validity <= now;
    });
  }
  for (std::size_t i = 1; i < cas_.size(); ++i) {
    std::lock_guard lock(cas_[i]->cdp_mu);
    std::erase_if(cas_[i]->cdp_by_partition,
                  [&](const auto& entry) { return !PartitionLive(entry.first, now); });
  }
  std::lock_guard lock(crl_cache_->mu);
  // A partition whose certificates have all expired has nothing left to say.
  std::erase_if(crl_cache_->crls, [&](const auto& entry) {
    return std::get<0>(entry.first) != cas_.front()->name &&
           !PartitionLive(std::get<1>(entry.first), now);
  });
  std::vector<std::tuple<std::string, std::int64_t, bool>> keys;
  for (const auto& [key, entry] : crl_cache_->crls) keys.push_back(key);
  for (const auto& [issuer, partition, delta] : keys) {
    for (const auto& c : cas_) {
      if (c->name != issuer) continue;
      if (auto built = CrlLocked(*c, partition, delta); !built) {
        log::Warn("pki: refreshing a CRL failed", {{"issuer", issuer},
                                                   {"partition", std::to_string(partition)},
                                                   {"error", built.error().ToString()}});
      }
    }
  }
}

Result<CrlAnswer> Authority::CrlLocked(Ca& ca, std::int64_t partition, bool delta) {
  const TimePoint now = clock_.Now();
  auto& cache = crl_cache_->crls;
  const auto key = std::make_tuple(ca.name, partition, delta);
  if (auto it = cache.find(key); it != cache.end()) {
    const CrlAnswer& cached = it->second.answer;
    // RFC 5019-style freshness: rebuilt once half the validity has passed, and after a status
    // change in its scope; a full CRL coalesces changes for crl_min_interval (deltas carry
    // them meanwhile), a delta is rebuilt at the next fetch.
    const bool half_life = now >= cached.this_update + options_.crl_validity / 2;
    // The root's CRL carries CA revocations: rare, urgent, and without a delta to carry them.
    const bool coalescing =
        !delta && &ca != cas_.front().get() && now < cached.this_update + options_.crl_min_interval;
    if (!half_life && (!it->second.dirty || coalescing)) return cached;
  }
  // A delta lists the changes since the full CRL this process serves, and names it by number.
  const CrlEntry* base = nullptr;
  if (delta) {
    FLEETID_TRY(full, CrlLocked(ca, partition, false));
    static_cast<void>(full);
    base = &cache.at({ca.name, partition, false});
  }
  std::int64_t cursor = 0;
  FLEETID_TRY(answer, BuildCrl(ca, partition, base, now, cursor));
  CrlEntry& slot = cache[key];
  slot = {std::move(answer), cursor, false};
  if (!delta) {
    // A new base: the delta must be rebuilt against it.
    if (auto it = cache.find({ca.name, partition, true}); it != cache.end())
      it->second.dirty = true;
  }
  return slot.answer;
}

Result<CrlAnswer> Authority::BuildCrl(Ca& ca, std::int64_t partition, const CrlEntry* base,
                                      TimePoint now, std::int64_t& cursor) {
  const bool root = &ca == cas_.front().get();
  const bool delta = base != nullptr;
  X509CrlPtr crl(X509_CRL_new());
  const TimePoint this_update = std::chrono::floor<std::chrono::seconds>(now);
  const TimePoint next_update = this_update + options_.crl_validity;
  Asn1TimePtr last(ASN1_TIME_set(nullptr, static_cast<time_t>(ToUnix(this_update))));
  Asn1TimePtr next(ASN1_TIME_set(nullptr, static_cast<time_t>(ToUnix(next_update))));
  if (!crl || !last || !next || X509_CRL_set_version(crl.get(), X509_CRL_VERSION_2) != 1 ||
      X509_CRL_set_issuer_name(crl.get(), X509_get_subject_name(ca.cert.get())) != 1 ||
      X509_CRL_set1_lastUpdate(crl.get(), last.get()) != 1 ||
      X509_CRL_set1_nextUpdate(crl.get(), next.get()) != 1) {
    return MakeError(Ossl("building CRL"));
  }
  RevokedList entries;
  const std::string issuer = ca.name;

  // Read what the CRL lists. The change cursor is read before the rows: a change committed in
  // between is then both in this CRL and in the next delta, never in neither. The root's one
  // CRL (partition 0) lists its revoked issuing CAs.
  {
    FLEETID_TRY(tx, db_.Begin(TxMode::kRead));
    FLEETID_TRY(max, tx->Query("SELECT COALESCE(MAX(id), 0) FROM certificate_changes"));
    cursor = max.front().Int(0);
    if (!delta) {
      // An issuing CA's partition lists its revoked and held certificates that have not expired.
      FLEETID_CHECK_OK(
          tx->QueryEach("SELECT serial, reason, revoked_at FROM certificates WHERE issuer = ? AND "
                        "partition_id = ? AND status != 'good' AND not_after > ?",
                        {issuer, partition, ToUnix(now)}, [&](const store::Row& r) {
                          return entries.Add(r.Text(0), r.Int(2), static_cast<Reason>(r.Int(1)));
                        }));
    } else {
      // Every certificate of the scope whose status changed since the base: listed as it is
      // now, and a released hold as removeFromCRL (RFC 5280 §5.3.1).
      FLEETID_CHECK_OK(tx->QueryEach(
          "SELECT r.serial, r.status, r.reason, r.revoked_at, MAX(c.changed_at) FROM "
          "certificate_changes c JOIN certificates r ON r.serial = c.serial WHERE c.id > ? AND "
          "r.issuer = ? AND r.partition_id = ? GROUP BY r.serial, r.status, r.reason, r.revoked_at",
          {base->cursor, issuer, partition}, [&](const store::Row& r) {
            if (r.Text(1) == "good") {
              return entries.Add(r.Text(0), r.IsNull(4) ? ToUnix(this_update) : r.Int(4),
                                 Reason::kRemoveFromCrl);
            }
            return entries.Add(r.Text(0), r.Int(3), static_cast<Reason>(r.Int(2)));
          }));
    }
  }

  // Number it: full and delta CRLs of one scope share one increasing sequence (§5.2.3).
  std::int64_t number = 1;
  {
    FLEETID_TRY(tx, db_.Begin(TxMode::kWrite));
    FLEETID_TRY(num, tx->Query("SELECT number FROM crl_numbers WHERE issuer = ? AND "
                               "partition_id = ?",
                               {issuer, partition}));
    if (num.empty()) {
      FLEETID_CHECK_OK(
          tx->Exec("INSERT INTO crl_numbers (issuer, partition_id, number) "
                   "VALUES (?, ?, 1)",
                   {issuer, partition}));
    } else {
      number = num.front().Int(0) + 1;
      FLEETID_CHECK_OK(
          tx->Exec("UPDATE crl_numbers SET number = ? WHERE issuer = ? AND "
                   "partition_id = ?",
                   {number, issuer, partition}));
    }
    FLEETID_CHECK_OK(tx->Commit());
  }

  // Extensions (§5.2): the CA's key identifier, the number, and the issuing distribution point
  // naming this partition, so a CRL of one partition is never taken for another's.
  FLEETID_CHECK_OK(AddCrlExtension(crl.get(), [&]() -> Result<X509ExtensionPtr> {
    X509ExtensionPtr aki(X509_EXTENSION_dup(ca.authority_key_id.get()));
    if (!aki) return MakeError(Ossl("authorityKeyIdentifier"));
    return aki;
  }()));
  FLEETID_CHECK_OK(AddCrlInteger(crl.get(), NID_crl_number, number, false));
  // The root's one CRL names no distribution point: there is no other partition to confuse it
  // with, and the self-signed root (which has no CDP) is then within its scope, so
  // `openssl verify -crl_check_all` can check a whole chain.
  FLEETID_CHECK_OK(AddCrlExtension(
      crl.get(), ConfExtension(NID_issuing_distribution_point,
                               root ? std::string("critical,onlyCA:TRUE")
                                    : fmt::format("critical,fullname:URI:{},onlyuser:TRUE",
                                                  CrlUrl(issuer, partition, false)))));
  if (delta) {
    FLEETID_CHECK_OK(AddCrlInteger(crl.get(), NID_delta_crl, base->answer.number, true));
  } else if (!root) {
    FLEETID_CHECK_OK(AddCrlExtension(
        crl.get(), ConfExtension(NID_freshest_crl, "URI:" + CrlUrl(issuer, partition, true))));
  }
  if (X509_CRL_sign(crl.get(), ca.key.get(), ca.md) <= 0) {
    return MakeError(crypto::OpenSslError(ErrorCode::kUnavailable, "signing the CRL in the token"));
  }
  FLEETID_TRY(der, SignWithEntries(crl.get(), entries, ca.key.get(), ca.md));
  CrlAnswer answer;
  answer.der = std::move(der);
  answer.etag = EntityTag(answer.der);
  answer.this_update = this_update;
  answer.next_update = next_update;
  answer.number = number;
  answer.entries = entries.count();
  return answer;
}

}  // namespace fleetid::pki
