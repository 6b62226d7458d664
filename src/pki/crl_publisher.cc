#include <openssl/x509v3.h>

#include <algorithm>
#include <array>
#include <limits>
#include <utility>
#include <vector>

#include "common/log.h"
#include "crypto/crypto.h"
#include "pki/internal/cert_builder.h"
#include "pki/internal/cert_store.h"
#include "pki/internal/crl_publisher.h"
#include "pki/internal/util.h"

namespace fleetid::pki::internal {
namespace {

using crypto::Asn1TimePtr;
using crypto::X509CrlPtr;
using crypto::X509ExtensionPtr;
using crypto::X509RevokedPtr;
using store::TxMode;

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
        !crypto::SetAsn1Time(time_.get(), revoked_at).has_value() ||
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

// Stamp makes a CRL of |ca| without entries or extensions, valid from |this_update| to
// |next_update|.
Result<X509CrlPtr> Stamp(const Ca& ca, TimePoint this_update, TimePoint next_update) {
  X509CrlPtr crl(X509_CRL_new());
  FLEETID_TRY(last, crypto::UnixToAsn1Time(UnixSeconds(this_update)));
  FLEETID_TRY(next, crypto::UnixToAsn1Time(UnixSeconds(next_update)));
  if (!crl || X509_CRL_set_version(crl.get(), X509_CRL_VERSION_2) != 1 ||
      X509_CRL_set_issuer_name(crl.get(), X509_get_subject_name(ca.cert.get())) != 1 ||
      X509_CRL_set1_lastUpdate(crl.get(), last.get()) != 1 ||
      X509_CRL_set1_nextUpdate(crl.get(), next.get()) != 1) {
    return MakeError(Ossl("building CRL"));
  }
  return crl;
}

// ReadEntries reads what the CRL lists into |entries| and returns the change cursor. The cursor
// is read before the rows: a change committed in between is then both in this CRL and in the
// next delta, never in neither. A full CRL lists the revoked and held certificates of the scope
// that have not expired (the root's one CRL, partition 0, its revoked issuing CAs); a delta every
// certificate of the scope whose status changed since |base_cursor|, as it is now, and a
// released hold as removeFromCRL (RFC 5280 §5.3.1).
Result<std::int64_t> ReadEntries(store::Database& db, const std::string& issuer,
                                 std::int64_t partition, const std::int64_t* base_cursor,
                                 TimePoint now, TimePoint this_update, RevokedList& entries) {
  FLEETID_TRY(tx, db.Begin(TxMode::kRead));
  FLEETID_TRY(cursor, LastChangeIn(*tx));
  if (base_cursor == nullptr) {
    FLEETID_CHECK_OK(
        tx->QueryEach("SELECT serial, reason, revoked_at FROM certificates WHERE issuer = ? AND "
                      "partition_id = ? AND status != 'good' AND not_after > ?",
                      {issuer, partition, UnixSeconds(now)}, [&](const store::Row& r) {
                        return entries.Add(r.Text(0), r.Int(2), static_cast<Reason>(r.Int(1)));
                      }));
    return cursor;
  }
  FLEETID_CHECK_OK(tx->QueryEach(
      "SELECT r.serial, r.status, r.reason, r.revoked_at, MAX(c.changed_at) FROM "
      "certificate_changes c JOIN certificates r ON r.serial = c.serial WHERE c.id > ? AND "
      "r.issuer = ? AND r.partition_id = ? GROUP BY r.serial, r.status, r.reason, r.revoked_at",
      {*base_cursor, issuer, partition}, [&](const store::Row& r) {
        if (r.Text(1) == "good") {
          return entries.Add(r.Text(0), r.IsNull(4) ? UnixSeconds(this_update) : r.Int(4),
                             Reason::kRemoveFromCrl);
        }
        return entries.Add(r.Text(0), r.Int(3), static_cast<Reason>(r.Int(2)));
      }));
  return cursor;
}

}  // namespace

CrlPublisher::CrlPublisher(Hierarchy& hierarchy, store::Database& db, Clock& clock,
                           const AuthorityOptions& options)
    : hierarchy_(hierarchy), db_(db), clock_(clock), options_(options) {}

Result<CrlAnswer> CrlPublisher::Get(std::string_view issuer, std::int64_t partition, bool delta) {
  Ca* ca = hierarchy_.Find(issuer);
  if (ca == nullptr) return MakeError(ErrorCode::kNotFound, "no CA named '{}'", issuer);
  if (IsRoot(*ca) && (partition != 0 || delta)) {
    return MakeError(ErrorCode::kNotFound, "the root CA publishes one full CRL, partition 0");
  }
  // Only partitions that can hold unexpired certificates: a CRL is built (and numbered) for
  // each one asked for, so the range bounds what a stranger can make the authority do.
  if (!IsRoot(*ca) && !PartitionLive(options_, partition, clock_.Now())) {
    return MakeError(ErrorCode::kNotFound, "no CRL partition {} of {} is current", partition,
                     issuer);
  }
  MutexLock lock(mu_);
  return GetLocked(*ca, partition, delta);
}

std::size_t CrlPublisher::Size() const {
  MutexLock lock(mu_);
  return crls_.size();
}

void CrlPublisher::MarkDirty(const std::string& issuer, std::int64_t partition) {
  MutexLock lock(mu_);
  for (bool delta : {false, true}) {
    if (auto it = crls_.find({issuer, partition, delta}); it != crls_.end())
      it->second.dirty = true;
  }
}

void CrlPublisher::Refresh() {
  const TimePoint now = clock_.Now();
  hierarchy_.PruneDistributionPoints(now);
  MutexLock lock(mu_);
  // A partition whose certificates have all expired has nothing left to say.
  std::erase_if(crls_, [&](const auto& entry) {
    return std::get<0>(entry.first) != hierarchy_.Root().name &&
           !PartitionLive(options_, std::get<1>(entry.first), now);
  });
  std::vector<Key> keys;
  keys.reserve(crls_.size());
  for (const auto& [key, entry] : crls_) keys.push_back(key);
  for (const auto& [issuer, partition, delta] : keys) {
    Ca* ca = hierarchy_.Find(issuer);
    if (ca == nullptr) continue;
    if (auto built = GetLocked(*ca, partition, delta); !built) {
      log::Warn("pki: refreshing a CRL failed", {{"issuer", issuer},
                                                 {"partition", std::to_string(partition)},
                                                 {"error", built.error().ToString()}});
    }
  }
}

Result<CrlAnswer> CrlPublisher::GetLocked(Ca& ca, std::int64_t partition, bool delta) {
  const TimePoint now = clock_.Now();
  const Key key{ca.name, partition, delta};
  if (auto it = crls_.find(key); it != crls_.end()) {
    const CrlAnswer& cached = it->second.answer;
    // RFC 5019-style freshness: rebuilt once half the validity has passed, and after a status
    // change in its scope; a full CRL coalesces changes for crl_min_interval (deltas carry
    // them meanwhile), a delta is rebuilt at the next fetch.
    const bool half_life = now >= cached.this_update + options_.crl_validity / 2;
    // The root's CRL carries CA revocations: rare, urgent, and without a delta to carry them.
    const bool coalescing =
        !delta && !IsRoot(ca) && now < cached.this_update + options_.crl_min_interval;
    if (!half_life && (!it->second.dirty || coalescing)) return cached;
  }
  // A delta lists the changes since the full CRL this process serves, and names it by number.
  const Entry* base = nullptr;
  if (delta) {
    FLEETID_TRY(full, GetLocked(ca, partition, false));
    static_cast<void>(full);
    base = &crls_.at({ca.name, partition, false});
  }
  std::int64_t cursor = 0;
  FLEETID_TRY(answer, Build(ca, partition, base, now, cursor));
  Entry& slot = crls_[key];
  slot = {std::move(answer), cursor, false};
  if (!delta) {
    // A new base: the delta must be rebuilt against it.
    if (auto it = crls_.find({ca.name, partition, true}); it != crls_.end())
      it->second.dirty = true;
  }
  return slot.answer;
}

// NextNumber takes the next cRLNumber of the scope: full and delta CRLs of one scope share one
// increasing sequence (RFC 5280 §5.2.3).
Result<std::int64_t> CrlPublisher::NextNumber(const std::string& issuer, std::int64_t partition) {
  std::int64_t number = 1;
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
  return number;
}

Result<CrlAnswer> CrlPublisher::Build(Ca& ca, std::int64_t partition, const Entry* base,
                                      TimePoint now, std::int64_t& cursor) {
  const bool root = IsRoot(ca);
  const bool delta = base != nullptr;
  const TimePoint this_update = std::chrono::floor<std::chrono::seconds>(now);
  const TimePoint next_update = this_update + options_.crl_validity;
  FLEETID_TRY(crl, Stamp(ca, this_update, next_update));
  const std::string issuer = ca.name;
  RevokedList entries;
  FLEETID_TRY(read, ReadEntries(db_, issuer, partition, delta ? &base->cursor : nullptr, now,
                                this_update, entries));
  cursor = read;
  FLEETID_TRY(number, NextNumber(issuer, partition));

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
                                                  CrlUrl(options_, issuer, partition, false)))));
  if (delta) {
    FLEETID_CHECK_OK(AddCrlInteger(crl.get(), NID_delta_crl, base->answer.number, true));
  } else if (!root) {
    FLEETID_CHECK_OK(AddCrlExtension(
        crl.get(),
        ConfExtension(NID_freshest_crl, "URI:" + CrlUrl(options_, issuer, partition, true))));
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

}  // namespace fleetid::pki::internal
