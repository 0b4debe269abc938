#include "pop3/multiline.h"

#include <cstring>

namespace popgate::pop3 {

void MultiLineDecoder::AppendLineEnd(std::string& out) {
  // A bare LF becomes CRLF; a CR already written before the LF is kept.
  after_crlf_ = last_cr_;
  if (last_cr_) {
    out += '\n';
  } else {
    out += "\r\n";
  }
  last_cr_ = false;
}

MultiLineDecoder::Progress MultiLineDecoder::Feed(std::string_view input, std::string& out) {
  const char* p = input.data();
  const char* end = p + input.size();
  const bool stuff = output_ == Output::kStuffed;

  while (p < end && state_ != State::kDone) {
    switch (state_) {
      case State::kLineStart:
        if (*p == '.') {
          state_ = after_crlf_ ? State::kDot : State::kBareLfDot;
          ++p;
        } else {
          state_ = State::kInLine;
          last_cr_ = false;
        }
        break;

      case State::kDot:
        if (*p == '\r') {
          state_ = State::kDotCr;
          ++p;
        } else if (*p == '\n') {
          // ".LF" is not the end (that is ".CRLF"): the line is a lone "." of content.
          out += stuff ? ".." : ".";
          last_cr_ = false;
          AppendLineEnd(out);
          ++p;
          state_ = State::kLineStart;
        } else {
          // A stuffed line: the first dot is dropped (RFC 1939 §3). On output, a line
          // that still begins with "." is stuffed again.
          if (stuff && *p == '.') out += '.';
          state_ = State::kInLine;
          last_cr_ = false;
        }
        break;

      case State::kDotCr:
        if (*p == '\n') {
          state_ = State::kDone;
          ++p;
        } else {
          // ".\r" followed by more: the content line is "\r..." (the dot was stuffing).
          out += '\r';
          state_ = State::kInLine;
          last_cr_ = true;
        }
        break;

      case State::kBareLfDot:
        // A second dot is the stuffing of a ".": take it; a lone dot is content.
        if (*p == '.') ++p;
        out += stuff ? ".." : ".";
        state_ = State::kInLine;
        last_cr_ = false;
        break;

      case State::kInLine: {
        // The hot path: copy up to the next LF in one go.
        const char* lf = static_cast<const char*>(std::memchr(p, '\n', end - p));
        const char* stop = lf ? lf : end;
        if (stop > p) {
          out.append(p, stop);
          last_cr_ = stop[-1] == '\r';
        }
        p = stop;
        if (lf) {
          AppendLineEnd(out);
          ++p;
          state_ = State::kLineStart;
        }
        break;
      }

      case State::kDone:
        break;
    }
  }
  return {static_cast<std::size_t>(p - input.data()), state_ == State::kDone};
}

void StuffLines(std::string_view content, std::string& out) {
  std::size_t pos = 0;
  while (pos < content.size()) {
    std::size_t lf = content.find('\n', pos);
    std::size_t line_end = lf == std::string_view::npos ? content.size() : lf;
    std::string_view line = content.substr(pos, line_end - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.starts_with('.')) out += '.';
    out.append(line);
    out += "\r\n";
    pos = lf == std::string_view::npos ? content.size() : lf + 1;
  }
}

}  // namespace popgate::pop3
