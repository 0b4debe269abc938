#include "net/session.h"

#include <spdlog/spdlog.h>

#include <array>
#include <span>

#include "net/log_text.h"
#include "net/server.h"
#include "pop3/capa.h"
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

// A client that pipelines more than this many commands waits for answers before popgate
// reads more from it, so one client cannot make popgate queue without bound.
constexpr std::size_t kMaxPending = 128;
// Relayed output is written in pieces of about this size, so a large message streams.
constexpr std::size_t kWriteChunk = 64 * 1024;
// A CAPA response is held whole to be rewritten; larger ones are refused.
constexpr std::size_t kMaxCapa = 64 * 1024;
// Idle sessions give back large buffers (HAZARDS.md: memory per idle session).
constexpr std::size_t kKeepCapacity = 4096;

// Every session on an I/O thread reads into this buffer, then copies only what it must
// keep: an idle session holds no read buffer at all.
std::span<char> ReadBuffer() {
  thread_local std::array<char, 64 * 1024> buffer;
  return buffer;
}

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
    case EndReason::kStopped:
      return "stopped";
    case EndReason::kClientError:
      return "client-error";
  }
  return "?";
}

Session::Session(tcp::socket client, std::vector<tcp::endpoint> upstream,
                 const config::Config& config, SessionRegistry& registry, std::uint64_t id)
    : client_(std::move(client)),
      upstream_(client_.get_executor()),
      upstream_endpoints_(std::move(upstream)),
      config_(config),
      registry_(registry),
      id_(id),
      // Command lines are capped at 255 octets after reading (RFC 2449 §4); the reader
      // allows AUTH's longer lines (getmail6's XOAUTH2 initial response exceeds 255).
      client_lines_(config.limits.max_auth_line),
      upstream_lines_(config.limits.max_upstream_line),
      notify_(client_.get_executor()),
      watchdog_timer_(client_.get_executor()) {
  client_address_ = Endpoint(client_);
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
  error_code ignored;
  // Closing the upstream connection without QUIT leaves the mailbox as it was: the
  // server deletes nothing (RFC 1939 §6).
  upstream_.close(ignored);
  client_.close(ignored);
  notify_.cancel();
  watchdog_timer_.cancel();
}

// ---------------------------------------------------------------------------
// Start: connect upstream, relay the greeting, then run both sides.

asio::awaitable<void> Session::Run() {
  auto self = shared_from_this();
  spdlog::info("session {} start client={}", id_, client_address_);
  error_code ignored;
  client_.set_option(tcp::no_delay(true), ignored);
  client_.non_blocking(true, ignored);

  asio::co_spawn(
      client_.get_executor(), [self]() { return self->Watchdog(); }, asio::detached);

  if (!co_await ConnectUpstream()) {
    co_await WriteClient(end_reason_ == EndReason::kUpstreamTimeout ? kUpstreamTimedOut
                                                                    : kUpstreamUnavailable);
    End(EndReason::kUpstreamUnavailable);
    co_return;
  }

  // Transparent mode: the greeting goes to the client unchanged, so its APOP
  // timestamp is the upstream's own (RFC 1939 §7).
  auto greeting = co_await ReadUpstreamLine();
  if (!greeting) co_return;
  if (!pop3::IsValidGreeting(*greeting)) {
    spdlog::warn("session {} upstream greeting refused: {}", id_, LogSafe(*greeting));
    co_await WriteClient(kUpstreamUnavailable);
    End(EndReason::kUpstreamInvalid);
    co_return;
  }
  if (!co_await WriteClient(*greeting + "\r\n")) co_return;
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
  co_await asio::async_connect(upstream_, upstream_endpoints_, Capture(ec));
  SetUpstreamDeadline(Clock::time_point::max());
  if (ec) {
    if (!end_reason_) {
      spdlog::warn("session {} cannot connect upstream: {}", id_, ec.message());
    } else {
      spdlog::warn("session {} upstream connect: {}", id_, ToString(*end_reason_));
    }
    co_return false;
  }
  error_code ignored;
  upstream_.set_option(tcp::no_delay(true), ignored);
  upstream_.non_blocking(true, ignored);
  co_return true;
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
      error_code ignored;
      upstream_.close(ignored);
    } else if (client_deadline_ <= now) {
      end_reason_ = EndReason::kIdleTimeout;
      client_deadline_ = Clock::time_point::max();
      error_code ignored;
      client_.cancel(ignored);
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

asio::awaitable<std::string_view> Session::ReadSome(tcp::socket& socket, error_code& ec) {
  // Wait for readability first, then read into the thread's buffer: no per-session
  // buffer is held while waiting.
  for (;;) {
    co_await socket.async_wait(tcp::socket::wait_read, Capture(ec));
    if (ec) co_return std::string_view{};
    std::span<char> buffer = ReadBuffer();
    std::size_t n = socket.read_some(asio::buffer(buffer.data(), buffer.size()), ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) continue;
    if (ec) co_return std::string_view{};
    co_return std::string_view(buffer.data(), n);
  }
}

asio::awaitable<std::size_t> Session::ReadAvailable(tcp::socket& socket, std::string& into,
                                                    error_code& ec) {
  std::string_view data = co_await ReadSome(socket, ec);
  into.append(data);
  co_return data.size();
}

asio::awaitable<bool> Session::WriteClient(const std::string& bytes) {
  if (ended_) co_return false;
  error_code ec;
  co_await asio::async_write(client_, asio::buffer(bytes), Capture(ec));
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
    if (line) co_return line;

    // Nothing complete buffered: send what has been gathered before waiting.
    if (!upstream_out_.empty() && !co_await FlushUpstream()) co_return std::nullopt;
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
        while (!pending_.empty() && !ended_) co_await WaitForNotify();
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
      if (!co_await FlushUpstream()) co_return;
      while (pending_.size() >= kMaxPending && !ended_) co_await WaitForNotify();
      continue;
    }
    if (pending_.empty()) SetClientDeadline(Clock::now() + config_.timeouts.idle);
    auto line = co_await ReadClientLine();
    if (!line) co_return;
    SetClientDeadline(Clock::time_point::max());
    if (line->kind == pop3::LineReader::Kind::kTooLong) {
      if (!co_await ReplyToClient(kLineTooLong)) co_return;
      continue;
    }
    if (!co_await HandleClientLine(std::move(line->text))) co_return;
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
    // Relaying STLS would blind the proxy; popgate's own TLS is a separate feature.
    co_return co_await ReplyToClient(kStlsUnavailable);
  }

  Verb verb = command.verb;
  bool barrier = IsBarrier(command);
  Forward(std::move(command));
  if (barrier) {
    if (!co_await FlushUpstream()) co_return false;
    if (!co_await WaitUntilAnswered()) co_return false;
    if (verb == Verb::kQuit) co_return false;
  }
  co_return true;
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
  if (upstream_out_.empty() || ended_) co_return !ended_;
  error_code ec;
  co_await asio::async_write(upstream_, asio::buffer(upstream_out_), Capture(ec));
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
    if (!line) co_return false;
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
    if (!co_await FlushUpstream()) co_return false;
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
    if (line && line->kind == pop3::LineReader::Kind::kLine) co_return std::move(line->text);
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
      if (!co_await WriteClient(pending_.front().local_reply)) co_return;
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
      error_code ec;
      co_await upstream_.async_wait(tcp::socket::wait_read, Capture(ec));
      if (ended_) co_return;
      if (ec) {
        // A command sent meanwhile may be waiting on this socket: its client is owed
        // an answer (the watchdog closed the socket on a timeout).
        bool timed_out = end_reason_ == EndReason::kUpstreamTimeout;
        co_await FailUpstream(timed_out ? EndReason::kUpstreamTimeout : EndReason::kUpstreamClosed,
                              timed_out ? kUpstreamTimedOut : kUpstreamClosed);
        co_return;
      }
      if (!pending_.empty()) continue;  // the answer to a command just sent
      std::size_t available = upstream_.available(ec);
      spdlog::warn("session {} upstream {} while no command was outstanding", id_,
                   available > 0 ? "sent unsolicited data" : "closed the connection");
      End(available > 0 ? EndReason::kUpstreamInvalid : EndReason::kUpstreamClosed);
      co_return;
    }

    auto status_line = co_await ReadUpstreamLine();
    if (!status_line) co_return;
    const pop3::Command command = *pending_.front().command;
    pop3::Status status = pop3::ClassifyStatus(*status_line);

    if (status == pop3::Status::kContinuation && command.verb == Verb::kAuth) {
      if (!co_await WriteClient(*status_line + "\r\n")) co_return;
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
      if (!co_await RelayMultiLine(command, std::move(*status_line))) co_return;
    } else {
      // -ERR is always a single line (RFC 1939 §3); response codes such as [IN-USE]
      // and [LOGIN-DELAY] pass through unchanged.
      if (!co_await WriteClient(*status_line + "\r\n")) co_return;
    }
    OnAnswered(command, ok);
    sasl_turn_ = false;
    responding_ = false;
    pending_.pop_front();
    if (pending_.empty()) {
      SetClientDeadline(Clock::now() + config_.timeouts.idle);
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
  if (command.verb == Verb::kUser && ok) user_ = pending_user_;
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
      if (!co_await WriteClient(client_out_)) co_return false;
      client_out_.clear();
    }
    SetUpstreamDeadline(Clock::now() + config_.timeouts.upstream);
    error_code ec;
    std::string_view chunk = co_await ReadSome(upstream_, ec);
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
    capabilities.Rewrite(pop3::CapaPolicy{});
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
