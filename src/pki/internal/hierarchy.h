// The CA hierarchy: the root, one issuing CA per enabled suite, the operators' CA (ECDSA P-256),
// and a delegated OCSP signer per issuing CA, each with its key in the token and its certificate
// in ca_certificates; and the CRL partitions of what the issuing CAs sign.
#ifndef FLEETID_PKI_INTERNAL_HIERARCHY_H_
#define FLEETID_PKI_INTERNAL_HIERARCHY_H_

#include <openssl/x509.h>

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/mutex.h"
#include "common/error.h"
#include "common/rng.h"
#include "crypto/handles.h"
#include "crypto/suite.h"
#include "custody/custody.h"
#include "pki/internal/guard.h"
#include "pki/pki.h"
#include "store/store.h"

namespace fleetid::pki::internal {

// Ca is one CA of the hierarchy. Everything but the CDP templates is set by Hierarchy::Load and
// read-only afterwards.
struct Ca {
  std::string name;    // "root", the issuing suite's name, or kOperatorCa
  bool for_operators = false;  // the operators' CA: issues operator certificates, never devices'
  std::string serial;  // its certificate's serial (lower-case hex)
  const crypto::Suite* suite = nullptr;
  crypto::X509Ptr cert;
  std::vector<std::uint8_t> der;
  crypto::EvpPkeyPtr key;
  const EVP_MD* md = nullptr;  // the suite's digest; nullptr for Ed25519
  crypto::X509Ptr ocsp_cert;   // issuing CAs only
  crypto::EvpPkeyPtr ocsp_key;
  // Extension templates: the authorityKeyIdentifier of everything this CA signs, what every
  // device certificate carries, and the CRL distribution point of each issuance partition.
  crypto::X509ExtensionPtr authority_key_id;
  std::vector<crypto::X509ExtensionPtr> device_extensions;
  Mutex cdp_mu;
  std::map<std::int64_t, crypto::X509ExtensionPtr> cdp_by_partition FLEETID_GUARDED_BY(cdp_mu);
  // CertID matching (RFC 6960 §4.1.1): hashes of the issuer's name and public key.
  std::vector<std::uint8_t> name_sha1, key_sha1, name_sha256, key_sha256;
};

// PartitionOf and PartitionLive implement Authority::PartitionOf and PartitionLive for |options|.
std::int64_t PartitionOf(const AuthorityOptions& options, CertificateClass klass, TimePoint issued);
bool PartitionLive(const AuthorityOptions& options, std::int64_t partition, TimePoint now);
// CrlUrl is where |issuer|'s full (or delta) CRL of |partition| is published.
std::string CrlUrl(const AuthorityOptions& options, std::string_view issuer, std::int64_t partition,
                   bool delta);

// Hierarchy owns the CAs. Thread-safe after Load: the CAs are fixed, DistributionPoint and
// PruneDistributionPoints lock the CA's cdp_mu.
class Hierarchy {
 public:
  explicit Hierarchy(const AuthorityOptions& options) : options_(options) {}

  // Load loads the hierarchy from |db| and |token|, creating (and storing) what is missing.
  [[nodiscard]] Result<void> Load(custody::Token& token, store::Database& db, Clock& clock,
                                  Rng& rng);

  Ca& Root() const { return *cas_.front(); }
  // Issuing is every issuing CA (the root excluded).
  std::span<const std::unique_ptr<Ca>> Issuing() const { return std::span(cas_).subspan(1); }
  // Find is the CA named |name| (the root included), nullptr if none.
  Ca* Find(std::string_view name) const;
  // IssuingCa is the device issuing CA of |suite|, kInvalidArgument when none is enabled.
  [[nodiscard]] Result<Ca*> IssuingCa(const crypto::Suite& suite) const;
  // OperatorCa is the operators' CA.
  Ca& OperatorCa() const;

  // DistributionPoint is the cRLDistributionPoints extension of |ca|'s |partition|, built once.
  [[nodiscard]] Result<const X509_EXTENSION*> DistributionPoint(Ca& ca, std::int64_t partition);
  // PruneDistributionPoints drops the templates of partitions no longer live at |now|.
  void PruneDistributionPoints(TimePoint now);

  [[nodiscard]] Result<std::vector<std::uint8_t>> CaCertificate(std::string_view name) const;
  std::vector<std::string> CaNames() const;

 private:
  struct Want;
  [[nodiscard]] Result<crypto::X509Ptr> Create(const Want& want, EVP_PKEY* key, TimePoint now,
                                               Rng& rng);
  [[nodiscard]] Result<void> Adopt(const Want& want, crypto::X509Ptr cert, crypto::EvpPkeyPtr key);

  const AuthorityOptions& options_;
  std::vector<std::unique_ptr<Ca>> cas_;  // [0] is the root
};

}  // namespace fleetid::pki::internal

#endif  // FLEETID_PKI_INTERNAL_HIERARCHY_H_
