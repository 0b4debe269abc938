#pragma once
// Shared by the files that implement Session (session*.cc): popgate's own replies and
// the session's limits. Not for use elsewhere.

#include <chrono>
#include <cstddef>
#include <string>

#include "pop3/command.h"

namespace popgate::net::session_internal {

// Replies popgate gives in its own name. [SYS/TEMP] (RFC 3206) tells the client that
// the failure is temporary and not its credentials' fault.
inline constexpr const char* kUpstreamUnavailable =
    "-ERR [SYS/TEMP] Upstream server unavailable\r\n";
inline constexpr const char* kUpstreamTimedOut = "-ERR [SYS/TEMP] Upstream server timed out\r\n";
inline constexpr const char* kUpstreamInvalid =
    "-ERR [SYS/TEMP] Upstream server sent an invalid response\r\n";
inline constexpr const char* kUpstreamClosed =
    "-ERR [SYS/TEMP] Upstream server closed the connection\r\n";
// popgate's own trouble (out of descriptors) is not the upstream's: the client is told so.
inline constexpr const char* kNoResources =
    "-ERR [SYS/TEMP] Proxy out of resources, try again later\r\n";
inline constexpr const char* kUpstreamTlsFailed = "-ERR [SYS/TEMP] Upstream TLS failed\r\n";
inline constexpr const char* kIdleReply = "-ERR Disconnected for inactivity\r\n";
inline constexpr const char* kLineTooLong = "-ERR Line too long\r\n";
inline constexpr const char* kStlsUnavailable = "-ERR STLS not available\r\n";
inline constexpr const char* kStlsActive = "-ERR Already using TLS\r\n";
inline constexpr const char* kStlsGo = "+OK Begin TLS negotiation now\r\n";
// Dovecot's wording for disable_plaintext_auth, which clients already know.
inline constexpr const char* kPlaintextRefused =
    "-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.\r\n";
inline constexpr const char* kApopUnavailable = "-ERR APOP not available\r\n";
inline constexpr const char* kUserFirst = "-ERR No username given\r\n";

// A TLS handshake has this long; a client that stalls in it is dropped.
inline constexpr std::chrono::seconds kHandshakeTimeout{30};
// A client that pipelines more than this many commands waits for answers before popgate
// reads more from it, so one client cannot make popgate queue without bound.
inline constexpr std::size_t kMaxPending = 128;
// Relayed output is written in pieces of about this size, so a large message streams.
inline constexpr std::size_t kWriteChunk = 64 * 1024;
// A CAPA response is held whole to be rewritten; larger ones are refused.
inline constexpr std::size_t kMaxCapa = 64 * 1024;
// Idle sessions give back large buffers (HAZARDS.md: memory per idle session).
inline constexpr std::size_t kKeepCapacity = 4096;

inline void ShrinkIfLarge(std::string& s) {
  if (s.capacity() > kKeepCapacity) {
    std::string().swap(s);
  }
}

// Whether a +OK to `command` logs the client in. AUTH without a mechanism only lists
// the mechanisms.
inline bool LogsIn(const pop3::Command& command) {
  using pop3::Verb;
  return command.verb == Verb::kPass || command.verb == Verb::kApop ||
         (command.verb == Verb::kAuth && !command.args.empty());
}

// Commands after which popgate waits for the answer before reading the next one: the
// state they lead to decides how the next command is treated.
inline bool IsBarrier(const pop3::Command& command) {
  return LogsIn(command) || command.verb == pop3::Verb::kQuit;
}

}  // namespace popgate::net::session_internal
