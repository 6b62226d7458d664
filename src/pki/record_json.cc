#include "pki/record_json.h"

#include "common/time_text.h"

namespace fleetid::pki {

nlohmann::json CertificateJson(const CertificateRecord& c) {
  nlohmann::json j{{"serial", c.serial},
                   {"issuer", c.issuer},
                   {"device", c.device},
                   {"suite", c.suite},
                   {"not_before", Iso8601(c.not_before)},
                   {"not_after", Iso8601(c.not_after)},
                   {"status", StatusName(c.status)}};
  if (c.reason) j["reason"] = ReasonName(*c.reason);
  if (c.revoked_at) j["revoked_at"] = Iso8601(*c.revoked_at);
  return j;
}

}  // namespace fleetid::pki
