#include "pop3/multiline.h"

#include <cstring>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

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

namespace {

// The longest prefix of [p, end) that passes through unchanged in both output modes:
// every LF in it follows a CR (prev_cr: the byte before p was a CR) and no line in it
// starts with ".". Stops before a bare LF, or just after an LF followed by ".".
const char* VerbatimPrefix(const char* p, const char* end, bool prev_cr) {
  const char* q = p;
  auto check = [&](const char* lf) -> const char* {
    bool cr = lf > p ? lf[-1] == '\r' : prev_cr;
    if (!cr) return lf;
    if (lf + 1 < end && lf[1] == '.') return lf + 1;
    return nullptr;
  };
#if defined(__SSE2__)
  const __m128i nl = _mm_set1_epi8('\n');
  for (; end - q >= 16; q += 16) {
    unsigned mask = static_cast<unsigned>(_mm_movemask_epi8(
        _mm_cmpeq_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q)), nl)));
    while (mask) {
      const char* lf = q + __builtin_ctz(mask);
      mask &= mask - 1;
      if (const char* stop = check(lf)) return stop;
    }
  }
#endif
  for (; q < end; ++q) {
    if (*q == '\n') {
      if (const char* stop = check(q)) return stop;
    }
  }
  return end;
}

}  // namespace

MultiLineDecoder::Progress MultiLineDecoder::Feed(std::string_view input, std::string& out) {
  const char* p = input.data();
  const char* end = p + input.size();
  const bool stuff = output_ == Output::kStuffed;

  while (p < end && state_ != State::kDone) {
    // Fast path: runs of ordinary CRLF lines are the same in and out: one copy.
    if (state_ == State::kInLine || (state_ == State::kLineStart && *p != '.')) {
      const char* q = VerbatimPrefix(p, end, state_ == State::kInLine && last_cr_);
      if (q > p) {
        out.append(p, q);
        if (q[-1] == '\n') {
          state_ = State::kLineStart;
          after_crlf_ = true;
        } else {
          state_ = State::kInLine;
          last_cr_ = q[-1] == '\r';
        }
        p = q;
        continue;
      }
    }
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
    // A run of lines that go out as they are (each ends in CRLF, none begins with "."):
    // appended at once.
    std::size_t run_end = pos;
    while (run_end < content.size() && content[run_end] != '.') {
      std::size_t lf = content.find('\n', run_end);
      if (lf == std::string_view::npos || lf == run_end || content[lf - 1] != '\r') break;
      run_end = lf + 1;
    }
    out.append(content.substr(pos, run_end - pos));
    pos = run_end;
    if (pos == content.size()) break;
    // Then one line that needs work: a leading dot, a bare LF, or no line end.
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

std::size_t ContentStuffer::VerbatimPrefix(std::string_view content) const {
  if (content.empty() || (at_line_start_ && content.front() == '.')) return 0;
  std::size_t dot_line = content.find("\n.");
  return dot_line == std::string_view::npos ? content.size() : dot_line + 1;
}

void ContentStuffer::Skip(std::string_view content) {
  if (!content.empty()) at_line_start_ = content.back() == '\n';
}

void ContentStuffer::Append(std::string_view content, std::string& out) {
  while (!content.empty()) {
    std::size_t plain = VerbatimPrefix(content);
    if (plain == 0) {
      out += '.';  // the line's own dot follows with the rest of it
      std::size_t lf = content.find('\n');
      plain = lf == std::string_view::npos ? content.size() : lf + 1;
    }
    out.append(content.substr(0, plain));
    Skip(content.substr(0, plain));
    content.remove_prefix(plain);
  }
}

void UnstuffLines(std::string_view wire, std::string& out) {
  out.reserve(out.size() + wire.size());
  std::size_t pos = 0;
  while (pos < wire.size()) {
    std::size_t lf = wire.find('\n', pos);
    std::size_t next = lf == std::string_view::npos ? wire.size() : lf + 1;
    if (wire[pos] == '.') ++pos;
    out.append(wire.substr(pos, next - pos));
    pos = next;
  }
}

HeaderSplit SplitHeaders(std::string_view content, std::size_t from) {
  // A blank line begins the content or follows a LF. One that straddles `from` ends at or
  // after it, so it begins after a LF at from - 2 or later: the search starts there.
  std::size_t pos = 0;
  if (from >= 2) {
    std::size_t lf = content.find('\n', from - 2);
    pos = lf == std::string_view::npos ? content.size() : lf + 1;
  }
  while (pos < content.size()) {
    if (content[pos] == '\n') return {pos, 1};
    if (content.substr(pos, 2) == "\r\n") return {pos, 2};
    std::size_t lf = content.find('\n', pos);
    if (lf == std::string_view::npos) break;
    pos = lf + 1;
  }
  return {content.size(), 0};
}

std::optional<std::size_t> FindHeaderBlockEnd(std::string_view content, std::size_t from) {
  HeaderSplit split = SplitHeaders(content, from);
  if (split.separator_size == 0) return std::nullopt;
  return split.header_size + split.separator_size;
}

std::size_t HeaderBlockEnd(std::string_view content) {
  HeaderSplit split = SplitHeaders(content);
  return split.header_size + split.separator_size;
}

std::size_t FirstLinesLength(std::string_view text, std::uint64_t lines) {
  std::size_t end = 0;
  for (std::uint64_t line = 0; line < lines && end < text.size(); ++line) {
    std::size_t lf = text.find('\n', end);
    end = lf == std::string_view::npos ? text.size() : lf + 1;
  }
  return end;
}

std::size_t TopLength(std::string_view content, std::uint64_t body_lines) {
  std::size_t head = HeaderBlockEnd(content);
  return head + FirstLinesLength(content.substr(head), body_lines);
}

}  // namespace popgate::pop3
