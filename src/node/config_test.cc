#include "node/config.h"
#include "testing/matchers.h"

#include <gtest/gtest.h>

namespace fleetid::node {
namespace {

TEST(ConfigTest, DefaultsNeedNoFile) {
  ServerConfig config;
  EXPECT_EQ(config.data_dir, "./var");
  EXPECT_EQ(config.http_listen.ToString(), "127.0.0.1:8080");
  EXPECT_TRUE(config.custody.module_path.empty());
}

TEST(ConfigTest, JsonOverridesDefaults) {
  ServerConfig config;
  ASSERT_TRUE(ApplyConfigJson(R"({
      // comments are allowed
      "data_dir": "/srv/fleetid", "http_listen": "[::1]:9000", "threads": 4,
      "custody": {"module_path": "/usr/lib/hsm.so", "token_label": "prod", "pin_env": "HSM_PIN"}
    })",
                              config));
  EXPECT_EQ(config.data_dir, "/srv/fleetid");
  EXPECT_EQ(config.http_listen.host, "::1");
  EXPECT_EQ(config.http_listen.port, 9000);
  EXPECT_EQ(config.http_listen.ToString(), "[::1]:9000");
  EXPECT_EQ(config.threads, 4);
  EXPECT_EQ(config.custody.module_path, "/usr/lib/hsm.so");
  EXPECT_EQ(config.custody.pin_env, "HSM_PIN");
}

TEST(ConfigTest, TyposAndBadValuesAreRejectedAndChangeNothing) {
  ServerConfig config;
  struct Case {
    const char* json;
    const char* needle;
  } cases[] = {
      {R"({"data_dri": "/x"})", "unknown config key 'data_dri'"},
      {R"({"custody": {"pin": "1234"}})", "unknown config key 'custody.pin'"},
      {R"({"threads": "two"})", "'threads'"},
      {R"({"http_listen": "localhost"})", "not host:port"},
      {R"({"http_listen": "127.0.0.1:99999"})", "0-65535"},
      {R"({"data_dir": 7})", "'data_dir' must be a string"},
      {R"({"data_dir": "/ok", "threads": 0})", "'threads'"},
      {"{not json", "not valid JSON"},
      {"[]", "must be a JSON object"},
  };
  for (const Case& c : cases) {
    auto result = ApplyConfigJson(c.json, config);
    ASSERT_FALSE(result) << c.json;
    EXPECT_THAT(result, test::HasCode(ErrorCode::kInvalidArgument)) << c.json;
    EXPECT_NE(result.error().message().find(c.needle), std::string::npos)
        << result.error().message();
  }
  EXPECT_EQ(config.data_dir, "./var");
  EXPECT_EQ(config.threads, 2);
}

// fuzz/corpus/config/threads_wraps: 2^32 + 1 threads once narrowed to int and passed as 1.
TEST(ConfigTest, IntegersOutOfRangeAreRejectedNotNarrowed) {
  ServerConfig config;
  for (const char* json : {R"({"threads": 4294967297})", R"({"threads": -4294967295})",
                           R"({"threads": 18446744073709551615})",
                           R"({"crl_min_interval_seconds": 18446744073709551615})"}) {
    auto result = ApplyConfigJson(json, config);
    ASSERT_FALSE(result) << json;
    EXPECT_THAT(result, test::HasCode(ErrorCode::kInvalidArgument)) << json;
  }
  EXPECT_EQ(config.threads, 2);
  EXPECT_EQ(config.crl_min_interval_seconds, 60);
}

TEST(ConfigTest, DatabaseDefaultsToSqliteUnderTheDataDirectory) {
  ServerConfig config;
  config.data_dir = "/srv/fleetid";
  EXPECT_EQ(config.DatabaseUrl(), "sqlite:/srv/fleetid/fleetid.db");
  ASSERT_TRUE(ApplyConfigJson(R"({"database": "postgresql://fleetid:pw@db1:5432/fleetid"})", config));
  EXPECT_EQ(config.DatabaseUrl(), "postgresql://fleetid:pw@db1:5432/fleetid");
  EXPECT_EQ(RedactUrl(config.DatabaseUrl()), "postgresql://fleetid:***@db1:5432/fleetid");
  EXPECT_EQ(RedactUrl("postgresql://fleetid@db1/fleetid"), "postgresql://fleetid@db1/fleetid");
  EXPECT_EQ(RedactUrl("sqlite:/x.db"), "sqlite:/x.db");
  EXPECT_EQ(RedactUrl("postgresql://db1/fleetid?user=f&password=pw&sslmode=require"),
            "postgresql://db1/fleetid?user=f&password=***&sslmode=require");
}

TEST(ConfigTest, MissingFileIsNotFound) {
  ServerConfig config;
  auto result = LoadConfigFile("/nonexistent/fleetid.json", config);
  ASSERT_FALSE(result);
  EXPECT_THAT(result, test::HasCode(ErrorCode::kNotFound));
}

}  // namespace
}  // namespace fleetid::node
