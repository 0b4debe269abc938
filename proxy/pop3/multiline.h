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

// Where a message's header block ends (RFC 5322 §2.1: at the first empty line).
struct HeaderSplit {
  std::size_t header_size;     // bytes of the header block, up to the blank line
  std::size_t separator_size;  // 2 for CRLF, 1 for a bare LF, 0: no blank line (yet)
};

// The one search for the end of a header block (pop3's TOP and the filters' held header
// block, mail::Message, the quarantine notice). Splits `content` at its first empty line:
// CRLF, or a bare LF, which content a plugin wrote may have (canonical content, as the
// decoder writes it, has none). Without one, the whole of `content` is the header block
// and separator_size is 0; on a prefix of a message, separator_size != 0 says the header
// block is complete. The bytes before `from` are known to hold no blank line (content
// that arrives in pieces is searched once).
HeaderSplit SplitHeaders(std::string_view content, std::size_t from = 0);

// SplitHeaders as an offset: just past the blank line, or nullopt when none has been seen.
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
