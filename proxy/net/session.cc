#include "net/session.h"

#include <spdlog/spdlog.h>

#include <array>
#include <span>

#include "net/log_text.h"
#include "net/server.h"
#include "pop3/capa.h"
#include "pop3/command.h"
#include "pop3/multiline.h"
#include "pop3/response.h"
#include "pop3/sasl.h"

namespace popgate::net {
namespace {

using pop3::Verb;

// Replies popgate gives in its own name. [SYS/TEMP] (RFC 3206) tells the client that
// the failure is temporary and not its credentials' fault.
constexpr const char* kUpstreamUnavailable = "-ERR [SYS/TEMP] Upstream server unavailable\r\n";
constexpr const char* kUpstreamTimedOut = "-ERR [SYS/TEMP] Upstream server timed out\r\n";
constexpr const char* kUpstreamInvalid =
    "-ERR [SYS/TEMP] Upstream server sent an invalid response\r\n";
constexpr const char* kUpstreamClosed = "-ERR [SYS/TEMP] Upstream server closed the connection\r\n";
constexpr const char* kIdleReply = "-ERR Disconnected for inactivity\r\n";
constexpr const char* kLineTooLong = "-ERR Line too long\r\n";
constexpr const char* kStlsUnavailable = "-ERR STLS not available\r\n";
constexpr const char* kStlsActive = "-ERR Already using TLS\r\n";
constexpr const char* kStlsGo = "+OK Begin TLS negotiation now\r\n";
constexpr const char* kUpstreamTlsFailed = "-ERR [SYS/TEMP] Upstream TLS failed\r\n";
// Dovecot's wording for disable_plaintext_auth, which clients already know.
constexpr const char* kPlaintextRefused =
    "-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.\r\n";
constexpr const char* kApopUnavailable = "-ERR APOP not available\r\n";
constexpr const char* kUserFirst = "-ERR No username given\r\n";

// A TLS handshake has this long; a client that stalls in it is dropped.
constexpr std::chrono::seconds kHandshakeTimeout{30};

// A client that pipelines more than this many commands waits for answers before popgate
// reads more from it, so one client cannot make popgate queue without bound.
constexpr std::size_t kMaxPending = 128;
// Relayed output is written in pieces of about this size, so a large message streams.
constexpr std::size_t kWriteChunk = 64 * 1024;
// A CAPA response is held whole to be rewritten; larger ones are refused.
constexpr std::size_t kMaxCapa = 64 * 1024;
// Idle sessions give back large buffers (HAZARDS.md: memory per idle session).
constexpr std::size_t kKeepCapacity = 4096;

void ShrinkIfLarge(std::string& s) {
  if (s.capacity() > kKeepCapacity) {
    std::string().swap(s);
  }
}

// Whether a +OK to `command` logs the client in. AUTH without a mechanism only lists
// the mechanisms.
bool LogsIn(const pop3::Command& command) {
  return command.verb == Verb::kPass || command.verb == Verb::kApop ||
         (command.verb == Verb::kAuth && !command.args.empty());
}

// Commands after which popgate waits for the answer before reading the next one: the
// state they lead to decides how the next command is treated.
bool IsBarrier(const pop3::Command& command) {
  return LogsIn(command) || command.verb == Verb::kQuit;
}

std::string Endpoint(const tcp::socket& socket) {
  error_code ec;
  auto ep = socket.remote_endpoint(ec);
  if (ec) return "?";
  return ep.address().to_string() + ":" + std::to_string(ep.port());
}

}  // namespace

const char* ToString(EndReason reason) {
  switch (reason) {
    case EndReason::kQuit:
      return "quit";
    case EndReason::kClientClosed:
      return "client-closed";
    case EndReason::kIdleTimeout:
      return "idle-timeout";
    case EndReason::kUpstreamTimeout:
      return "upstream-timeout";
    case EndReason::kUpstreamClosed:
      return "upstream-closed";
    case EndReason::kUpstreamInvalid:
      return "upstream-invalid";
    case EndReason::kUpstreamUnavailable:
      return "upstream-unavailable";
    case EndReason::kUpstreamTls:
      return "upstream-tls";
    case EndReason::kClientTls:
      return "client-tls";
    case EndReason::kStopped:
      return "stopped";
    case EndReason::kClientError:
      return "client-error";
  }
  return "?";
}

Session::Session(tcp::socket client, const ListenerContext& listener,
                 const UpstreamContext& upstream, const config::Config& config,
                 SessionRegistry& registry, std::uint64_t id)
    : client_(std::move(client)),
      upstream_(tcp::socket(client_.get_executor())),
      listener_(listener),
      upstream_context_(upstream),
      config_(config),
      registry_(registry),
      id_(id),
      // Command lines are capped at 255 octets after reading (RFC 2449 §4); the reader
      // allows AUTH's longer lines (getmail6's XOAUTH2 initial response exceeds 255).
      client_lines_(config.limits.max_auth_line),
      upstream_lines_(config.limits.max_upstream_line),
      notify_(client_.get_executor()),
      watchdog_timer_(client_.get_executor()) {
  client_address_ = Endpoint(client_.socket());
  error_code ec;
  auto peer = client_.socket().remote_endpoint(ec);
  client_trusted_ = !ec && listener_.trusted && listener_.trusted(peer.address());
}

Session::~Session() {
  auto elapsed = std::chrono::duration<double>(Clock::now() - started_).count();
  spdlog::info("session {} end client={} user={} in={} out={} duration={:.3f}s reason={}", id_,
               client_address_, user_.empty() ? "-" : LogSafe(user_, 64), bytes_from_client_,
               bytes_to_client_, elapsed, ToString(end_reason_.value_or(EndReason::kStopped)));
  registry_.Remove(id_);
}

void Session::Start() {
  auto self = shared_from_this();
  asio::co_spawn(
      client_.get_executor(), [self]() { return self->Run(); }, asio::detached);
}

void Session::Stop() {
  auto self = shared_from_this();
  asio::post(client_.get_executor(), [self]() { self->End(EndReason::kStopped); });
}

void Session::End(EndReason reason) {
  if (!end_reason_) end_reason_ = reason;
  if (ended_) return;
  ended_ = true;
  // Closing the upstream connection without QUIT leaves the mailbox as it was: the
  // server deletes nothing (RFC 1939 §6).
  upstream_.Close();
  client_.Close();
  notify_.cancel();
  watchdog_timer_.cancel();
}

// ---------------------------------------------------------------------------
// Start: connect upstream, relay the greeting, then run both sides.

asio::awaitable<void> Session::Run() {
  auto self = shared_from_this();
  spdlog::info("session {} start client={}", id_, client_address_);
  asio::co_spawn(
      client_.get_executor(), [self]() { return self->Watchdog(); }, asio::detached);

  // Implicit TLS: nothing before the handshake is protocol, and the upstream is not
  // contacted for a client that cannot complete one.
  // GCC 12 miscompiles some coroutines (GCC PR 106188): no co_await inside && or ||, and
  // braces around every co_return or co_await in an if.
  if (listener_.listener->tls == config::TlsMode::kImplicit) {
    if (!co_await StartClientTls()) {
      co_return;
    }
  }
  if (!co_await ConnectUpstream()) {
    co_await WriteClient(end_reason_ == EndReason::kUpstreamTimeout ? kUpstreamTimedOut
                                                                    : kUpstreamUnavailable);
    End(EndReason::kUpstreamUnavailable);
    co_return;
  }

  // Transparent mode: the greeting goes to the client unchanged, so its APOP
  // timestamp is the upstream's own (RFC 1939 §7).
  auto greeting = co_await ReadUpstreamLine();
  if (!greeting) {
    co_return;
  }
  if (!pop3::IsValidGreeting(*greeting)) {
    spdlog::warn("session {} upstream greeting refused: {}", id_, LogSafe(*greeting));
    co_await WriteClient(kUpstreamUnavailable);
    End(EndReason::kUpstreamInvalid);
    co_return;
  }
  if (config_.upstream.tls == config::TlsMode::kStartTls) {
    if (!co_await NegotiateUpstreamStls()) {
      co_return;
    }
    // That greeting came over plaintext: an attacker could have chosen its APOP
    // timestamp (CVE-2007-1558), so it is not passed on, and APOP is not offered.
    greeting = pop3::StripApopTimestamp(*greeting);
    upstream_via_stls_ = true;
  }
  if (!co_await WriteClient(*greeting + "\r\n")) {
    co_return;
  }
  SetClientDeadline(Clock::now() + config_.timeouts.idle);

  asio::co_spawn(
      client_.get_executor(),
      [self]() -> asio::awaitable<void> {
        try {
          co_await self->RelayResponses();
        } catch (const std::exception& e) {
          spdlog::error("session {} upstream side failed: {}", self->id_, e.what());
          self->End(EndReason::kUpstreamInvalid);
        }
      },
      asio::detached);

  try {
    co_await ReadCommands();
  } catch (const std::exception& e) {
    spdlog::error("session {} client side failed: {}", id_, e.what());
    End(EndReason::kClientError);
  }
}

asio::awaitable<bool> Session::ConnectUpstream() {
  SetUpstreamDeadline(Clock::now() + config_.timeouts.upstream);
  error_code ec;
  co_await asio::async_connect(upstream_.socket(), upstream_context_.endpoints, Capture(ec));
  SetUpstreamDeadline(Clock::time_point::max());
  if (ec) {
    if (!end_reason_) {
      spdlog::warn("session {} cannot connect upstream: {}", id_, ec.message());
    } else {
      spdlog::warn("session {} upstream connect: {}", id_, ToString(*end_reason_));
    }
    co_return false;
  }
  upstream_.ApplySocketOptions();
  if (config_.upstream.tls == config::TlsMode::kImplicit)
    co_return co_await StartUpstreamTls(false);
  co_return true;
}

// ---------------------------------------------------------------------------
// TLS.

asio::awaitable<bool> Session::StartClientTls() {
  SetClientDeadline(Clock::now() + kHandshakeTimeout);
  error_code ec;
  std::string failure;
  co_await client_.Handshake(*listener_.tls, ssl::stream_base::server, "", false, ec, failure);
  SetClientDeadline(Clock::time_point::max());
  if (ec) {
    spdlog::info("session {} client TLS handshake failed: {}", id_, LogSafe(failure));
    End(EndReason::kClientTls);
    co_return false;
  }
  co_return true;
}

asio::awaitable<bool> Session::StartUpstreamTls(bool after_stls) {
  if (!config_.upstream.verify) {
    spdlog::warn("session {} upstream certificate NOT verified (--upstream-insecure)", id_);
  }
  SetUpstreamDeadline(Clock::now() + config_.timeouts.upstream);
  error_code ec;
  std::string failure;
  co_await upstream_.Handshake(*upstream_context_.tls, ssl::stream_base::client,
                               upstream_context_.server_name, config_.upstream.verify, ec, failure);
  SetUpstreamDeadline(Clock::time_point::max());
  if (ec) {
    spdlog::warn("session {} upstream TLS{} failed: {}", id_, after_stls ? " (STLS)" : "",
                 LogSafe(failure));
    if (end_reason_ != EndReason::kUpstreamTimeout) end_reason_ = EndReason::kUpstreamTls;
    co_return false;
  }
  co_return true;
}

// RFC 2595 §4 on the upstream leg: CAPA must list STLS, STLS must get +OK and nothing
// after it, then the handshake. Any failure ends the session: configured TLS is never
// skipped for plaintext.
asio::awaitable<bool> Session::NegotiateUpstreamStls() {
  auto fail = [this](const std::string& why) -> asio::awaitable<bool> {
    spdlog::warn("session {} upstream STLS failed: {}", id_, LogSafe(why));
    co_await FailUpstream(EndReason::kUpstreamTls, kUpstreamTlsFailed);
    co_return false;
  };
  upstream_out_ = "CAPA\r\n";
  if (!co_await FlushUpstream()) {
    co_return false;
  }
  auto status = co_await ReadUpstreamLine();
  if (!status) {
    co_return false;
  }
  std::optional<std::string> capa;
  if (pop3::ClassifyStatus(*status) == pop3::Status::kOk) {
    capa = co_await ReadUpstreamContent(kMaxCapa);
    if (!capa) {
      co_return false;
    }
  }
  if (!capa || !pop3::Capabilities::Parse(*capa).Has("STLS")) {
    co_return co_await fail("the upstream does not offer STLS");
  }
  upstream_out_ = "STLS\r\n";
  if (!co_await FlushUpstream()) {
    co_return false;
  }
  auto answer = co_await ReadUpstreamLine();
  if (!answer) {
    co_return false;
  }
  if (pop3::ClassifyStatus(*answer) != pop3::Status::kOk) {
    co_return co_await fail("STLS refused: " + *answer);
  }
  if (!upstream_in_.empty()) {
    // Bytes after the +OK would be read as if they came over TLS: response injection.
    co_return co_await fail("data after the STLS answer (injection attempt?)");
  }
  if (!co_await StartUpstreamTls(true)) {
    co_await FailUpstream(EndReason::kUpstreamTls, kUpstreamTlsFailed);
    co_return false;
  }
  co_return true;
}

asio::awaitable<std::optional<std::string>> Session::ReadUpstreamContent(std::size_t limit) {
  pop3::MultiLineDecoder decoder;
  std::string content;
  auto progress = decoder.Feed(upstream_in_, content);
  upstream_in_.erase(0, progress.consumed);
  while (!progress.done) {
    if (content.size() > limit) {
      co_await FailUpstream(EndReason::kUpstreamInvalid, kUpstreamInvalid);
      co_return std::nullopt;
    }
    SetUpstreamDeadline(Clock::now() + config_.timeouts.upstream);
    error_code ec;
    std::string_view chunk = co_await upstream_.ReadSome(ec);
    SetUpstreamDeadline(Clock::time_point::max());
    if (ec) {
      bool timed_out = end_reason_ == EndReason::kUpstreamTimeout;
      co_await FailUpstream(timed_out ? EndReason::kUpstreamTimeout : EndReason::kUpstreamClosed,
                            timed_out ? kUpstreamTimedOut : kUpstreamClosed);
      co_return std::nullopt;
    }
    progress = decoder.Feed(chunk, content);
    if (progress.done) upstream_in_.append(chunk.substr(progress.consumed));
  }
  co_return content;
}

const char* Session::LoginRefusal(const pop3::Command& command) const {
  switch (command.verb) {
    case Verb::kUser:
    case Verb::kPass:
    case Verb::kApop:
    case Verb::kAuth:
      break;
    default:
      return nullptr;
  }
  if (!LoginAllowed()) return kPlaintextRefused;
  if (command.verb == Verb::kApop && upstream_via_stls_) return kApopUnavailable;
  if (command.verb == Verb::kPass && tls_restarted_ && !user_given_) {
    // The upstream may still hold a USER sent before STLS; after STLS the client must
    // name itself again (RFC 2595 §4: forget what came before TLS).
    return kUserFirst;
  }
  return nullptr;
}

bool Session::LoginAllowed() const {
  // Like Dovecot's disable_plaintext_auth: where TLS is on offer, credentials wait
  // for it, unless the client is on a trusted network. A plaintext-only listener is
  // the admin's explicit choice (warned about at start-up).
  return listener_.listener->tls == config::TlsMode::kNone || client_.is_tls() || client_trusted_;
}

// ---------------------------------------------------------------------------
// Deadlines: one timer for both, re-armed whenever a deadline moves earlier.

void Session::SetClientDeadline(Clock::time_point when) {
  client_deadline_ = when;
  if (when < watchdog_timer_.expiry()) watchdog_timer_.cancel();
}

void Session::SetUpstreamDeadline(Clock::time_point when) {
  upstream_deadline_ = when;
  if (when < watchdog_timer_.expiry()) watchdog_timer_.cancel();
}

asio::awaitable<void> Session::Watchdog() {
  auto self = shared_from_this();
  while (!ended_) {
    watchdog_timer_.expires_at(std::min(client_deadline_, upstream_deadline_));
    error_code ec;
    co_await watchdog_timer_.async_wait(Capture(ec));
    if (ended_) break;
    auto now = Clock::now();
    if (upstream_deadline_ <= now) {
      // Closing the upstream socket wakes whichever side waits on it; that side tells
      // the client, if the protocol still allows it.
      end_reason_ = EndReason::kUpstreamTimeout;
      upstream_deadline_ = Clock::time_point::max();
      spdlog::warn("session {} upstream timed out after {}s", id_,
                   config_.timeouts.upstream.count());
      upstream_.Close();
    } else if (client_deadline_ <= now) {
      end_reason_ = EndReason::kIdleTimeout;
      client_deadline_ = Clock::time_point::max();
      client_.Cancel();
    }
  }
}

void Session::Notify() { notify_.cancel(); }

asio::awaitable<void> Session::WaitForNotify() {
  notify_.expires_at(Clock::time_point::max());
  error_code ec;
  co_await notify_.async_wait(Capture(ec));
}

// ---------------------------------------------------------------------------
// I/O helpers.

asio::awaitable<std::size_t> Session::ReadAvailable(Stream& stream, std::string& into,
                                                    error_code& ec) {
  std::string_view data = co_await stream.ReadSome(ec);
  into.append(data);
  co_return data.size();
}

asio::awaitable<bool> Session::WriteClient(const std::string& bytes) {
  if (ended_) {
    co_return false;
  }
  error_code ec;
  co_await client_.Write(bytes, ec);
  if (ec) {
    End(EndReason::kClientClosed);
    co_return false;
  }
  bytes_to_client_ += bytes.size();
  co_return true;
}

// ---------------------------------------------------------------------------
// Client side.

asio::awaitable<std::optional<pop3::LineReader::Line>> Session::ReadClientLine() {
  for (;;) {
    std::optional<pop3::LineReader::Line> line;
    std::size_t used = client_lines_.Feed(client_in_, line);
    client_in_.erase(0, used);
    if (line) {
      co_return line;
    }

    // Nothing complete buffered: send what has been gathered before waiting.
    if (!upstream_out_.empty()) {
      if (!co_await FlushUpstream()) {
        co_return std::nullopt;
      }
    }
    ShrinkIfLarge(client_in_);
    error_code ec;
    std::size_t n = co_await ReadAvailable(client_, client_in_, ec);
    if (n == 0) {
      if (ec == asio::error::operation_aborted && end_reason_ == EndReason::kIdleTimeout &&
          !ended_) {
        spdlog::info("session {} idle for {}s", id_, config_.timeouts.idle.count());
        co_await WriteClient(kIdleReply);
      }
      if (ec == asio::error::eof) {
        // A client that half-closes after its last command (`printf ... | nc`) still
        // gets the answers to what it sent. No QUIT follows, so nothing is deleted.
        while (!pending_.empty() && !ended_) {
          co_await WaitForNotify();
        }
      }
      End(EndReason::kClientClosed);
      co_return std::nullopt;
    }
    bytes_from_client_ += n;
  }
}

asio::awaitable<void> Session::ReadCommands() {
  auto self = shared_from_this();
  while (!ended_) {
    if (pending_.size() >= kMaxPending) {
      if (!co_await FlushUpstream()) {
        co_return;
      }
      while (pending_.size() >= kMaxPending && !ended_) {
        co_await WaitForNotify();
      }
      continue;
    }
    if (pending_.empty()) SetClientDeadline(Clock::now() + config_.timeouts.idle);
    auto line = co_await ReadClientLine();
    if (!line) {
      co_return;
    }
    SetClientDeadline(Clock::time_point::max());
    if (line->kind == pop3::LineReader::Kind::kTooLong) {
      if (!co_await ReplyToClient(kLineTooLong)) {
        co_return;
      }
      continue;
    }
    if (!co_await HandleClientLine(std::move(line->text))) {
      co_return;
    }
  }
}

asio::awaitable<bool> Session::HandleClientLine(std::string line) {
  // RFC 2449 §4: 255 octets including CRLF. Only AUTH may be longer (its initial
  // response); the reader has already bounded it by max_auth_line.
  bool is_auth = line.size() >= 5 && (line[4] == ' ' || line[4] == '\t') &&
                 (line.compare(0, 4, "AUTH") == 0 || line.compare(0, 4, "auth") == 0);
  if (line.size() + 2 > config_.limits.max_command_line && !is_auth) {
    co_return co_await ReplyToClient(kLineTooLong);
  }

  pop3::ParseOptions options{config_.pass_through_commands};
  pop3::ParseResult parsed = pop3::ParseCommand(line, options);
  if (auto* error = std::get_if<pop3::ParseError>(&parsed)) {
    co_return co_await ReplyToClient(error->reply);
  }
  pop3::Command command = std::get<pop3::Command>(std::move(parsed));
  if (!pop3::AllowedIn(command.verb, state_)) {
    co_return co_await ReplyToClient(pop3::WrongStateReply(command, state_));
  }
  if (command.verb == Verb::kStls) {
    // STLS is popgate's own, never relayed (that would blind the proxy).
    if (client_.is_tls()) {
      co_return co_await ReplyToClient(kStlsActive);
    }
    if (listener_.listener->tls != config::TlsMode::kStartTls) {
      co_return co_await ReplyToClient(kStlsUnavailable);
    }
    spdlog::debug("before stls");
    bool started = co_await StartClientStls();
    spdlog::debug("after stls");
    co_return started;
  }
  if (const char* refusal = LoginRefusal(command)) {
    co_return co_await ReplyToClient(refusal);
  }

  Verb verb = command.verb;
  bool barrier = IsBarrier(command);
  Forward(std::move(command));
  if (barrier) {
    if (!co_await FlushUpstream()) {
      co_return false;
    }
    if (!co_await WaitUntilAnswered()) {
      co_return false;
    }
    if (verb == Verb::kQuit) {
      co_return false;
    }
  }
  co_return true;
}

// RFC 2595 §4 on the client leg. Everything the client sent after STLS and before the
// handshake is thrown away (a "STLS\r\nCAPA\r\n" in one segment gets no CAPA answer),
// and so is what popgate learnt before TLS.
asio::awaitable<bool> Session::StartClientStls() {
  bool ok = co_await FlushUpstream();
  if (ok) {
    ok = co_await WaitUntilAnswered();
  }
  if (ok) {
    ok = co_await WriteClient(kStlsGo);
  }
  if (!ok) {
    co_return false;
  }
  client_in_.clear();
  client_lines_.Reset();
  ok = co_await StartClientTls();
  if (ok) {
    user_given_ = false;
    tls_restarted_ = true;
  }
  co_return ok;
}

void Session::Forward(pop3::Command command) {
  if (spdlog::should_log(spdlog::level::debug)) {
    // Secrets never reach the log, at any level: only the keyword (and mechanism).
    std::string shown = command.keyword;
    if (command.verb == Verb::kAuth && !command.args.empty()) shown += " " + command.args[0];
    if (command.CarriesSecret()) {
      shown += " ***";
    } else {
      shown = LogSafe(command.Canonical().substr(0, command.Canonical().size() - 2));
    }
    spdlog::debug("session {} > {}", id_, shown);
  }
  if (pending_.empty()) SetUpstreamDeadline(Clock::now() + config_.timeouts.upstream);
  if (command.verb == Verb::kUser) pending_user_ = command.args[0];
  if (command.verb == Verb::kAuth && !command.args.empty()) {
    // Only to name the user in the log: PLAIN's and LOGIN's identity, nothing more.
    sasl_mechanism_ = command.args[0];
    sasl_responses_ = 0;
    pending_user_.clear();
    if (command.args.size() == 2) {
      pending_user_ = pop3::SaslUser(sasl_mechanism_, command.args[1]).value_or("");
      ++sasl_responses_;
    }
  }
  upstream_out_ += command.Canonical();
  pending_.push_back(Pending{std::move(command), {}});
}

asio::awaitable<bool> Session::ReplyToClient(std::string reply) {
  if (pending_.empty()) {
    // Nothing outstanding: RelayResponses is idle, so this side may write.
    co_return co_await WriteClient(reply);
  }
  pending_.push_back(Pending{std::nullopt, std::move(reply)});
  co_return true;
}

asio::awaitable<bool> Session::FlushUpstream() {
  if (upstream_out_.empty() || ended_) {
    co_return !ended_;
  }
  error_code ec;
  co_await upstream_.Write(upstream_out_, ec);
  upstream_out_.clear();
  ShrinkIfLarge(upstream_out_);
  if (ec) {
    End(EndReason::kUpstreamClosed);
    co_return false;
  }
  co_return true;
}

// Waits until everything forwarded has been answered. During AUTH, the upstream's
// challenges hand the turn to the client: its next line is SASL data, never a command
// (RFC 5034 §4), and goes upstream as it is.
asio::awaitable<bool> Session::WaitUntilAnswered() {
  while (!pending_.empty() && !ended_) {
    if (!sasl_turn_) {
      co_await WaitForNotify();
      continue;
    }
    auto line = co_await ReadClientLine();
    if (!line) {
      co_return false;
    }
    SetClientDeadline(Clock::time_point::max());
    sasl_turn_ = false;
    if (line->kind == pop3::LineReader::Kind::kTooLong) {
      // Cancel the exchange (RFC 5034 §4) rather than send a cut line.
      upstream_out_ = "*\r\n";
      co_await ReplyToClient(kLineTooLong);
    } else {
      if (sasl_responses_++ == 0) {
        pending_user_ = pop3::SaslUser(sasl_mechanism_, line->text).value_or("");
      }
      upstream_out_ = std::move(line->text) + "\r\n";
    }
    SetUpstreamDeadline(Clock::now() + config_.timeouts.upstream);
    if (!co_await FlushUpstream()) {
      co_return false;
    }
  }
  co_return !ended_;
}

// ---------------------------------------------------------------------------
// Upstream side.

asio::awaitable<std::optional<std::string>> Session::ReadUpstreamLine() {
  for (;;) {
    std::optional<pop3::LineReader::Line> line;
    std::size_t used = upstream_lines_.Feed(upstream_in_, line);
    upstream_in_.erase(0, used);
    if (line && line->kind == pop3::LineReader::Kind::kLine) {
      co_return std::move(line->text);
    }
    if (line) {
      spdlog::warn("session {} upstream line over {} octets", id_,
                   config_.limits.max_upstream_line);
      co_await FailUpstream(EndReason::kUpstreamInvalid, kUpstreamInvalid);
      co_return std::nullopt;
    }
    if (!sasl_turn_) SetUpstreamDeadline(Clock::now() + config_.timeouts.upstream);
    error_code ec;
    std::size_t n = co_await ReadAvailable(upstream_, upstream_in_, ec);
    SetUpstreamDeadline(Clock::time_point::max());
    if (n == 0) {
      bool timed_out = end_reason_ == EndReason::kUpstreamTimeout;
      co_await FailUpstream(timed_out ? EndReason::kUpstreamTimeout : EndReason::kUpstreamClosed,
                            timed_out ? kUpstreamTimedOut : kUpstreamClosed);
      co_return std::nullopt;
    }
  }
}

asio::awaitable<void> Session::FailUpstream(EndReason reason, const char* reply) {
  // Once part of a response has gone out, nothing may follow it: the client must not
  // take a cut message for a whole one, so the connection closes without the "." line.
  if (!responding_ && !ended_) {
    if (!end_reason_) end_reason_ = reason;
    co_await WriteClient(reply);
  }
  End(reason);
}

asio::awaitable<void> Session::RelayResponses() {
  auto self = shared_from_this();
  while (!ended_) {
    // popgate's own replies that were queued behind earlier responses.
    while (!pending_.empty() && !pending_.front().command) {
      if (!co_await WriteClient(pending_.front().local_reply)) {
        co_return;
      }
      pending_.pop_front();
      if (pending_.empty()) SetClientDeadline(Clock::now() + config_.timeouts.idle);
      Notify();
    }

    if (pending_.empty() && !upstream_in_.empty()) {
      spdlog::warn("session {} upstream sent more than was asked for", id_);
      End(EndReason::kUpstreamInvalid);
      co_return;
    }
    if (pending_.empty()) {
      // Nothing outstanding: anything the upstream sends now is unsolicited. It is
      // never relayed: the client would take it for the answer to its next command.
      // (Reading, not just waiting, lets TLS consume post-handshake records.)
      error_code ec;
      std::size_t n = co_await ReadAvailable(upstream_, upstream_in_, ec);
      if (ended_) {
        co_return;
      }
      if (n == 0) {
        // A command sent meanwhile may be waiting on this socket: its client is owed
        // an answer (the watchdog closed the socket on a timeout).
        bool timed_out = end_reason_ == EndReason::kUpstreamTimeout;
        if (pending_.empty()) {
          spdlog::info("session {} upstream closed the connection", id_);
          End(EndReason::kUpstreamClosed);
        } else {
          co_await FailUpstream(
              timed_out ? EndReason::kUpstreamTimeout : EndReason::kUpstreamClosed,
              timed_out ? kUpstreamTimedOut : kUpstreamClosed);
        }
        co_return;
      }
      if (pending_.empty()) {
        spdlog::warn("session {} upstream sent unsolicited data", id_);
        End(EndReason::kUpstreamInvalid);
        co_return;
      }
      continue;  // the start of the answer to a command just sent
    }

    auto status_line = co_await ReadUpstreamLine();
    if (!status_line) {
      co_return;
    }
    const pop3::Command command = *pending_.front().command;
    pop3::Status status = pop3::ClassifyStatus(*status_line);

    if (status == pop3::Status::kContinuation && command.verb == Verb::kAuth) {
      if (!co_await WriteClient(*status_line + "\r\n")) {
        co_return;
      }
      sasl_turn_ = true;
      SetClientDeadline(Clock::now() + config_.timeouts.idle);
      Notify();
      continue;
    }
    if (status == pop3::Status::kContinuation || status == pop3::Status::kInvalid) {
      spdlog::warn("session {} invalid upstream response to {}: {}", id_, command.keyword,
                   LogSafe(*status_line));
      co_await FailUpstream(EndReason::kUpstreamInvalid, kUpstreamInvalid);
      co_return;
    }

    bool ok = status == pop3::Status::kOk;
    if (ok && command.MultiLineIfOk()) {
      if (!co_await RelayMultiLine(command, std::move(*status_line))) {
        co_return;
      }
    } else {
      // -ERR is always a single line (RFC 1939 §3); response codes such as [IN-USE]
      // and [LOGIN-DELAY] pass through unchanged.
      if (!co_await WriteClient(*status_line + "\r\n")) {
        co_return;
      }
    }
    OnAnswered(command, ok);
    sasl_turn_ = false;
    responding_ = false;
    pending_.pop_front();
    if (pending_.empty()) {
      // Nothing owed either way: the client's idle clock runs, the upstream's stops.
      SetClientDeadline(Clock::now() + config_.timeouts.idle);
      SetUpstreamDeadline(Clock::time_point::max());
      ShrinkIfLarge(upstream_in_);
    }
    Notify();
    if (command.verb == Verb::kQuit) {
      End(EndReason::kQuit);
      co_return;
    }
  }
}

void Session::OnAnswered(const pop3::Command& command, bool ok) {
  if (command.verb == Verb::kUser && ok) {
    user_ = pending_user_;
    user_given_ = true;
  }
  if (!LogsIn(command)) return;
  if (command.verb == Verb::kApop) pending_user_ = command.args[0];
  if (command.verb != Verb::kPass) user_ = pending_user_;
  const std::string shown = user_.empty() ? "-" : LogSafe(user_, 64);
  if (ok) {
    state_ = pop3::State::kTransaction;
    spdlog::info("session {} logged in user={}", id_, shown);
  } else {
    spdlog::info("session {} login failed user={}", id_, shown);
  }
}

asio::awaitable<bool> Session::RelayMultiLine(const pop3::Command& command,
                                              std::string status_line) {
  const bool is_capa = command.verb == Verb::kCapa;
  // CAPA is gathered whole and rewritten; everything else streams through re-stuffed.
  pop3::MultiLineDecoder decoder(is_capa ? pop3::MultiLineDecoder::Output::kContent
                                         : pop3::MultiLineDecoder::Output::kStuffed);
  std::string capa;
  std::string& decoded = is_capa ? capa : client_out_;
  client_out_ = std::move(status_line);
  client_out_ += "\r\n";

  auto progress = decoder.Feed(upstream_in_, decoded);
  upstream_in_.erase(0, progress.consumed);
  while (!progress.done) {
    if (is_capa && capa.size() > kMaxCapa) {
      co_await FailUpstream(EndReason::kUpstreamInvalid, kUpstreamInvalid);
      co_return false;
    }
    if (!is_capa && client_out_.size() >= kWriteChunk) {
      responding_ = true;
      if (!co_await WriteClient(client_out_)) {
        co_return false;
      }
      client_out_.clear();
    }
    SetUpstreamDeadline(Clock::now() + config_.timeouts.upstream);
    error_code ec;
    std::string_view chunk = co_await upstream_.ReadSome(ec);
    SetUpstreamDeadline(Clock::time_point::max());
    if (ec) {
      bool timed_out = end_reason_ == EndReason::kUpstreamTimeout;
      spdlog::warn("session {} upstream failed during {} response: {}", id_, command.keyword,
                   timed_out ? "timeout" : ec.message());
      co_await FailUpstream(timed_out ? EndReason::kUpstreamTimeout : EndReason::kUpstreamClosed,
                            timed_out ? kUpstreamTimedOut : kUpstreamClosed);
      co_return false;
    }
    progress = decoder.Feed(chunk, decoded);
    if (progress.done) upstream_in_.append(chunk.substr(progress.consumed));
  }

  if (is_capa) {
    auto capabilities = pop3::Capabilities::Parse(capa);
    pop3::CapaPolicy policy;
    policy.offer_stls = listener_.listener->tls == config::TlsMode::kStartTls && !client_.is_tls();
    policy.hide_logins = !LoginAllowed();
    capabilities.Rewrite(policy);
    pop3::StuffLines(capabilities.Serialize(), client_out_);
  }
  client_out_ += pop3::kTerminator;
  responding_ = true;
  bool written = co_await WriteClient(client_out_);
  client_out_.clear();
  ShrinkIfLarge(client_out_);
  co_return written;
}

}  // namespace popgate::net
