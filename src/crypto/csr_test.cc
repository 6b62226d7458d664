// PKCS#10 verification: the fast path (EC, Ed25519) and OpenSSL's own (RSA) agree on what a good
// request is, and every kind of damage is refused with kInvalidArgument.
#include "crypto/csr.h"

#include <gtest/gtest.h>

#include "crypto/keys.h"
#include "testing/certs.h"
#include "testing/matchers.h"

namespace fleetid::crypto {
namespace {

std::vector<std::uint8_t> MakeCsr(EVP_PKEY* key, const EVP_MD* md) {
  return test::MakeCsr(key, {.common_name = "device", .md = md});
}

struct Kind {
  const char* name;
  EvpPkeyPtr (*make)();
  const EVP_MD* (*md)();
};

const Kind kKinds[] = {
    {"P-256", [] { return EvpPkeyPtr(EVP_EC_gen("P-256")); }, &EVP_sha256},
    {"P-384", [] { return EvpPkeyPtr(EVP_EC_gen("P-384")); }, &EVP_sha384},
    {"Ed25519", [] { return EvpPkeyPtr(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519")); },
     [] { return static_cast<const EVP_MD*>(nullptr); }},
    {"RSA-3072", [] { return EvpPkeyPtr(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", std::size_t{3072})); },
     &EVP_sha256},
};

TEST(CsrTest, GoodRequestsVerifyAndYieldTheirKey) {
  for (const Kind& kind : kKinds) {
    EvpPkeyPtr key = kind.make();
    ASSERT_TRUE(key) << kind.name;
    auto verified = VerifyCsr(MakeCsr(key.get(), kind.md()));
    ASSERT_TRUE(verified) << kind.name << ": " << verified.error();
    EXPECT_EQ(EVP_PKEY_eq(verified->key.get(), key.get()), 1) << kind.name;
    auto spki = PublicKeyDer(key.get());
    ASSERT_TRUE(spki);
    EXPECT_EQ(verified->spki, *spki) << kind.name;
    // The key's bits go into a certificate without being decoded again, and read back equal.
    X509Ptr cert(X509_new());
    ASSERT_TRUE(SetSubjectPublicKey(cert.get(), verified->spki)) << kind.name;
    unsigned char* out = nullptr;
    const int len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert.get()), &out);
    ASSERT_GT(len, 0);
    EXPECT_EQ(std::vector<std::uint8_t>(out, out + len), *spki) << kind.name;
    OPENSSL_free(out);
  }
}

void ExpectRefused(const std::vector<std::uint8_t>& der, std::string_view says, const char* what) {
  auto verified = VerifyCsr(der);
  ASSERT_FALSE(verified) << what;
  EXPECT_THAT(verified, test::HasCode(ErrorCode::kInvalidArgument)) << what;
  EXPECT_NE(verified.error().message().find(says), std::string::npos)
      << what << ": " << verified.error().message();
}

TEST(CsrTest, DamageIsRefused) {
  for (const Kind& kind : kKinds) {
    EvpPkeyPtr key = kind.make();
    const std::vector<std::uint8_t> good = MakeCsr(key.get(), kind.md());
    auto sig = good;
    sig[sig.size() - 3] ^= 0x01;  // inside the signature
    ExpectRefused(sig, "does not verify", kind.name);
    auto subject = good;
    // The CN "device" sits in the signed part; change one letter of it.
    const std::string cn = "device";
    auto at = std::search(subject.begin(), subject.end(), cn.begin(), cn.end());
    ASSERT_NE(at, subject.end());
    *at = 'D';
    ExpectRefused(subject, "does not verify", kind.name);
    ExpectRefused(std::vector<std::uint8_t>(good.begin(), good.end() - 1), "not a DER PKCS#10",
                  kind.name);
    auto longer = good;
    longer.push_back(0);
    ExpectRefused(longer, "not a DER PKCS#10", kind.name);
  }
  ExpectRefused({}, "not a DER PKCS#10", "empty");
  ExpectRefused({0x30, 0x03, 0x01, 0x02, 0x03}, "not a DER PKCS#10", "garbage");
  std::vector<std::uint8_t> random(400);
  for (std::size_t i = 0; i < random.size(); ++i) random[i] = static_cast<std::uint8_t>(i * 7919 + 13);
  ExpectRefused(random, "not a DER PKCS#10", "noise");
}

TEST(CsrTest, SignatureAlgorithmMustMatchTheKey) {
  // A P-256 request whose outer algorithm claims SHA-384: the signature must not verify under a
  // substituted digest, and an algorithm of another key type is refused outright.
  EvpPkeyPtr key(EVP_EC_gen("P-256"));
  const std::vector<std::uint8_t> good = MakeCsr(key.get(), EVP_sha256());
  // ecdsa-with-SHA256 OID ends 04 03 02; ecdsa-with-SHA384 ends 04 03 03.
  const std::vector<std::uint8_t> sha256_oid = {0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02};
  auto swapped = good;
  auto at = std::find_end(swapped.begin(), swapped.end(), sha256_oid.begin(), sha256_oid.end());
  ASSERT_NE(at, swapped.end());
  at[7] = 0x03;
  ExpectRefused(swapped, "does not verify", "digest swapped");
  EvpPkeyPtr ed(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"));
  auto ed_csr = MakeCsr(ed.get(), nullptr);
  // Ed25519's algorithm OID 1.3.101.112 (06 03 2b 65 70) relabelled as X25519 (1.3.101.110).
  const std::vector<std::uint8_t> ed_oid = {0x06, 0x03, 0x2b, 0x65, 0x70};
  auto relabelled = ed_csr;
  auto where = std::find_end(relabelled.begin(), relabelled.end(), ed_oid.begin(), ed_oid.end());
  ASSERT_NE(where, relabelled.end());
  where[4] = 0x6e;
  ExpectRefused(relabelled, "signature algorithm", "not a signature algorithm of the key");
}

TEST(CsrTest, PointOffTheCurveIsRefused) {
  EvpPkeyPtr key(EVP_EC_gen("P-256"));
  auto csr = MakeCsr(key.get(), EVP_sha256());
  auto spki = PublicKeyDer(key.get());
  ASSERT_TRUE(spki);
  // The last byte of the point (its Y coordinate) is the last byte of the SPKI.
  auto at = std::search(csr.begin(), csr.end(), spki->begin(), spki->end());
  ASSERT_NE(at, csr.end());
  at[static_cast<std::ptrdiff_t>(spki->size()) - 1] ^= 0x01;
  ExpectRefused(csr, "not a point on its curve", "point off the curve");
}

}  // namespace
}  // namespace fleetid::crypto
