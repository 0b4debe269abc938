#pragma once
// Text from elsewhere (a peer, a plugin, a config file, a library's message) made into one
// safe line. Every place that writes such text on a line uses one of these three; they
// differ where the reader differs:
//
//   Escaped       an operator reads it in a log line or an error message: every byte is
//                 shown, none is lost, so control characters are escaped.
//   SpacedLine    a mail client shows it in a POP3 reply (-ERR text): it must not end the
//                 line early, but escapes would be noise to its user, so line breaks become
//                 spaces and the rest is left as the plugin wrote it.
//   ReadableLine  a person reads it in a mail popgate writes (the reject notice: its header
//                 fields and text/plain; charset=utf-8 body): it must be valid UTF-8 and
//                 one header line, so control characters become spaces and invalid bytes '?'.
//
// None of them lets a CR or LF through. Where text must already be one line (a header
// value, a plugin's reply, an option) and is refused otherwise, HasLineBreakOrNul is the
// check. Pure code: the standard library only.

#include <cstddef>
#include <string>
#include <string_view>

namespace popgate::text {

inline constexpr std::size_t kWhole = std::string_view::npos;

// Whether `text` holds a CR, LF or NUL: what no line popgate writes may hold.
inline bool HasLineBreakOrNul(std::string_view text) {
  return text.find_first_of(std::string_view("\r\n\0", 3)) != std::string_view::npos;
}

// CR, LF and TAB as \r, \n and \t; other C0 control characters and DEL as \xNN; the
// backslash as \\, so that text cannot pass itself off as an escape. Every other byte
// as it is (UTF-8 text stays readable). At most the first `max_bytes` bytes of `text`
// (by default a log line's share of peer text), then "..." if there was more.
std::string Escaped(std::string_view text, std::size_t max_bytes = 200);

// CR, LF and NUL become spaces; every other byte as it is. At most `max_bytes` bytes,
// cut without a mark (the reply is not an error report).
std::string SpacedLine(std::string_view text, std::size_t max_bytes);

// Control characters (C0, DEL, C1, U+2028/2029) become spaces, bytes that are not UTF-8
// become '?', runs of spaces become one, no space at either end. At most `max_bytes`
// bytes (at least 4): a longer text is cut at a character boundary, and before an RFC 2047
// encoded-word it would cut in two, and ends in "...".
std::string ReadableLine(std::string_view text, std::size_t max_bytes);

}  // namespace popgate::text
