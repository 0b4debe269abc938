#pragma once
// A client for SpamAssassin's spamd: the SPAMC/SPAMD protocol, HEADERS request.
//
//   HEADERS SPAMC/1.5\r\n
//   Content-length: <size>\r\n
//   User: <name>\r\n                        (optional)
//   \r\n
//   <the message>
//
// and spamd answers
//
//   SPAMD/1.1 0 EX_OK\r\n
//   Content-length: <size>\r\n
//   Spam: True ; 1000.0 / 5.0\r\n
//   \r\n
//   <the message's header block as SpamAssassin rewrote it, up to its blank line>
//
// (spamd/PROTOCOL in SpamAssassin; /usr/sbin/spamd, sub check). The header block
// carries SpamAssassin's own fields (X-Spam-Checker-Version, X-Spam-Flag,
// X-Spam-Level, X-Spam-Status, and whatever `add_header` adds, such as
// X-Spam-Score or X-Spam-Report); SpamAssassin removes any X-Spam-* fields the
// message already had before adding its own, so every X-Spam-* field in the
// answer is spamd's.
//
// Plain, synchronous code: standard library and POSIX sockets (and popgate's text/,
// itself standard library only), every wait a poll() bounded by one deadline for the
// whole call. Nothing here throws except std::bad_alloc; every failure is a SpamdResult
// with an error.

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace popgate::spamd {

// spamc's default size limit (`spamc -s`, 500 KB): larger messages are not sent.
inline constexpr std::size_t kDefaultMaxMessageSize = 500 * 1024;

struct ClientOptions {
  // Where spamd listens: "host:port", "[v6-address]:port", "host" (port 783), or a
  // unix socket, "/absolute/path" or "unix:/path". Host names are resolved with
  // getaddrinfo, which the deadline does not bound: prefer a numeric address.
  std::string address = "127.0.0.1:783";
  // Deadline for the whole call: connect, send, spamd's work, and the answer.
  std::chrono::milliseconds timeout{30'000};
  // Deadline for the connection alone (never later than `timeout`).
  std::chrono::milliseconds connect_timeout{5'000};
  // Sent as `User:` when not empty (spamd uses it for per-user settings).
  std::string user;
  // Messages larger than this are not sent: the result is Error::kTooLarge.
  std::size_t max_message_size = kDefaultMaxMessageSize;
  // A longer answer from spamd is a protocol error (it is only a header block).
  std::size_t max_response_size = 1024 * 1024;
};

enum class Error {
  kNone,
  kTooLarge,           // over max_message_size; nothing was sent
  kBadAddress,         // `address` cannot be parsed or resolved
  kConnectionRefused,  // nothing listens there (ECONNREFUSED; no such unix socket)
  kConnect,            // any other failure to connect (unreachable, permission, ...)
  kTimeout,            // the deadline passed (connecting, sending or waiting)
  kIo,                 // the connection broke: reset, or closed before any answer
  kProtocol,           // the answer is not a well-formed SPAMD answer
  kSpamd,              // spamd answered with an error code (e.g. 76 EX_PROTOCOL)
};

// "none", "too_large", "bad_address", "connection_refused", "connect", "timeout",
// "io", "protocol", "spamd".
std::string_view ErrorName(Error error);

// One header field spamd wrote.
struct HeaderField {
  std::string name;   // as written, e.g. "X-Spam-Status"
  std::string value;  // unfolded (line breaks before continuation lines removed),
                      // leading and trailing white space removed
  std::string raw;    // the whole field as written, "Name: value" with its folding;
                      // line breaks as CRLF, no final CRLF
};

struct Result {
  Error error = Error::kNone;
  std::string detail;  // what happened, for a log line; empty on success
  int spamd_code = 0;  // the SPAMD status code (sysexits.h) when answered

  bool is_spam = false;
  double score = 0;
  double threshold = 0;
  std::string score_text;      // as spamd wrote them in the Spam: line ("1000.0", "5.0")
  std::string threshold_text;  //
  // SpamAssassin's X-Spam-* fields, in spamd's order.
  std::vector<HeaderField> headers;

  bool ok() const { return error == Error::kNone; }
  // The first X-Spam-* field with this name (case-insensitive), or nullptr.
  const HeaderField* Find(std::string_view name) const;
};

// Asks spamd about `message` (the un-stuffed message bytes, CRLF line endings, as
// fetched over POP3). Never throws except std::bad_alloc.
Result Check(const ClientOptions& options, std::string_view message);

// Sends PING (protocol 1.5) and expects PONG. Result::ok() when spamd answered.
Result Ping(const ClientOptions& options);

// What is wrong with `address` as a spamd address ("" when it is usable): its form
// (host:port with a port from 1 to 65535, [v6]:port, or an absolute unix socket path),
// and for a unix socket that it exists and is a socket. Whether spamd answers there is a
// matter for each check (a down spamd follows on_error), not for start-up.
std::string AddressProblem(std::string_view address);

// ---------------------------------------------------------------- building blocks
// Public for tests and for callers that bring their own transport.

// The request header block for `message` (everything before the message bytes).
std::string BuildHeadersRequest(std::size_t message_size, std::string_view user);

// The answer to a HEADERS request, parsed incrementally: Feed() the bytes as they
// arrive, then Finish() at end of stream (or as soon as Feed() says kDone).
class ResponseParser {
 public:
  enum class State { kNeedMore, kDone, kError };

  explicit ResponseParser(std::size_t max_response_size = 1024 * 1024);

  // Takes the next bytes. kDone once the whole answer is in (the rest is ignored),
  // kError on a malformed or error answer (see result()).
  State Feed(std::string_view bytes);
  // End of stream: an answer without Content-length ends here; one that is
  // still short is a protocol error (or kIo when nothing arrived at all).
  State Finish();
  State state() const { return state_; }
  // The outcome; complete once the state is kDone or kError.
  const Result& result() const { return result_; }
  Result TakeResult() { return std::move(result_); }

 private:
  State ParseHead();
  State ParseBodyIfComplete(bool at_eof);
  State Fail(Error error, std::string detail);

  std::size_t max_response_size_;
  std::string buffer_;
  bool head_done_ = false;
  std::size_t body_start_ = 0;
  std::optional<std::size_t> content_length_;
  State state_ = State::kNeedMore;
  Result result_;
};

// The parsed answer from its complete bytes (ResponseParser in one go).
Result ParseHeadersResponse(std::string_view response, std::size_t max_response_size = 1024 * 1024);

// The X-Spam-* fields of a header block (either line ending), unfolded.
std::vector<HeaderField> ExtractSpamHeaders(std::string_view header_block);

}  // namespace popgate::spamd
