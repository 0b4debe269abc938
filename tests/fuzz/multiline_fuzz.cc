// libFuzzer target for multi-line responses: MultiLineDecoder in both output modes, fed
// whole, byte by byte and in chunks cut at positions derived from the input; and
// StuffLines on the raw input.
//
// Invariants (HAZARDS.md "Framing", "POP3 smuggling"):
// - the result (output, bytes consumed, done) does not depend on where the input is cut,
//   and matches a line-by-line reference model of RFC 1939 §3;
// - Feed never consumes more than offered, takes everything until the terminator, and
//   nothing after it;
// - stuffed output is canonical: every LF preceded by CR, complete lines only, no line
//   "." and every line that starts with "." starts with ".." — so no client, however
//   lenient, sees an early end;
// - stuffed output plus ".\r\n" decodes (fresh decoder, kContent) to the same content as
//   the original, and StuffLines(content) gives back the stuffed output.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_support.h"
#include "pop3/multiline.h"

namespace {

using popgate::pop3::kTerminator;
using popgate::pop3::MultiLineDecoder;
using popgate::pop3::StuffLines;
using Output = MultiLineDecoder::Output;

struct Result {
  std::string out;
  std::size_t consumed = 0;
  bool done = false;
  bool at_line_start = true;
  bool operator==(const Result&) const = default;
};

// RFC 1939 §3, one line at a time. A line is terminated by LF. Only ".\r" alone after a
// CRLF-terminated line (or first) ends the response. After CRLF a leading "." is
// stuffing, except a lone ".LF", which is content "."; after a bare LF only a leading
// ".." is stuffing. Content that starts with "." is stuffed again in kStuffed mode.
// Content lines end in CRLF: a bare LF becomes CRLF, a CR before the LF is kept.
Result Reference(std::string_view data, Output mode) {
  Result r;
  std::size_t pos = 0;
  bool after_crlf = true;
  while (pos < data.size()) {
    std::size_t lf = data.find('\n', pos);
    const bool complete = lf != std::string_view::npos;
    std::string_view line = data.substr(pos, (complete ? lf : data.size()) - pos);
    if (after_crlf && (line == "." || line == ".\r") && !complete) {
      // Could still become the terminator or another line: nothing output yet.
      r.consumed = data.size();
      r.at_line_start = false;
      return r;
    }
    if (after_crlf && line == ".\r") {
      r.consumed = lf + 1;
      r.done = true;
      r.at_line_start = false;
      return r;
    }
    if (!after_crlf && line == "." && !complete) {
      r.consumed = data.size();
      r.at_line_start = false;
      return r;
    }
    std::string text(line);
    if (after_crlf && text.starts_with('.') && !(text == "." && complete)) {
      text.erase(0, 1);
    } else if (!after_crlf && text.starts_with("..")) {
      text.erase(0, 1);
    }
    if (mode == Output::kStuffed && text.starts_with('.')) text = "." + text;
    r.out.append(text);
    if (!complete) {
      r.consumed = data.size();
      r.at_line_start = line.empty();
      return r;
    }
    after_crlf = line.ends_with('\r');
    r.out += after_crlf ? "\n" : "\r\n";
    pos = lf + 1;
  }
  r.consumed = data.size();
  return r;
}

// Feeds `data` cut at `cuts` (sorted offsets), checking the per-call contract.
Result Decode(std::string_view data, Output mode, const std::vector<std::size_t>& cuts) {
  MultiLineDecoder decoder(mode);
  Result r;
  std::size_t start = 0;
  auto feed = [&](std::string_view chunk) {
    const bool was_done = decoder.done();
    const std::size_t before = r.out.size();
    auto progress = decoder.Feed(chunk, r.out);
    FUZZ_CHECK(progress.consumed <= chunk.size());
    FUZZ_CHECK(progress.done == decoder.done());
    FUZZ_CHECK(!(was_done && !progress.done));
    if (was_done) {
      // After the terminator nothing more is taken or produced.
      FUZZ_CHECK(progress.consumed == 0);
      FUZZ_CHECK(r.out.size() == before);
    } else if (!progress.done) {
      FUZZ_CHECK(progress.consumed == chunk.size());
    } else {
      // The terminator's LF is the last byte taken.
      FUZZ_CHECK(progress.consumed > 0 && chunk[progress.consumed - 1] == '\n');
    }
    r.consumed += progress.consumed;
  };
  feed({});
  for (std::size_t cut : cuts) {
    if (cut < start || cut > data.size()) continue;
    feed(data.substr(start, cut - start));
    start = cut;
  }
  feed(data.substr(start));
  feed({});
  if (r.done) feed("more\r\n.\r\n");
  r.done = decoder.done();
  r.at_line_start = decoder.at_line_start();
  FUZZ_CHECK(r.consumed <= data.size());
  return r;
}

bool EveryLfAfterCr(std::string_view s) {
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\n' && (i == 0 || s[i - 1] != '\r')) return false;
  }
  return true;
}

// Wire lines ready to relay: canonical line ends, no early terminator for any client.
void CheckStuffed(std::string_view s, bool complete) {
  FUZZ_CHECK(EveryLfAfterCr(s));
  if (complete) FUZZ_CHECK(s.empty() || s.ends_with("\r\n"));
  std::size_t pos = 0;
  while (pos < s.size()) {
    std::size_t lf = s.find('\n', pos);
    if (lf == std::string_view::npos) break;  // a partial last line
    std::string_view line = s.substr(pos, lf + 1 - pos);
    FUZZ_CHECK(line != ".\r\n");
    if (line.starts_with('.')) FUZZ_CHECK(line.starts_with(".."));
    pos = lf + 1;
  }
}

// Each line of `content` (split at LF, one CR before it dropped) with CRLF.
std::string CanonicalLines(std::string_view content) {
  std::string out;
  std::size_t pos = 0;
  while (pos < content.size()) {
    std::size_t lf = content.find('\n', pos);
    std::size_t end = lf == std::string_view::npos ? content.size() : lf;
    std::string_view line = content.substr(pos, end - pos);
    if (line.ends_with('\r')) line.remove_suffix(1);
    out.append(line);
    out += "\r\n";
    pos = lf == std::string_view::npos ? content.size() : lf + 1;
  }
  return out;
}

Result DecodeWhole(std::string_view data, Output mode) { return Decode(data, mode, {}); }

void CheckMode(std::string_view data, Output mode) {
  const Result expected = Reference(data, mode);
  const Result whole = DecodeWhole(data, mode);
  if (!(whole == expected)) {
    std::fprintf(stderr, "decoder: consumed %zu done %d out %zu bytes; reference: %zu %d %zu\n",
                 whole.consumed, whole.done, whole.out.size(), expected.consumed, expected.done,
                 expected.out.size());
  }
  FUZZ_CHECK(whole == expected);

  // Cut points derived from the data; the first bytes steer how many.
  popgate::fuzz::Rng rng(data, 0x9e3779b97f4a7c15ULL);
  std::vector<std::size_t> cuts;
  const std::size_t count = data.empty() ? 0 : 1 + static_cast<unsigned char>(data[0]) % 12;
  for (std::size_t i = 0; i < count; ++i) cuts.push_back(rng.Next() % (data.size() + 1));
  std::sort(cuts.begin(), cuts.end());
  FUZZ_CHECK(Decode(data, mode, cuts) == whole);

  if (data.size() <= 4096) {
    std::vector<std::size_t> every;
    for (std::size_t i = 1; i < data.size(); ++i) every.push_back(i);
    FUZZ_CHECK(Decode(data, mode, every) == whole);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
  std::string_view data(reinterpret_cast<const char*>(bytes), size);

  CheckMode(data, Output::kContent);
  CheckMode(data, Output::kStuffed);

  const Result content = DecodeWhole(data, Output::kContent);
  const Result stuffed = DecodeWhole(data, Output::kStuffed);
  // Both modes read the same bytes and agree on the end.
  FUZZ_CHECK(content.consumed == stuffed.consumed);
  FUZZ_CHECK(content.done == stuffed.done);
  FUZZ_CHECK(content.at_line_start == stuffed.at_line_start);

  const bool complete = stuffed.done || stuffed.at_line_start;
  CheckStuffed(stuffed.out, complete);
  FUZZ_CHECK(EveryLfAfterCr(content.out));
  if (complete) {
    // Relaying the stuffed output and a terminator delivers the same content.
    std::string wire = stuffed.out;
    wire += kTerminator;
    const Result relayed = DecodeWhole(wire, Output::kContent);
    FUZZ_CHECK(relayed.done);
    FUZZ_CHECK(relayed.consumed == wire.size());
    FUZZ_CHECK(relayed.out == content.out);
    // Decoding canonical wire lines and stuffing again changes nothing.
    FUZZ_CHECK(DecodeWhole(wire, Output::kStuffed).out == stuffed.out);
    // Re-stuffing the content is the decoder's stuffed output.
    std::string restuffed;
    StuffLines(content.out, restuffed);
    FUZZ_CHECK(restuffed == stuffed.out);
  }

  // StuffLines on arbitrary content (what a plugin may hand back): canonical wire lines
  // that decode to the content's lines.
  std::string out = "prefix\r\n";
  StuffLines(data, out);
  FUZZ_CHECK(out.starts_with("prefix\r\n"));
  std::string_view wire_lines = std::string_view(out).substr(8);
  CheckStuffed(wire_lines, true);
  std::string wire(wire_lines);
  wire += kTerminator;
  const Result back = DecodeWhole(wire, Output::kContent);
  FUZZ_CHECK(back.done);
  FUZZ_CHECK(back.consumed == wire.size());
  FUZZ_CHECK(back.out == CanonicalLines(data));
  return 0;
}
