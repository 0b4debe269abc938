// libFuzzer target for client command parsing: ParseCommand on every line of the input,
// and the same input cut into chunks through LineReader (cap 255, as for client
// commands, and a small cap so the cap logic is reached by short inputs).
//
// Invariants (HAZARDS.md "Framing"): what goes upstream is one canonical line, CRLF at
// its end and no other CR, LF or NUL; the canonical line parses back to the same
// command; whether the answer is multi-line depends only on verb and argument count.
// LineReader's result does not depend on how the bytes were cut.
//
// Builds two ways (tests/fuzz/CMakeLists.txt): with -fsanitize=fuzzer under clang, and
// as an ordinary executable with replay_main.cc that replays the corpus under any
// compiler.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "fuzz_support.h"
#include "pop3/command.h"
#include "pop3/line_reader.h"

namespace {

using popgate::pop3::Command;
using popgate::pop3::LineReader;
using popgate::pop3::ParseCommand;
using popgate::pop3::ParseError;
using popgate::pop3::ParseOptions;
using popgate::pop3::ParseResult;
using popgate::pop3::State;
using popgate::pop3::Verb;

constexpr std::size_t kClientLineCap = 255;  // RFC 2449 §4
constexpr std::size_t kSmallCap = 8;

const std::string kPassThrough[] = {"XTND", "XSENDER"};

bool IsBlank(char c) { return c == ' ' || c == '\t'; }

// No CR, LF or NUL anywhere.
bool IsCleanLine(std::string_view s) {
  return s.find_first_of(std::string_view("\r\n\0", 3)) == std::string_view::npos;
}

// One line ending in CRLF, no other CR/LF/NUL.
bool IsOneCrlfLine(std::string_view s) {
  return s.size() >= 2 && s.ends_with("\r\n") && IsCleanLine(s.substr(0, s.size() - 2));
}

bool IsDigits(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

bool ExpectedMultiLine(const Command& c) {
  switch (c.verb) {
    case Verb::kRetr:
    case Verb::kTop:
    case Verb::kCapa:
      return true;
    case Verb::kList:
    case Verb::kUidl:
    case Verb::kLang:
    case Verb::kAuth:
      return c.args.empty();
    default:
      return false;
  }
}

void CheckCommand(std::string_view line, const ParseOptions& options) {
  ParseResult result = ParseCommand(line, options);
  if (const auto* error = std::get_if<ParseError>(&result)) {
    // The reply goes to the client as is: exactly one -ERR line.
    FUZZ_CHECK(error->reply.starts_with("-ERR "));
    FUZZ_CHECK(IsOneCrlfLine(error->reply));
    FUZZ_CHECK(error->reply.size() <= 200);
    // A line carrying CR or NUL is never accepted.
    return;
  }
  FUZZ_CHECK(IsCleanLine(line));
  const Command& command = std::get<Command>(result);

  // The keyword: upper case, one word.
  FUZZ_CHECK(!command.keyword.empty());
  for (char c : command.keyword) {
    FUZZ_CHECK(!(c >= 'a' && c <= 'z'));
    FUZZ_CHECK(!IsBlank(c));
    FUZZ_CHECK(static_cast<unsigned char>(c) >= 0x20 && c != 0x7f);
  }
  if (command.verb == Verb::kPassThrough) {
    bool listed = false;
    for (const auto& k : options.pass_through) listed = listed || k == command.keyword;
    FUZZ_CHECK(listed);
  }

  // Arguments: never empty; one word each except PASS (RFC 1939 §7: spaces allowed).
  for (const auto& arg : command.args) {
    FUZZ_CHECK(!arg.empty());
    FUZZ_CHECK(IsCleanLine(arg));
    if (command.verb != Verb::kPass) {
      for (char c : arg) {
        FUZZ_CHECK(!IsBlank(c));
        FUZZ_CHECK(static_cast<unsigned char>(c) >= 0x20 && c != 0x7f);
      }
    }
  }
  switch (command.verb) {
    case Verb::kStat:
    case Verb::kNoop:
    case Verb::kRset:
    case Verb::kQuit:
    case Verb::kCapa:
    case Verb::kStls:
    case Verb::kUtf8:
      FUZZ_CHECK(command.args.empty());
      break;
    case Verb::kRetr:
    case Verb::kDele:
    case Verb::kUser:
    case Verb::kPass:
      FUZZ_CHECK(command.args.size() == 1);
      break;
    case Verb::kTop:
    case Verb::kApop:
      FUZZ_CHECK(command.args.size() == 2);
      break;
    case Verb::kList:
    case Verb::kUidl:
    case Verb::kLang:
      FUZZ_CHECK(command.args.size() <= 1);
      break;
    case Verb::kAuth:
      FUZZ_CHECK(command.args.size() <= 2);
      break;
    case Verb::kPassThrough:
      break;
  }
  switch (command.verb) {
    case Verb::kRetr:
    case Verb::kDele:
    case Verb::kTop:
    case Verb::kList:
    case Verb::kUidl:
      for (const auto& arg : command.args) FUZZ_CHECK(IsDigits(arg) && arg.size() <= 10);
      // Message numbers start at 1 (RFC 1939 §3).
      if (!command.args.empty())
        FUZZ_CHECK(command.args[0].find_first_not_of('0') != std::string::npos);
      break;
    default:
      break;
  }

  // The canonical line: one CRLF line, no longer than what the client sent, so it stays
  // within the 255-octet limit whenever the client's line did.
  std::string canonical = command.Canonical();
  FUZZ_CHECK(IsOneCrlfLine(canonical));
  FUZZ_CHECK(canonical.size() <= line.size() + 2);
  FUZZ_CHECK(canonical.starts_with(command.keyword));

  // Framing is decided by verb and argument count, and deterministically.
  const bool multi = command.MultiLineIfOk();
  FUZZ_CHECK(multi == command.MultiLineIfOk());
  FUZZ_CHECK(multi == ExpectedMultiLine(command));
  FUZZ_CHECK(
      command.CarriesSecret() ==
      (command.verb == Verb::kPass || command.verb == Verb::kApop || command.verb == Verb::kAuth));
  for (State state : {State::kAuthorization, State::kTransaction}) {
    FUZZ_CHECK(IsOneCrlfLine(popgate::pop3::WrongStateReply(command, state)));
  }
  FUZZ_CHECK(popgate::pop3::AllowedIn(command.verb, State::kAuthorization) ||
             popgate::pop3::AllowedIn(command.verb, State::kTransaction));

  // What the upstream receives parses back to the same command: proxy and upstream agree
  // on the command, hence on the framing of its answer.
  std::string_view body(canonical.data(), canonical.size() - 2);
  ParseResult again = ParseCommand(body, options);
  FUZZ_CHECK(std::holds_alternative<Command>(again));
  const Command& reparsed = std::get<Command>(again);
  FUZZ_CHECK(reparsed.verb == command.verb);
  FUZZ_CHECK(reparsed.keyword == command.keyword);
  FUZZ_CHECK(reparsed.args == command.args);
  FUZZ_CHECK(reparsed.Canonical() == canonical);
  FUZZ_CHECK(reparsed.MultiLineIfOk() == multi);
}

void CheckLine(std::string_view line) {
  CheckCommand(line, ParseOptions{});
  CheckCommand(line, ParseOptions{kPassThrough});
}

// Splits `data` into lines the way a client connection is read: at LF, one CR before it
// dropped. A trailing piece without LF is a line too, for ParseCommand's sake.
void CheckEveryLine(std::string_view data) {
  std::size_t pos = 0;
  while (pos <= data.size()) {
    std::size_t lf = data.find('\n', pos);
    std::size_t end = lf == std::string_view::npos ? data.size() : lf;
    std::string_view raw = data.substr(pos, end - pos);
    CheckLine(raw);  // with its CR, if any: must be refused or clean
    if (raw.ends_with('\r')) CheckLine(raw.substr(0, raw.size() - 1));
    if (lf == std::string_view::npos) break;
    pos = lf + 1;
  }
}

struct ReaderLine {
  bool too_long;
  std::string text;
  bool operator==(const ReaderLine&) const = default;
};

// What LineReader must return: one entry per LF; the text without its line ending; too
// long when text plus CRLF exceeds the cap (RFC 2449 §4).
std::vector<ReaderLine> ReferenceLines(std::string_view data, std::size_t cap) {
  std::vector<ReaderLine> lines;
  std::size_t pos = 0;
  for (;;) {
    std::size_t lf = data.find('\n', pos);
    if (lf == std::string_view::npos) break;
    std::string_view text = data.substr(pos, lf - pos);
    if (text.ends_with('\r')) text.remove_suffix(1);
    if (text.size() + 2 > cap) {
      lines.push_back({true, {}});
    } else {
      lines.push_back({false, std::string(text)});
    }
    pos = lf + 1;
  }
  // A partial last line is reported as soon as it cannot fit, before any LF.
  if (data.size() - pos >= cap) lines.push_back({true, {}});
  return lines;
}

std::vector<ReaderLine> RunReader(std::string_view data, std::size_t cap,
                                  const std::vector<std::size_t>& chunk_sizes) {
  LineReader reader(cap);
  std::vector<ReaderLine> lines;
  std::size_t pos = 0;
  std::size_t i = 0;
  while (pos < data.size()) {
    std::size_t size = chunk_sizes.empty() ? data.size() : chunk_sizes[i++ % chunk_sizes.size()];
    std::string_view chunk = data.substr(pos, size);
    pos += chunk.size();
    while (!chunk.empty()) {
      std::optional<LineReader::Line> out;
      std::size_t used = reader.Feed(chunk, out);
      FUZZ_CHECK(used > 0);  // progress
      FUZZ_CHECK(used <= chunk.size());
      if (out && out->kind == LineReader::Kind::kTooLong && chunk[used - 1] != '\n') {
        // Too long before its LF: reported at once, the rest skipped to the LF.
        FUZZ_CHECK(reader.has_partial());
        lines.push_back({true, {}});
      } else if (out) {
        // A line ends at the LF just consumed; nothing of it stays behind.
        FUZZ_CHECK(chunk[used - 1] == '\n');
        FUZZ_CHECK(!reader.has_partial());
        if (out->kind == LineReader::Kind::kLine) {
          FUZZ_CHECK(out->text.find('\n') == std::string::npos);
          FUZZ_CHECK(out->text.size() + 2 <= cap);
          lines.push_back({false, out->text});
        } else {
          FUZZ_CHECK(out->text.empty());
          lines.push_back({true, {}});
        }
      } else {
        // Without a line, Feed takes everything offered, or stops at the LF that ends
        // an overlong line it has already reported.
        FUZZ_CHECK(used == chunk.size() || chunk[used - 1] == '\n');
      }
      chunk.remove_prefix(used);
    }
  }
  // A partial line is held exactly when the input does not end at an LF.
  FUZZ_CHECK(reader.has_partial() == (!data.empty() && data.back() != '\n'));
  reader.Reset();
  FUZZ_CHECK(!reader.has_partial());
  return lines;
}

void CheckReader(std::string_view data, std::size_t cap) {
  const std::vector<ReaderLine> expected = ReferenceLines(data, cap);
  const std::vector<ReaderLine> whole = RunReader(data, cap, {});
  FUZZ_CHECK(whole == expected);

  popgate::fuzz::Rng rng(data, 0xcbf29ce484222325ULL);
  std::vector<std::size_t> sizes;
  for (int i = 0; i < 16; ++i) sizes.push_back(1 + rng.Next() % (cap + 40));
  FUZZ_CHECK(RunReader(data, cap, sizes) == expected);
  if (data.size() <= 2048) FUZZ_CHECK(RunReader(data, cap, {1}) == expected);

  if (cap == kClientLineCap) {
    for (const auto& line : whole) {
      if (!line.too_long) CheckLine(line.text);
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  CheckEveryLine(input);
  CheckReader(input, kClientLineCap);
  CheckReader(input, kSmallCap);
  return 0;
}
