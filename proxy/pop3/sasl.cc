#include "pop3/sasl.h"

namespace popgate::pop3 {
namespace {

int Base64Value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

}  // namespace

std::optional<std::string> DecodeBase64(std::string_view text) {
  if (text.size() % 4 != 0) return std::nullopt;
  std::string out;
  out.reserve(text.size() / 4 * 3);
  for (std::size_t i = 0; i < text.size(); i += 4) {
    int v[4];
    int padding = 0;
    for (int k = 0; k < 4; ++k) {
      char c = text[i + k];
      if (c == '=' && i + 4 == text.size() && k >= 2) {
        v[k] = 0;
        ++padding;
      } else if (padding > 0 || (v[k] = Base64Value(c)) < 0) {
        return std::nullopt;
      }
    }
    unsigned triple = (v[0] << 18) | (v[1] << 12) | (v[2] << 6) | v[3];
    out += static_cast<char>(triple >> 16);
    if (padding < 2) out += static_cast<char>((triple >> 8) & 0xff);
    if (padding < 1) out += static_cast<char>(triple & 0xff);
  }
  return out;
}

std::optional<std::string> SaslUser(std::string_view mechanism, std::string_view first_response) {
  auto decoded = DecodeBase64(first_response);
  if (!decoded) return std::nullopt;
  if (mechanism == "LOGIN") return decoded;
  if (mechanism == "CRAM-MD5") {
    // "user SP digest" (RFC 2195): the user is everything before the last space.
    auto space = decoded->rfind(' ');
    if (space == std::string::npos) return std::nullopt;
    return decoded->substr(0, space);
  }
  if (mechanism == "PLAIN") {
    // authzid NUL authcid NUL passwd: the user is authcid.
    auto first = decoded->find('\0');
    if (first == std::string::npos) return std::nullopt;
    auto second = decoded->find('\0', first + 1);
    if (second == std::string::npos) return std::nullopt;
    return decoded->substr(first + 1, second - first - 1);
  }
  return std::nullopt;
}

}  // namespace popgate::pop3
