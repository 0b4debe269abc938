#include "spam_tag/spamd_client.h"

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <utility>

#include "text/errno_text.h"
#include "text/one_line.h"

namespace popgate::spamd {
namespace {

using Clock = std::chrono::steady_clock;

constexpr std::size_t kMaxResponseHead = 4 * 1024;  // status line + a few fields
constexpr std::string_view kDefaultPort = "783";

char Lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool EqualsNoCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (Lower(a[i]) != Lower(b[i])) return false;
  }
  return true;
}

bool StartsWithNoCase(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && EqualsNoCase(s.substr(0, prefix.size()), prefix);
}

bool IsWsp(char c) { return c == ' ' || c == '\t'; }

std::string_view Trim(std::string_view s) {
  while (!s.empty() && IsWsp(s.front())) s.remove_prefix(1);
  while (!s.empty() && (IsWsp(s.back()) || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

bool AllDigits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

template <typename T>
bool ParseNumber(std::string_view s, T& out) {
  if (s.empty()) return false;
  const char* end = s.data() + s.size();
  auto [ptr, ec] = std::from_chars(s.data(), end, out);
  return ec == std::errc() && ptr == end;
}

// A line of `data` starting at `pos`, without its LF or CRLF; npos when incomplete.
std::size_t LineEnd(std::string_view data, std::size_t pos, std::string_view& line) {
  std::size_t lf = data.find('\n', pos);
  if (lf == std::string_view::npos) return std::string_view::npos;
  line = data.substr(pos, lf - pos);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  return lf + 1;
}

Result ErrorResult(Error error, std::string detail) {
  Result r;
  r.error = error;
  r.detail = std::move(detail);
  return r;
}

// ------------------------------------------------------------------ the Spam: line
// "True ; 1000.0 / 5.0" (CHECK, HEADERS, PROCESS...) or "Yes ; ..." (REPORT_IFSPAM).
bool ParseSpamLine(std::string_view value, Result& r) {
  std::size_t semi = value.find(';');
  std::size_t slash = value.find('/', semi == std::string_view::npos ? 0 : semi);
  if (semi == std::string_view::npos || slash == std::string_view::npos) return false;
  std::string_view flag = Trim(value.substr(0, semi));
  std::string_view score = Trim(value.substr(semi + 1, slash - semi - 1));
  std::string_view threshold = Trim(value.substr(slash + 1));
  if (EqualsNoCase(flag, "True") || EqualsNoCase(flag, "Yes")) {
    r.is_spam = true;
  } else if (EqualsNoCase(flag, "False") || EqualsNoCase(flag, "No")) {
    r.is_spam = false;
  } else {
    return false;
  }
  // from_chars takes no leading '+'; spamd never writes one. It does take "nan" and
  // "inf", which no spamd writes either: a score must be a number.
  if (!ParseNumber(score, r.score) || !ParseNumber(threshold, r.threshold)) return false;
  if (!std::isfinite(r.score) || !std::isfinite(r.threshold)) return false;
  r.score_text = std::string(score);
  r.threshold_text = std::string(threshold);
  return true;
}

// ------------------------------------------------------------------ sockets
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  UniqueFd(UniqueFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) {
      Reset();
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  ~UniqueFd() { Reset(); }
  int get() const { return fd_; }
  void Reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

// Milliseconds until `deadline` for poll(), rounded up so a wait never ends early.
int PollTimeout(Clock::time_point deadline) {
  auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
  if (left <= 0) return 0;
  return static_cast<int>(std::min<long long>(left, 24LL * 3600 * 1000));
}

// Waits for `events` on fd until `deadline`. Returns the revents, 0 on timeout, -1
// with errno on a poll failure.
int WaitFor(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    pollfd p{fd, events, 0};
    int timeout = PollTimeout(deadline);
    int n = ::poll(&p, 1, timeout);
    if (n > 0) return p.revents;
    if (n == 0) {
      if (Clock::now() >= deadline) return 0;
      continue;
    }
    if (errno != EINTR) return -1;
  }
}

struct Endpoint {
  bool is_unix = false;
  std::string path;  // unix
  std::string host;  // tcp
  std::string port;  // tcp
  std::string text;  // for messages
};

bool ParseEndpoint(std::string_view address, Endpoint& ep, std::string& why) {
  ep.text = std::string(address);
  if (address.starts_with("unix:")) address.remove_prefix(5);
  if (address.starts_with("/")) {
    ep.is_unix = true;
    ep.path = std::string(address);
    if (ep.path.size() >= sizeof(sockaddr_un{}.sun_path)) {
      why = "unix socket path is too long";
      return false;
    }
    if (ep.path.find('\0') != std::string::npos) {
      why = "unix socket path holds a NUL";
      return false;
    }
    return true;
  }
  if (address.empty()) {
    why = "empty address";
    return false;
  }
  std::string_view host;
  std::string_view port = kDefaultPort;
  if (address.front() == '[') {
    std::size_t close = address.find(']');
    if (close == std::string_view::npos) {
      why = "missing ']'";
      return false;
    }
    host = address.substr(1, close - 1);
    std::string_view rest = address.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') {
        why = "expected ':' after ']'";
        return false;
      }
      port = rest.substr(1);
    }
  } else if (std::count(address.begin(), address.end(), ':') == 1) {
    std::size_t colon = address.find(':');
    host = address.substr(0, colon);
    port = address.substr(colon + 1);
  } else {
    host = address;  // a host name, an IPv4 address or a bare IPv6 address
  }
  unsigned number = 0;
  if (host.empty() || !AllDigits(port) || !ParseNumber(port, number) || number == 0 ||
      number > 65535) {
    why = "expected host:port";
    return false;
  }
  ep.host = std::string(host);
  ep.port = std::string(port);
  return true;
}

Error ConnectErrorKind(int err, bool is_unix) {
  if (err == ECONNREFUSED) return Error::kConnectionRefused;
  if (is_unix && err == ENOENT) return Error::kConnectionRefused;
  if (err == ETIMEDOUT) return Error::kTimeout;
  return Error::kConnect;
}

// Connects one socket to `addr` before `deadline`. On failure fills `r`.
UniqueFd ConnectOne(int family, const sockaddr* addr, socklen_t len, Clock::time_point deadline,
                    const Endpoint& ep, std::chrono::milliseconds limit, Result& r) {
  UniqueFd fd(::socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) {
    int err = errno;
    r = ErrorResult(Error::kConnect, "socket: " + text::ErrnoText(err));
    return {};
  }
  if (::connect(fd.get(), addr, len) == 0) return fd;
  int err = errno;
  if (err != EINPROGRESS && err != EINTR) {
    r = ErrorResult(ConnectErrorKind(err, ep.is_unix),
                    "connect to spamd at " + ep.text + ": " + text::ErrnoText(err));
    return {};
  }
  int revents = WaitFor(fd.get(), POLLOUT, deadline);
  if (revents == 0) {
    r = ErrorResult(Error::kTimeout, "connect to spamd at " + ep.text + ": no connection within " +
                                         std::to_string(limit.count()) + " ms");
    return {};
  }
  if (revents < 0) {
    err = errno;
    r = ErrorResult(Error::kConnect, "poll: " + text::ErrnoText(err));
    return {};
  }
  int so_error = 0;
  socklen_t so_len = sizeof so_error;
  if (::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &so_error, &so_len) != 0) so_error = errno;
  if (so_error != 0) {
    r = ErrorResult(ConnectErrorKind(so_error, ep.is_unix),
                    "connect to spamd at " + ep.text + ": " + text::ErrnoText(so_error));
    return {};
  }
  return fd;
}

UniqueFd Connect(const ClientOptions& options, Clock::time_point start, Clock::time_point deadline,
                 Result& r) {
  Endpoint ep;
  std::string why;
  if (!ParseEndpoint(options.address, ep, why)) {
    r = ErrorResult(Error::kBadAddress,
                    "spamd address '" + text::Escaped(options.address) + "': " + why);
    return {};
  }
  Clock::time_point connect_deadline = std::min(deadline, start + options.connect_timeout);
  std::chrono::milliseconds limit = std::min(options.timeout, options.connect_timeout);
  if (ep.is_unix) {
    sockaddr_un addr_un{};
    addr_un.sun_family = AF_UNIX;
    std::memcpy(addr_un.sun_path, ep.path.data(), ep.path.size());
    return ConnectOne(AF_UNIX, reinterpret_cast<const sockaddr*>(&addr_un), sizeof addr_un,
                      connect_deadline, ep, limit, r);
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* list = nullptr;
  int rc = ::getaddrinfo(ep.host.c_str(), ep.port.c_str(), &hints, &list);
  if (rc != 0) {
    r = ErrorResult(Error::kBadAddress, "spamd address '" + text::Escaped(ep.text) +
                                            "': " + std::string(::gai_strerror(rc)));
    return {};
  }
  std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> guard(list, &::freeaddrinfo);
  for (addrinfo* ai = list; ai != nullptr; ai = ai->ai_next) {
    UniqueFd fd =
        ConnectOne(ai->ai_family, ai->ai_addr, ai->ai_addrlen, connect_deadline, ep, limit, r);
    if (fd.get() >= 0) return fd;
    if (r.error == Error::kTimeout) break;  // the time is spent
  }
  return {};
}

// Sends `parts` in order. Stops early, without error, when spamd has something to
// say before taking all of it (an error answer): `answered_early` is then true.
bool SendAll(int fd, std::vector<std::string_view> parts, Clock::time_point deadline,
             bool& answered_early, Result& r) {
  answered_early = false;
  std::size_t index = 0;
  while (index < parts.size()) {
    iovec iov[2];
    int count = 0;
    for (std::size_t i = index; i < parts.size() && count < 2; ++i) {
      iov[count].iov_base = const_cast<char*>(parts[i].data());
      iov[count].iov_len = parts[i].size();
      ++count;
    }
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = static_cast<std::size_t>(count);
    ssize_t n = ::sendmsg(fd, &msg, MSG_NOSIGNAL);
    if (n < 0) {
      int err = errno;
      if (err == EINTR) continue;
      if (err == EAGAIN || err == EWOULDBLOCK) {
        int revents = WaitFor(fd, POLLOUT | POLLIN, deadline);
        if (revents == 0) {
          r = ErrorResult(Error::kTimeout, "sending the message to spamd: timed out");
          return false;
        }
        if (revents < 0) {
          err = errno;
          r = ErrorResult(Error::kIo, "poll: " + text::ErrnoText(err));
          return false;
        }
        if (revents & POLLIN) {
          answered_early = true;
          return true;
        }
        continue;
      }
      if (err == EPIPE || err == ECONNRESET) {
        // spamd stopped reading; an error line may be waiting.
        answered_early = true;
        r = ErrorResult(Error::kIo, "sending the message to spamd: " + text::ErrnoText(err));
        return true;
      }
      r = ErrorResult(Error::kIo, "sending the message to spamd: " + text::ErrnoText(err));
      return false;
    }
    auto sent = static_cast<std::size_t>(n);
    while (index < parts.size() && sent >= parts[index].size()) {
      sent -= parts[index].size();
      ++index;
    }
    if (index < parts.size()) parts[index].remove_prefix(sent);
  }
  return true;
}

// Reads until `feed` says it has all it needs (true) or the stream ends; `eof` is
// then called. Fills `r` on a timeout or a broken connection.
bool ReadAll(int fd, Clock::time_point deadline, const std::function<bool(std::string_view)>& feed,
             const std::function<void()>& eof, Result& r) {
  char buf[64 * 1024];
  for (;;) {
    int revents = WaitFor(fd, POLLIN, deadline);
    if (revents == 0) {
      r = ErrorResult(Error::kTimeout, "waiting for spamd's answer: timed out");
      return false;
    }
    if (revents < 0) {
      int err = errno;
      r = ErrorResult(Error::kIo, "poll: " + text::ErrnoText(err));
      return false;
    }
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n > 0) {
      if (feed(std::string_view(buf, static_cast<std::size_t>(n)))) return true;
      continue;
    }
    if (n == 0) {
      eof();
      return true;
    }
    int err = errno;
    if (err == EINTR || err == EAGAIN || err == EWOULDBLOCK) continue;
    if (err == ECONNRESET) {
      // Whatever arrived before the reset may be a complete error line.
      eof();
      return true;
    }
    r = ErrorResult(Error::kIo, "reading spamd's answer: " + text::ErrnoText(err));
    return false;
  }
}

std::string TimeoutText(std::chrono::milliseconds timeout) {
  return " (limit " + std::to_string(timeout.count()) + " ms)";
}

}  // namespace

// ------------------------------------------------------------------ public

std::string_view ErrorName(Error error) {
  switch (error) {
    case Error::kNone:
      return "none";
    case Error::kTooLarge:
      return "too_large";
    case Error::kBadAddress:
      return "bad_address";
    case Error::kConnectionRefused:
      return "connection_refused";
    case Error::kConnect:
      return "connect";
    case Error::kTimeout:
      return "timeout";
    case Error::kIo:
      return "io";
    case Error::kProtocol:
      return "protocol";
    case Error::kSpamd:
      return "spamd";
  }
  return "unknown";
}

const HeaderField* Result::Find(std::string_view name) const {
  for (const HeaderField& h : headers) {
    if (EqualsNoCase(h.name, name)) return &h;
  }
  return nullptr;
}

std::string BuildHeadersRequest(std::size_t message_size, std::string_view user) {
  std::string head = "HEADERS SPAMC/1.5\r\nContent-length: ";
  head += std::to_string(message_size);
  head += "\r\n";
  if (!user.empty()) {
    head += "User: ";
    head += user;
    head += "\r\n";
  }
  head += "\r\n";
  return head;
}

std::vector<HeaderField> ExtractSpamHeaders(std::string_view block) {
  std::vector<HeaderField> out;
  bool in_spam_field = false;  // the current field is an X-Spam-* one
  std::size_t pos = 0;
  while (pos < block.size()) {
    std::string_view line;
    std::size_t next = LineEnd(block, pos, line);
    if (next == std::string_view::npos) {  // last line without a line ending
      line = block.substr(pos);
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      next = block.size();
    }
    pos = next;
    if (line.empty()) break;  // end of the header block
    if (IsWsp(line.front())) {
      if (in_spam_field) {
        HeaderField& h = out.back();
        h.raw += "\r\n";
        h.raw += line;
        h.value += line;  // unfolding removes the line break, keeps the white space
      }
      continue;
    }
    in_spam_field = false;
    std::size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) continue;
    std::string_view name = line.substr(0, colon);
    bool valid_name = std::all_of(name.begin(), name.end(), [](char c) {
      auto u = static_cast<unsigned char>(c);
      return u > 0x20 && u < 0x7f;
    });
    if (!valid_name || !StartsWithNoCase(name, "X-Spam-")) continue;
    HeaderField h;
    h.name = std::string(name);
    h.raw = std::string(line);
    h.value = std::string(line.substr(colon + 1));
    out.push_back(std::move(h));
    in_spam_field = true;
  }
  for (HeaderField& h : out) h.value = std::string(Trim(h.value));
  return out;
}

ResponseParser::ResponseParser(std::size_t max_response_size)
    : max_response_size_(std::min<std::size_t>(max_response_size, std::size_t{1} << 40)) {}

ResponseParser::State ResponseParser::Fail(Error error, std::string detail) {
  int code = result_.spamd_code;
  result_ = ErrorResult(error, std::move(detail));
  result_.spamd_code = code;
  buffer_.clear();
  buffer_.shrink_to_fit();
  state_ = State::kError;
  return state_;
}

ResponseParser::State ResponseParser::Feed(std::string_view bytes) {
  if (state_ != State::kNeedMore) return state_;
  if (!head_done_) {
    std::size_t room = kMaxResponseHead - std::min(kMaxResponseHead, buffer_.size());
    // At most a head and a body within the limit: more is an error or ignored anyway.
    buffer_.append(bytes.substr(0, room + max_response_size_ + 1));
    State s = ParseHead();
    if (s != State::kNeedMore || !head_done_) return s;
    return ParseBodyIfComplete(false);
  }
  std::size_t have = buffer_.size() - body_start_;
  std::size_t want = content_length_ ? *content_length_ : max_response_size_ + 1;
  if (have < want) buffer_.append(bytes.substr(0, want - have));
  return ParseBodyIfComplete(false);
}

ResponseParser::State ResponseParser::Finish() {
  if (state_ != State::kNeedMore) return state_;
  if (!head_done_) {
    if (buffer_.empty()) return Fail(Error::kIo, "spamd closed the connection without an answer");
    // A status line without a line ending still tells an error code.
    if (buffer_.find('\n') == std::string::npos) buffer_ += "\r\n";
    State s = ParseHead();
    if (s != State::kNeedMore) return s;
    if (!head_done_) {
      return Fail(Error::kProtocol,
                  "spamd's answer ended inside its header: '" + text::Escaped(buffer_) + "'");
    }
  }
  return ParseBodyIfComplete(true);
}

ResponseParser::State ResponseParser::ParseHead() {
  // Only the first kMaxResponseHead bytes can hold the head, however they arrive: a
  // longer head is refused in one read as when split over many.
  std::string_view data = std::string_view(buffer_).substr(0, kMaxResponseHead);
  std::string_view status;
  std::size_t pos = LineEnd(data, 0, status);
  if (pos == std::string_view::npos) {
    if (buffer_.size() >= kMaxResponseHead) {
      return Fail(Error::kProtocol, "spamd's status line is too long");
    }
    return State::kNeedMore;
  }
  // "SPAMD/1.1 0 EX_OK"
  std::string_view rest = status;
  if (!rest.starts_with("SPAMD/")) {
    return Fail(Error::kProtocol, "not a SPAMD answer: '" + text::Escaped(status) + "'");
  }
  rest.remove_prefix(6);
  std::size_t sp = rest.find(' ');
  std::string_view version = rest.substr(0, sp);
  bool version_ok =
      !version.empty() && version.find_first_not_of("0123456789.") == std::string_view::npos;
  if (sp == std::string_view::npos || !version_ok) {
    return Fail(Error::kProtocol, "not a SPAMD status line: '" + text::Escaped(status) + "'");
  }
  rest.remove_prefix(sp + 1);
  sp = rest.find(' ');
  std::string_view code_text = rest.substr(0, sp);
  std::string_view message = sp == std::string_view::npos ? "" : Trim(rest.substr(sp + 1));
  int code = 0;
  if (!AllDigits(code_text) || !ParseNumber(code_text, code)) {
    return Fail(Error::kProtocol, "not a SPAMD status line: '" + text::Escaped(status) + "'");
  }
  result_.spamd_code = code;
  if (code != 0) {
    return Fail(Error::kSpamd,
                "spamd answered " + std::to_string(code) + " " + text::Escaped(message));
  }
  // Fields until the blank line.
  bool have_spam = false;
  for (;;) {
    std::string_view line;
    std::size_t next = LineEnd(data, pos, line);
    if (next == std::string_view::npos) {
      if (buffer_.size() >= kMaxResponseHead) {
        return Fail(Error::kProtocol, "spamd's answer header is too long");
      }
      return State::kNeedMore;  // parsed again from the start when more arrives
    }
    pos = next;
    if (line.empty()) break;
    std::size_t colon = line.find(':');
    if (colon == std::string_view::npos) {
      return Fail(Error::kProtocol, "bad line in spamd's answer: '" + text::Escaped(line) + "'");
    }
    std::string_view name = Trim(line.substr(0, colon));
    std::string_view value = Trim(line.substr(colon + 1));
    if (EqualsNoCase(name, "Content-length")) {
      std::size_t length = 0;
      if (!AllDigits(value) || !ParseNumber(value, length)) {
        return Fail(Error::kProtocol,
                    "bad Content-length in spamd's answer: '" + text::Escaped(value) + "'");
      }
      if (length > max_response_size_) {
        return Fail(Error::kProtocol, "spamd's answer is too long (" + std::to_string(length) +
                                          " bytes, limit " + std::to_string(max_response_size_) +
                                          ")");
      }
      content_length_ = length;
    } else if (EqualsNoCase(name, "Spam")) {
      if (!ParseSpamLine(value, result_)) {
        return Fail(Error::kProtocol,
                    "bad Spam line in spamd's answer: '" + text::Escaped(value) + "'");
      }
      have_spam = true;
    }
    // Other fields are ignored, as the protocol asks.
  }
  if (!have_spam) return Fail(Error::kProtocol, "spamd's answer has no Spam line");
  head_done_ = true;
  body_start_ = pos;
  // Drop what goes past the announced length (nothing should).
  std::size_t limit = content_length_ ? *content_length_ : max_response_size_ + 1;
  if (buffer_.size() - body_start_ > limit) buffer_.resize(body_start_ + limit);
  return State::kNeedMore;
}

ResponseParser::State ResponseParser::ParseBodyIfComplete(bool at_eof) {
  std::size_t have = buffer_.size() - body_start_;
  if (!content_length_ && have > max_response_size_) {
    return Fail(Error::kProtocol, "spamd's answer is too long (limit " +
                                      std::to_string(max_response_size_) + " bytes)");
  }
  if (content_length_ && have < *content_length_) {
    if (!at_eof) return State::kNeedMore;
    return Fail(Error::kProtocol, "spamd's answer ended after " + std::to_string(have) + " of " +
                                      std::to_string(*content_length_) + " bytes");
  }
  if (!content_length_ && !at_eof) return State::kNeedMore;
  std::string_view body = std::string_view(buffer_).substr(body_start_);
  result_.headers = ExtractSpamHeaders(body);
  buffer_.clear();
  buffer_.shrink_to_fit();
  state_ = State::kDone;
  return state_;
}

Result ParseHeadersResponse(std::string_view response, std::size_t max_response_size) {
  ResponseParser parser(max_response_size);
  if (parser.Feed(response) == ResponseParser::State::kNeedMore) parser.Finish();
  return parser.TakeResult();
}

Result Check(const ClientOptions& options, std::string_view message) {
  if (message.size() > options.max_message_size) {
    return ErrorResult(Error::kTooLarge, "message of " + std::to_string(message.size()) +
                                             " bytes is over the spamd size limit of " +
                                             std::to_string(options.max_message_size) + " bytes");
  }
  Clock::time_point start = Clock::now();
  Clock::time_point deadline = start + options.timeout;
  Result r;
  UniqueFd fd = Connect(options, start, deadline, r);
  if (fd.get() < 0) return r;

  std::string head = BuildHeadersRequest(message.size(), options.user);
  bool answered_early = false;
  Result send_error;
  if (!SendAll(fd.get(), {head, message}, deadline, answered_early, send_error)) {
    if (send_error.error == Error::kTimeout) send_error.detail += TimeoutText(options.timeout);
    return send_error;
  }
  if (!answered_early) ::shutdown(fd.get(), SHUT_WR);

  ResponseParser parser(options.max_response_size);
  Result read_error;
  bool read_ok = ReadAll(
      fd.get(), deadline,
      [&](std::string_view bytes) {
        return parser.Feed(bytes) != ResponseParser::State::kNeedMore;
      },
      [&] { parser.Finish(); }, read_error);
  if (!read_ok) {
    if (read_error.error == Error::kTimeout) read_error.detail += TimeoutText(options.timeout);
    return read_error;
  }
  Result result = parser.TakeResult();
  // An answer cut short by a failed send says more than the send error, but an
  // empty one does not.
  if (answered_early && send_error.error != Error::kNone && result.error == Error::kIo) {
    return send_error;
  }
  return result;
}

Result Ping(const ClientOptions& options) {
  Clock::time_point start = Clock::now();
  Clock::time_point deadline = start + options.timeout;
  Result r;
  UniqueFd fd = Connect(options, start, deadline, r);
  if (fd.get() < 0) return r;
  bool answered_early = false;
  if (!SendAll(fd.get(), {"PING SPAMC/1.5\r\n\r\n"}, deadline, answered_early, r)) return r;
  std::string line;
  bool complete = false;
  bool read_ok = ReadAll(
      fd.get(), deadline,
      [&](std::string_view bytes) {
        line.append(bytes.substr(0, kMaxResponseHead));
        std::size_t lf = line.find('\n');
        if (lf != std::string::npos || line.size() >= kMaxResponseHead) {
          if (lf != std::string::npos) line.resize(lf);
          complete = true;
          return true;
        }
        return false;
      },
      [] {}, r);
  if (!read_ok) return r;
  if (!line.empty() && line.back() == '\r') line.pop_back();
  if (line.empty() && !complete) {
    return ErrorResult(Error::kIo, "spamd closed the connection without an answer");
  }
  // "SPAMD/1.5 0 PONG"
  std::string_view status = line;
  if (!status.starts_with("SPAMD/")) {
    return ErrorResult(Error::kProtocol, "not a SPAMD answer: '" + text::Escaped(status) + "'");
  }
  std::size_t sp = status.find(' ');
  std::string_view rest = sp == std::string_view::npos ? "" : status.substr(sp + 1);
  sp = rest.find(' ');
  std::string_view code_text = rest.substr(0, sp);
  std::string_view word = sp == std::string_view::npos ? "" : Trim(rest.substr(sp + 1));
  int code = 0;
  if (!AllDigits(code_text) || !ParseNumber(code_text, code)) {
    return ErrorResult(Error::kProtocol,
                       "not a SPAMD status line: '" + text::Escaped(status) + "'");
  }
  if (code != 0) {
    Result e = ErrorResult(Error::kSpamd, "spamd answered " + text::Escaped(rest));
    e.spamd_code = code;
    return e;
  }
  if (word != "PONG") {
    return ErrorResult(Error::kProtocol, "expected PONG, got '" + text::Escaped(status) + "'");
  }
  return Result{};
}

std::string AddressProblem(std::string_view address) {
  Endpoint ep;
  std::string why;
  if (!ParseEndpoint(address, ep, why)) return why;
  if (!ep.is_unix) return "";
  struct stat info {};
  if (::stat(ep.path.c_str(), &info) != 0) return ep.path + ": " + text::ErrnoText(errno);
  if (!S_ISSOCK(info.st_mode)) return ep.path + " is not a socket";
  return "";
}

}  // namespace popgate::spamd
