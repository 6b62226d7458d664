#include "common/log.h"

#include <gtest/gtest.h>

#include <vector>

namespace fleetid::log {
namespace {

void Collect(std::string_view line, void* arg) {
  static_cast<std::vector<std::string>*>(arg)->emplace_back(line);
}

TEST(LogTest, FieldsAreKeyValueAndEscaped) {
  EXPECT_EQ(FormatLine("started", {{"port", 8080}, {"dir", "/var/x"}}),
            "msg=started port=8080 dir=/var/x");
  EXPECT_EQ(FormatLine("enroll", {{"device", "a b"}}), R"(msg=enroll device="a b")");
}

TEST(LogTest, HostileValuesCannotForgeFieldsOrLines) {
  EXPECT_EQ(Escape("x\nlevel=error msg=\"pwned\""),
            R"("x\x0alevel=error msg=\"pwned\"")");
  EXPECT_EQ(Escape(std::string("\x01\xff", 2)), R"("\x01\xff")");
  EXPECT_EQ(Escape(""), R"("")");
  EXPECT_EQ(Escape("plain-value_1.2"), "plain-value_1.2");
}

TEST(LogTest, LevelFiltersEvents) {
  std::vector<std::string> lines;
  SetSinkForTesting(&Collect, &lines);
  Init(Level::kWarn);
  Info("hidden");
  Warn("shown", {{"n", 1}});
  Init(Level::kInfo);
  SetSinkForTesting(nullptr, nullptr);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0], "msg=shown n=1");
}

TEST(LogTest, ParseLevel) {
  Level level = Level::kOff;
  EXPECT_TRUE(ParseLevel("debug", &level));
  EXPECT_EQ(level, Level::kDebug);
  EXPECT_FALSE(ParseLevel("verbose", &level));
}

}  // namespace
}  // namespace fleetid::log
