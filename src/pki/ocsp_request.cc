// Parsing of OCSPRequests (RFC 6960 §4.1) and the answer cache.
#include <openssl/asn1t.h>
#include <openssl/err.h>
#include <openssl/ocsp.h>
#include <openssl/x509.h>

#include <algorithm>
#include <utility>

#include "pki/internal/ocsp_responder.h"
#include "pki/internal/util.h"

namespace fleetid::pki::internal {
namespace {

constexpr int kMalformed = OCSP_RESPONSE_STATUS_MALFORMEDREQUEST;

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

// HashAlgorithmOf is |id|'s hashAlgorithm. OpenSSL has no accessor for it, so it is found
// through the CertID's ASN.1 template, which <openssl/asn1t.h> makes public: the first field,
// an AlgorithmIdentifier embedded at the offset the template gives. nullptr when the template
// does not say exactly that (another OpenSSL may lay the CertID out otherwise).
long HashAlgorithmOffset() {
  static const long offset = [] {
    const ASN1_ITEM* item = ASN1_ITEM_rptr(OCSP_CERTID);
    if (item->itype != ASN1_ITYPE_SEQUENCE || item->tcount < 1) return -1L;
    const ASN1_TEMPLATE& first = item->templates[0];
    const bool embedded_algorithm =
        first.flags == ASN1_TFLG_EMBED && first.item() == ASN1_ITEM_rptr(X509_ALGOR);
    return embedded_algorithm ? static_cast<long>(first.offset) : -1L;
  }();
  return offset;
}

const X509_ALGOR* HashAlgorithmOf(const OCSP_CERTID* id) {
  const long offset = HashAlgorithmOffset();
  if (offset < 0) return nullptr;
  return reinterpret_cast<const X509_ALGOR*>(reinterpret_cast<const char*>(id) + offset);
}

// Copyable says whether OpenSSL can copy |id| into an answer (OCSP_basic_add1_status duplicates
// it by encoding and decoding): a CertID it reads but cannot read back, such as hashAlgorithm
// parameters of a constructed EOC, which it writes as a primitive one, is malformed. Only the
// parameters can fail so; absent or NULL ones, which every client sends, always copy, and only
// other ones pay for a trial copy (which, paid by every request, halved make bench's rate of
// cached answers).
bool Copyable(const OCSP_CERTID* id) {
  if (const X509_ALGOR* algorithm = HashAlgorithmOf(id); algorithm != nullptr) {
    int type = V_ASN1_EOC;
    X509_ALGOR_get0(nullptr, &type, nullptr, algorithm);
    if (type == V_ASN1_UNDEF || type == V_ASN1_NULL) return true;
  }
  const crypto::OcspCertIdPtr copy(OCSP_CERTID_dup(id));
  ERR_clear_error();
  return copy != nullptr;
}

// Fresh says whether |answer| may still be served at |now|: younger than |max_age|.
bool Fresh(const OcspAnswer& answer, TimePoint now, std::chrono::seconds max_age) {
  return now < answer.this_update + max_age;
}

// ParseOne reads the |i|th single request of |req|.
std::optional<OcspCertIdRequest> ParseOne(OCSP_REQUEST* req, int i) {
  OCSP_ONEREQ* one = OCSP_request_onereq_get0(req, i);
  OCSP_CERTID* id = OCSP_onereq_get0_id(one);
  ASN1_OCTET_STRING* name_hash = nullptr;
  ASN1_OCTET_STRING* key_hash = nullptr;
  ASN1_OBJECT* md = nullptr;
  ASN1_INTEGER* serial = nullptr;
  if (id == nullptr || OCSP_id_get0_info(&name_hash, &md, &key_hash, &serial, id) != 1 ||
      serial == nullptr || ASN1_STRING_length(serial) > kMaxSerialOctets || !Copyable(id) ||
      !RequestExtensionsOk([&] { return OCSP_ONEREQ_get_ext_count(one); },
                           [&](int e) { return OCSP_ONEREQ_get_ext(one, e); }, false)) {
    return std::nullopt;
  }
  return OcspCertIdRequest{.id = id,
                           .md_nid = OBJ_obj2nid(md),
                           .name_hash = name_hash,
                           .key_hash = key_hash,
                           .serial_number = serial,
                           .cache_key = CacheSerial(serial)};
}

}  // namespace

bool CertIdCopyCheckIsFree() { return HashAlgorithmOffset() >= 0; }

std::string OcspCertIdRequest::Serial() const {
  return crypto::SerialHex(serial_number).value_or("");
}

std::expected<ParsedOcspRequest, int> ParseOcspRequest(std::span<const std::uint8_t> der,
                                                       int max_cert_ids) {
  ParsedOcspRequest parsed;
  const unsigned char* p = der.data();
  parsed.request.reset(d2i_OCSP_REQUEST(nullptr, &p, static_cast<long>(der.size())));
  OCSP_REQUEST* req = parsed.request.get();
  if (req == nullptr || p != der.data() + der.size()) {
    ERR_clear_error();
    return std::unexpected(kMalformed);
  }
  const int count = OCSP_request_onereq_count(req);
  if (count <= 0 || count > max_cert_ids) return std::unexpected(kMalformed);
  if (!RequestExtensionsOk([&] { return OCSP_REQUEST_get_ext_count(req); },
                           [&](int i) { return OCSP_REQUEST_get_ext(req, i); }, true)) {
    return std::unexpected(kMalformed);
  }
  parsed.has_nonce = OCSP_REQUEST_get_ext_by_NID(req, NID_id_pkix_OCSP_Nonce, -1) >= 0;
  for (int i = 0; i < count; ++i) {
    std::optional<OcspCertIdRequest> one = ParseOne(req, i);
    if (!one) return std::unexpected(kMalformed);
    parsed.ids.push_back(std::move(*one));
  }
  return parsed;
}

std::optional<OcspAnswer> OcspAnswerCache::Find(const Key& key, TimePoint now,
                                                std::chrono::seconds max_age,
                                                std::span<const std::uint8_t> remember) {
  if (remember.empty()) {
    ReaderLock lock(mu_);
    auto it = answers_.find(key);
    if (it == answers_.end() || !Fresh(it->second.answer, now, max_age)) return std::nullopt;
    return it->second.answer;
  }
  WriterLock lock(mu_);
  auto it = answers_.find(key);
  if (it == answers_.end() || !Fresh(it->second.answer, now, max_age)) return std::nullopt;
  RememberLocked(remember, it);
  return it->second.answer;
}

std::optional<OcspAnswer> OcspAnswerCache::FindRequest(std::span<const std::uint8_t> request_der,
                                                       TimePoint now,
                                                       std::chrono::seconds max_age) const {
  const std::string_view bytes(reinterpret_cast<const char*>(request_der.data()),
                               request_der.size());
  ReaderLock lock(mu_);
  auto it = by_request_.find(bytes);
  if (it == by_request_.end()) return std::nullopt;
  const OcspAnswer& answer = it->second->second.answer;
  if (!Fresh(answer, now, max_age)) return std::nullopt;
  return answer;
}

void OcspAnswerCache::RememberLocked(std::span<const std::uint8_t> request_der,
                                     Answers::iterator slot) {
  const std::string_view bytes(reinterpret_cast<const char*>(request_der.data()),
                               request_der.size());
  if (bytes.empty() || bytes.size() > kMaxRequestBytes || by_request_.contains(bytes)) return;
  std::vector<const std::string*>& requests = slot->second.requests;
  if (requests.size() < kRequestsPerAnswer) {
    requests.push_back(&by_request_.emplace(bytes, slot).first->first);
    return;
  }
  // The oldest makes room, and lends its node (no allocation once an answer has its fill).
  auto node = by_request_.extract(by_request_.find(*requests.front()));
  requests.erase(requests.begin());
  node.key().assign(bytes);
  node.mapped() = slot;
  requests.push_back(&by_request_.insert(std::move(node)).position->first);
}

void OcspAnswerCache::Put(const Key& key, const OcspAnswer& answer,
                          std::span<const std::uint8_t> remember) {
  WriterLock lock(mu_);
  if (auto it = answers_.find(key); it != answers_.end()) {
    it->second.answer = answer;
    order_.splice(order_.end(), order_, it->second.order);
    RememberLocked(remember, it);
    return;
  }
  if (max_entries_ == 0) return;
  while (answers_.size() >= max_entries_) EraseLocked(answers_.find(order_.front()));
  order_.push_back(key);
  auto it = answers_.emplace(key, Slot{.answer = answer, .order = std::prev(order_.end())}).first;
  RememberLocked(remember, it);
}

void OcspAnswerCache::Forget(const std::string& ca, const std::string& cache_serial) {
  WriterLock lock(mu_);
  for (int nid : {NID_sha1, NID_sha256}) {
    if (auto it = answers_.find({ca, nid, cache_serial}); it != answers_.end()) EraseLocked(it);
  }
}

void OcspAnswerCache::Prune(TimePoint now, std::chrono::seconds validity) {
  WriterLock lock(mu_);
  for (auto it = answers_.begin(); it != answers_.end();) {
    auto next = std::next(it);
    if (it->second.answer.this_update + validity <= now) EraseLocked(it);
    it = next;
  }
}

std::size_t OcspAnswerCache::Size() const {
  ReaderLock lock(mu_);
  return answers_.size();
}

void OcspAnswerCache::EraseLocked(Answers::iterator it) {
  for (const std::string* request : it->second.requests) {
    by_request_.erase(by_request_.find(*request));
  }
  order_.erase(it->second.order);
  answers_.erase(it);
}

bool SignatureBudget::Take(TimePoint now, int per_second) {
  MutexLock lock(mu_);
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

}  // namespace fleetid::pki::internal
