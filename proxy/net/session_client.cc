#include <spdlog/spdlog.h>

#include "net/session.h"
#include "net/session_internal.h"
#include "pop3/sasl.h"
#include "text/one_line.h"

// Session, client side: reads command lines, answers what popgate answers itself,
// forwards the rest upstream in order.

namespace popgate::net {

using pop3::Verb;
using namespace session_internal;

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
        End(EndReason::kClientClosed);
      } else {
        ClientFailed(ec);  // reset (the client is gone), or popgate's own cancel
      }
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
    bool started = co_await StartClientStls();
    co_return started;
  }
  if (const char* refusal = LoginRefusal(command)) {
    co_return co_await ReplyToClient(refusal);
  }
  if (chain_commands_) {
    auto filtered = co_await FilterCommand(std::move(command));
    if (!filtered) {
      co_return !ended_;
    }
    command = std::move(*filtered);
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

void Session::Forward(pop3::Command command) {
  if (spdlog::should_log(spdlog::level::debug)) {
    // Secrets never reach the log, at any level: only the keyword (and mechanism).
    std::string shown = command.keyword;
    if (command.verb == Verb::kAuth && !command.args.empty()) shown += " " + command.args[0];
    if (command.CarriesSecret()) {
      shown += " ***";
    } else {
      shown = text::Escaped(command.Canonical().substr(0, command.Canonical().size() - 2));
    }
    spdlog::debug("session {} > {}", id_, shown);
  }
  if (pending_.empty()) SetUpstreamDeadline(Clock::now() + config_.timeouts.upstream);
  if (command.verb == Verb::kUser) {
    pending_user_ = command.args[0];
    // Counted when sent, so a pipelined USER/PASS after STLS is in order.
    user_given_ = true;
  }
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
  Pending pending{std::move(command), {}, std::nullopt, false};
  WidenTop(pending);
  upstream_out_ += pending.command->Canonical();
  pending_.push_back(std::move(pending));
}

asio::awaitable<bool> Session::ReplyToClient(std::string reply) {
  if (pending_.empty()) {
    // Nothing outstanding: RelayResponses is idle, so this side may write.
    co_return co_await WriteClient(reply);
  }
  pending_.push_back(Pending{std::nullopt, std::move(reply), std::nullopt, false});
  co_return true;
}

asio::awaitable<bool> Session::FlushUpstream() {
  // Both sides may write upstream (commands; keep-alive NOOPs while a plugin works), one
  // write at a time. What is gathered meanwhile waits in upstream_out_ for the next.
  while (upstream_writing_ && !ended_) {
    upstream_written_.expires_at(Clock::time_point::max());
    error_code ignored;
    co_await upstream_written_.async_wait(Capture(ignored));
  }
  if (upstream_out_.empty() || ended_) {
    co_return !ended_;
  }
  std::string out;
  out.swap(upstream_out_);
  upstream_writing_ = true;
  error_code ec;
  co_await upstream_.Write(out, ec);
  upstream_writing_ = false;
  upstream_written_.cancel();
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

}  // namespace popgate::net
