// OCSP answers (RFC 6960 §4.2, RFC 5019).
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/ocsp.h>
#include <openssl/x509.h>

#include <algorithm>
#include <utility>

#include "pki/internal/cert_store.h"
#include "pki/internal/ocsp_responder.h"
#include "pki/internal/util.h"

namespace fleetid::pki::internal {
namespace {

using crypto::Asn1TimePtr;

std::vector<std::uint8_t> ResponseDer(OCSP_RESPONSE* response) {
  const int len = i2d_OCSP_RESPONSE(response, nullptr);
  std::vector<std::uint8_t> der(static_cast<std::size_t>(std::max(len, 0)));
  unsigned char* p = der.data();
  i2d_OCSP_RESPONSE(response, &p);
  return der;
}

OcspAnswer ErrorAnswer(int status) {
  crypto::OcspResponsePtr response(OCSP_response_create(status, nullptr));
  OcspAnswer answer;
  answer.der = ResponseDer(response.get());
  return answer;
}

bool Equal(const ASN1_OCTET_STRING* s, const std::vector<std::uint8_t>& v) {
  return s != nullptr && static_cast<std::size_t>(ASN1_STRING_length(s)) == v.size() &&
         std::equal(v.begin(), v.end(), ASN1_STRING_get0_data(s));
}

bool Names(const OcspCertIdRequest& id, const Ca& ca) {
  return (id.md_nid == NID_sha1 && Equal(id.name_hash, ca.name_sha1) &&
          Equal(id.key_hash, ca.key_sha1)) ||
         (id.md_nid == NID_sha256 && Equal(id.name_hash, ca.name_sha256) &&
          Equal(id.key_hash, ca.key_sha256));
}

// Asn1Time is |t| as an ASN1_TIME; nullptr when it cannot be encoded.
Asn1TimePtr Asn1Time(TimePoint t) {
  auto time = crypto::UnixToAsn1Time(UnixSeconds(t));
  return time.has_value() ? std::move(*time) : nullptr;
}

}  // namespace

// Single is one SingleResponse to add: the CertID (owned by the request or by |owned_id|) and
// the certificate's status.
struct OcspResponder::Single {
  OCSP_CERTID* id = nullptr;
  crypto::OcspCertIdPtr owned_id{};
  int status = V_OCSP_CERTSTATUS_UNKNOWN;
  int reason = -1;
  Asn1TimePtr revoked_time{};
};

OcspResponder::OcspResponder(const Hierarchy& hierarchy, store::Database& db, Clock& clock,
                             const AuthorityOptions& options)
    : hierarchy_(hierarchy),
      db_(db),
      clock_(clock),
      options_(options),
      cache_(options.ocsp_cache_max_entries) {}

// MatchIssuer is the issuing CA every CertID of |parsed| names; nullptr when one names a CA
// fleetid does not run, or two name different CAs (one response has one signer).
Ca* OcspResponder::MatchIssuer(const ParsedOcspRequest& parsed) const {
  Ca* ca = nullptr;
  for (const OcspCertIdRequest& id : parsed.ids) {
    Ca* match = nullptr;
    for (const auto& cand : hierarchy_.Issuing()) {
      if (Names(id, *cand)) match = cand.get();
    }
    if (match == nullptr || (ca != nullptr && match != ca)) return nullptr;
    ca = match;
  }
  return ca;
}

// StatusOf reads the status of |id|'s serial; nullopt when the database cannot say (tryLater).
std::optional<OcspResponder::Single> OcspResponder::StatusOf(const OcspCertIdRequest& id,
                                                             const Ca& ca, TimePoint this_update,
                                                             bool& never_issued) {
  Single single{.id = id.id};
  if (const std::string serial = id.Serial(); !serial.empty()) {
    auto tx = db_.Begin(store::TxMode::kAutocommit);
    if (!tx) return std::nullopt;
    auto record = GetIn(**tx, serial);
    if (record && record->issuer == ca.name) {
      if (record->status == Status::kGood) {
        single.status = V_OCSP_CERTSTATUS_GOOD;
      } else {
        single.status = V_OCSP_CERTSTATUS_REVOKED;
        single.reason = static_cast<int>(record->reason.value_or(Reason::kUnspecified));
        single.revoked_time = Asn1Time(record->revoked_at.value_or(this_update));
      }
    } else if (!record && record.error().code() != ErrorCode::kNotFound) {
      return std::nullopt;
    }
  }
  never_issued = never_issued || single.status == V_OCSP_CERTSTATUS_UNKNOWN;
  return single;
}

OcspAnswer OcspResponder::Answer(std::span<const std::uint8_t> request_der) {
  const TimePoint now = clock_.Now();
  // RFC 5019 §6: refresh once half of the validity has passed.
  const std::chrono::seconds max_age = options_.ocsp_validity / 2;
  // A request already answered from the cache, byte for byte, gets the same answer unparsed.
  if (auto cached = cache_.FindRequest(request_der, now, max_age)) return *std::move(cached);
  auto parsed = ParseOcspRequest(request_der, Authority::kMaxOcspCertIds);
  if (!parsed) return ErrorAnswer(parsed.error());
  Ca* ca = MatchIssuer(*parsed);
  if (ca == nullptr) return ErrorAnswer(OCSP_RESPONSE_STATUS_UNAUTHORIZED);
  const std::vector<OcspCertIdRequest>& ids = parsed->ids;
  bool has_nonce = parsed->has_nonce;
  // Every answer the cache cannot hold costs a database read and a token signature: charged to
  // the fresh budget, past which a nonced request is answered from the cache without its nonce.
  if ((has_nonce || ids.size() > 1) && !fresh_.Take(now, options_.ocsp_fresh_per_second)) {
    if (ids.size() > 1) return ErrorAnswer(OCSP_RESPONSE_STATUS_UNAUTHORIZED);
    has_nonce = false;
  }
  const OcspAnswerCache::Key key{ca->name, ids[0].md_nid, ids[0].cache_key};
  // The cache remembers the bytes of a request with one CertID and no nonce (not those of one
  // whose nonce the budget dropped): the bytes alone then decide the answer.
  const std::span<const std::uint8_t> remember =
      !parsed->has_nonce && ids.size() == 1 ? request_der : std::span<const std::uint8_t>();
  if (!has_nonce && ids.size() == 1) {
    if (auto cached = cache_.Find(key, now, max_age, remember)) return *std::move(cached);
  }
  const TimePoint this_update = std::chrono::floor<std::chrono::seconds>(now);
  bool never_issued = false;
  std::vector<Single> singles;
  for (const OcspCertIdRequest& id : ids) {
    auto single = StatusOf(id, *ca, this_update, never_issued);
    if (!single) return ErrorAnswer(OCSP_RESPONSE_STATUS_TRYLATER);
    singles.push_back(std::move(*single));
  }
  // A stream of made-up serials must not buy a token signature each: past the budget it gets
  // RFC 5019 §2.2.3's unsigned unauthorized (tryLater would invite retries).
  if (never_issued && !unknown_.Take(now, options_.ocsp_unknown_per_second)) {
    return ErrorAnswer(OCSP_RESPONSE_STATUS_UNAUTHORIZED);
  }
  OcspAnswer answer = Sign(*ca, singles, has_nonce ? parsed->request.get() : nullptr, this_update);
  // Answers about issued serials are cached; "unknown" ones never are, so made-up serials
  // cannot grow the cache.
  answer.cacheable = answer.cacheable && !has_nonce && ids.size() == 1 && !never_issued;
  if (answer.cacheable) cache_.Put(key, answer, remember);
  return answer;
}

// Sign makes the successful answer of |ca|'s OCSP signer listing |singles|, with the nonce of
// |nonce_from| when not nullptr. Its |cacheable| says whether it was signed; an error answer
// otherwise.
OcspAnswer OcspResponder::Sign(const Ca& ca, std::span<const Single> singles,
                               OCSP_REQUEST* nonce_from, TimePoint this_update) {
  crypto::OcspBasicRespPtr basic(OCSP_BASICRESP_new());
  const TimePoint next_update = this_update + options_.ocsp_validity;
  Asn1TimePtr this_time = Asn1Time(this_update);
  Asn1TimePtr next_time = Asn1Time(next_update);
  for (const Single& single : singles) {
    if (!basic || OCSP_basic_add1_status(basic.get(), single.id, single.status, single.reason,
                                         single.revoked_time.get(), this_time.get(),
                                         next_time.get()) == nullptr) {
      ERR_clear_error();
      return ErrorAnswer(OCSP_RESPONSE_STATUS_INTERNALERROR);
    }
  }
  if (nonce_from != nullptr && OCSP_copy_nonce(basic.get(), nonce_from) <= 0) {
    ERR_clear_error();
    return ErrorAnswer(OCSP_RESPONSE_STATUS_MALFORMEDREQUEST);
  }
  if (OCSP_basic_sign(basic.get(), ca.ocsp_cert.get(), ca.ocsp_key.get(), ca.md, nullptr,
                      OCSP_RESPID_KEY) != 1) {
    ERR_clear_error();
    return ErrorAnswer(OCSP_RESPONSE_STATUS_TRYLATER);
  }
  signatures_.fetch_add(1, std::memory_order_relaxed);
  crypto::OcspResponsePtr response(
      OCSP_response_create(OCSP_RESPONSE_STATUS_SUCCESSFUL, basic.get()));
  OcspAnswer answer;
  answer.der = ResponseDer(response.get());
  answer.etag = EntityTag(answer.der);
  answer.cacheable = true;
  answer.this_update = this_update;
  answer.next_update = next_update;
  return answer;
}

void OcspResponder::Refresh(const CertificateRecord& changed) {
  Ca* ca = nullptr;
  for (const auto& cand : hierarchy_.Issuing()) {
    if (cand->name == changed.issuer) ca = cand.get();
  }
  if (ca == nullptr) return;
  const std::string cache_serial = CacheSerialOfHex(changed.serial);
  cache_.Forget(ca->name, cache_serial);
  // The CertID needs the serial and the issuer, not the certificate: decoding it (its public key
  // through OpenSSL 3's decoders) would cost more than the rest of the answer but its signature.
  BIGNUM* raw_serial = nullptr;
  if (BN_hex2bn(&raw_serial, changed.serial.c_str()) == 0) {
    ERR_clear_error();
    return;
  }
  const crypto::BignumPtr serial_bn(raw_serial);
  const crypto::Asn1IntegerPtr serial(BN_to_ASN1_INTEGER(serial_bn.get(), nullptr));
  if (!serial) {
    ERR_clear_error();
    return;
  }
  const TimePoint this_update = std::chrono::floor<std::chrono::seconds>(clock_.Now());
  for (const EVP_MD* md : {EVP_sha1(), EVP_sha256()}) {
    Single single{.owned_id = crypto::OcspCertIdPtr(
                      OCSP_cert_id_new(md, X509_get_subject_name(ca->cert.get()),
                                       X509_get0_pubkey_bitstr(ca->cert.get()), serial.get()))};
    if (!single.owned_id) continue;
    single.id = single.owned_id.get();
    if (changed.status == Status::kGood) {
      single.status = V_OCSP_CERTSTATUS_GOOD;
    } else {
      single.status = V_OCSP_CERTSTATUS_REVOKED;
      single.reason = static_cast<int>(changed.reason.value_or(Reason::kUnspecified));
      single.revoked_time = Asn1Time(changed.revoked_at.value_or(this_update));
    }
    OcspAnswer answer = Sign(*ca, std::span(&single, 1), nullptr, this_update);
    if (answer.cacheable) cache_.Put({ca->name, EVP_MD_get_type(md), cache_serial}, answer);
  }
}

void OcspResponder::Forget(const std::string& ca, const std::string& serial_hex) {
  cache_.Forget(ca, CacheSerialOfHex(serial_hex));
}

void OcspResponder::Prune(TimePoint now) {
  // Answers past their validity would be re-signed at the next query anyway; dropping them (at
  // most once a minute) keeps the cache to the serials asked for lately.
  const std::int64_t minute = UnixSeconds(now) / 60;
  if (std::int64_t last = last_prune_.load();
      minute != last && last_prune_.compare_exchange_strong(last, minute)) {
    cache_.Prune(now, options_.ocsp_validity);
  }
}

}  // namespace fleetid::pki::internal
