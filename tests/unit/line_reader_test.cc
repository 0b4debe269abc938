#include "pop3/line_reader.h"

#include <gtest/gtest.h>

namespace popgate::pop3 {
namespace {

using Kind = LineReader::Kind;

// Feeds `input` in pieces of `step` bytes and collects every event.
std::vector<LineReader::Line> FeedAll(LineReader& reader, std::string_view input,
                                      std::size_t step) {
  std::vector<LineReader::Line> lines;
  std::size_t pos = 0;
  while (pos < input.size()) {
    std::string_view piece = input.substr(pos, std::min(step, input.size() - pos));
    while (!piece.empty()) {
      std::optional<LineReader::Line> line;
      std::size_t used = reader.Feed(piece, line);
      piece.remove_prefix(used);
      pos += used;
      if (line) lines.push_back(*line);
    }
  }
  return lines;
}

TEST(LineReaderTest, SplitsCrlfAndBareLfAtAnySplit) {
  std::string input = "STAT\r\nLIST\nRETR 1\r\n";
  for (std::size_t step = 1; step <= input.size(); ++step) {
    LineReader reader(255);
    auto lines = FeedAll(reader, input, step);
    ASSERT_EQ(lines.size(), 3u) << "step " << step;
    EXPECT_EQ(lines[0].text, "STAT");
    EXPECT_EQ(lines[1].text, "LIST");
    EXPECT_EQ(lines[2].text, "RETR 1");
    EXPECT_FALSE(reader.has_partial());
  }
}

TEST(LineReaderTest, CapCountsTheCrlf) {
  // RFC 2449 §4: 255 octets including CRLF.
  std::string ok(253, 'a');
  std::string too_long(254, 'a');
  for (std::size_t step : {1u, 7u, 1000u}) {
    LineReader reader(255);
    auto lines = FeedAll(reader, ok + "\r\n" + too_long + "\r\nNOOP\r\n", step);
    ASSERT_EQ(lines.size(), 3u) << "step " << step;
    EXPECT_EQ(lines[0].kind, Kind::kLine);
    EXPECT_EQ(lines[0].text, ok);
    EXPECT_EQ(lines[1].kind, Kind::kTooLong);
    EXPECT_EQ(lines[2].kind, Kind::kLine);
    EXPECT_EQ(lines[2].text, "NOOP");
  }
}

TEST(LineReaderTest, EndlessLineIsReportedAtOnceThenSkippedToItsEnd) {
  LineReader reader(16);
  std::string input(100000, 'x');
  auto lines = FeedAll(reader, input, 4096);
  ASSERT_EQ(lines.size(), 1u);  // reported before any LF arrives
  EXPECT_EQ(lines[0].kind, Kind::kTooLong);
  EXPECT_TRUE(reader.has_partial());
  lines = FeedAll(reader, "yyy\r\nQUIT\r\n", 3);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0].text, "QUIT");
  EXPECT_FALSE(reader.has_partial());
}

TEST(LineReaderTest, OverflowWithoutLfIsReportedOnce) {
  LineReader reader(8);
  auto lines = FeedAll(reader, "0123456789abcdef\r\nNOOP\r\n", 1);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0].kind, Kind::kTooLong);
  EXPECT_EQ(lines[1].text, "NOOP");
}

TEST(LineReaderTest, StopsAfterEachLine) {
  LineReader reader(255);
  std::optional<LineReader::Line> line;
  std::string_view input = "A\r\nB\r\n";
  EXPECT_EQ(reader.Feed(input, line), 3u);
  ASSERT_TRUE(line);
  EXPECT_EQ(line->text, "A");
}

}  // namespace
}  // namespace popgate::pop3
