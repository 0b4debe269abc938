#include "net/log_text.h"

#include <cstdio>

namespace popgate::net {

std::string LogSafe(std::string_view peer_text, std::size_t max_length) {
  std::string out;
  out.reserve(std::min(peer_text.size(), max_length) + 3);
  for (unsigned char c : peer_text) {
    if (out.size() >= max_length) {
      out += "...";
      break;
    }
    if (c < 0x20 || c == 0x7f || c == '\\') {
      char escaped[5];
      std::snprintf(escaped, sizeof escaped, "\\x%02x", c);
      out += escaped;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

}  // namespace popgate::net
