// libFuzzer target for spamd's answers (plugins/spam_tag/spamd_client.h): the input is
// what spamd (or anything listening where spamd should be) sends back to a HEADERS
// request, given to ResponseParser whole, in chunks cut at points derived from the input
// and byte by byte, under the default answer limit and a small one; and the input as a
// header block to ExtractSpamHeaders.
//
// Invariants:
// - never a crash; the outcome does not depend on how the bytes arrive;
// - an accepted answer has a finite score and threshold, their text as spamd wrote it,
//   and only X-Spam-* fields: valid names, values without line breaks or surrounding
//   whitespace, raw text folded with CRLF before whitespace only;
// - a refused answer says why in one printable line of bounded length and carries no
//   fields; a spamd error code only with Error::kSpamd; kIo only for an empty answer;
// - once done or failed, more bytes and the end of stream change nothing.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_support.h"
#include "spam_tag/spamd_client.h"

namespace {

using popgate::spamd::Error;
using popgate::spamd::ExtractSpamHeaders;
using popgate::spamd::HeaderField;
using popgate::spamd::ParseHeadersResponse;
using popgate::spamd::ResponseParser;
using popgate::spamd::Result;
using State = ResponseParser::State;

constexpr std::size_t kSmallLimit = 300;

bool IsWsp(char c) { return c == ' ' || c == '\t'; }

char Lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

bool StartsWithNoCase(std::string_view s, std::string_view prefix) {
  if (s.size() < prefix.size()) return false;
  for (std::size_t i = 0; i < prefix.size(); ++i) {
    if (Lower(s[i]) != Lower(prefix[i])) return false;
  }
  return true;
}

bool SameFields(const std::vector<HeaderField>& a, const std::vector<HeaderField>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i].name != b[i].name || a[i].value != b[i].value || a[i].raw != b[i].raw) return false;
  }
  return true;
}

bool SameResult(const Result& a, const Result& b) {
  // Scores compared by their text: the same text parses to the same number.
  return a.error == b.error && a.detail == b.detail && a.spamd_code == b.spamd_code &&
         a.is_spam == b.is_spam && a.score_text == b.score_text &&
         a.threshold_text == b.threshold_text && SameFields(a.headers, b.headers);
}

void CheckField(const HeaderField& field) {
  FUZZ_CHECK(StartsWithNoCase(field.name, "X-Spam-"));
  for (char c : field.name) {
    auto u = static_cast<unsigned char>(c);
    FUZZ_CHECK(u > 0x20 && u < 0x7f && c != ':');
  }
  FUZZ_CHECK(field.value.find('\n') == std::string::npos);
  if (!field.value.empty()) {
    FUZZ_CHECK(!IsWsp(field.value.front()));
    FUZZ_CHECK(!IsWsp(field.value.back()) && field.value.back() != '\r');
  }
  FUZZ_CHECK(field.raw.starts_with(field.name + ":"));
  FUZZ_CHECK(!field.raw.ends_with('\n'));
  // Lines joined by CRLF, each continuation starting with whitespace.
  for (std::size_t lf = field.raw.find('\n'); lf != std::string::npos;
       lf = field.raw.find('\n', lf + 1)) {
    FUZZ_CHECK(lf > 0 && field.raw[lf - 1] == '\r');
    FUZZ_CHECK(lf + 1 < field.raw.size() && IsWsp(field.raw[lf + 1]));
  }
}

// One line for a log (text::Escaped): no control character, so no CR or LF; 8-bit
// bytes stay as they are (UTF-8 from spamd stays readable).
bool IsPrintableLine(std::string_view s) {
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) return false;
  }
  return true;
}

void CheckResult(const Result& r, std::string_view data) {
  if (r.ok()) {
    FUZZ_CHECK(r.detail.empty());
    FUZZ_CHECK(r.spamd_code == 0);
    FUZZ_CHECK(std::isfinite(r.score));
    FUZZ_CHECK(std::isfinite(r.threshold));
    FUZZ_CHECK(!r.score_text.empty() && !r.threshold_text.empty());
    FUZZ_CHECK(data.find(r.score_text) != std::string_view::npos);
    FUZZ_CHECK(data.find(r.threshold_text) != std::string_view::npos);
    for (const auto& text : {r.score_text, r.threshold_text}) {
      for (char c : text) FUZZ_CHECK(!IsWsp(c) && c != '\r' && c != '\n');
    }
    for (const auto& field : r.headers) {
      CheckField(field);
      FUZZ_CHECK(r.Find(field.name) != nullptr);
    }
    return;
  }
  FUZZ_CHECK(!r.detail.empty());
  FUZZ_CHECK(IsPrintableLine(r.detail));
  // Quotes are cut at 200 bytes, each at most 4 characters ("\xNN"), plus the text.
  FUZZ_CHECK(r.detail.size() <= 1024);
  FUZZ_CHECK(r.headers.empty());
  FUZZ_CHECK(!r.is_spam);
  FUZZ_CHECK((r.error == Error::kSpamd) == (r.spamd_code != 0));
  FUZZ_CHECK(r.error == Error::kSpamd || r.error == Error::kProtocol || r.error == Error::kIo);
  FUZZ_CHECK((r.error == Error::kIo) == data.empty());
}

// Feeds `data` in pieces of the given sizes (all of it at once when empty), then the end
// of stream, checking the state machine on the way.
Result Run(std::string_view data, std::size_t limit, const std::vector<std::size_t>& sizes) {
  ResponseParser parser(limit);
  State state = State::kNeedMore;
  std::size_t pos = 0;
  std::size_t i = 0;
  while (pos < data.size() && state == State::kNeedMore) {
    std::size_t size = sizes.empty() ? data.size() : sizes[i++ % sizes.size()];
    state = parser.Feed(data.substr(pos, size));
    FUZZ_CHECK(state == parser.state());
    pos += size;
  }
  if (state == State::kNeedMore) state = parser.Finish();
  FUZZ_CHECK(state != State::kNeedMore);
  FUZZ_CHECK(state == parser.state());
  FUZZ_CHECK((state == State::kDone) == parser.result().ok());

  // Finished: more bytes and another end of stream change nothing.
  const Result before = parser.result();
  FUZZ_CHECK(parser.Feed("SPAMD/1.1 0 EX_OK\r\nSpam: True ; 1 / 5\r\n\r\n") == state);
  FUZZ_CHECK(parser.Finish() == state);
  FUZZ_CHECK(SameResult(parser.result(), before));
  return parser.TakeResult();
}

void CheckLimit(std::string_view data, std::size_t limit) {
  const Result whole = ParseHeadersResponse(data, limit);
  CheckResult(whole, data);
  FUZZ_CHECK(SameResult(Run(data, limit, {}), whole));

  popgate::fuzz::Rng rng(data, 0x94d049bb133111ebULL ^ limit);
  std::vector<std::size_t> sizes;
  for (int i = 0; i < 8; ++i) sizes.push_back(1 + rng.Next() % 64);
  FUZZ_CHECK(SameResult(Run(data, limit, sizes), whole));
  // Byte by byte re-parses the head at every byte: only for short inputs, or the
  // fuzzer spends its time there.
  if (data.size() <= 2048) FUZZ_CHECK(SameResult(Run(data, limit, {1}), whole));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
  std::string_view data(reinterpret_cast<const char*>(bytes), size);

  CheckLimit(data, 1024 * 1024);
  CheckLimit(data, kSmallLimit);

  // The input as the header block of spamd's answer.
  const std::vector<HeaderField> fields = ExtractSpamHeaders(data);
  std::size_t lines = 1;
  for (char c : data) lines += c == '\n';
  FUZZ_CHECK(fields.size() <= lines);
  for (const auto& field : fields) CheckField(field);
  return 0;
}
