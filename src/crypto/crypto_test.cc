#include "crypto/crypto.h"

#include <gtest/gtest.h>

#include "crypto/secret.h"
#include "testing/matchers.h"

namespace fleetid::crypto {
namespace {

TEST(CryptoTest, Sha256KnownAnswer) {
  // FIPS 180-2 Appendix B.1.
  EXPECT_EQ(Hex(Sha256("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  auto sha384 = Digest("SHA384", AsBytes("abc"));
  ASSERT_TRUE(sha384);
  EXPECT_EQ(Hex(*sha384).substr(0, 16), "cb00753f45a35e8b");
}

TEST(CryptoTest, UnhexIsTheInverseOfHex) {
  const std::vector<std::uint8_t> bytes = {0x00, 0x7f, 0x80, 0xff, 0x0a};
  auto back = Unhex(Hex(bytes));
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, bytes);
  EXPECT_EQ(*Unhex("0AfF"), (std::vector<std::uint8_t>{0x0a, 0xff}));
  EXPECT_FALSE(Unhex("abc")) << "odd length";
  EXPECT_FALSE(Unhex("0g")) << "not a hex digit";
  std::uint8_t two[2];
  EXPECT_FALSE(Unhex("00", two)) << "wrong output size";
}

TEST(CryptoTest, UnknownDigestIsInvalidArgument) {
  auto result = Digest("NOT-A-DIGEST", AsBytes("x"));
  ASSERT_FALSE(result);
  EXPECT_THAT(result, test::HasCode(ErrorCode::kInvalidArgument));
}

TEST(CryptoTest, ConstantTimeEquals) {
  EXPECT_TRUE(ConstantTimeEquals(AsBytes("secret"), AsBytes("secret")));
  EXPECT_FALSE(ConstantTimeEquals(AsBytes("secret"), AsBytes("secreT")));
  EXPECT_FALSE(ConstantTimeEquals(AsBytes("secret"), AsBytes("secret!")));
  EXPECT_TRUE(ConstantTimeEquals({}, {}));
}

TEST(CryptoTest, OpenSslRngGivesFreshBytes) {
  auto a = OpenSslRng::Instance().Bytes(32);
  auto b = OpenSslRng::Instance().Bytes(32);
  ASSERT_TRUE(a && b);
  EXPECT_NE(*a, *b);
}

TEST(SecretBufferTest, MoveLeavesTheSourceEmptyAndEqualsIsByContent) {
  SecretBuffer pin = SecretBuffer::FromString("1234");
  SecretBuffer same = SecretBuffer::FromString("1234");
  SecretBuffer other = SecretBuffer::FromString("4321");
  EXPECT_TRUE(pin.Equals(same));
  EXPECT_FALSE(pin.Equals(other));
  SecretBuffer moved = std::move(pin);
  EXPECT_EQ(pin.size(), 0u);  // NOLINT(bugprone-use-after-move): checking the moved-from state.
  EXPECT_EQ(pin.data(), nullptr);
  EXPECT_TRUE(moved.Equals(same));
  moved.Wipe();
  EXPECT_TRUE(moved.empty());
}

static_assert(!std::is_copy_constructible_v<SecretBuffer>);
static_assert(!std::is_convertible_v<SecretBuffer, std::string_view>);

}  // namespace
}  // namespace fleetid::crypto
