#include "text/one_line.h"

namespace popgate::text {
namespace {

// Length of the valid UTF-8 sequence at the start of `s` (no overlongs, no surrogates, at
// most U+10FFFF), 0 if there is none. Sets `code` to its code point.
std::size_t Utf8Sequence(std::string_view s, char32_t& code) {
  auto byte = [&](std::size_t i) { return static_cast<unsigned char>(s[i]); };
  unsigned char lead = byte(0);
  std::size_t length = 0;
  char32_t min = 0;
  if (lead < 0x80) {
    code = lead;
    return 1;
  } else if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2, code = lead & 0x1F, min = 0x80;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3, code = lead & 0x0F, min = 0x800;
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4, code = lead & 0x07, min = 0x10000;
  } else {
    return 0;
  }
  if (s.size() < length) return 0;
  for (std::size_t i = 1; i < length; ++i) {
    if ((byte(i) & 0xC0) != 0x80) return 0;
    code = (code << 6) | (byte(i) & 0x3F);
  }
  if (code < min || code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF)) return 0;
  return length;
}

bool IsControl(char32_t code) {
  return code < 0x20 || code == 0x7F || (code >= 0x80 && code <= 0x9F) || code == 0x2028 ||
         code == 0x2029;
}

}  // namespace

std::string Escaped(std::string_view text, std::size_t max_bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  const std::string_view shown = text.substr(0, max_bytes);
  std::string out;
  out.reserve(shown.size() + 3);
  for (const char c : shown) {
    const auto byte = static_cast<unsigned char>(c);
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\\') {
      out += "\\\\";
    } else if (byte < 0x20 || byte == 0x7f) {
      out += "\\x";
      out += kHex[byte >> 4];
      out += kHex[byte & 0xf];
    } else {
      out += c;
    }
  }
  if (shown.size() < text.size()) out += "...";
  return out;
}

std::string SpacedLine(std::string_view text, std::size_t max_bytes) {
  std::string out(text.substr(0, max_bytes));
  for (char& c : out) {
    if (c == '\r' || c == '\n' || c == '\0') c = ' ';
  }
  return out;
}

std::string ReadableLine(std::string_view text, std::size_t max_bytes) {
  std::string out;
  std::size_t cut = std::string::npos;  // where to cut if it gets too long
  for (std::size_t i = 0; i < text.size();) {
    char32_t code = 0;
    std::size_t length = Utf8Sequence(text.substr(i), code);
    std::string_view piece;
    bool space = false;
    if (length == 0) {
      piece = "?";
      length = 1;
    } else if (IsControl(code)) {
      space = true;
    } else {
      piece = text.substr(i, length);
      space = code == ' ';
    }
    i += length;
    if (space) {
      if (!out.empty() && out.back() != ' ') out += ' ';
    } else {
      if (cut == std::string::npos && out.size() + piece.size() > max_bytes - 3) {
        cut = out.size();
      }
      out += piece;
    }
    if (out.size() > max_bytes + 8) break;  // enough to know it is too long
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  if (out.size() <= max_bytes) return out;
  out.resize(cut);
  // Don't leave half an RFC 2047 encoded-word: the reader would see "=?utf-8?B?SGVsbG".
  std::size_t open = out.rfind("=?");
  if (open != std::string::npos && out.find("?=", open + 2) == std::string::npos) {
    out.resize(open);
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out + "...";
}

}  // namespace popgate::text
