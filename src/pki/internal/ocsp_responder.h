// The OCSP responder (RFC 6960, RFC 5019 profile): request parsing, answer signing by the
// delegated signer of each issuing CA, the bounded cache of pre-signed answers, and the
// signature budgets that bound what a stranger can make the token do.
#ifndef FLEETID_PKI_INTERNAL_OCSP_RESPONDER_H_
#define FLEETID_PKI_INTERNAL_OCSP_RESPONDER_H_

#include <openssl/ocsp.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <expected>
#include <list>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "common/clock.h"
#include "common/mutex.h"
#include "crypto/handles.h"
#include "pki/internal/guard.h"
#include "pki/internal/hierarchy.h"
#include "pki/pki.h"
#include "store/store.h"

namespace fleetid::pki::internal {

// OcspCertIdRequest is one CertID of a parsed request; |id|, |name_hash|, |key_hash| and
// |serial_number| point into the request that holds it.
struct OcspCertIdRequest {
  OCSP_CERTID* id = nullptr;
  int md_nid = 0;  // NID of the CertID's hash algorithm
  const ASN1_OCTET_STRING* name_hash = nullptr;
  const ASN1_OCTET_STRING* key_hash = nullptr;
  const ASN1_INTEGER* serial_number = nullptr;
  std::string cache_key;  // CacheSerial: the exact DER INTEGER, so 0 and -1 stay apart

  // Serial is the lower-case hex of a positive serial, empty for 0 and negatives; made when
  // asked for, since an answer from the cache never needs it.
  std::string Serial() const;
};

struct ParsedOcspRequest {
  crypto::OcspRequestPtr request;
  std::vector<OcspCertIdRequest> ids;  // 1 to max_cert_ids of them
  bool has_nonce = false;
};

// ParseOcspRequest reads a DER OCSPRequest; on failure it returns the OCSPResponseStatus to
// answer with (always malformedRequest): garbage or trailing bytes, no CertID or more than
// |max_cert_ids|, a serial over 20 octets (RFC 5280 §4.1.2.2), a nonce of 0 or over 32 octets
// (RFC 8954 §2.1), an unknown critical extension (RFC 6960 §4.4), a CertID OpenSSL cannot copy
// into an answer. Pure: it knows no CA.
[[nodiscard]] std::expected<ParsedOcspRequest, int> ParseOcspRequest(
    std::span<const std::uint8_t> der, int max_cert_ids);

// CertIdCopyCheckIsFree says whether ParseOcspRequest can read a CertID's hash parameters
// through OpenSSL's ASN.1 template (ocsp_request.cc, HashAlgorithmOf), so that only unusual
// parameters pay for a trial copy; false means every CertID does (correct, and slower).
bool CertIdCopyCheckIsFree();

// OcspAnswerCache holds pre-signed answers by (CA name, CertID hash NID, CacheSerial), at most
// |max_entries| of them. Past the bound, inserting an answer evicts the one signed longest ago
// (the next to need re-signing anyway); an evicted answer is signed again at its next query.
//
// It also remembers, for each answer, the exact bytes of up to kRequestsPerAnswer requests it
// answered: relying parties repeat the same request, and a request seen before is answered
// without being parsed again (FindRequest). Only requests that parsed cleanly, carry one CertID
// and no nonce are remembered (the caller's duty), so the bytes alone decide the answer.
// Thread-safe.
class OcspAnswerCache {
 public:
  using Key = std::tuple<std::string, int, std::string>;
  // The request encodings remembered per answer (oldest dropped first) and the longest one: a
  // stranger varying a request's optional fields cannot grow the cache past these bounds.
  static constexpr std::size_t kRequestsPerAnswer = 4;
  static constexpr std::size_t kMaxRequestBytes = 512;

  explicit OcspAnswerCache(std::size_t max_entries) : max_entries_(max_entries) {}

  // Find returns the answer for |key| if it is younger than |max_age|. Found, it remembers the
  // request |remember| (when not empty) as answered by it.
  std::optional<OcspAnswer> Find(const Key& key, TimePoint now, std::chrono::seconds max_age,
                                 std::span<const std::uint8_t> remember = {});
  // FindRequest returns the answer a remembered request of exactly |request_der| maps to, if it
  // is younger than |max_age|.
  std::optional<OcspAnswer> FindRequest(std::span<const std::uint8_t> request_der, TimePoint now,
                                        std::chrono::seconds max_age) const;
  // Put stores |answer| for |key|, and remembers |remember| (when not empty) as answered by it.
  void Put(const Key& key, const OcspAnswer& answer, std::span<const std::uint8_t> remember = {});
  // Forget drops the answers for |cache_serial| of CA |ca|, whatever their hash.
  void Forget(const std::string& ca, const std::string& cache_serial);
  // Prune drops answers whose validity (|validity| from thisUpdate) has ended by |now|.
  void Prune(TimePoint now, std::chrono::seconds validity);
  std::size_t Size() const;

 private:
  struct Slot {
    OcspAnswer answer;
    std::list<Key>::iterator order;  // its place in |order_|
    // The remembered request encodings, oldest first: keys of |by_request_|, whose nodes keep
    // their address until erased.
    std::vector<const std::string*> requests{};
  };
  using Answers = std::map<Key, Slot>;
  // StringHash lets |by_request_| be searched with a string_view.
  struct StringHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  using RequestIndex =
      std::unordered_map<std::string, Answers::iterator, StringHash, std::equal_to<>>;
  void EraseLocked(Answers::iterator it) FLEETID_REQUIRES(mu_);
  // RememberLocked maps |request_der| to |slot|'s answer, if the request is short enough. The
  // mapping goes with the answer (Forget, Prune, eviction).
  void RememberLocked(std::span<const std::uint8_t> request_der, Answers::iterator slot)
      FLEETID_REQUIRES(mu_);

  const std::size_t max_entries_;
  mutable SharedMutex mu_;
  Answers answers_ FLEETID_GUARDED_BY(mu_);
  std::list<Key> order_ FLEETID_GUARDED_BY(mu_);  // by signing time, oldest first
  RequestIndex by_request_ FLEETID_GUARDED_BY(mu_);
};

// SignatureBudget is a token bucket of signatures, refilled at |per_second| up to as many, by
// the injected clock. Thread-safe.
class SignatureBudget {
 public:
  bool Take(TimePoint now, int per_second);

 private:
  Mutex mu_;
  double tokens_ FLEETID_GUARDED_BY(mu_) = -1;  // < 0: full at first use
  TimePoint refilled_ FLEETID_GUARDED_BY(mu_);
};

// OcspResponder answers for the issuing CAs of |hierarchy|, reading statuses from |db|.
// Thread-safe.
class OcspResponder {
 public:
  OcspResponder(const Hierarchy& hierarchy, store::Database& db, Clock& clock,
                const AuthorityOptions& options);

  // Answer is Authority::Ocsp without the change-feed poll.
  OcspAnswer Answer(std::span<const std::uint8_t> request_der);
  // Refresh replaces the pre-signed answers (SHA-1 and SHA-256 CertIDs) of the certificate
  // |changed| names with answers signed from its stored record, so no stale "good" is served
  // after a revocation. Certificates of the root (issuing CAs) have no answers.
  void Refresh(const CertificateRecord& changed);
  // Forget drops the cached answers for |serial_hex| of issuing CA |ca|.
  void Forget(const std::string& ca, const std::string& serial_hex);
  // Prune drops answers older than ocsp_validity, at most once a minute.
  void Prune(TimePoint now);

  std::uint64_t Signatures() const { return signatures_.load(std::memory_order_relaxed); }
  std::size_t CacheSize() const { return cache_.Size(); }

 private:
  struct Single;
  [[nodiscard]] Ca* MatchIssuer(const ParsedOcspRequest& parsed) const;
  [[nodiscard]] std::optional<Single> StatusOf(const OcspCertIdRequest& id, const Ca& ca,
                                               TimePoint this_update, bool& never_issued);
  OcspAnswer Sign(const Ca& ca, std::span<const Single> singles, OCSP_REQUEST* nonce_from,
                  TimePoint this_update);

  const Hierarchy& hierarchy_;
  store::Database& db_;
  Clock& clock_;
  const AuthorityOptions& options_;
  OcspAnswerCache cache_;
  SignatureBudget unknown_;  // signed "unknown" answers: ocsp_unknown_per_second
  SignatureBudget fresh_;    // answers no cache can hold (nonced, multi-CertID)
  std::atomic<std::uint64_t> signatures_{0};
  std::atomic<std::int64_t> last_prune_{0};  // the minute of the last Prune
};

}  // namespace fleetid::pki::internal

#endif  // FLEETID_PKI_INTERNAL_OCSP_RESPONDER_H_
