#include "crypto/jws.h"

#include <gtest/gtest.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>

#include "crypto/crypto.h"
#include "crypto/handles.h"
#include "testing/matchers.h"

namespace fleetid::crypto {
namespace {

EvpPkeyPtr Generate(const char* type, const char* param = nullptr) {
  if (std::string_view(type) == "EC") return EvpPkeyPtr(EVP_EC_gen(param));
  if (std::string_view(type) == "RSA") return EvpPkeyPtr(EVP_RSA_gen(3072));
  return EvpPkeyPtr(EVP_PKEY_Q_keygen(nullptr, nullptr, type));
}

TEST(Base64Test, RoundTripsAndRefusesGarbage) {
  for (std::string_view s : {"", "f", "fo", "foo", "foob", "fooba", "foobar"}) {
    if (s.empty()) continue;
    const std::string enc = Base64Encode(AsBytes(s));
    auto dec = Base64Decode(enc);
    ASSERT_TRUE(dec) << s;
    EXPECT_EQ(std::string(dec->begin(), dec->end()), s);
    auto url = Base64UrlDecode(Base64UrlEncode(AsBytes(s)));
    ASSERT_TRUE(url);
    EXPECT_EQ(std::string(url->begin(), url->end()), s);
  }
  EXPECT_EQ(Base64Encode(AsBytes("foobar")), "Zm9vYmFy");  // RFC 4648 §10
  EXPECT_EQ(Base64Encode(AsBytes("fo")), "Zm8=");
  EXPECT_EQ(Base64UrlEncode(AsBytes("fo")), "Zm8");
  EXPECT_TRUE(Base64Decode("Zm9v\r\nYmFy\n"));  // line-wrapped EST bodies
  EXPECT_FALSE(Base64Decode("Zm9v!mFy"));
  EXPECT_FALSE(Base64Decode("Zm8=Zm8="));  // data after padding
  EXPECT_FALSE(Base64Decode("Zm9=")); // non-canonical trailing bits
  EXPECT_FALSE(Base64Decode(""));
  EXPECT_FALSE(Base64UrlDecode("Zm8="));  // no padding in base64url
  EXPECT_FALSE(Base64UrlDecode("Zm+v"));
  EXPECT_FALSE(Base64UrlDecode("Z"));
}

TEST(JwsTest, RoundTripForEverySuite) {
  struct Case {
    const char* type;
    const char* param;
    std::string_view alg;
  };
  for (const Case& c : {Case{"EC", "P-256", "ES256"}, Case{"EC", "P-384", "ES384"},
                        Case{"ED25519", nullptr, "EdDSA"}, Case{"RSA", nullptr, "PS256"}}) {
    EvpPkeyPtr key = Generate(c.type, c.param);
    ASSERT_TRUE(key);
    auto compact = SignJws(key.get(), {{"typ", "test"}}, R"({"a":1})");
    ASSERT_TRUE(compact) << compact.error().ToString();
    auto jws = ParseJws(*compact);
    ASSERT_TRUE(jws);
    EXPECT_EQ(jws->header["alg"], c.alg);
    EXPECT_EQ(jws->payload, R"({"a":1})");
    EXPECT_TRUE(VerifyJws(*jws, key.get())) << c.alg;

    // A changed payload, another key of the same type, and a truncated signature all fail.
    Jws changed = *jws;
    changed.signing_input.back() ^= 1;
    EXPECT_THAT(VerifyJws(changed, key.get()), test::HasCode(ErrorCode::kUnauthenticated));
    EvpPkeyPtr other = Generate(c.type, c.param);
    EXPECT_FALSE(VerifyJws(*jws, other.get()));
    Jws cut = *jws;
    cut.signature.pop_back();
    EXPECT_FALSE(VerifyJws(cut, key.get()));
  }
}

TEST(JwsTest, RefusesNoneSubstitutionAndMalformedInput) {
  EvpPkeyPtr key = Generate("EC", "P-256");
  auto compact = SignJws(key.get(), nlohmann::json::object(), "x");
  ASSERT_TRUE(compact);
  auto jws = ParseJws(*compact);
  ASSERT_TRUE(jws);
  Jws none = *jws;
  none.header["alg"] = "none";
  EXPECT_FALSE(VerifyJws(none, key.get()));
  Jws hs = *jws;
  hs.header["alg"] = "ES384";
  EXPECT_FALSE(VerifyJws(hs, key.get()));
  EXPECT_FALSE(ParseJws("a.b"));
  EXPECT_FALSE(ParseJws("a.b.c.d"));
  EXPECT_FALSE(ParseJws("!!.e30.AA"));
  EXPECT_FALSE(ParseJws(Base64UrlEncode(AsBytes("[1]")) + ".e30.AA"));  // header not an object
  EXPECT_FALSE(ParseJws(Base64UrlEncode(AsBytes(R"({"alg":"ES256","crit":["x"]})")) + ".e30.AA"));
  EXPECT_FALSE(ParseJws(std::string(kMaxJwsBytes + 1, 'a')));
}

// RFC 7515 Appendix A.3: the ES256 example, verified with the example's public key.
TEST(JwsTest, VerifiesRfc7515AppendixA3) {
  auto x = Base64UrlDecode("f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU");
  auto y = Base64UrlDecode("x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0");
  ASSERT_TRUE(x && y);
  std::vector<std::uint8_t> point{0x04};
  point.insert(point.end(), x->begin(), x->end());
  point.insert(point.end(), y->begin(), y->end());
  char group[] = "prime256v1";
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, group, 0),
      OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, point.data(), point.size()),
      OSSL_PARAM_construct_end()};
  EvpPkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_name(nullptr, "EC", nullptr));
  EVP_PKEY* raw = nullptr;
  ASSERT_EQ(EVP_PKEY_fromdata_init(ctx.get()), 1);
  ASSERT_EQ(EVP_PKEY_fromdata(ctx.get(), &raw, EVP_PKEY_PUBLIC_KEY, params), 1);
  EvpPkeyPtr key(raw);
  auto jws = ParseJws(
      "eyJhbGciOiJFUzI1NiJ9."
      "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ."
      "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q");
  ASSERT_TRUE(jws);
  EXPECT_TRUE(VerifyJws(*jws, key.get()));
}

}  // namespace
}  // namespace fleetid::crypto
