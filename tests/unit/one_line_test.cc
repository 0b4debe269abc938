#include "text/one_line.h"

#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

namespace popgate::text {
namespace {

using Maker = std::function<std::string(std::string_view)>;

// Every helper, with a bound large enough to keep all of its input.
const std::vector<std::pair<const char*, Maker>>& Makers() {
  static const std::vector<std::pair<const char*, Maker>> makers = {
      {"Escaped", [](std::string_view t) { return Escaped(t, kWhole); }},
      {"Escaped (bounded)", [](std::string_view t) { return Escaped(t, 5); }},
      {"SpacedLine", [](std::string_view t) { return SpacedLine(t, 10000); }},
      {"ReadableLine", [](std::string_view t) { return ReadableLine(t, 10000); }},
      {"ReadableLine (bounded)", [](std::string_view t) { return ReadableLine(t, 8); }},
  };
  return makers;
}

// Inputs a peer, a plugin or a config file could send, each with line breaks in it.
std::vector<std::string> Hostile() {
  std::string every_byte;
  for (int b = 0; b < 256; ++b) every_byte += static_cast<char>(b);
  return {
      "\r\n",
      "one\r\n+OK forged",
      "one\ntwo",
      "one\rtwo",
      "\n\n\n",
      std::string("nul\0\r\nafter", 12),
      "\xC2\x85 NEL \xE2\x80\xA8 LS \xE2\x80\xA9 PS",  // Unicode line breaks
      "tail\r",
      every_byte,
      every_byte + every_byte,
  };
}

TEST(OneLineTest, NoHelperLetsACrOrLfThrough) {
  for (const auto& [name, make] : Makers()) {
    for (const std::string& input : Hostile()) {
      const std::string out = make(input);
      EXPECT_EQ(out.find('\r'), std::string::npos) << name << ": " << Escaped(out, kWhole);
      EXPECT_EQ(out.find('\n'), std::string::npos) << name << ": " << Escaped(out, kWhole);
    }
  }
}

TEST(OneLineTest, NoHelperLetsANulThrough) {
  for (const auto& [name, make] : Makers()) {
    const std::string out = make(std::string("a\0b", 3));
    EXPECT_EQ(out.find('\0'), std::string::npos) << name;
  }
}

TEST(EscapedTest, EscapesControlCharactersAndTheBackslash) {
  EXPECT_EQ(Escaped("a\r\nb\tc", kWhole), "a\\r\\nb\\tc");
  EXPECT_EQ(Escaped(std::string("\0\x01\x1b\x7f", 4), kWhole), "\\x00\\x01\\x1b\\x7f");
  // A backslash in the text is doubled: "\n" written by a peer is not an escaped LF.
  EXPECT_EQ(Escaped("a\\nb", kWhole), "a\\\\nb");
  EXPECT_NE(Escaped("a\\nb", kWhole), Escaped("a\nb", kWhole));
}

TEST(EscapedTest, PassesPrintableAndEightBitBytes) {
  EXPECT_EQ(Escaped("user@example.com \"x\" ~", kWhole), "user@example.com \"x\" ~");
  EXPECT_EQ(Escaped("Caf\xC3\xA9 \xE9", kWhole), "Caf\xC3\xA9 \xE9");
}

TEST(EscapedTest, ShowsAtMostMaxBytesOfTheText) {
  EXPECT_EQ(Escaped("abcdef", 3), "abc...");
  EXPECT_EQ(Escaped("abc", 3), "abc");  // nothing cut: no mark
  EXPECT_EQ(Escaped("\n\n\n\n", 2), "\\n\\n...");
  EXPECT_EQ(Escaped(std::string(500, 'x')), std::string(200, 'x') + "...");  // the default
}

TEST(SpacedLineTest, LineBreaksAndNulBecomeSpaces) {
  EXPECT_EQ(SpacedLine("one\r\ntwo\rthree\nfour", 100), "one  two three four");
  EXPECT_EQ(SpacedLine(std::string("a\0b", 3), 100), "a b");
}

TEST(SpacedLineTest, KeepsEverythingElseAsWritten) {
  // Tabs, repeated spaces and 8-bit bytes are the plugin's: a reply may carry them.
  EXPECT_EQ(SpacedLine("  a\tb  \xC3\xA9 ", 100), "  a\tb  \xC3\xA9 ");
}

TEST(SpacedLineTest, CutsAtMaxBytesWithoutAMark) {
  EXPECT_EQ(SpacedLine("abcdef", 4), "abcd");
  EXPECT_EQ(SpacedLine("ab\r\n", 3), "ab ");
}

TEST(ReadableLineTest, ControlCharactersBecomeOneSpace) {
  EXPECT_EQ(ReadableLine("  one\r\n\ttwo\x01\x7f three  ", 100), "one two three");
  EXPECT_EQ(ReadableLine("a\xC2\x85"
                         "b\xE2\x80\xA8"
                         "c",
                         100),
            "a b c");  // C1, U+2028
}

TEST(ReadableLineTest, BytesThatAreNotUtf8BecomeQuestionMarks) {
  EXPECT_EQ(ReadableLine("Caf\xC3\xA9 \xE9t\xE9", 100), "Caf\xC3\xA9 ?t?");
  EXPECT_EQ(ReadableLine("\xC0\xAF", 100), "??");       // an overlong '/'
  EXPECT_EQ(ReadableLine("\xED\xA0\x80", 100), "???");  // a surrogate
}

TEST(ReadableLineTest, CutsAtACharacterBoundaryWithAMark) {
  std::string accents;
  for (int i = 0; i < 10; ++i) accents += "\xC3\xA9";
  const std::string out = ReadableLine(accents, 10);
  EXPECT_LE(out.size(), 10u);
  EXPECT_EQ(out, "\xC3\xA9\xC3\xA9\xC3\xA9...");
  EXPECT_EQ(ReadableLine("abcdefgh", 8), "abcdefgh");  // fits: not cut
}

TEST(ReadableLineTest, DoesNotCutAnEncodedWordInTwo) {
  EXPECT_EQ(ReadableLine("Hello =?utf-8?B?SGVsbG8gd29ybGQ=?=", 20), "Hello...");
}

}  // namespace
}  // namespace popgate::text
