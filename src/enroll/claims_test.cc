// The device wire contract's parsing alone (no service): what it accepts and what it refuses.
#include "enroll/claims.h"

#include <openssl/evp.h>

#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "crypto/crypto.h"
#include "crypto/handles.h"
#include "crypto/jws.h"
#include "testing/matchers.h"

namespace fleetid::enroll {
namespace {

using Json = nlohmann::json;

const std::string kSha(64, 'a');
const std::string kNonce(kNonceChars, 'N');

std::string Signed(const Json& header, const Json& claims) {
  static const crypto::EvpPkeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"));
  auto jws = crypto::SignJws(key.get(), header, claims.dump());
  return jws.value_or("");
}

Json Evidence() {
  return {{"eat_profile", kEvidenceProfile},
          {"eat_nonce", kNonce},
          {"serial", "SN-1"},
          {"fw_sha256", kSha},
          {"key_sha256", kSha},
          {"swversion", "1.0 (beta)"}};
}

Json Receipt() {
  return {{"serial", "SN-1"},
          {"order", kSha},
          {"iat", 1780000000},
          {"destroyed", Json::array({{{"label", "ldevid"}, {"key_sha256", kSha}}})}};
}

TEST(ClaimsTest, ReadsEvidence) {
  const std::string jws = Signed({{"typ", kEvidenceType}}, Evidence());
  const auto parsed = ParseEvidenceClaims(jws);
  if (!parsed.has_value()) GTEST_FAIL() << parsed.error();
  EXPECT_EQ(parsed->nonce, kNonce);
  EXPECT_EQ(parsed->serial, "SN-1");
  EXPECT_EQ(parsed->firmware, kSha);
  EXPECT_EQ(parsed->key_sha256, kSha);
  EXPECT_EQ(parsed->swversion, "1.0 (beta)");
  EXPECT_EQ(parsed->sha256, crypto::Hex(crypto::Sha256(jws)));
}

TEST(ClaimsTest, RefusesEvidenceOutsideTheContract) {
  const auto refused = [](const Json& header, const Json& claims) {
    const auto parsed = ParseEvidenceClaims(Signed(header, claims));
    return !parsed.has_value() && parsed.error().code() == ErrorCode::kInvalidArgument;
  };
  const Json header{{"typ", kEvidenceType}};
  EXPECT_TRUE(refused({{"typ", kReceiptType}}, Evidence()));
  // fuzz/corpus/claims/typ_not_string: a typ that is not a string threw from the JSON library.
  EXPECT_TRUE(refused({{"typ", 7}}, Evidence()));
  for (const char* claim : {"eat_profile", "eat_nonce", "serial", "fw_sha256", "key_sha256"}) {
    Json claims = Evidence();
    claims.erase(claim);
    EXPECT_TRUE(refused(header, claims)) << claim;
  }
  Json claims = Evidence();
  claims["eat_nonce"] = kNonce.substr(1);
  EXPECT_TRUE(refused(header, claims));
  claims = Evidence();
  claims["serial"] = "SN 1";
  EXPECT_TRUE(refused(header, claims));
  claims = Evidence();
  claims["hwmodel"] = std::string(kMaxClaimChars + 1, 'x');
  EXPECT_TRUE(refused(header, claims));
  claims = Evidence();
  claims["swname"] = "a\nb";
  EXPECT_TRUE(refused(header, claims));
  claims = Evidence();
  for (std::size_t i = claims.size(); i <= kMaxClaims; ++i) claims["x" + std::to_string(i)] = 1;
  EXPECT_TRUE(refused(header, claims));
  const auto big = ParseEvidenceClaims(std::string(kMaxEvidenceBytes + 1, 'a'));
  if (big.has_value()) GTEST_FAIL();
  EXPECT_THAT(big, test::HasCode(ErrorCode::kInvalidArgument));
}

TEST(ClaimsTest, ReadsReceipt) {
  const auto parsed =
      ParseReceiptClaims(Signed({{"typ", kReceiptType}, {"kid", "0a1b"}}, Receipt()));
  if (!parsed.has_value()) GTEST_FAIL() << parsed.error();
  EXPECT_EQ(parsed->kid, "0a1b");
  EXPECT_EQ(parsed->serial, "SN-1");
  EXPECT_EQ(parsed->order, kSha);
  EXPECT_EQ(parsed->iat, 1780000000);
  EXPECT_EQ(parsed->destroyed, std::vector<std::string>{kSha});
}

TEST(ClaimsTest, RefusesReceiptsOutsideTheContract) {
  const auto refused = [](const Json& header, const Json& claims) {
    const auto parsed = ParseReceiptClaims(Signed(header, claims));
    return !parsed.has_value() && parsed.error().code() == ErrorCode::kInvalidArgument;
  };
  const Json header{{"typ", kReceiptType}, {"kid", "0a1b"}};
  EXPECT_TRUE(refused({{"typ", kReceiptType}}, Receipt()));
  EXPECT_TRUE(refused({{"typ", kReceiptType}, {"kid", "0A1B"}}, Receipt()));
  EXPECT_TRUE(refused({{"typ", kEvidenceType}, {"kid", "0a1b"}}, Receipt()));
  EXPECT_TRUE(refused({{"typ", 7}, {"kid", "0a1b"}}, Receipt()));
  EXPECT_TRUE(refused({{"typ", kReceiptType}, {"kid", 7}}, Receipt()));
  for (const char* claim : {"serial", "order", "iat", "destroyed"}) {
    Json claims = Receipt();
    claims.erase(claim);
    EXPECT_TRUE(refused(header, claims)) << claim;
  }
  Json claims = Receipt();
  claims["iat"] = 1.5;
  EXPECT_TRUE(refused(header, claims));
  claims["iat"] = 1780000000;
  claims["destroyed"] = Json::array();
  EXPECT_TRUE(refused(header, claims));
  claims["destroyed"] = Json::array({{{"label", ""}, {"key_sha256", kSha}}});
  EXPECT_TRUE(refused(header, claims));
  claims["destroyed"] = Json::array({{{"label", "k"}, {"key_sha256", kSha.substr(1)}}});
  EXPECT_TRUE(refused(header, claims));
  claims["destroyed"] = Json::array();
  for (std::size_t i = 0; i <= kMaxDestroyedKeys; ++i) {
    claims["destroyed"].push_back({{"label", "k"}, {"key_sha256", kSha}});
  }
  EXPECT_TRUE(refused(header, claims));
}

}  // namespace
}  // namespace fleetid::enroll
