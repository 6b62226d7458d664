// operators::SignApproval and VerifyApproval: an approval verifies only for the request, digest
// and decision it was made for, only with the key of the certificate it carries, and anything
// malformed is refused as such. (The end-to-end path, a key in the operator's SoftHSM2 token and
// the server checking the certificate against the session's, is tests/integration/
// cli_operator_test.sh.)
#include "operators/approval.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <openssl/evp.h>

#include <nlohmann/json.hpp>

#include "crypto/jws.h"
#include "crypto/x509.h"
#include "testing/certs.h"
#include "testing/matchers.h"

namespace fleetid::operators {
namespace {

using test::HasCode;
using Json = nlohmann::json;

constexpr std::string_view kRequest = "policy proposal 7";
constexpr std::string_view kDigest =
    "46f5abbe0b1b258bf06eb9a870a1ffd6e330fd54cbc3ad775050b879def64193";

class ApprovalTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ca_key_.reset(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
    key_.reset(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
    ASSERT_TRUE(ca_key_ && key_);
    ca_ = test::MakeCa("fleetid Operator CA", ca_key_.get());
    auto leaf = test::MakeCert("bob", key_.get(), ca_.get(), ca_key_.get(), {});
    ASSERT_TRUE(ca_ && leaf);
    chain_ = {crypto::CertificateDer(leaf.get()).value(),
              crypto::CertificateDer(ca_.get()).value()};
  }

  std::string Sign(EVP_PKEY* key, std::string_view request = kRequest,
                   std::string_view digest = kDigest, std::string_view decision = "approve") {
    auto jws = SignApproval(key, chain_, request, digest, decision);
    EXPECT_TRUE(jws) << jws.error();
    return jws.value_or("");
  }

  crypto::EvpPkeyPtr ca_key_;
  crypto::EvpPkeyPtr key_;
  crypto::X509Ptr ca_;
  std::vector<std::vector<std::uint8_t>> chain_;
};

TEST_F(ApprovalTest, VerifiesForWhatWasSignedAndReturnsTheChain) {
  auto verified = VerifyApproval(Sign(key_.get()), kRequest, kDigest, "approve");
  ASSERT_TRUE(verified) << verified.error();
  EXPECT_EQ(verified->chain_der, chain_);
}

TEST_F(ApprovalTest, IsBoundToTheRequestTheDigestAndTheDecision) {
  const std::string jws = Sign(key_.get());
  EXPECT_THAT(VerifyApproval(jws, "policy proposal 8", kDigest, "approve"),
              HasCode(ErrorCode::kUnauthenticated));
  EXPECT_THAT(VerifyApproval(jws, kRequest, std::string(64, '0'), "approve"),
              HasCode(ErrorCode::kUnauthenticated));
  EXPECT_THAT(VerifyApproval(jws, kRequest, kDigest, "reject"),
              HasCode(ErrorCode::kUnauthenticated));
}

TEST_F(ApprovalTest, AnotherKeyThanTheCarriedCertificatesIsRefused) {
  crypto::EvpPkeyPtr mallory(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  EXPECT_THAT(VerifyApproval(Sign(mallory.get()), kRequest, kDigest, "approve"),
              HasCode(ErrorCode::kUnauthenticated));
}

TEST_F(ApprovalTest, MalformedSignaturesAreRefusedAsSuch) {
  EXPECT_THAT(VerifyApproval("", kRequest, kDigest, "approve"),
              HasCode(ErrorCode::kInvalidArgument));
  EXPECT_THAT(VerifyApproval("a.b.c", kRequest, kDigest, "approve"),
              HasCode(ErrorCode::kInvalidArgument));
  // A JWS of another type (a factory manifest's, say), or one without its certificate.
  auto other = crypto::SignJws(key_.get(), {{"typ", "fleetid-manifest+jws"}}, "{}");
  ASSERT_TRUE(other);
  EXPECT_THAT(VerifyApproval(*other, kRequest, kDigest, "approve"),
              HasCode(ErrorCode::kInvalidArgument));
  auto bare = crypto::SignJws(key_.get(), {{"typ", kApprovalType}}, "{}");
  ASSERT_TRUE(bare);
  EXPECT_THAT(VerifyApproval(*bare, kRequest, kDigest, "approve"),
              HasCode(ErrorCode::kInvalidArgument));
  auto junk =
      crypto::SignJws(key_.get(), {{"typ", kApprovalType}, {"x5c", {"bm90IGEgY2VydA=="}}}, "{}");
  ASSERT_TRUE(junk);
  EXPECT_THAT(VerifyApproval(*junk, kRequest, kDigest, "approve"),
              HasCode(ErrorCode::kInvalidArgument));
  EXPECT_THAT(SignApproval(key_.get(), {}, kRequest, kDigest, "approve"),
              HasCode(ErrorCode::kInvalidArgument));
}

}  // namespace
}  // namespace fleetid::operators
