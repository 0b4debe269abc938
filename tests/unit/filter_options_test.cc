// Typed plugin options: what each accessor accepts, and what its error says.

#include <gtest/gtest.h>

#include <stdexcept>
#include <string>

#include "filter/options.h"

namespace popgate::filter {
namespace {

std::string ErrorOf(auto read) {
  try {
    read();
  } catch (const std::invalid_argument& error) {
    return error.what();
  }
  return "";
}

const Options kOptions = {
    {"name", "spamd"},
    {"port", 783},
    {"ratio", 0.25},
    {"strict", true},
    {"words", OptionValue::Array{"lottery", "winner"}},
    {"mixed", OptionValue::Array{"a", 1}},
    {"table", OptionValue::Table{{"b", 2}, {"a", "x"}}},
};

TEST(FilterOptionsTest, EachAccessorReadsItsType) {
  EXPECT_EQ(OptionString(kOptions, "name", ""), "spamd");
  EXPECT_EQ(OptionInteger(kOptions, "port", 0, 1, 65535), 783);
  EXPECT_DOUBLE_EQ(OptionNumber(kOptions, "ratio", 0), 0.25);
  EXPECT_DOUBLE_EQ(OptionNumber(kOptions, "port", 0), 783.0);  // an integer is a number too
  EXPECT_TRUE(OptionBool(kOptions, "strict", false));
  EXPECT_EQ(OptionStrings(kOptions, "words", {}), (std::vector<std::string>{"lottery", "winner"}));
}

TEST(FilterOptionsTest, AnAbsentKeyGivesTheFallback) {
  EXPECT_EQ(OptionString(kOptions, "missing", "fb"), "fb");
  EXPECT_EQ(OptionInteger(kOptions, "missing", 7, 0, 10), 7);
  EXPECT_FALSE(OptionBool(kOptions, "missing", false));
  EXPECT_EQ(OptionStrings(kOptions, "missing", {"x"}), std::vector<std::string>{"x"});
}

TEST(FilterOptionsTest, AWrongTypeNamesTheKeyAndQuotesTheValue) {
  EXPECT_EQ(ErrorOf([] { OptionString(kOptions, "port", ""); }),
            "port: expected a string, got 783");
  EXPECT_EQ(ErrorOf([] { OptionInteger(kOptions, "name", 0, 0, 1); }),
            "name: expected an integer from 0 to 1, got \"spamd\"");
  EXPECT_EQ(ErrorOf([] { OptionInteger(kOptions, "port", 0, 1, 100); }),
            "port: expected an integer from 1 to 100, got 783");
  EXPECT_EQ(ErrorOf([] { OptionInteger(kOptions, "ratio", 0, 0, 1); }),
            "ratio: expected an integer from 0 to 1, got 0.25");
  EXPECT_EQ(ErrorOf([] { OptionBool(kOptions, "name", false); }),
            "name: expected true or false, got \"spamd\"");
  EXPECT_EQ(ErrorOf([] { OptionNumber(kOptions, "strict", 0); }),
            "strict: expected a number, got true");
  EXPECT_EQ(ErrorOf([] { OptionStrings(kOptions, "mixed", {}); }),
            "mixed: expected a list of strings, got [\"a\", 1]");
  EXPECT_EQ(ErrorOf([] { OptionStrings(kOptions, "table", {}); }),
            "table: expected a list of strings, got { b = 2, a = \"x\" }");
}

TEST(FilterOptionsTest, UnknownKeysAreRefused) {
  EXPECT_EQ(ErrorOf([] {
              CheckKnownOptions(kOptions, {"name", "port"});
            }).find(": unknown option"),
            std::string("mixed").size());
  EXPECT_EQ(ErrorOf([] { CheckKnownOptions({{"name", 1}}, {"name"}); }), "");
}

TEST(FilterOptionsTest, StringsAreQuotedAsTomlWouldWriteThem) {
  EXPECT_EQ(OptionValue("a\"b\\c\nd\te\x01").ToToml(), "\"a\\\"b\\\\c\\nd\\te\\u0001\"");
  EXPECT_EQ(OptionValue(OptionValue::Table{{"odd key", 1}}).ToToml(), "{ \"odd key\" = 1 }");
  EXPECT_EQ(OptionValue(OptionValue::Table{}).ToToml(), "{}");
}

}  // namespace
}  // namespace popgate::filter
