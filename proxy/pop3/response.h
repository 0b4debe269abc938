#pragma once
// Server status lines: "+OK ...", "-ERR ..." and SASL continuations "+ ...".

#include <string>
#include <string_view>

namespace popgate::pop3 {

enum class Status {
  kOk,            // "+OK" then end of line or a space (RFC 1939 §3)
  kErr,           // "-ERR" likewise; always a single line
  kContinuation,  // "+ " or "+" alone: an AUTH challenge (RFC 5034 §4)
  kInvalid,       // anything else, or control characters: a broken or hostile upstream
};

// Classifies one line without its line ending.
Status ClassifyStatus(std::string_view line);

// Whether a greeting line may be relayed: "+OK" status, no control characters.
bool IsValidGreeting(std::string_view line);

// The greeting without its APOP timestamp ("<...@...>", RFC 1939 §7), for a greeting
// that arrived over plaintext before an upstream STLS: its timestamp may be an
// attacker's choice (CVE-2007-1558).
std::string StripApopTimestamp(std::string_view greeting);

}  // namespace popgate::pop3
