#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "mail/headers.h"

namespace popgate::mail {
namespace {

const std::string kBlock =
    "Received: from a.example by b.example;\r\n"
    "\tTue, 1 Jul 2025 10:00:00 +0000\r\n"
    "From: Alice <alice@example.com>\r\n"
    "To: bob@example.com,\r\n"
    "  carol@example.com\r\n"
    "Subject: Caf\xc3\xa9 \xe9t\xe9\r\n"  // UTF-8 and Latin-1 bytes, as sent
    "Received: from c.example by a.example\r\n"
    "X-Empty:\r\n";

std::vector<std::string> Names(const Headers& headers) {
  std::vector<std::string> names;
  for (const HeaderField& field : headers) names.emplace_back(field.name());
  return names;
}

TEST(HeadersTest, ParsesFieldsInOrderWithTheirFolding) {
  Headers headers(kBlock);
  EXPECT_EQ(Names(headers),
            (std::vector<std::string>{"Received", "From", "To", "Subject", "Received", "X-Empty"}));
  auto it = headers.begin();
  EXPECT_EQ(it->raw(),
            "Received: from a.example by b.example;\r\n\tTue, 1 Jul 2025 10:00:00 +0000\r\n");
  EXPECT_EQ(headers.Serialize(), kBlock);
  EXPECT_FALSE(headers.modified());
  EXPECT_EQ(headers.byte_size(), kBlock.size());
}

TEST(HeadersTest, ACopyOutlivesTheHeadersItCameFrom) {
  // Parsed fields are views of a block the copies share.
  auto original = std::make_unique<Headers>("Subject: one\r\n two\r\nFrom: a@b\r\n");
  Headers copy = *original;
  original.reset();
  EXPECT_EQ(copy.Get("subject"), "one two");
  copy.Add("X-New", "v");
  EXPECT_EQ(copy.Serialize(), "Subject: one\r\n two\r\nFrom: a@b\r\nX-New: v\r\n");
}

TEST(HeadersTest, ALastFieldWithoutLineEndGetsOneBeforeAnAddedField) {
  Headers headers("Subject: no line end");
  Headers untouched = headers;
  headers.Add("X-New", "v");
  EXPECT_EQ(headers.Serialize(), "Subject: no line end\r\nX-New: v\r\n");
  EXPECT_EQ(untouched.Serialize(), "Subject: no line end");  // its copy is its own
}

TEST(HeadersTest, GetUnfoldsAndTrims) {
  Headers headers(kBlock);
  EXPECT_EQ(headers.Get("To"), "bob@example.com,  carol@example.com");
  EXPECT_EQ(headers.Get("Received"),
            "from a.example by b.example;\tTue, 1 Jul 2025 10:00:00 +0000");
  EXPECT_EQ(headers.Get("X-Empty"), "");
  EXPECT_EQ(headers.Get("Missing"), std::nullopt);
}

TEST(HeadersTest, NamesAreCaseInsensitive) {
  Headers headers(kBlock);
  EXPECT_EQ(headers.Get("from"), "Alice <alice@example.com>");
  EXPECT_EQ(headers.Get("FROM"), "Alice <alice@example.com>");
  EXPECT_TRUE(headers.Has("sUbJeCt"));
  EXPECT_EQ(headers.GetAll("RECEIVED").size(), 2u);
  EXPECT_EQ(headers.GetAll("received")[1], "from c.example by a.example");
}

TEST(HeadersTest, EightBitBytesAreUntouched) {
  Headers headers(kBlock);
  EXPECT_EQ(headers.Get("Subject"), "Caf\xc3\xa9 \xe9t\xe9");
  headers.Add("X-Tag", "yes");
  std::string out = headers.Serialize();
  EXPECT_NE(out.find("Subject: Caf\xc3\xa9 \xe9t\xe9\r\n"), std::string::npos);
  EXPECT_EQ(out.substr(0, kBlock.size()), kBlock);
}

TEST(HeadersTest, AddAppendsAtTheEnd) {
  Headers headers(kBlock);
  headers.Add("X-Spam-Flag", "YES");
  EXPECT_TRUE(headers.modified());
  EXPECT_EQ(headers.Serialize(), kBlock + "X-Spam-Flag: YES\r\n");
  EXPECT_EQ(Names(headers).back(), "X-Spam-Flag");
  EXPECT_EQ(headers.Get("x-spam-flag"), "YES");
  headers.Add("X-Spam-Flag", "NO");
  EXPECT_EQ(headers.GetAll("X-Spam-Flag"), (std::vector<std::string>{"YES", "NO"}));
}

TEST(HeadersTest, SetReplacesTheFirstInPlaceAndRemovesTheOthers) {
  Headers headers(kBlock);
  headers.Set("received", "from x");
  EXPECT_EQ(Names(headers),
            (std::vector<std::string>{"received", "From", "To", "Subject", "X-Empty"}));
  EXPECT_EQ(headers.Serialize(),
            "received: from x\r\n"
            "From: Alice <alice@example.com>\r\n"
            "To: bob@example.com,\r\n"
            "  carol@example.com\r\n"
            "Subject: Caf\xc3\xa9 \xe9t\xe9\r\n"
            "X-Empty:\r\n");
}

TEST(HeadersTest, SetAddsWhenAbsent) {
  Headers headers(kBlock);
  headers.Set("X-New", "1");
  EXPECT_EQ(headers.Serialize(), kBlock + "X-New: 1\r\n");
}

TEST(HeadersTest, RemoveRemovesEveryOccurrence) {
  Headers headers(kBlock);
  EXPECT_EQ(headers.Remove("RECEIVED"), 2u);
  EXPECT_FALSE(headers.Has("Received"));
  EXPECT_EQ(Names(headers), (std::vector<std::string>{"From", "To", "Subject", "X-Empty"}));
  EXPECT_EQ(headers.Remove("Received"), 0u);
}

TEST(HeadersTest, RemovingNothingIsNotAModification) {
  Headers headers(kBlock);
  EXPECT_EQ(headers.Remove("X-Absent"), 0u);
  EXPECT_FALSE(headers.modified());
  EXPECT_EQ(headers.version(), 0u);
}

TEST(HeadersTest, RejectsCrLfNulInNewFields) {
  Headers headers(kBlock);
  EXPECT_THROW(headers.Add("X-A", "a\r\nBcc: evil@example.com"), std::invalid_argument);
  EXPECT_THROW(headers.Add("X-A", "a\nb"), std::invalid_argument);
  EXPECT_THROW(headers.Add("X-A", "a\rb"), std::invalid_argument);
  EXPECT_THROW(headers.Add("X-A", std::string("a\0b", 3)), std::invalid_argument);
  EXPECT_THROW(headers.Set("X-A", "a\r\n"), std::invalid_argument);
  EXPECT_THROW(headers.Add("X-A\r\nBcc", "x"), std::invalid_argument);
  EXPECT_THROW(headers.Add(std::string("X\0A", 3), "x"), std::invalid_argument);
  // Names: printable ASCII without ':' or spaces (RFC 5322 §2.2).
  EXPECT_THROW(headers.Add("", "x"), std::invalid_argument);
  EXPECT_THROW(headers.Add("X A", "x"), std::invalid_argument);
  EXPECT_THROW(headers.Add("X:A", "x"), std::invalid_argument);
  EXPECT_THROW(headers.Add("X\tA", "x"), std::invalid_argument);
  EXPECT_THROW(headers.Add("X\xc3\xa9", "x"), std::invalid_argument);
  EXPECT_FALSE(headers.modified());
  EXPECT_EQ(headers.Serialize(), kBlock);
}

TEST(HeadersTest, FoldsLongAddedValuesAt78Columns) {
  Headers headers;
  std::string value;
  for (int i = 0; i < 40; ++i) {
    if (i > 0) value += ' ';
    value += "word";
    value += std::to_string(i);
  }
  headers.Add("X-Spam-Status", value);
  std::string raw(headers.begin()->raw());
  // Every line is at most 78 characters, folding happens only before whitespace, and
  // unfolding gives the value back.
  std::size_t start = 0;
  int lines = 0;
  while (start < raw.size()) {
    std::size_t end = raw.find("\r\n", start);
    ASSERT_NE(end, std::string::npos);
    std::string line = raw.substr(start, end - start);
    EXPECT_LE(line.size(), 78u) << line;
    if (lines > 0) {
      EXPECT_EQ(line[0], ' ');
    }
    ++lines;
    start = end + 2;
  }
  EXPECT_GT(lines, 3);
  EXPECT_EQ(headers.Get("X-Spam-Status"), value);
}

TEST(HeadersTest, FoldingNeverSplitsAWord) {
  Headers headers;
  std::string long_word(120, 'x');
  headers.Add("X-Long", "a " + long_word + " b");
  EXPECT_EQ(headers.begin()->raw(), "X-Long: a\r\n " + long_word + "\r\n b\r\n");
  Headers single;
  single.Add("X-Long", long_word);
  EXPECT_EQ(single.begin()->raw(), "X-Long: " + long_word + "\r\n");
}

TEST(HeadersTest, FoldingKeepsTabsAndRunsOfSpaces) {
  Headers headers;
  std::string value = std::string(75, 'a') + "\t\tb  " + std::string(74, 'c');
  headers.Add("X", value);
  EXPECT_EQ(headers.begin()->raw(),
            "X: " + std::string(75, 'a') + "\r\n\t\tb\r\n  " + std::string(74, 'c') + "\r\n");
  EXPECT_EQ(headers.Get("X"), value);
}

TEST(HeadersTest, AddedValuesLoseSurroundingWhitespace) {
  Headers headers;
  headers.Add("X-A", "  padded \t");
  headers.Add("X-B", "");
  EXPECT_EQ(headers.Serialize(), "X-A: padded\r\nX-B:\r\n");
}

TEST(HeadersTest, ToleratesBareLf) {
  Headers headers("From: a\nSubject: one\n two\n");
  EXPECT_EQ(headers.Get("Subject"), "one two");
  headers.Add("X-Tag", "1");
  // New fields follow the block's own line ending.
  EXPECT_EQ(headers.Serialize(), "From: a\nSubject: one\n two\nX-Tag: 1\n");
}

TEST(HeadersTest, KeepsLinesThatAreNotFields) {
  Headers headers(" leading continuation\r\nFrom: a\r\nnot a field\r\nSubject : obsolete\r\n");
  EXPECT_EQ(Names(headers), (std::vector<std::string>{"", "From", "", "Subject"}));
  EXPECT_EQ(headers.Get("Subject"), "obsolete");  // RFC 5322 §4.5: space before the colon
  EXPECT_FALSE(headers.Has(""));
  EXPECT_EQ(headers.Serialize(),
            " leading continuation\r\nFrom: a\r\nnot a field\r\nSubject : obsolete\r\n");
}

TEST(HeadersTest, AddAfterALastLineWithoutLineEnd) {
  Headers headers("From: a\r\nSubject: cut");
  headers.Add("X-Tag", "1");
  EXPECT_EQ(headers.Serialize(), "From: a\r\nSubject: cut\r\nX-Tag: 1\r\n");
}

TEST(HeadersTest, FiveHundredHeaders) {
  std::string block;
  for (int i = 0; i < 500; ++i) {
    block += "X-Header-" + std::to_string(i) + ": value " + std::to_string(i) + "\r\n";
    if (i % 10 == 0) block += "\tcontinued " + std::to_string(i) + "\r\n";
    if (i % 50 == 0) block += "Received: hop " + std::to_string(i) + "\r\n";
  }
  auto start = std::chrono::steady_clock::now();
  Headers headers(block);
  EXPECT_EQ(headers.size(), 510u);
  EXPECT_EQ(headers.Get("x-header-499"), "value 499");
  EXPECT_EQ(headers.Get("X-HEADER-250"), "value 250\tcontinued 250");
  EXPECT_EQ(headers.GetAll("Received").size(), 10u);
  for (int i = 0; i < 500; i += 7) {
    headers.Set("X-Header-" + std::to_string(i), "new");
  }
  EXPECT_EQ(headers.Remove("Received"), 10u);
  headers.Add("X-Spam-Flag", "YES");
  EXPECT_EQ(headers.size(), 501u);
  EXPECT_EQ(Names(headers)[7], "X-Header-7");
  EXPECT_EQ(headers.Get("X-Header-7"), "new");
  EXPECT_EQ(headers.Get("X-Header-8"), "value 8");
  auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_LT(elapsed, std::chrono::milliseconds(200));

  Headers untouched(block);
  EXPECT_EQ(untouched.Serialize(), block);
}

TEST(FieldNameTest, PrintableAsciiWithoutColon) {
  EXPECT_TRUE(IsValidFieldName("X-Spam-Flag"));
  EXPECT_TRUE(IsValidFieldName("!#$%&'*+-.^_`|~"));
  EXPECT_FALSE(IsValidFieldName(""));
  EXPECT_FALSE(IsValidFieldName("A B"));
  EXPECT_FALSE(IsValidFieldName("A:"));
  EXPECT_FALSE(IsValidFieldName("A\x7f"));
}

}  // namespace
}  // namespace popgate::mail
