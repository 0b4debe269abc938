// libFuzzer target for the status lines of the upstream (pop3/response.h): every line of
// the input (split at LF, its CR dropped, as the upstream connection reads them), and
// the whole input as one line, through ClassifyStatus, IsValidGreeting and
// StripApopTimestamp.
//
// Response codes ([SYS/TEMP], [IN-USE], [LOGIN-DELAY], RFC 2449 §8, RFC 3206) are not
// classified by popgate: an -ERR line passes to the client with its code unchanged, so
// there is no parser of them to fuzz.
//
// Invariants:
// - each line gets exactly one class, the one a reference reading of RFC 1939 §3 and
//   RFC 5034 §4 gives: control characters (but tab) make it invalid; "+OK" or "-ERR"
//   (any case) alone or before a space; "+" alone or before a space a continuation;
//   anything else invalid; the reference's conditions never overlap;
// - a greeting is valid exactly when its class is +OK;
// - StripApopTimestamp removes exactly the last "<...@...>" and the spaces after it (at
//   the end of the line those before it), nothing else, nothing when there is none; and
//   a valid greeting stays a valid greeting.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_support.h"
#include "pop3/response.h"

namespace {

using popgate::pop3::ClassifyStatus;
using popgate::pop3::IsValidGreeting;
using popgate::pop3::Status;
using popgate::pop3::StripApopTimestamp;

char Upper(char c) { return c >= 'a' && c <= 'z' ? static_cast<char>(c - 'a' + 'A') : c; }

bool IsWord(std::string_view line, std::string_view word) {
  if (line.size() < word.size()) return false;
  for (std::size_t i = 0; i < word.size(); ++i) {
    if (Upper(line[i]) != word[i]) return false;
  }
  return line.size() == word.size() || line[word.size()] == ' ';
}

Status Reference(std::string_view line) {
  bool control = false;
  for (char c : line) {
    auto u = static_cast<unsigned char>(c);
    if ((u < 0x20 && c != '\t') || u == 0x7f) control = true;
  }
  const bool ok = IsWord(line, "+OK");
  const bool err = IsWord(line, "-ERR");
  const bool continuation = IsWord(line, "+");
  // Exactly one class: the conditions exclude each other.
  FUZZ_CHECK(int{ok} + int{err} + int{continuation} <= 1);
  if (control) return Status::kInvalid;
  if (ok) return Status::kOk;
  if (err) return Status::kErr;
  if (continuation) return Status::kContinuation;
  return Status::kInvalid;
}

void CheckStrip(std::string_view line) {
  const std::string out = StripApopTimestamp(line);
  FUZZ_CHECK(out.size() <= line.size());
  const std::size_t open = line.rfind('<');
  const std::size_t close = open == std::string_view::npos ? open : line.find('>', open);
  const bool timestamp = close != std::string_view::npos &&
                         line.substr(open, close - open).find('@') != std::string_view::npos;
  if (!timestamp) {
    FUZZ_CHECK(out == line);
    return;
  }
  // Cut out: the stamp and the spaces after it; at the end of the line, the spaces
  // before it too.
  std::size_t start = open;
  std::size_t end = close + 1;
  while (end < line.size() && line[end] == ' ') ++end;
  if (end == line.size()) {
    while (start > 0 && line[start - 1] == ' ') --start;
  }
  FUZZ_CHECK(out == std::string(line.substr(0, start)) + std::string(line.substr(end)));
  FUZZ_CHECK(out.find('<', start) == std::string::npos);

  // The proxy checks the greeting first and relays the stripped one unchecked.
  if (IsValidGreeting(line)) FUZZ_CHECK(IsValidGreeting(out));
}

void CheckLine(std::string_view line) {
  const Status status = ClassifyStatus(line);
  switch (status) {
    case Status::kOk:
    case Status::kErr:
    case Status::kContinuation:
    case Status::kInvalid:
      break;
    default:
      FUZZ_CHECK(!"ClassifyStatus returned no class");
  }
  FUZZ_CHECK(status == Reference(line));
  FUZZ_CHECK(ClassifyStatus(line) == status);  // deterministic
  FUZZ_CHECK(IsValidGreeting(line) == (status == Status::kOk));
  CheckStrip(line);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
  std::string_view data(reinterpret_cast<const char*>(bytes), size);
  CheckLine(data);  // with any CR and LF in it: invalid unless there are none
  std::size_t pos = 0;
  while (pos <= data.size()) {
    std::size_t lf = data.find('\n', pos);
    std::size_t end = lf == std::string_view::npos ? data.size() : lf;
    std::string_view line = data.substr(pos, end - pos);
    if (line.ends_with('\r')) line.remove_suffix(1);
    CheckLine(line);
    if (lf == std::string_view::npos) break;
    pos = lf + 1;
  }
  return 0;
}
