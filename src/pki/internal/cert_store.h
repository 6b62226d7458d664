// The certificate store: the pki tables (ca_certificates, certificates, certificate_changes,
// crl_numbers, compromised_keys), their migrations, and every statement on certificates and
// compromised_keys. Each function works inside the caller's transaction.
#ifndef FLEETID_PKI_INTERNAL_CERT_STORE_H_
#define FLEETID_PKI_INTERNAL_CERT_STORE_H_

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.h"
#include "common/error.h"
#include "pki/internal/guard.h"
#include "pki/pki.h"
#include "store/store.h"

namespace fleetid::pki::internal {

// MigrateStore applies the pki migrations (and the audit log's, which every change appends to).
[[nodiscard]] Result<void> MigrateStore(store::Database& db);

// GetIn reads the record of |serial| (lower-case hex, else kInvalidArgument; kNotFound if none).
[[nodiscard]] Result<CertificateRecord> GetIn(store::Transaction& tx, std::string_view serial);

// LatestGoodIn is the good certificate of |device| that expires last, if it expires after
// |not_after_beyond|.
[[nodiscard]] Result<std::optional<CertificateRecord>> LatestGoodIn(store::Transaction& tx,
                                                                    std::string_view device,
                                                                    TimePoint not_after_beyond);

// InsertIn stores |record|. A serial already stored is kConflict.
[[nodiscard]] Result<void> InsertIn(store::Transaction& tx, const CertificateRecord& record);

// UpdateStatusIn moves |next| from status |was| to its status, reason and revocation time;
// kConflict when the stored status is no longer |was|.
[[nodiscard]] Result<void> UpdateStatusIn(store::Transaction& tx, const CertificateRecord& next,
                                          Status was);

// RecordChangeIn appends |serial| to certificate_changes, the feed other processes and nodes
// follow (ChangeFeed, delta CRLs).
[[nodiscard]] Result<void> RecordChangeIn(store::Transaction& tx, std::string_view serial,
                                          TimePoint at);

// LastChangeIn is the id of the newest certificate_changes row, 0 if none.
[[nodiscard]] Result<std::int64_t> LastChangeIn(store::Transaction& tx);

// KeyCompromisedIn says whether |spki| was recorded by RecordCompromisedKeyIn.
[[nodiscard]] Result<bool> KeyCompromisedIn(store::Transaction& tx,
                                            std::span<const std::uint8_t> spki);
// RecordCompromisedKeyIn records the key of the certificate |der| (crypto::KeyFingerprint) as
// revoked for |reason| by |serial|; a key already recorded keeps its first row.
[[nodiscard]] Result<void> RecordCompromisedKeyIn(store::Transaction& tx,
                                                  std::span<const std::uint8_t> der,
                                                  std::string_view serial, Reason reason,
                                                  TimePoint at);

}  // namespace fleetid::pki::internal

#endif  // FLEETID_PKI_INTERNAL_CERT_STORE_H_
