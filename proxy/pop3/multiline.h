#pragma once
// Multi-line responses (RFC 1939 §3): incremental decoding with dot-unstuffing and
// detection of the terminating ".", and encoding with dot-stuffing.
//
// The response ends only at CRLF "." CRLF (RFC 1939 §3): a "." line after a bare LF is
// content, never the end, so a message is never cut short by what a sender put in it.
// After a bare LF a leading ".." is taken as stuffing (servers such as Dovecot treat LF
// as a line end and stuff after it), a single "." as content.
//
// Output is canonical: every line ends in CRLF (a bare LF becomes CRLF) and, when
// stuffing, every line that begins with "." gets a second one. So no lenient client
// (Python's poplib splits on bare LF) can be made to see an early end: "POP3
// smuggling", HAZARDS.md. Every other byte passes as sent: NUL, 8-bit, bare CR, and
// lines of any length.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace popgate::pop3 {

class MultiLineDecoder {
 public:
  enum class Output {
    kContent,  // un-stuffed content lines, each ending in CRLF
    kStuffed,  // content re-stuffed for the wire, ready to relay (terminator not included)
  };

  explicit MultiLineDecoder(Output output = Output::kContent) : output_(output) {}

  struct Progress {
    std::size_t consumed;  // bytes of input used; the rest belongs to the next response
    bool done;             // the terminating line has been consumed
  };

  // Consumes input split at any byte. Appends decoded bytes to `out`.
  Progress Feed(std::string_view input, std::string& out);

  // Changes what the rest of the output looks like. Safe between Feed calls: a line's
  // first dot is only written once its next byte is seen, in the mode then in force.
  void set_output(Output output) { output_ = output; }

  bool done() const { return state_ == State::kDone; }
  // True when no partial line is pending: the output so far ends at a line boundary.
  bool at_line_start() const { return state_ == State::kLineStart; }
  void Reset() {
    state_ = State::kLineStart;
    after_crlf_ = true;
  }

 private:
  enum class State {
    kLineStart,  // nothing of the current line seen yet
    kDot,        // after CRLF, the line began with "."
    kDotCr,      // after CRLF, the line began with ".\r"
    kBareLfDot,  // after a bare LF, the line began with "."
    kInLine,     // inside a content line; last_cr_ says whether the last byte was CR
    kDone,
  };

  void AppendLineEnd(std::string& out);

  Output output_;
  State state_ = State::kLineStart;
  bool last_cr_ = false;
  bool after_crlf_ = true;  // the previous line ended in CRLF (or there was none)
};

// Appends `content` (un-stuffed, any line endings) to `out` as stuffed wire lines:
// CRLF everywhere, a leading "." doubled. If `content` doesn't end in a line break, one
// is added. Does not add the terminator.
void StuffLines(std::string_view content, std::string& out);

// StuffLines for canonical content (every line ends in CRLF, as MultiLineDecoder writes
// it) that is written out in pieces split anywhere, even inside a line: each line that
// begins with "." gets a second one. Adds no line end: the pieces are the whole content.
class ContentStuffer {
 public:
  // How much of `content`, from its start, goes out as it is (no line in it begins with
  // "."). Does not consume it: Skip() or Append() does.
  std::size_t VerbatimPrefix(std::string_view content) const;
  // `content` has gone out as it is (it was all VerbatimPrefix).
  void Skip(std::string_view content);
  // Appends `content` stuffed to `out`.
  void Append(std::string_view content, std::string& out);

 private:
  bool at_line_start_ = true;
};

// The inverse of StuffLines for what it (or a kStuffed decoder) produced: appends
// `wire` to `out` with the extra "." of each stuffed line removed.
void UnstuffLines(std::string_view wire, std::string& out);

// Where the header block of canonical content (CRLF line ends) ends: just past the blank
// line, or nullopt when none has been seen. The bytes before `from` are known to hold no
// blank line (content that arrives in pieces is searched once).
std::optional<std::size_t> FindHeaderBlockEnd(std::string_view content, std::size_t from = 0);

// FindHeaderBlockEnd, or content.size() when there is no blank line (headers only).
std::size_t HeaderBlockEnd(std::string_view content);

// The length of the first `lines` lines of `text` (all of it if it has fewer).
std::size_t FirstLinesLength(std::string_view text, std::uint64_t lines);

// The length of what "TOP msg n" returns of canonical content: the header block, the
// blank line and the first `body_lines` lines of the body (RFC 1939 §7).
std::size_t TopLength(std::string_view content, std::uint64_t body_lines);

// The terminating line.
inline constexpr std::string_view kTerminator = ".\r\n";

}  // namespace popgate::pop3
