#include "crypto/suite.h"

#include <gtest/gtest.h>
#include <openssl/core_names.h>
#include <openssl/rsa.h>

#include "crypto/crypto.h"
#include "crypto/keys.h"
#include "testing/matchers.h"

namespace fleetid::crypto {
namespace {

// In-memory keys are used here only to check encodings against OpenSSL; fleetid's own keys are
// made and used in the token (custody/).
EvpPkeyPtr GenerateInMemory(const Suite& suite) {
  EVP_PKEY* key = nullptr;
  switch (suite.key_type) {
    case KeyType::kEc:
      key = EVP_EC_gen(OBJ_nid2sn(suite.curve_nid));
      break;
    case KeyType::kEd25519:
      key = EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519");
      break;
    case KeyType::kRsa:
      key = EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<size_t>(suite.rsa_bits));
      break;
  }
  return EvpPkeyPtr(key);
}

// SignInMemory signs like the custody Signer would, but with an in-memory key.
std::vector<std::uint8_t> SignInMemory(const Suite& suite, EVP_PKEY* key,
                                       std::span<const std::uint8_t> msg,
                                       std::vector<std::uint8_t>* algorithm_id) {
  EvpMdCtxPtr ctx(EVP_MD_CTX_new());
  EVP_PKEY_CTX* pctx = nullptr;
  const std::string md(suite.digest_name);
  EXPECT_EQ(EVP_DigestSignInit_ex(ctx.get(), &pctx, md.empty() ? nullptr : md.c_str(), nullptr,
                                  nullptr, key, nullptr),
            1);
  if (suite.key_type == KeyType::kRsa) {
    EXPECT_EQ(EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING), 1);
    EXPECT_EQ(EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, 32), 1);
    EXPECT_EQ(EVP_PKEY_CTX_set_rsa_mgf1_md_name(pctx, "SHA256", nullptr), 1);
  }
  unsigned char aid[128];
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_octet_string(OSSL_SIGNATURE_PARAM_ALGORITHM_ID, aid, sizeof(aid)),
      OSSL_PARAM_construct_end()};
  EXPECT_EQ(EVP_PKEY_CTX_get_params(pctx, params), 1);
  algorithm_id->assign(aid, aid + params[0].return_size);
  size_t len = 0;
  EXPECT_EQ(EVP_DigestSign(ctx.get(), nullptr, &len, msg.data(), msg.size()), 1);
  std::vector<std::uint8_t> sig(len);
  EXPECT_EQ(EVP_DigestSign(ctx.get(), sig.data(), &len, msg.data(), msg.size()), 1);
  sig.resize(len);
  return sig;
}

TEST(SuiteTest, FindByName) {
  for (const Suite& suite : AllSuites()) {
    auto found = FindSuite(suite.name);
    ASSERT_TRUE(found) << suite.name;
    EXPECT_EQ((*found)->id, suite.id);
  }
  auto missing = FindSuite("dsa-1024");
  ASSERT_FALSE(missing);
  EXPECT_THAT(missing, test::HasCode(ErrorCode::kInvalidArgument));
  EXPECT_NE(missing.error().message().find("unsupported algorithm suite 'dsa-1024'"),
            std::string::npos);
  EXPECT_NE(missing.error().message().find("ed25519"), std::string::npos);
}

// The AlgorithmIdentifier constants must be byte-identical to what OpenSSL itself puts in a
// signature it makes under the same parameters.
TEST(SuiteTest, AlgorithmIdentifiersMatchOpenSsl) {
  for (const Suite& suite : AllSuites()) {
    EvpPkeyPtr key = GenerateInMemory(suite);
    ASSERT_TRUE(key) << suite.name;
    std::vector<std::uint8_t> openssl_aid;
    auto msg = AsBytes("to be signed");
    auto sig = SignInMemory(suite, key.get(), msg, &openssl_aid);
    EXPECT_EQ(Hex(openssl_aid), Hex(suite.signature_algorithm_der)) << suite.name;
    auto algor = SignatureAlgorithm(suite);
    ASSERT_TRUE(algor) << suite.name;

    auto of_key = SuiteOfPublicKey(key.get());
    ASSERT_TRUE(of_key) << suite.name;
    EXPECT_EQ((*of_key)->id, suite.id);

    EXPECT_TRUE(VerifySignature(suite, key.get(), msg, sig)) << suite.name;
    auto tampered = sig;
    tampered[tampered.size() / 2] ^= 0x01;
    auto bad = VerifySignature(suite, key.get(), msg, tampered);
    ASSERT_FALSE(bad) << suite.name;
    EXPECT_THAT(bad, test::HasCode(ErrorCode::kInvalidArgument));
  }
}

TEST(SuiteTest, SuiteOfUnsupportedKeys) {
  EvpPkeyPtr p521(EVP_EC_gen("P-521"));
  auto r = SuiteOfPublicKey(p521.get());
  ASSERT_FALSE(r);
  EXPECT_THAT(r, test::HasCode(ErrorCode::kInvalidArgument));
  EvpPkeyPtr rsa2048(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", size_t{2048}));
  auto r2 = SuiteOfPublicKey(rsa2048.get());
  ASSERT_FALSE(r2);
  EXPECT_NE(r2.error().message().find("3072"), std::string::npos);
}

TEST(SuiteTest, EcdsaRawToDerRoundTripsThroughOpenSsl) {
  const Suite& suite = GetSuite(SuiteId::kEcdsaP256Sha256);
  EvpPkeyPtr key = GenerateInMemory(suite);
  std::vector<std::uint8_t> aid;
  auto msg = AsBytes("hello");
  auto der = SignInMemory(suite, key.get(), msg, &aid);
  // DER -> raw r||s (as a token would return it) -> DER again.
  const unsigned char* p = der.data();
  EcdsaSigPtr sig(d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(der.size())));
  ASSERT_TRUE(sig);
  std::vector<std::uint8_t> raw(64);
  BN_bn2binpad(ECDSA_SIG_get0_r(sig.get()), raw.data(), 32);
  BN_bn2binpad(ECDSA_SIG_get0_s(sig.get()), raw.data() + 32, 32);
  auto again = EcdsaRawToDer(raw);
  ASSERT_TRUE(again);
  EXPECT_EQ(*again, der);
  EXPECT_FALSE(EcdsaRawToDer(std::span(raw).first(63)));
}

TEST(SuiteTest, EcPublicKeyRejectsPointsOffTheCurve) {
  std::vector<std::uint8_t> point(65, 0x01);
  point[0] = 0x04;
  auto key = EcPublicKey(NID_X9_62_prime256v1, point);
  ASSERT_FALSE(key);
  EXPECT_THAT(key, test::HasCode(ErrorCode::kInvalidArgument));
}

TEST(SuitePolicyTest, AllowPreferDeprecateDisable) {
  SuitePolicy policy;
  EXPECT_EQ(policy.Preferred().id, SuiteId::kEcdsaP256Sha256);
  policy.Set(SuiteId::kEd25519, SuiteStatus::kPreferred);
  EXPECT_EQ(policy.Preferred().id, SuiteId::kEd25519);
  EXPECT_EQ(policy.Status(SuiteId::kEcdsaP256Sha256), SuiteStatus::kAllowed);
  policy.Set(SuiteId::kRsa3072PssSha256, SuiteStatus::kDeprecated);
  EXPECT_TRUE(policy.CheckUsable(GetSuite(SuiteId::kRsa3072PssSha256)));
  policy.Set(SuiteId::kEcdsaP384Sha384, SuiteStatus::kDisabled);
  auto denied = policy.CheckUsable(GetSuite(SuiteId::kEcdsaP384Sha384));
  ASSERT_FALSE(denied);
  EXPECT_THAT(denied, test::HasCode(ErrorCode::kPermissionDenied));
}

}  // namespace
}  // namespace fleetid::crypto
