#include "pop3/multiline.h"

#include <gtest/gtest.h>

#include <optional>
#include <random>
#include <string>

namespace popgate::pop3 {
namespace {

using Output = MultiLineDecoder::Output;

struct Decoded {
  std::string out;
  std::size_t consumed = 0;
  bool done = false;
};

// Feeds `wire` in pieces cut at `cuts` (ascending offsets).
Decoded DecodeSplit(std::string_view wire, Output mode, const std::vector<std::size_t>& cuts) {
  MultiLineDecoder decoder(mode);
  Decoded result;
  std::size_t pos = 0;
  std::vector<std::size_t> bounds = cuts;
  bounds.push_back(wire.size());
  for (std::size_t bound : bounds) {
    if (bound < pos) continue;
    std::string_view piece = wire.substr(pos, bound - pos);
    auto progress = decoder.Feed(piece, result.out);
    result.consumed += progress.consumed;
    pos = bound;
    if (progress.done) {
      result.done = true;
      break;
    }
  }
  return result;
}

Decoded Decode(std::string_view wire, Output mode = Output::kContent) {
  return DecodeSplit(wire, mode, {});
}

// The tricky inputs of issue 2 and HAZARDS.md.
const std::vector<std::pair<std::string, std::string>>& TrickyCases() {
  static const std::vector<std::pair<std::string, std::string>> cases = {
      // wire, expected un-stuffed content
      {".\r\n", ""},
      {"a\r\n.\r\n", "a\r\n"},
      {"..\r\n.\r\n", ".\r\n"},
      {"...\r\n.\r\n", "..\r\n"},
      {"..hidden\r\n.\r\n", ".hidden\r\n"},
      {".x\r\n.\r\n", "x\r\n"},         // unstuffed as RFC 1939 says, though not sent by servers
      {"a\nb\r\n.\r\n", "a\r\nb\r\n"},  // bare LF in, CRLF out
      // The end is CRLF "." CRLF only: a "." after a bare LF, or ".LF", is content.
      {"a\n.\n+OK injected\r\n.\r\n", "a\r\n.\r\n+OK injected\r\n"},
      {"a\n.\r\nmore\r\n.\r\n", "a\r\n.\r\nmore\r\n"},
      {".\nx\r\n.\r\n", ".\r\nx\r\n"},
      {"a\n..\n..b\r\n.\r\n", "a\r\n.\r\n.b\r\n"},  // ".." after bare LF: stuffing
      {"a\n.x\r\n.\r\n", "a\r\n.x\r\n"},
      {"a\r\r\n.\r\n", "a\r\r\n"},  // bare CR kept
      {"a\rb\r\n.\r\n", "a\rb\r\n"},
      {".\rx\r\n.\r\n", "\rx\r\n"},  // dot, CR, not LF: content
      {std::string("n\0ul\r\n.\r\n", 9), std::string("n\0ul\r\n", 6)},
      {"\xff\xfe 8bit\r\n.\r\n", "\xff\xfe 8bit\r\n"},
      {"\r\n\r\n.\r\n", "\r\n\r\n"},  // empty lines
      {". \r\n.\r\n", " \r\n"},
      {"a\r\n.\r\nRETR-leftover", "a\r\n"},  // bytes after the end are not taken
  };
  return cases;
}

TEST(MultiLineDecoderTest, DecodesTrickyInputs) {
  for (const auto& [wire, content] : TrickyCases()) {
    Decoded d = Decode(wire);
    EXPECT_TRUE(d.done) << wire;
    EXPECT_EQ(d.out, content) << wire;
  }
  Decoded d = Decode("a\r\n.\r\nRETR-leftover");
  EXPECT_EQ(d.consumed, 6u);
}

TEST(MultiLineDecoderTest, EverySplitPointGivesTheSameResult) {
  for (const auto& [wire, content] : TrickyCases()) {
    for (Output mode : {Output::kContent, Output::kStuffed}) {
      Decoded whole = Decode(wire, mode);
      for (std::size_t cut = 0; cut <= wire.size(); ++cut) {
        Decoded split = DecodeSplit(wire, mode, {cut});
        EXPECT_EQ(split.out, whole.out) << "cut " << cut << " in " << wire;
        EXPECT_EQ(split.consumed, whole.consumed) << "cut " << cut;
        EXPECT_EQ(split.done, whole.done);
      }
      // And one byte at a time.
      std::vector<std::size_t> every;
      for (std::size_t i = 1; i < wire.size(); ++i) every.push_back(i);
      EXPECT_EQ(DecodeSplit(wire, mode, every).out, whole.out) << wire;
    }
  }
}

TEST(MultiLineDecoderTest, StuffedOutputIsCanonicalWire) {
  // Canonical input comes out unchanged; so a relayed message is byte-identical.
  std::string canonical = "From: a\r\n\r\n..\r\n...dots\r\nbody\r\n";
  Decoded d = Decode(canonical + ".\r\n", Output::kStuffed);
  EXPECT_EQ(d.out, canonical);
}

TEST(MultiLineDecoderTest, NoSmugglingAfterBareLf) {
  // A body line "." after a bare LF must not end the message early for a lenient
  // client: out of the decoder it is a stuffed ".." on a CRLF line.
  std::string wire = "a\r\nb\n..\n..+OK injected\r\n.\r\n";
  Decoded d = Decode(wire, Output::kStuffed);
  EXPECT_TRUE(d.done);
  EXPECT_EQ(d.out, "a\r\nb\r\n..\r\n..+OK injected\r\n");
  EXPECT_EQ(d.out.find("\n.\r\n"), std::string::npos);
  EXPECT_EQ(d.out.find("\n.\n"), std::string::npos);
}

TEST(MultiLineDecoderTest, IncompleteInputIsNotDone) {
  for (std::string_view wire :
       {"", "abc", "abc\r\n", "abc\r\n.", "abc\r\n.\r", "..", ".\n", "a\n.\n", "a\n.\r\n"}) {
    Decoded d = Decode(wire);
    EXPECT_FALSE(d.done) << wire;
    EXPECT_EQ(d.consumed, wire.size());
  }
}

TEST(MultiLineDecoderTest, LongLinesPassWhole) {
  std::string line(100000, 'x');
  Decoded d = DecodeSplit(line + "\r\n.\r\n", Output::kStuffed, {1, 4096, 65536, 99999});
  EXPECT_TRUE(d.done);
  EXPECT_EQ(d.out, line + "\r\n");
}

TEST(StuffLinesTest, StuffsAndTerminatesLines) {
  std::string out;
  StuffLines(".a\nb\r\n..\r\nno-newline", out);
  EXPECT_EQ(out, "..a\r\nb\r\n...\r\nno-newline\r\n");
  out.clear();
  StuffLines("", out);
  EXPECT_EQ(out, "");
}

TEST(StuffLinesTest, RoundTripOverRandomBytes) {
  // Stuff then decode gives back the content with canonical line ends, for many
  // random byte strings rich in the characters that matter.
  std::mt19937 rng(12345);
  const char alphabet[] = {'.', '.', '\r', '\n', '\n', 'a', '\0', '\xff', ' '};
  for (int round = 0; round < 2000; ++round) {
    std::size_t length = rng() % 64;
    std::string content;
    for (std::size_t i = 0; i < length; ++i) content += alphabet[rng() % sizeof alphabet];

    std::string wire;
    StuffLines(content, wire);
    wire += kTerminator;

    // The expected content: each line ended by CRLF (a CR before LF counts as part of
    // the line ending), a final line ended if it wasn't.
    std::string expected;
    StuffLines(content, expected);  // stuffed form, then unstuff by hand below
    std::string unstuffed;
    for (std::size_t pos = 0; pos < expected.size();) {
      std::size_t end = expected.find("\r\n", pos);
      std::string line = expected.substr(pos, end - pos);
      if (!line.empty() && line[0] == '.') line.erase(0, 1);
      unstuffed += line + "\r\n";
      pos = end + 2;
    }

    std::size_t cut = wire.empty() ? 0 : rng() % wire.size();
    Decoded d = DecodeSplit(wire, Output::kContent, {cut});
    ASSERT_TRUE(d.done) << "round " << round;
    EXPECT_EQ(d.consumed, wire.size());
    EXPECT_EQ(d.out, unstuffed) << "round " << round;

    Decoded relayed = DecodeSplit(wire, Output::kStuffed, {cut});
    EXPECT_EQ(relayed.out + std::string(kTerminator), wire) << "round " << round;

    // What the relay holds (stuffed) unstuffs to what the filter chain must see.
    std::string back;
    UnstuffLines(relayed.out, back);
    EXPECT_EQ(back, d.out) << "round " << round;
  }
}

TEST(UnstuffLinesTest, RemovesOneDotFromStuffedLinesOnly) {
  std::string out;
  UnstuffLines("..a\r\nb.c\r\n...\r\n..\r\n", out);
  EXPECT_EQ(out, ".a\r\nb.c\r\n..\r\n.\r\n");
}

// Content with dot lines everywhere a piece can start or end near them.
std::string DotHeavyContent(std::mt19937& rng, int lines) {
  const char* starts[] = {".", "..", ".x", "x.", "", "abc", ".\r", "\r."};
  std::string content;
  for (int i = 0; i < lines; ++i) {
    content += starts[rng() % std::size(starts)];
    content.append(rng() % 5, 'y');
    content += "\r\n";
  }
  return content;
}

// StuffLines' meaning, a line at a time: the line without its CR LF or LF, a dot doubled
// at its start, CRLF after it.
std::string StuffedLineByLine(std::string_view content) {
  std::string out;
  std::size_t pos = 0;
  while (pos < content.size()) {
    std::size_t lf = content.find('\n', pos);
    std::size_t end = lf == std::string_view::npos ? content.size() : lf;
    std::string_view line = content.substr(pos, end - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.starts_with('.')) out += '.';
    out.append(line);
    out += "\r\n";
    pos = lf == std::string_view::npos ? content.size() : lf + 1;
  }
  return out;
}

TEST(StuffLinesTest, MatchesTheLineByLineRuleOnAnyContent) {
  std::mt19937 rng(5);
  const char alphabet[] = {'.', '\r', '\n', 'a', 'b', ' '};
  for (int round = 0; round < 2000; ++round) {
    std::string content;
    for (std::size_t n = rng() % 40; n > 0; --n) content += alphabet[rng() % std::size(alphabet)];
    std::string out;
    StuffLines(content, out);
    EXPECT_EQ(out, StuffedLineByLine(content)) << "round " << round;
  }
}

TEST(ContentStufferTest, PiecesSplitAnywhereStuffLikeTheWhole) {
  std::mt19937 rng(7);
  for (int round = 0; round < 300; ++round) {
    std::string content = DotHeavyContent(rng, 1 + static_cast<int>(rng() % 30));
    std::string whole;
    StuffLines(content, whole);
    ContentStuffer stuffer;
    std::string pieces;
    std::size_t pos = 0;
    while (pos < content.size()) {
      std::size_t n = 1 + rng() % 9;
      std::string_view piece = std::string_view(content).substr(pos, n);
      // Half the time the verbatim part goes out as it is, as a writer would send it.
      std::size_t plain = rng() % 2 ? stuffer.VerbatimPrefix(piece) : 0;
      pieces.append(piece.substr(0, plain));
      stuffer.Skip(piece.substr(0, plain));
      stuffer.Append(piece.substr(plain), pieces);
      pos += piece.size();
    }
    EXPECT_EQ(pieces, whole) << "round " << round;
  }
}

TEST(ContentStufferTest, VerbatimPrefixStopsBeforeADotLine) {
  ContentStuffer stuffer;
  EXPECT_EQ(stuffer.VerbatimPrefix("ab\r\n.c\r\n"), 4u);
  EXPECT_EQ(stuffer.VerbatimPrefix(".c\r\n"), 0u);
  EXPECT_EQ(stuffer.VerbatimPrefix("a.b\r\nc\r\n"), 8u);
  stuffer.Skip("no line end yet");
  EXPECT_EQ(stuffer.VerbatimPrefix(".still the same line\r\n"), 22u);
}

TEST(MultiLineDecoderTest, OutputCanChangeBetweenFeeds) {
  // What a session does with a message too large to filter: content first, then the
  // rest stuffed for relaying. Content + stuffed rest must equal the relayed form.
  std::mt19937 rng(11);
  for (int round = 0; round < 200; ++round) {
    std::mt19937 content_rng(round);
    std::string content = DotHeavyContent(content_rng, 20);
    std::string wire;
    StuffLines(content, wire);
    wire += kTerminator;
    std::size_t cut = rng() % wire.size();
    MultiLineDecoder decoder(Output::kContent);
    std::string first;
    auto progress = decoder.Feed(std::string_view(wire).substr(0, cut), first);
    ASSERT_EQ(progress.consumed, cut);
    decoder.set_output(Output::kStuffed);
    std::string rest;
    progress = decoder.Feed(std::string_view(wire).substr(cut), rest);
    ASSERT_TRUE(progress.done);
    ContentStuffer stuffer;
    std::string relayed;
    stuffer.Append(first, relayed);
    relayed += rest;
    EXPECT_EQ(relayed + std::string(kTerminator), wire) << "round " << round << " cut " << cut;
  }
}

TEST(TopTest, HeaderBlockEnd) {
  EXPECT_EQ(HeaderBlockEnd("A: 1\r\nB: 2\r\n\r\nbody\r\n"), 14u);
  EXPECT_EQ(HeaderBlockEnd("\r\nbody\r\n"), 2u);
  EXPECT_EQ(HeaderBlockEnd("A: 1\r\nB: 2\r\n"), 12u);  // headers only
  EXPECT_EQ(HeaderBlockEnd(""), 0u);
}

TEST(TopTest, FindHeaderBlockEndSearchesFromWhereItLeftOff) {
  const std::string message = "A: 1\r\nB: 2\r\n\r\nbody\r\n";
  EXPECT_EQ(FindHeaderBlockEnd(message), std::optional<std::size_t>(14));
  EXPECT_EQ(FindHeaderBlockEnd("A: 1\r\nB: 2\r\n"), std::nullopt);
  // The blank line straddles the point where the previous search ended.
  for (std::size_t from = 0; from <= 12; ++from) {
    EXPECT_EQ(FindHeaderBlockEnd(message, from), std::optional<std::size_t>(14)) << from;
  }
}

TEST(SplitHeadersTest, FindsTheFirstEmptyLine) {
  EXPECT_EQ(SplitHeaders("A: 1\r\n\r\nbody\r\n").header_size, 6u);
  EXPECT_EQ(SplitHeaders("A: 1\r\n\r\nbody\r\n").separator_size, 2u);
  EXPECT_EQ(SplitHeaders("A: 1\n\nbody\n").separator_size, 1u);
  EXPECT_EQ(SplitHeaders("\r\nbody").header_size, 0u);
  EXPECT_EQ(SplitHeaders("A: 1\r\nB: 2\r\n").separator_size, 0u);
  EXPECT_EQ(SplitHeaders("A: 1\r\nB: 2\r\n").header_size, 12u);
  EXPECT_EQ(SplitHeaders("").separator_size, 0u);
  // A line of whitespace is a continuation line, not the end of the header block.
  EXPECT_EQ(SplitHeaders("A: 1\r\n \r\n\r\n").header_size, 9u);
  // On a prefix: not complete until the blank line is there.
  EXPECT_EQ(SplitHeaders("A: 1\r\n\r").separator_size, 0u);
}

TEST(SplitHeadersTest, SearchesFromWhereItLeftOffWithEitherLineEnd) {
  // The blank line straddles the point where the previous search ended.
  for (const std::string message : {"A: 1\r\nB: 2\r\n\r\nbody\r\n", "A: 1\nB: 2\n\nbody\n"}) {
    const HeaderSplit whole = SplitHeaders(message);
    for (std::size_t from = 0; from <= whole.header_size; ++from) {
      EXPECT_EQ(SplitHeaders(message, from).header_size, whole.header_size) << from;
      EXPECT_EQ(SplitHeaders(message, from).separator_size, whole.separator_size) << from;
    }
  }
  // A bare LF ends a header block in content a plugin wrote; the offset says so too.
  EXPECT_EQ(FindHeaderBlockEnd("A: 1\n\nbody\n"), std::optional<std::size_t>(6));
  EXPECT_EQ(HeaderBlockEnd("A: 1\r\n\nbody\n"), 7u);
}

TEST(TopTest, FirstLinesLength) {
  EXPECT_EQ(FirstLinesLength("one\r\ntwo\nthree", 0), 0u);
  EXPECT_EQ(FirstLinesLength("one\r\ntwo\nthree", 1), 5u);
  EXPECT_EQ(FirstLinesLength("one\r\ntwo\nthree", 2), 9u);
  EXPECT_EQ(FirstLinesLength("one\r\ntwo\nthree", 3), 14u);
  EXPECT_EQ(FirstLinesLength("one\r\ntwo\nthree", 99), 14u);
}

TEST(TopTest, CountsBodyLinesAfterTheBlankLine) {
  const std::string message = "A: 1\r\n\r\none\r\ntwo\r\n\r\nfour\r\n";
  EXPECT_EQ(message.substr(0, TopLength(message, 0)), "A: 1\r\n\r\n");
  EXPECT_EQ(message.substr(0, TopLength(message, 1)), "A: 1\r\n\r\none\r\n");
  EXPECT_EQ(message.substr(0, TopLength(message, 3)), "A: 1\r\n\r\none\r\ntwo\r\n\r\n");
  EXPECT_EQ(TopLength(message, 4), message.size());
  EXPECT_EQ(TopLength(message, 99999999), message.size());
  EXPECT_EQ(TopLength("A: 1\r\n", 5), 6u);
}

}  // namespace
}  // namespace popgate::pop3
