#include "custody/store.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>
#include <sstream>

#include "common/log.h"
#include "crypto/crypto.h"
#include "testing/matchers.h"
#include "testing/token.h"

namespace fleetid::custody {
namespace {

namespace fs = std::filesystem;

std::string ReadFile(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

unsigned Mode(const fs::path& p) {
  struct stat st {};
  EXPECT_EQ(::stat(p.c_str(), &st), 0) << p;
  return st.st_mode & 07777;
}

TEST(StoreTest, EmbeddedStoreKeepsItsOwnConfigAndPrivatePins) {
  std::vector<std::string> lines;
  log::SetSinkForTesting(
      [](std::string_view line, void* arg) {
        static_cast<std::vector<std::string>*>(arg)->emplace_back(line);
      },
      &lines);
  OpenedToken& opened = test::Opened();
  log::SetSinkForTesting(nullptr, nullptr);

  const fs::path dir = test::DataDir() / "custody";
  EXPECT_TRUE(opened.embedded);
  EXPECT_EQ(opened.store_dir, dir);
  EXPECT_EQ(Mode(dir), 0700u);
  EXPECT_EQ(Mode(dir / "tokens"), 0700u);
  EXPECT_EQ(Mode(dir / "user.pin"), 0600u);
  EXPECT_EQ(Mode(dir / "so.pin"), 0600u);
  const std::string conf = ReadFile(dir / "softhsm2.conf");
  EXPECT_NE(conf.find("directories.tokendir = " + (dir / "tokens").string()), std::string::npos);
  EXPECT_STREQ(std::getenv("SOFTHSM2_CONF"), (dir / "softhsm2.conf").c_str());

  const std::string user_pin = ReadFile(dir / "user.pin");
  const std::string so_pin = ReadFile(dir / "so.pin");
  EXPECT_EQ(user_pin.size(), 48u);
  EXPECT_NE(user_pin, so_pin);
  for (const std::string& line : lines) {
    EXPECT_EQ(line.find(user_pin), std::string::npos) << line;
    EXPECT_EQ(line.find(so_pin), std::string::npos) << line;
  }
  // The token directory holds the key objects SoftHSM2 encrypted under the PIN-derived key; the
  // PIN itself appears nowhere in it.
  for (const auto& entry : fs::recursive_directory_iterator(dir / "tokens")) {
    if (!entry.is_regular_file()) continue;
    EXPECT_EQ(ReadFile(entry.path()).find(user_pin), std::string::npos) << entry.path();
  }
}

TEST(StoreTest, SecondOpenReusesTheStore) {
  test::Opened();
  const std::string pin_before = ReadFile(test::DataDir() / "custody" / "user.pin");
  test::CloseAll();
  OpenedToken& again = test::Opened();
  EXPECT_FALSE(again.created);
  EXPECT_EQ(ReadFile(test::DataDir() / "custody" / "user.pin"), pin_before);
}

TEST(StoreTest, PinFileReadableByOthersIsRefused) {
  const fs::path p = test::DataDir() / "loose.pin";
  { std::ofstream(p) << "123456\n"; }
  ::chmod(p.c_str(), 0644);
  auto pin = ReadPinFile(p);
  ASSERT_FALSE(pin);
  EXPECT_THAT(pin, test::HasCode(ErrorCode::kPermissionDenied));
  EXPECT_NE(pin.error().message().find("mode 0644"), std::string::npos) << pin.error();
  EXPECT_EQ(pin.error().message().find("123456"), std::string::npos);

  ::chmod(p.c_str(), 0600);
  auto ok = ReadPinFile(p);
  ASSERT_TRUE(ok) << ok.error();
  EXPECT_TRUE(ok->Equals(crypto::SecretBuffer::FromString("123456")));

  auto missing = ReadPinFile(test::DataDir() / "absent.pin");
  ASSERT_FALSE(missing);
  EXPECT_THAT(missing, test::HasCode(ErrorCode::kNotFound));
}

TEST(StoreTest, ConfiguredModuleNeedsExactlyOnePinSource) {
  CustodyConfig config;
  config.module_path = FindSoftHsmModule()->string();
  auto none = OpenCustody(config, test::DataDir(), crypto::OpenSslRng::Instance());
  ASSERT_FALSE(none);
  EXPECT_THAT(none, test::HasCode(ErrorCode::kInvalidArgument));

  config.pin_env = "FLEETID_TEST_UNSET_PIN_VARIABLE";
  auto unset = OpenCustody(config, test::DataDir(), crypto::OpenSslRng::Instance());
  ASSERT_FALSE(unset);
  EXPECT_THAT(unset, test::HasCode(ErrorCode::kNotFound));
}

TEST(StoreTest, ConfiguredModuleWithPinFromTheEnvironment) {
  OpenedToken& embedded = test::Opened();
  const std::string pin = ReadFile(test::DataDir() / "custody" / "user.pin");
  ::setenv("FLEETID_TEST_HSM_PIN", pin.c_str(), 1);
  CustodyConfig config;
  config.module_path = embedded.module_path.string();
  config.token_label = embedded.token->label();
  config.pin_env = "FLEETID_TEST_HSM_PIN";
  auto opened = OpenCustody(config, test::DataDir(), crypto::OpenSslRng::Instance());
  ::unsetenv("FLEETID_TEST_HSM_PIN");
  ASSERT_TRUE(opened) << opened.error();
  EXPECT_FALSE(opened->embedded);
  EXPECT_EQ(opened->token, embedded.token);
}

}  // namespace
}  // namespace fleetid::custody
