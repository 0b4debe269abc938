// libFuzzer target for the SASL decoding popgate does to name the user in its log line
// (pop3/sasl.h): DecodeBase64 and SaslUser, on the input as a client's base64 text and
// on the base64 encoding of the input's bytes.
//
// Invariants:
// - decode(encode(x)) == x for any bytes x (RFC 4648 §4, with padding);
// - DecodeBase64 accepts exactly the RFC 4648 alphabet in quanta of 4 with at most two
//   '=' at the very end (a reference check); what it accepts re-encodes to the same
//   text but for the unused bits of the last character, and its size follows from the
//   padding; garbage is rejected, never a crash;
// - SaslUser: nothing without valid base64; LOGIN is the decoded text; PLAIN the
//   authcid between the first two NULs (RFC 4616); CRAM-MD5 all before the last space
//   (RFC 2195); any other mechanism nothing; the user is never longer than the decoded
//   response.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "fuzz_support.h"
#include "pop3/sasl.h"

namespace {

using popgate::pop3::DecodeBase64;
using popgate::pop3::SaslUser;

constexpr std::string_view kAlphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::string Encode(std::string_view bytes) {
  std::string out;
  for (std::size_t i = 0; i < bytes.size(); i += 3) {
    const std::size_t n = bytes.size() - i < 3 ? bytes.size() - i : 3;
    std::uint32_t triple = 0;
    for (std::size_t k = 0; k < 3; ++k) {
      triple <<= 8;
      if (k < n) triple |= static_cast<unsigned char>(bytes[i + k]);
    }
    for (std::size_t k = 0; k < 4; ++k) {
      out += k <= n ? kAlphabet[(triple >> (18 - 6 * k)) & 0x3f] : '=';
    }
  }
  return out;
}

// RFC 4648 §4 syntax: quanta of four alphabet characters, the last with "=" or "=="
// in place of its last one or two.
bool ReferenceValid(std::string_view text) {
  if (text.size() % 4 != 0) return false;
  std::size_t padding = 0;
  while (padding < 2 && padding < text.size() && text[text.size() - 1 - padding] == '=') {
    ++padding;
  }
  std::string_view chars = text.substr(0, text.size() - padding);
  return chars.find_first_not_of(kAlphabet) == std::string_view::npos;
}

std::optional<std::string> ReferenceUser(std::string_view mechanism, const std::string& decoded) {
  if (mechanism == "LOGIN") return decoded;
  if (mechanism == "CRAM-MD5") {
    std::size_t space = decoded.rfind(' ');
    if (space == std::string::npos) return std::nullopt;
    return decoded.substr(0, space);
  }
  if (mechanism == "PLAIN") {
    std::size_t first = decoded.find('\0');
    if (first == std::string::npos) return std::nullopt;
    std::size_t second = decoded.find('\0', first + 1);
    if (second == std::string::npos) return std::nullopt;
    return decoded.substr(first + 1, second - first - 1);
  }
  return std::nullopt;
}

void CheckUser(std::string_view response) {
  const std::optional<std::string> decoded = DecodeBase64(response);
  for (std::string_view mechanism :
       {"LOGIN", "PLAIN", "CRAM-MD5", "XOAUTH2", "login", "SCRAM-SHA-256", ""}) {
    const std::optional<std::string> user = SaslUser(mechanism, response);
    if (!decoded) {
      FUZZ_CHECK(!user);
      continue;
    }
    FUZZ_CHECK(user == ReferenceUser(mechanism, *decoded));
    if (user) FUZZ_CHECK(user->size() <= decoded->size());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
  std::string_view data(reinterpret_cast<const char*>(bytes), size);

  // The input as base64 text from a client.
  const std::optional<std::string> decoded = DecodeBase64(data);
  FUZZ_CHECK(decoded.has_value() == ReferenceValid(data));
  if (decoded) {
    const std::size_t padding = data.ends_with("==") ? 2 : data.ends_with('=') ? 1 : 0;
    FUZZ_CHECK(decoded->size() == data.size() / 4 * 3 - padding);
    const std::string again = Encode(*decoded);
    FUZZ_CHECK(again.size() == data.size());
    // Equal but for the unused low bits of the last character before the padding.
    const std::size_t last = data.size() - padding - 1;
    if (!data.empty()) {
      FUZZ_CHECK(again.substr(0, last) == data.substr(0, last));
      FUZZ_CHECK(again.substr(last + 1) == data.substr(last + 1));
      if (padding == 0) FUZZ_CHECK(again[last] == data[last]);
    }
    FUZZ_CHECK(DecodeBase64(again) == decoded);
  }
  CheckUser(data);

  // The input as the bytes a client encoded.
  const std::string encoded = Encode(data);
  FUZZ_CHECK(encoded.size() == (data.size() + 2) / 3 * 4);
  FUZZ_CHECK(DecodeBase64(encoded) == std::string(data));
  CheckUser(encoded);
  return 0;
}
