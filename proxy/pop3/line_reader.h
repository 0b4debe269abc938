#pragma once
// Splits a byte stream into lines with a length cap, for client commands and upstream
// status lines. Content of multi-line responses goes through MultiLineDecoder instead:
// it has no length cap.

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace popgate::pop3 {

class LineReader {
 public:
  enum class Kind {
    kLine,     // a complete line; text() has no CR/LF
    kTooLong,  // a line went over the cap; reported at once, then skipped through its LF
  };
  struct Line {
    Kind kind;
    std::string text;
  };

  // `max_line` counts the octets of a line including its CRLF (RFC 2449 §4).
  explicit LineReader(std::size_t max_line) : max_line_(max_line) {}

  // Takes bytes from `input` until it holds a complete line (or has skipped an overlong
  // one). Returns how many bytes of `input` it used and, when complete, the line.
  // Bytes after the line are left for the caller to feed again.
  std::size_t Feed(std::string_view input, std::optional<Line>& out);

  // True while a partial line is held (the caller must not, e.g., start TLS).
  bool has_partial() const { return !partial_.empty() || skipping_; }
  void Reset() {
    partial_.clear();
    skipping_ = false;
  }

 private:
  std::size_t max_line_;
  std::string partial_;
  bool skipping_ = false;  // inside an overlong line, discarding to its LF
};

}  // namespace popgate::pop3
