// Idempotency keys for the operator API's mutations (docs/api.md § Idempotency-Key): a client
// that retries a POST with the same Idempotency-Key header gets the first answer again instead of
// a second change. Keys are scoped to the operator, kept 24 hours, and bound to the request they
// first came with (method, path and the SHA-256 of the body).
#ifndef FLEETID_OPERATORS_IDEMPOTENCY_H_
#define FLEETID_OPERATORS_IDEMPOTENCY_H_

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

#include "common/clock.h"
#include "common/error.h"
#include "store/store.h"

namespace fleetid::operators {

// StoredAnswer is a request's first answer, as sent.
struct StoredAnswer {
  int status = 0;
  std::string body;
};

// Idempotency is thread-safe (each call is one transaction).
class Idempotency {
 public:
  static constexpr std::chrono::hours kKeepFor{24};
  // A request still in flight this long after it began (its server died) may be taken over.
  static constexpr std::chrono::seconds kInFlightFor{60};

  Idempotency(store::Database& db, const Clock& clock) : db_(db), clock_(clock) {}

  // CheckKey refuses (kInvalidArgument) a key that is not 1 to 255 visible ASCII characters.
  [[nodiscard]] static Result<void> CheckKey(std::string_view key);

  // Begin claims |key| for |operator_name|'s request |fingerprint|. It returns the stored answer
  // when that same request was answered before (replay it), or nothing when the request is new
  // and claimed (run it, then Finish). kConflict when the key came with another request, or when
  // the same request is still in flight.
  [[nodiscard]] Result<std::optional<StoredAnswer>> Begin(std::string_view operator_name,
                                                          std::string_view key,
                                                          std::string_view fingerprint);

  // Finish records the answer of a request Begin claimed.
  [[nodiscard]] Result<void> Finish(std::string_view operator_name, std::string_view key,
                                    const StoredAnswer& answer);

 private:
  store::Database& db_;
  const Clock& clock_;
};

}  // namespace fleetid::operators

#endif  // FLEETID_OPERATORS_IDEMPOTENCY_H_
