#include "pop3/line_reader.h"

#include <cstring>

namespace popgate::pop3 {

std::size_t LineReader::Feed(std::string_view input, std::optional<Line>& out) {
  out.reset();
  const char* lf = static_cast<const char*>(std::memchr(input.data(), '\n', input.size()));
  std::size_t take = lf ? static_cast<std::size_t>(lf - input.data()) + 1 : input.size();

  if (skipping_) {
    // The rest of a line already reported as too long.
    if (lf) skipping_ = false;
    return take;
  }

  // The cap counts CRLF (RFC 2449 §4), so the text itself may hold max_line - 2 octets.
  // Without an LF yet, up to max_line - 1 octets may be held: the last one may be the CR.
  partial_.append(input.data(), take);
  bool too_long;
  if (lf) {
    std::size_t text = partial_.size() - 1;
    if (text > 0 && partial_[text - 1] == '\r') --text;
    too_long = text + 2 > max_line_;
  } else {
    too_long = partial_.size() + 1 > max_line_;
  }
  if (too_long) {
    // Reported as soon as it is known, not at the LF: an upstream that never sends
    // one must not keep a session reading forever.
    partial_.clear();
    skipping_ = !lf;
    out = Line{Kind::kTooLong, {}};
    return take;
  }
  if (!lf) return take;

  partial_.pop_back();  // LF
  if (!partial_.empty() && partial_.back() == '\r') partial_.pop_back();
  out = Line{Kind::kLine, std::move(partial_)};
  partial_.clear();
  return take;
}

}  // namespace popgate::pop3
