// Custody against a real SoftHSM2 token: keys are made in the token, cannot be read out, sign
// through C_Sign, and verify with OpenSSL against the exported public key.
#include "custody/custody.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <thread>

#include "crypto/crypto.h"
#include "crypto/keys.h"
#include "testing/matchers.h"
#include "testing/token.h"

namespace fleetid::custody {
namespace {

using crypto::AsBytes;
using crypto::Suite;
using crypto::SuiteId;
using test::Opened;

using test::TheToken;
using test::UniqueLabel;

class SuiteCustodyTest : public ::testing::TestWithParam<SuiteId> {
 protected:
  static const Suite& suite() { return crypto::GetSuite(GetParam()); }
};

TEST_P(SuiteCustodyTest, KeyIsGeneratedInTheTokenAndNeverLeavesIt) {
  auto token = TheToken();
  const std::string label = UniqueLabel(suite().name);
  auto attrs = token->GenerateKey(label, suite(), crypto::OpenSslRng::Instance());
  ASSERT_TRUE(attrs) << attrs.error();
  EXPECT_EQ(attrs->suite->id, GetParam());
  EXPECT_TRUE(attrs->token);
  EXPECT_TRUE(attrs->is_private);
  EXPECT_TRUE(attrs->sensitive);
  EXPECT_TRUE(attrs->always_sensitive);
  EXPECT_FALSE(attrs->extractable);
  EXPECT_TRUE(attrs->never_extractable);
  EXPECT_TRUE(attrs->local);
  EXPECT_TRUE(attrs->can_sign);
  EXPECT_FALSE(attrs->can_decrypt);
  EXPECT_FALSE(attrs->can_unwrap);
  EXPECT_FALSE(attrs->can_derive);
  EXPECT_TRUE(attrs->HeldInHardware());

  auto probe = token->ProbePrivateValue(label);
  ASSERT_TRUE(probe) << probe.error();
  EXPECT_EQ(*probe, CKR_ATTRIBUTE_SENSITIVE) << Pkcs11ReturnName(*probe);

  // Ask the module directly, with a buffer, as an attacker with the PIN would.
  CK_FUNCTION_LIST* fns = token->module()->functions();
  CK_SESSION_HANDLE s = CK_INVALID_HANDLE;
  CK_SLOT_ID slot = *token->module()->FindToken(token->label());
  ASSERT_EQ(fns->C_OpenSession(slot, CKF_SERIAL_SESSION, nullptr, nullptr, &s), CKR_OK);
  CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
  CK_ATTRIBUTE find[] = {{CKA_CLASS, &cls, sizeof(cls)},
                         {CKA_LABEL, const_cast<char*>(label.data()), label.size()}};
  ASSERT_EQ(fns->C_FindObjectsInit(s, find, 2), CKR_OK);
  CK_OBJECT_HANDLE key = CK_INVALID_HANDLE;
  CK_ULONG found = 0;
  ASSERT_EQ(fns->C_FindObjects(s, &key, 1, &found), CKR_OK);
  fns->C_FindObjectsFinal(s);
  ASSERT_EQ(found, 1u);
  std::vector<std::uint8_t> buffer(1024, 0xAA);
  const CK_ATTRIBUTE_TYPE secret_attr =
      suite().key_type == crypto::KeyType::kRsa ? CKA_PRIVATE_EXPONENT : CKA_VALUE;
  CK_ATTRIBUTE value{secret_attr, buffer.data(), buffer.size()};
  EXPECT_EQ(fns->C_GetAttributeValue(s, key, &value, 1), CKR_ATTRIBUTE_SENSITIVE);
  EXPECT_EQ(value.ulValueLen, CK_UNAVAILABLE_INFORMATION);
  EXPECT_EQ(std::count(buffer.begin(), buffer.end(), 0xAA), 1024);
  // Nor may the key be flipped to extractable afterwards.
  CK_BBOOL yes = CK_TRUE;
  CK_ATTRIBUTE make_extractable{CKA_EXTRACTABLE, &yes, sizeof(yes)};
  EXPECT_NE(fns->C_SetAttributeValue(s, key, &make_extractable, 1), CKR_OK);
  fns->C_CloseSession(s);
}

TEST_P(SuiteCustodyTest, SignaturesVerifyWithOpenSslAgainstTheExportedPublicKey) {
  auto token = TheToken();
  const std::string label = UniqueLabel(suite().name);
  ASSERT_TRUE(token->GenerateKey(label, suite(), crypto::OpenSslRng::Instance()));
  auto signer = token->GetSigner(label);
  ASSERT_TRUE(signer) << signer.error();
  EXPECT_EQ(&(*signer)->suite(), &suite());
  EXPECT_EQ((*signer)->label(), label);

  auto exported = token->PublicKey(label);
  ASSERT_TRUE(exported) << exported.error();
  auto der = crypto::PublicKeyDer(exported->get());
  ASSERT_TRUE(der);
  auto reparsed = crypto::PublicKeyFromDer(*der);  // as a relying party would see it
  ASSERT_TRUE(reparsed);
  EXPECT_EQ(EVP_PKEY_eq((*signer)->public_key(), reparsed->get()), 1);

  const std::string message = "tbsCertificate of device 0042 " + label;
  auto sig = (*signer)->Sign(AsBytes(message));
  ASSERT_TRUE(sig) << sig.error();
  EXPECT_TRUE(crypto::VerifySignature(suite(), reparsed->get(), AsBytes(message), *sig));
  auto other = crypto::VerifySignature(suite(), reparsed->get(), AsBytes(message + "!"), *sig);
  ASSERT_FALSE(other);
  EXPECT_THAT(other, test::HasCode(ErrorCode::kInvalidArgument));
  auto pem = crypto::PublicKeyPem(reparsed->get());
  ASSERT_TRUE(pem);
  EXPECT_NE(pem->find("BEGIN PUBLIC KEY"), std::string::npos);
}

INSTANTIATE_TEST_SUITE_P(AllSuites, SuiteCustodyTest,
                         ::testing::Values(SuiteId::kEcdsaP256Sha256, SuiteId::kEcdsaP384Sha384,
                                           SuiteId::kEd25519, SuiteId::kRsa3072PssSha256),
                         [](const auto& param_info) {
                           std::string name(crypto::GetSuite(param_info.param).name);
                           std::erase(name, '-');
                           return name;
                         });

TEST(CustodyTest, ASecondStartFindsTheSameKeys) {
  struct Made {
    std::string label;
    std::vector<std::uint8_t> public_der;
  };
  std::vector<Made> made;
  made.reserve(crypto::AllSuites().size());
  for (const Suite& suite : crypto::AllSuites()) {
    const std::string label = UniqueLabel(std::string("restart-") + std::string(suite.name));
    ASSERT_TRUE(TheToken()->GenerateKey(label, suite, crypto::OpenSslRng::Instance()));
    auto pub = TheToken()->PublicKey(label);
    ASSERT_TRUE(pub);
    made.push_back({label, *crypto::PublicKeyDer(pub->get())});
  }
  std::weak_ptr<Module> module = TheToken()->module();
  test::CloseAll();
  ASSERT_TRUE(module.expired()) << "the module must be finalised, as at process exit";

  EXPECT_FALSE(test::Opened().created);
  for (const Made& m : made) {
    auto signer = TheToken()->GetSigner(m.label);
    ASSERT_TRUE(signer) << signer.error();
    auto pub_now = crypto::PublicKeyDer((*signer)->public_key());
    EXPECT_EQ(*pub_now, m.public_der) << m.label;
    auto sig = (*signer)->Sign(AsBytes("after restart"));
    ASSERT_TRUE(sig);
    auto pub_then = crypto::PublicKeyFromDer(m.public_der);
    EXPECT_TRUE(crypto::VerifySignature((*signer)->suite(), pub_then->get(),
                                        AsBytes("after restart"), *sig));
  }
}

TEST(CustodyTest, ConcurrentSigningThroughOneSigner) {
  auto token = TheToken();
  const std::string label = UniqueLabel("concurrent");
  const Suite& suite = crypto::GetSuite(SuiteId::kEcdsaP256Sha256);
  ASSERT_TRUE(token->GenerateKey(label, suite, crypto::OpenSslRng::Instance()));
  auto signer = token->GetSigner(label);
  ASSERT_TRUE(signer);
  std::atomic<int> good{0};
  std::vector<std::thread> threads;
  threads.reserve(4);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 100; ++i) {
        const std::string msg = fmt::format("thread {} message {}", t, i);
        auto sig = (*signer)->Sign(AsBytes(msg));
        if (sig && crypto::VerifySignature(suite, (*signer)->public_key(), AsBytes(msg), *sig)) {
          ++good;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(good.load(), 400);
}

// --- Bad input: each refused with its own code and a message naming the problem.

TEST(CustodyErrorTest, MissingModuleFile) {
  auto module = Module::Load("/nonexistent/libvendor-pkcs11.so");
  ASSERT_FALSE(module);
  EXPECT_THAT(module, test::HasCode(ErrorCode::kUnavailable));
  EXPECT_NE(module.error().message().find("'/nonexistent/libvendor-pkcs11.so' does not exist"),
            std::string::npos)
      << module.error();
}

TEST(CustodyErrorTest, FileThatIsNotAPkcs11Module) {
  const auto not_a_module = test::DataDir() / "not-a-module.so";
  { std::ofstream(not_a_module) << "hello"; }
  auto module = Module::Load(not_a_module);
  ASSERT_FALSE(module);
  EXPECT_THAT(module, test::HasCode(ErrorCode::kUnavailable));
  EXPECT_NE(module.error().message().find("cannot load PKCS#11 module"), std::string::npos)
      << module.error();
}

TEST(CustodyErrorTest, MissingToken) {
  auto token = Token::Open(TheToken()->module(), "no-such-token",
                           crypto::SecretBuffer::FromString("1234"));
  ASSERT_FALSE(token);
  EXPECT_THAT(token, test::HasCode(ErrorCode::kNotFound));
  EXPECT_NE(token.error().message().find("no token labelled 'no-such-token'"), std::string::npos)
      << token.error();
}

TEST(CustodyErrorTest, WrongPinWhileLoggedOutAndWhileLoggedIn) {
  auto module = TheToken()->module();
  const std::string label = TheToken()->label();
  // While this process holds the token open, the PIN is checked against the one that logged in.
  auto wrong = Token::Open(module, label, crypto::SecretBuffer::FromString("not-the-pin"));
  ASSERT_FALSE(wrong);
  EXPECT_THAT(wrong, test::HasCode(ErrorCode::kUnauthenticated));
  EXPECT_NE(wrong.error().message().find("wrong PIN for token"), std::string::npos);
  EXPECT_EQ(wrong.error().message().find("not-the-pin"), std::string::npos);

  // With the token closed, C_Login itself says CKR_PIN_INCORRECT.
  test::CloseAll();
  {
    auto module2 = Module::Load(*FindSoftHsmModule());
    ASSERT_TRUE(module2);
    auto wrong2 = Token::Open(*module2, label, crypto::SecretBuffer::FromString("0000"));
    ASSERT_FALSE(wrong2);
    EXPECT_THAT(wrong2, test::HasCode(ErrorCode::kUnauthenticated));
    EXPECT_NE(wrong2.error().message().find("CKR_PIN_INCORRECT"), std::string::npos)
        << wrong2.error();
  }
  EXPECT_TRUE(TheToken());  // and the right PIN still works
}

TEST(CustodyErrorTest, UnknownKeyLabel) {
  auto signer = TheToken()->GetSigner("no-such-key");
  ASSERT_FALSE(signer);
  EXPECT_THAT(signer, test::HasCode(ErrorCode::kNotFound));
  EXPECT_NE(signer.error().message().find("no private key labelled 'no-such-key'"),
            std::string::npos);
  EXPECT_THAT(TheToken()->DestroyKey("no-such-key"), test::HasCode(ErrorCode::kNotFound));
  EXPECT_THAT(TheToken()->PublicKey("no-such-key"), test::HasCode(ErrorCode::kNotFound));
}

TEST(CustodyErrorTest, UnsupportedSuite) {
  auto suite = crypto::FindSuite("rsa1024-pkcs1-sha1");
  ASSERT_FALSE(suite);
  EXPECT_THAT(suite, test::HasCode(ErrorCode::kInvalidArgument));
  EXPECT_NE(suite.error().message().find("unsupported algorithm suite 'rsa1024-pkcs1-sha1'"),
            std::string::npos);
}

TEST(CustodyErrorTest, DuplicateLabelIsAConflict) {
  const std::string label = UniqueLabel("dup");
  const Suite& suite = crypto::GetSuite(SuiteId::kEd25519);
  ASSERT_TRUE(TheToken()->GenerateKey(label, suite, crypto::OpenSslRng::Instance()));
  auto again = TheToken()->GenerateKey(label, suite, crypto::OpenSslRng::Instance());
  ASSERT_FALSE(again);
  EXPECT_THAT(again, test::HasCode(ErrorCode::kConflict));
}

// Makes a P-256 key pair directly through the module with the given private-key flags, the way a
// careless operator's tool might have.
void RawGenerate(Token& token, const std::string& label, bool can_sign, bool extractable) {
  CK_FUNCTION_LIST* fns = token.module()->functions();
  CK_SESSION_HANDLE s = CK_INVALID_HANDLE;
  CK_SLOT_ID slot = *token.module()->FindToken(token.label());
  ASSERT_EQ(fns->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, nullptr, nullptr, &s),
            CKR_OK);
  CK_BBOOL yes = CK_TRUE;
  CK_BBOOL no = CK_FALSE;
  CK_BBOOL sign = can_sign ? CK_TRUE : CK_FALSE;
  CK_BBOOL extract = extractable ? CK_TRUE : CK_FALSE;
  std::uint8_t params[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
  std::uint8_t id[] = {0xfe, 0xed};
  CK_ATTRIBUTE pub[] = {{CKA_TOKEN, &yes, 1}, {CKA_EC_PARAMS, params, sizeof(params)},
                        {CKA_LABEL, const_cast<char*>(label.data()), label.size()},
                        {CKA_ID, id, sizeof(id)}};
  CK_ATTRIBUTE priv[] = {{CKA_TOKEN, &yes, 1},          {CKA_PRIVATE, &yes, 1},
                         {CKA_SENSITIVE, &yes, 1},      {CKA_EXTRACTABLE, &extract, 1},
                         {CKA_SIGN, &sign, 1},          {CKA_DERIVE, &no, 1},
                         {CKA_LABEL, const_cast<char*>(label.data()), label.size()},
                         {CKA_ID, id, sizeof(id)}};
  CK_MECHANISM mech{CKM_EC_KEY_PAIR_GEN, nullptr, 0};
  CK_OBJECT_HANDLE h1 = 0;
  CK_OBJECT_HANDLE h2 = 0;
  EXPECT_EQ(fns->C_GenerateKeyPair(s, &mech, pub, std::size(pub), priv, std::size(priv), &h1, &h2),
            CKR_OK);
  fns->C_CloseSession(s);
}

TEST(CustodyErrorTest, SigningWithAKeyWithoutCkaSign) {
  const std::string label = UniqueLabel("no-sign");
  RawGenerate(*TheToken(), label, /*can_sign=*/false, /*extractable=*/false);
  auto signer = TheToken()->GetSigner(label);
  ASSERT_FALSE(signer);
  EXPECT_THAT(signer, test::HasCode(ErrorCode::kPermissionDenied));
  EXPECT_NE(signer.error().message().find("may not sign (CKA_SIGN is false)"), std::string::npos)
      << signer.error();
}

TEST(CustodyErrorTest, SignRefusedByTheTokenAfterCkaSignIsCleared) {
  const std::string label = UniqueLabel("revoked-sign");
  ASSERT_TRUE(TheToken()->GenerateKey(label, crypto::GetSuite(SuiteId::kEcdsaP256Sha256),
                                      crypto::OpenSslRng::Instance()));
  auto signer = TheToken()->GetSigner(label);
  ASSERT_TRUE(signer);
  // Clear CKA_SIGN behind the signer's back; the token itself must then refuse C_SignInit.
  test::ClearCkaSign(label);

  auto sig = (*signer)->Sign(AsBytes("anything"));
  ASSERT_FALSE(sig);
  EXPECT_THAT(sig, test::HasCode(ErrorCode::kPermissionDenied));
  EXPECT_NE(sig.error().message().find("CKR_KEY_FUNCTION_NOT_PERMITTED"), std::string::npos)
      << sig.error();
}

TEST(CustodyErrorTest, ExtractableKeysAreNotUsedForSigning) {
  const std::string label = UniqueLabel("extractable");
  RawGenerate(*TheToken(), label, /*can_sign=*/true, /*extractable=*/true);
  auto attrs = TheToken()->FindKey(label);
  ASSERT_TRUE(attrs);
  EXPECT_FALSE(attrs->HeldInHardware());
  auto signer = TheToken()->GetSigner(label);
  ASSERT_FALSE(signer);
  EXPECT_THAT(signer, test::HasCode(ErrorCode::kPermissionDenied));
  EXPECT_NE(signer.error().message().find("extractable"), std::string::npos);
}

TEST(CustodyTest, ListAndDestroyKeys) {
  const std::string label = UniqueLabel("listed");
  ASSERT_TRUE(TheToken()->GenerateKey(label, crypto::GetSuite(SuiteId::kEd25519),
                                      crypto::OpenSslRng::Instance()));
  auto keys = TheToken()->ListKeys();
  ASSERT_TRUE(keys);
  EXPECT_TRUE(std::ranges::any_of(*keys, [&](const auto& k) { return k.label == label; }));
  ASSERT_TRUE(TheToken()->DestroyKey(label));
  EXPECT_THAT(TheToken()->FindKey(label), test::HasCode(ErrorCode::kNotFound));
}

TEST(CustodyTest, ReturnNames) {
  EXPECT_EQ(Pkcs11ReturnName(CKR_ATTRIBUTE_SENSITIVE), "CKR_ATTRIBUTE_SENSITIVE");
  EXPECT_EQ(Pkcs11ReturnName(0x80001234UL), "CKR_0x80001234");
}

}  // namespace
}  // namespace fleetid::custody
