#include <spdlog/spdlog.h>

#include "net/log_text.h"
#include "net/session.h"
#include "net/session_internal.h"
#include "pop3/capa.h"
#include "pop3/multiline.h"
#include "pop3/response.h"
#include "text/one_line.h"

// Session, upstream side: matches responses to pending commands first-in first-out,
// relays them, and re-encodes multi-line bodies.

namespace popgate::net {

using pop3::Verb;
using namespace session_internal;

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
      co_await FailUpstreamRead();
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

asio::awaitable<void> Session::FailUpstreamRead() {
  // A read fails on a timeout because the watchdog closed the socket.
  if (end_reason_ == EndReason::kUpstreamTimeout) {
    co_await FailUpstream(EndReason::kUpstreamTimeout, kUpstreamTimedOut);
  } else {
    co_await FailUpstream(EndReason::kUpstreamClosed, kUpstreamClosed);
  }
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
        if (pending_.empty()) {
          spdlog::info("session {} upstream closed the connection", id_);
          End(EndReason::kUpstreamClosed);
        } else {
          co_await FailUpstreamRead();
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

    if (pending_.front().internal) {
      // popgate's own keep-alive NOOP: a single line, never the client's business.
      if (status != pop3::Status::kOk) {
        spdlog::warn("session {} upstream refused keep-alive NOOP: {}", id_,
                     text::Escaped(*status_line));
      }
      pending_.pop_front();
      if (pending_.empty()) {
        SetClientDeadline(Clock::now() + config_.timeouts.idle);
        SetUpstreamDeadline(Clock::time_point::max());
      }
      Notify();
      continue;
    }

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
                   text::Escaped(*status_line));
      co_await FailUpstream(EndReason::kUpstreamInvalid, kUpstreamInvalid);
      co_return;
    }

    bool ok = status == pop3::Status::kOk;
    if (ok && command.MultiLineIfOk()) {
      bool relayed = false;
      if (FiltersMessage(command)) {
        relayed = co_await RelayFiltered(pending_.front(), std::move(*status_line));
      } else {
        relayed = co_await RelayMultiLine(command, std::move(*status_line));
      }
      if (!relayed) {
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
  if (command.verb == Verb::kUser && ok) user_ = pending_user_;
  if (!LogsIn(command)) return;
  if (command.verb == Verb::kApop) pending_user_ = command.args[0];
  if (command.verb != Verb::kPass) user_ = pending_user_;
  const std::string shown = user_.empty() ? "-" : text::Escaped(user_, 64);
  if (ok) {
    state_ = pop3::State::kTransaction;
    spdlog::info("session {} logged in user={}", id_, shown);
  } else {
    spdlog::info("session {} login failed user={}", id_, shown);
  }
}

asio::awaitable<std::optional<pop3::MultiLineDecoder::Progress>> Session::DecodeNextChunk(
    pop3::MultiLineDecoder& decoder, std::string& out, std::string_view during) {
  SetUpstreamDeadline(Clock::now() + config_.timeouts.upstream);
  error_code ec;
  std::string_view chunk = co_await upstream_.ReadSome(ec);
  SetUpstreamDeadline(Clock::time_point::max());
  if (ec) {
    // An ended session closed the upstream socket itself (the client went away, and said
    // so, or popgate is stopping): this read's "Operation canceled" is not the upstream's.
    if (!during.empty() && !ended_) {
      spdlog::warn("session {} upstream failed during {} response: {}", id_, during,
                   end_reason_ == EndReason::kUpstreamTimeout ? "timeout" : DescribeError(ec));
    }
    co_await FailUpstreamRead();
    co_return std::nullopt;
  }
  auto progress = decoder.Feed(chunk, out);
  // Bytes after the end belong to the next response (pipelining).
  if (progress.done) upstream_in_.append(chunk.substr(progress.consumed));
  co_return progress;
}

asio::awaitable<std::optional<std::string>> Session::ReadUpstreamContent(std::size_t limit,
                                                                         std::string_view during) {
  pop3::MultiLineDecoder decoder;
  std::string content;
  auto progress = decoder.Feed(upstream_in_, content);
  upstream_in_.erase(0, progress.consumed);
  while (!progress.done) {
    if (content.size() > limit) {
      co_await FailUpstream(EndReason::kUpstreamInvalid, kUpstreamInvalid);
      co_return std::nullopt;
    }
    auto next = co_await DecodeNextChunk(decoder, content, during);
    if (!next) {
      co_return std::nullopt;
    }
    progress = *next;
  }
  co_return content;
}

asio::awaitable<bool> Session::RelayMultiLine(const pop3::Command& command,
                                              std::string status_line) {
  client_out_ = std::move(status_line);
  client_out_ += "\r\n";
  // CAPA is gathered whole and rewritten; everything else streams through re-stuffed.
  if (command.verb != Verb::kCapa) {
    pop3::MultiLineDecoder decoder(pop3::MultiLineDecoder::Output::kStuffed);
    auto progress = decoder.Feed(upstream_in_, client_out_);
    upstream_in_.erase(0, progress.consumed);
    co_return co_await StreamRest(decoder, progress.done, command.keyword);
  }

  std::optional<std::string> capa = co_await ReadUpstreamContent(kMaxCapa, command.keyword);
  if (!capa) {
    co_return false;
  }
  auto capabilities = pop3::Capabilities::Parse(*capa);
  pop3::CapaPolicy policy;
  policy.offer_stls = listener_.listener->tls == config::TlsMode::kStartTls && !client_.is_tls();
  policy.hide_logins = !LoginAllowed();
  capabilities.Rewrite(policy);
  pop3::StuffLines(capabilities.Serialize(), client_out_);
  co_return co_await WriteEndOfResponse();
}

asio::awaitable<bool> Session::StreamRest(pop3::MultiLineDecoder& decoder, bool done,
                                          std::string_view during) {
  while (!done) {
    if (client_out_.size() >= kWriteChunk) {
      responding_ = true;
      if (!co_await WriteClient(client_out_)) {
        co_return false;
      }
      client_out_.clear();
    }
    auto next = co_await DecodeNextChunk(decoder, client_out_, during);
    if (!next) {
      co_return false;
    }
    done = next->done;
  }
  co_return co_await WriteEndOfResponse();
}

asio::awaitable<bool> Session::WriteEndOfResponse() {
  client_out_ += pop3::kTerminator;
  responding_ = true;
  bool written = co_await WriteClient(client_out_);
  client_out_.clear();
  ShrinkIfLarge(client_out_);
  co_return written;
}

}  // namespace popgate::net
