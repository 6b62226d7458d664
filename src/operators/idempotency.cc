#include "operators/idempotency.h"

#include <algorithm>

namespace fleetid::operators {

Result<void> Idempotency::CheckKey(std::string_view key) {
  const bool visible = std::ranges::all_of(key, [](char c) { return c > ' ' && c < 0x7f; });
  if (key.empty() || key.size() > 255 || !visible) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "an Idempotency-Key is 1 to 255 visible ASCII characters");
  }
  return {};
}

Result<std::optional<StoredAnswer>> Idempotency::Begin(std::string_view operator_name,
                                                       std::string_view key,
                                                       std::string_view fingerprint) {
  const std::int64_t now = UnixSeconds(clock_.Now());
  FLEETID_TRY(tx, db_.Begin(store::TxMode::kWrite));
  FLEETID_CHECK_OK(tx->Exec("DELETE FROM api_idempotency WHERE created_at < ?",
                            {now - std::chrono::seconds(kKeepFor).count()}));
  FLEETID_TRY(rows, tx->Query("SELECT fingerprint, status, body, created_at FROM api_idempotency "
                              "WHERE operator_name = ? AND idem_key = ?",
                              {std::string(operator_name), std::string(key)}));
  if (rows.empty()) {
    FLEETID_CHECK_OK(
        tx->Exec("INSERT INTO api_idempotency (operator_name, idem_key, fingerprint, status, "
                 "body, created_at) VALUES (?, ?, ?, 0, '', ?)",
                 {std::string(operator_name), std::string(key), std::string(fingerprint), now}));
    FLEETID_CHECK_OK(tx->Commit());
    return std::optional<StoredAnswer>();
  }
  if (rows[0].Text(0) != fingerprint) {
    return MakeError(ErrorCode::kConflict,
                     "this Idempotency-Key came with another request (method, path or body); a "
                     "new request needs a new key");
  }
  if (rows[0].Int(1) != 0) {
    return std::optional<StoredAnswer>(
        StoredAnswer{.status = static_cast<int>(rows[0].Int(1)), .body = rows[0].Text(2)});
  }
  if (rows[0].Int(3) > now - kInFlightFor.count()) {
    return MakeError(ErrorCode::kConflict,
                     "the request with this Idempotency-Key is still in flight; retry later");
  }
  // Its server never finished it (it stopped): this request takes it over.
  FLEETID_CHECK_OK(
      tx->Exec("UPDATE api_idempotency SET created_at = ? WHERE operator_name = ? AND idem_key = ?",
               {now, std::string(operator_name), std::string(key)}));
  FLEETID_CHECK_OK(tx->Commit());
  return std::optional<StoredAnswer>();
}

Result<void> Idempotency::Finish(std::string_view operator_name, std::string_view key,
                                 const StoredAnswer& answer) {
  FLEETID_TRY(tx, db_.Begin(store::TxMode::kWrite));
  FLEETID_CHECK_OK(tx->Exec(
      "UPDATE api_idempotency SET status = ?, body = ? "
      "WHERE operator_name = ? AND idem_key = ?",
      {std::int64_t{answer.status}, answer.body, std::string(operator_name), std::string(key)}));
  return tx->Commit();
}

}  // namespace fleetid::operators
