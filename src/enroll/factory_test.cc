// Reading a batch manifest (ParseManifest) without a database: the payload's bounds.
#include <openssl/evp.h>

#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "crypto/crypto.h"
#include "crypto/handles.h"
#include "crypto/jws.h"
#include "enroll/factory.h"
#include "testing/matchers.h"

namespace fleetid::enroll {
namespace {

using Json = nlohmann::json;

std::string SignedManifest(const Json& manufactured_at) {
  static const crypto::EvpPkeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"));
  const Json device{{"serial", "SN-1"},
                    {"idevid_sha256", std::string(64, 'a')},
                    {"firmware_version", "1.0"},
                    {"firmware_sha256", std::string(64, 'b')}};
  const Json payload{{"batch", "B-1"},
                     {"manufacturer", "Acme"},
                     {"model", "M"},
                     {"station", "S"},
                     {"manufactured_at", manufactured_at},
                     {"devices", Json::array({device})}};
  const std::string thumb = crypto::Base64UrlEncode(crypto::Sha256("ca"));
  return crypto::SignJws(key.get(), {{"typ", kManifestType}, {"x5t#S256", thumb}}, payload.dump())
      .value_or("");
}

TEST(ManifestTest, ReadsManufacturedAt) {
  for (const std::int64_t at :
       std::initializer_list<std::int64_t>{0, 1780000000, kMaxManifestTime}) {
    const auto parsed = ParseManifest(SignedManifest(at));
    if (!parsed.has_value()) GTEST_FAIL() << parsed.error();
    EXPECT_EQ(parsed->manifest.manufactured_at, at);
  }
}

// fuzz/corpus/manifest/wrong_types: a manufactured_at of 1.5e300 was converted to int64 (UB), and
// one past kMaxManifestTime overflowed the TimePoint the import makes of it.
TEST(ManifestTest, RefusesManufacturedAtOutsideUnixSeconds) {
  for (const Json& at : {Json(1.5e300), Json(1.5), Json(-1), Json(kMaxManifestTime + 1),
                         Json(std::numeric_limits<std::uint64_t>::max()), Json("1780000000")}) {
    const auto parsed = ParseManifest(SignedManifest(at));
    if (parsed.has_value()) GTEST_FAIL() << at.dump();
    EXPECT_THAT(parsed, test::HasCode(ErrorCode::kInvalidArgument)) << at.dump();
  }
}

// fuzz/corpus/manifest/typ_not_string: a typ that is not a string threw from the JSON library.
TEST(ManifestTest, RefusesATypThatIsNotAString) {
  static const crypto::EvpPkeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"));
  const std::string thumb = crypto::Base64UrlEncode(crypto::Sha256("ca"));
  const auto jws = crypto::SignJws(key.get(), {{"typ", 7}, {"x5t#S256", thumb}}, "{}");
  if (!jws.has_value()) GTEST_FAIL() << jws.error();
  const auto parsed = ParseManifest(*jws);
  if (parsed.has_value()) GTEST_FAIL();
  EXPECT_THAT(parsed, test::HasCode(ErrorCode::kInvalidArgument));
}

}  // namespace
}  // namespace fleetid::enroll
