#include "pop3/response.h"

namespace popgate::pop3 {
namespace {

bool StartsWithWord(std::string_view line, std::string_view word) {
  if (line.size() < word.size()) return false;
  for (std::size_t i = 0; i < word.size(); ++i) {
    char c = line[i];
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
    if (c != word[i]) return false;
  }
  return line.size() == word.size() || line[word.size()] == ' ';
}

}  // namespace

Status ClassifyStatus(std::string_view line) {
  // A status line carries text, never control characters: a bare CR could make a
  // lenient client see two answers in one line, a NUL cut it short.
  for (unsigned char c : line) {
    if ((c < 0x20 && c != '\t') || c == 0x7f) return Status::kInvalid;
  }
  if (StartsWithWord(line, "+OK")) return Status::kOk;
  if (StartsWithWord(line, "-ERR")) return Status::kErr;
  if (line == "+" || line.starts_with("+ ")) return Status::kContinuation;
  return Status::kInvalid;
}

bool IsValidGreeting(std::string_view line) { return ClassifyStatus(line) == Status::kOk; }

std::string StripApopTimestamp(std::string_view greeting) {
  std::size_t open = greeting.rfind('<');
  if (open == std::string_view::npos) return std::string(greeting);
  std::size_t close = greeting.find('>', open);
  if (close == std::string_view::npos || greeting.find('@', open) > close) {
    return std::string(greeting);
  }
  // The stamp goes with the spaces after it, and at the end of the line with those
  // before it too, so that what surrounds it stays apart: "+OK <1.2@h>ready" gives
  // "+OK ready", never "+OKready", which no client takes for a greeting.
  std::size_t start = open;
  std::size_t end = close + 1;
  while (end < greeting.size() && greeting[end] == ' ') ++end;
  if (end == greeting.size()) {
    while (start > 0 && greeting[start - 1] == ' ') --start;
  }
  std::string out(greeting.substr(0, start));
  out.append(greeting.substr(end));
  return out;
}

}  // namespace popgate::pop3
