#pragma once
// Client commands: parsing, state rules and the canonical form sent upstream.
// Pure code: no sockets, no Boost (STYLE.md layering).

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace popgate::pop3 {

// Every command popgate understands (RFC 1939, 2449, 2595, 5034, 6856), plus
// kPassThrough for unknown keywords the admin chose to relay.
enum class Verb {
  kUser,
  kPass,
  kApop,
  kAuth,
  kStat,
  kList,
  kUidl,
  kTop,
  kRetr,
  kDele,
  kNoop,
  kRset,
  kQuit,
  kCapa,
  kStls,
  kUtf8,
  kLang,
  kPassThrough,
};

// RFC 1939 §3. UPDATE is not a state popgate needs: after QUIT the session ends.
enum class State { kAuthorization, kTransaction };

struct Command {
  Verb verb;
  std::string keyword;            // upper case, as sent upstream
  std::vector<std::string> args;  // normalised: no empty arguments

  // The line sent upstream: keyword and arguments joined by single spaces, then CRLF.
  std::string Canonical() const;
  // Whether a +OK answer to this command carries a multi-line body (RFC 1939 §3,
  // RFC 2449 §5, RFC 6856 §3): depends on the command *and* its argument count.
  bool MultiLineIfOk() const;
  // Whether the command's argument must never be logged (PASS, APOP, AUTH payloads).
  bool CarriesSecret() const;
};

struct ParseError {
  std::string reply;  // the full -ERR line to send the client, CRLF included
};

using ParseResult = std::variant<Command, ParseError>;

struct ParseOptions {
  // Unknown keywords the admin relays upstream (upper case). Their response is
  // taken as single-line.
  std::span<const std::string> pass_through;
};

// Parses one client line, without its CRLF/LF. Checks syntax and argument counts,
// not the session state (see AllowedIn).
ParseResult ParseCommand(std::string_view line, const ParseOptions& options = {});

// Whether `verb` may be sent in `state` (RFC 1939 §4-§6, RFC 2449, RFC 6856 §3).
bool AllowedIn(Verb verb, State state);

// The -ERR line for a command not allowed in the current state.
std::string WrongStateReply(const Command& command, State state);

}  // namespace popgate::pop3
