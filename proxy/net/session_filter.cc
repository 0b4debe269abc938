#include <spdlog/spdlog.h>

#include "filter/message_filter.h"
#include "mail/message.h"
#include "net/session.h"
#include "net/session_internal.h"
#include "pop3/multiline.h"
#include "quarantine/maildir_quarantine.h"
#include "spool/held_content.h"
#include "spool/spool_file.h"
#include "text/one_line.h"

// Session: the filter chain. It is made and started with the session; client commands
// pass its command hooks; RETR and TOP pass its message hooks. The chain is asynchronous:
// each hook call runs where its plugin's kind says (inline right here, worker plugins on
// the hook threads, Python on its runtime's threads) and the chain resumes on this
// session's thread when it is over, so the session awaits it and no thread waits idle.
//
// A message goes to the chain in one of two ways:
//  - whole (some plugin needs the body): held as content, in memory up to filter_memory
//    and spooled to an unnamed file beyond, up to max_filter_size; then the chain's
//    result is sent, re-stuffed on the way out from where it is held. Larger messages pass
//    unfiltered. TOP asks the upstream for the whole message, so TOP and RETR see the
//    same classification, and is cut to the lines asked.
//  - headers only: the header block is held, the chain's header block is sent, and the
//    body streams through behind it without being held.
// What the chain decides: pass (the message as the plugins left it), tempfail (-ERR
// [SYS/TEMP], nothing changes upstream, the client retries) or reject (the original is
// stored durably in the quarantine, and only then the client gets a short notice).
// A chain slower than filter_keepalive: the client gets the status line and then the
// original's own header bytes, one at a time, and the upstream a NOOP, each
// filter_keepalive, so neither times out. Plugins add headers at the end of the block,
// after those bytes.

// GCC 12 takes Asio's coroutine frame allocation (awaitable_frame_base's own operator
// new and delete, a matching pair) for a mismatch once frames are inlined here: a false
// positive (GCC PR 109224).
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"

namespace popgate::net {

using pop3::Verb;
using namespace session_internal;

namespace {

constexpr const char* kFilterTempFail = "-ERR [SYS/TEMP] Message temporarily unavailable\r\n";
constexpr const char* kFilterUnavailable = "-ERR [SYS/TEMP] Message filter unavailable\r\n";
// What TOP asks for when the chain needs the whole message: every body line (fetchmail
// asks the same to fetch without RETR's side effects).
constexpr const char* kWholeTop = "99999999";
// A header block larger than this is not held for a headers-only chain: the message
// passes unfiltered.
constexpr std::size_t kMaxHeaderBlock = 1024 * 1024;
// A large message goes to the client in pieces of this size, from where it is held.
constexpr std::size_t kDeliverPiece = 256 * 1024;

std::string Stuffed(std::string_view content) {
  std::string wire;
  pop3::StuffLines(content, wire);
  return wire;
}

std::string Unstuffed(std::string_view wire) {
  std::string content;
  pop3::UnstuffLines(wire, content);
  return content;
}

// The bytes keep-alive may send ahead, of a message's content: its header block stuffed,
// less the last two bytes (the blank line, or for a message of headers only the last line
// end), so headers a plugin adds at the end of the block still fit behind them.
std::string KeepAliveSource(std::string_view content) {
  std::string wire = Stuffed(content.substr(0, pop3::HeaderBlockEnd(content)));
  wire.resize(wire.size() >= 2 ? wire.size() - 2 : 0);
  return wire;
}

// The result of one of the chain's operations, which completes on this session's thread:
// at once (an inline chain: no timer, no hand-off) or later, waking the waiter.
template <typename T>
struct Completion {
  std::optional<T> value;
  std::optional<asio::steady_timer> wake;
  void Set(T result) {
    value = std::move(result);
    if (wake) wake->cancel();
  }
};

template <typename T, typename Executor>
asio::awaitable<T> AwaitCompletion(std::shared_ptr<Completion<T>> completion, Executor executor) {
  if (!completion->value) {
    completion->wake.emplace(executor, asio::steady_timer::time_point::max());
    while (!completion->value) {
      error_code ignored;
      co_await completion->wake->async_wait(Capture(ignored));
    }
  }
  co_return std::move(*completion->value);
}

}  // namespace

namespace {

// The quarantine's part of a reject, as a job for AwaitFilter: the store's blocking writes
// on `pool`, then, back on the session's thread, the report hooks.
template <typename Pool, typename Executor>
FilterJob QuarantineJob(std::shared_ptr<filter::MessageJob> job, FilterOutcome out,
                        quarantine::MaildirQuarantine* store, std::uint64_t session_id,
                        std::string client, Pool pool, Executor session) {
  return [job = std::move(job), out = std::move(out), store, session_id, client = std::move(client),
          pool, session](std::function<void(FilterOutcome)> done) {
    asio::post(pool, [job, out, store, session_id, client, session, done] {
      FilterOutcome stored = filter::QuarantineOriginal(*job, out, store, session_id, client);
      asio::post(session, [job, done, stored = std::move(stored)] {
        job->chain->ReportMessageAsync(job->context, *job->message, job->report,
                                       [job, done, stored] { done(stored); });
      });
    });
  };
}

// Keep-alive sent the start of the original's header block ahead, and an untouched
// message's outcome is all body: its header block moves into the head, where the bytes
// already sent are checked and skipped.
void HeaderBlockIntoHead(FilterOutcome& outcome) {
  std::size_t end = pop3::HeaderBlockEnd(outcome.body);
  pop3::StuffLines(outcome.body.substr(0, end), outcome.head);
  outcome.body.remove_prefix(end);
}

FilterOutcome SpoolFailure(const spool::HeldContent& held) {
  FilterOutcome failed;
  failed.verdict = filter::Verdict::kTempFail;
  failed.reason = "could not spool the message for the filters: " + held.error();
  return failed;
}

void LogQuarantined(std::uint64_t session_id, const pop3::Command& command,
                    const FilterOutcome& outcome) {
  if (!filter::GoesToQuarantine(outcome.verdict)) return;  // not stored: withheld instead
  spdlog::info("session {} {} {} {} by {} ({}): original quarantined as {}", session_id,
               command.keyword, command.args[0],
               outcome.verdict == filter::Verdict::kReject ? "rejected" : "delivered edited",
               text::Escaped(outcome.decided_by), text::Escaped(outcome.reason),
               outcome.quarantine_id);
}

}  // namespace

// ---------------------------------------------------------------------------
// The chain's life and the command hooks.

asio::awaitable<bool> Session::StartFilters() {
  if (filters_.chain == nullptr || filters_.chain->empty() || !chain_strand_) {
    co_return true;
  }
  filter::SessionInfo info;
  info.id = id_;
  info.client_address = client_address_;
  info.upstream =
      config::FormatEndpoint(config_.upstream.address.host, config_.upstream.address.port);
  info.client_tls = client_.is_tls();
  info.upstream_tls = upstream_.is_tls();
  filter::ChainExecutors executors;
  if (filters_.hooks != nullptr) {
    executors.worker = [hooks = filters_.hooks](std::function<void()> call,
                                                std::chrono::milliseconds timeout,
                                                std::function<void(bool)> done) {
      hooks->Submit(std::move(call), timeout, std::move(done));
    };
  }
  // Hook calls end on other threads; the chain goes on here.
  executors.resume = [executor = client_.get_executor()](std::function<void()> next) {
    asio::post(executor, std::move(next));
  };
  chain_ = std::make_shared<filter::ChainSession>(
      filters_.chain->NewSession(std::move(info), std::move(executors)));
  chain_whole_ = chain_->needs() == filter::Needs::kWholeMessage;
  chain_commands_ = chain_->wants_commands();
  chain_messages_ = chain_->wants_messages();
  spdlog::debug("session {} filters: {}, {}", id_, chain_->runs_inline() ? "inline" : "async",
                chain_whole_ ? "whole messages" : "headers only");

  auto started = std::make_shared<Completion<bool>>();
  chain_->StartAsync([started, chain = chain_](bool ok) { started->Set(ok); });
  const bool ok = co_await AwaitCompletion(started, client_.get_executor());
  if (!ok) {
    spdlog::warn("session {} refused: a plugin with on_error=tempfail could not start", id_);
    co_await WriteClient(kFilterUnavailable);
    End(EndReason::kFilterUnavailable);
    co_return false;
  }
  co_return true;
}

asio::awaitable<std::optional<pop3::Command>> Session::FilterCommand(pop3::Command command) {
  chain_->info().user = user_;
  chain_->info().client_tls = client_.is_tls();
  auto decided = std::make_shared<Completion<filter::CommandOutcome>>();
  chain_->RunCommandAsync(filter::ViewOf(command),
                          [decided, chain = chain_](filter::CommandOutcome outcome) {
                            decided->Set(std::move(outcome));
                          });
  filter::CommandOutcome outcome = co_await AwaitCompletion(decided, client_.get_executor());
  switch (outcome.decision.kind()) {
    case filter::CommandDecision::Kind::kAllow:
      co_return command;
    case filter::CommandDecision::Kind::kDeny:
      spdlog::info("session {} {} denied by plugin {}", id_, command.keyword,
                   text::Escaped(outcome.decided_by));
      co_await ReplyToClient("-ERR " + outcome.decision.text() + "\r\n");
      co_return std::nullopt;
    case filter::CommandDecision::Kind::kRewrite:
      break;
  }
  // A rewritten line is checked like a client's; STLS stays popgate's own.
  pop3::ParseOptions options{config_.pass_through_commands};
  pop3::ParseResult parsed = pop3::ParseCommand(outcome.decision.text(), options);
  const auto* rewritten = std::get_if<pop3::Command>(&parsed);
  if (rewritten == nullptr || rewritten->verb == Verb::kStls ||
      !pop3::AllowedIn(rewritten->verb, state_)) {
    spdlog::warn("session {} plugin {} rewrote {} into an invalid command", id_,
                 text::Escaped(outcome.decided_by), command.keyword);
    co_await ReplyToClient("-ERR [SYS/TEMP] Command refused by a filter\r\n");
    co_return std::nullopt;
  }
  spdlog::debug("session {} {} rewritten by plugin {}", id_, command.keyword,
                text::Escaped(outcome.decided_by));
  co_return *rewritten;
}

bool Session::FiltersMessage(const pop3::Command& command) const {
  return chain_ && chain_messages_ && (command.verb == Verb::kRetr || command.verb == Verb::kTop);
}

void Session::WidenTop(Pending& pending) const {
  pop3::Command& command = *pending.command;
  if (command.verb != Verb::kTop || !FiltersMessage(command) || !chain_whole_) return;
  pending.top_lines = std::stoull(command.args[1]);
  command.args[1] = kWholeTop;
}

// ---------------------------------------------------------------------------
// Messages.

asio::awaitable<bool> Session::RelayFiltered(const Pending& pending, std::string status_line) {
  if (chain_whole_) {
    co_return co_await RelayWholeFiltered(pending, std::move(status_line));
  }
  co_return co_await RelayHeadersFiltered(pending, std::move(status_line));
}

asio::awaitable<bool> Session::RelayWholeFiltered(const Pending& pending, std::string status_line) {
  const pop3::Command command = *pending.command;
  const std::optional<std::uint64_t> top_lines = pending.top_lines;
  KeepAlive keepalive{std::move(status_line), {}, {}, 0};
  // Held as content, as the plugins see it: in memory up to filter_memory, spooled beyond.
  pop3::MultiLineDecoder decoder(pop3::MultiLineDecoder::Output::kContent);
  spool::HeldContent held(config_.limits.filter_memory, config_.limits.spool_dir);
  auto progress = decoder.Feed(upstream_in_, held.buffer());
  upstream_in_.erase(0, progress.consumed);
  std::optional<bool> complete = co_await HoldRest(decoder, held, progress.done, command.keyword);
  if (!complete) {
    co_return false;
  }
  const bool spooled = held.spooled();
  std::optional<mail::SharedBytes> content;
  if (held.error().empty()) content = held.Take();
  if (content && spooled) {
    spdlog::info("session {} {} {}: {} bytes, past filter_memory: spooled to disk", id_,
                 command.keyword, command.args[0], content->size());
  }
  if (!content) {
    // A full disk, say: the message can't be filtered now; the client retries later.
    const FilterOutcome failed = SpoolFailure(held);
    spdlog::error("session {} {} {}: {}", id_, command.keyword, command.args[0],
                  text::Escaped(failed.reason));
    if (!co_await DrainRest(decoder, decoder.done(), command.keyword)) {
      co_return false;
    }
    co_return co_await WithholdFiltered(command, keepalive, failed);
  }

  if (!*complete) {
    spdlog::info("session {} {} {}: larger than max_filter_size ({} bytes), passed unfiltered", id_,
                 command.keyword, command.args[0], config_.limits.max_filter_size);
    std::string_view so_far = content->view();
    if (top_lines) {
      // Widened for the chain, which won't see it: the client gets what it asked for.
      std::size_t cut = pop3::TopLength(so_far, *top_lines);
      if (cut == so_far.size()) {
        spdlog::warn("session {} TOP {} {} reaches past max_filter_size: closing", id_,
                     command.args[0], *top_lines);
        End(EndReason::kFilterLate);
        co_return false;
      }
      if (!co_await DrainRest(decoder, false, command.keyword)) {
        co_return false;
      }
      co_return co_await DeliverFiltered(keepalive, {}, *content, so_far.substr(0, cut));
    }
    // What was held goes out from where it is, then the rest streams behind it, stuffed
    // by the decoder: it knows where the line it stopped in stands.
    decoder.set_output(pop3::MultiLineDecoder::Output::kStuffed);
    client_out_ = std::move(keepalive.status_line) + "\r\n";
    if (!co_await WriteContent(*content, so_far)) {
      co_return false;
    }
    content.reset();
    co_return co_await StreamRest(decoder, false, command.keyword);
  }

  auto job = std::make_shared<filter::MessageJob>();
  job->chain = chain_;
  job->context.command = command.keyword;
  job->context.number = std::stoull(command.args[0]);
  job->context.partial = command.verb == Verb::kTop && !top_lines;
  job->user = user_;
  job->top_lines = top_lines;
  job->original = std::move(*content);
  keepalive.content = job->original.view();

  chain_->info().client_tls = client_.is_tls();
  FilterJob run_hooks = filter::MessageHooksJob(job);
  auto outcome = co_await AwaitFilter(std::move(run_hooks), keepalive);
  if (!outcome) {
    co_return false;
  }
  if (filter::GoesToQuarantine(outcome->verdict)) {
    FilterJob quarantine = QuarantineJob(job, std::move(*outcome), filters_.quarantine, id_,
                                         client_address_, *chain_strand_, client_.get_executor());
    outcome = co_await AwaitFilter(std::move(quarantine), keepalive);
    if (!outcome) {
      co_return false;
    }
    LogQuarantined(id_, command, *outcome);
  }
  // A reject or quarantine that reached here is stored: the client gets the notice or the
  // edited message.
  if (outcome->verdict != filter::Verdict::kTempFail) {
    if (keepalive.sent > 0 && outcome->head.empty()) HeaderBlockIntoHead(*outcome);
    co_return co_await DeliverFiltered(keepalive, outcome->head, job->original, outcome->body);
  }
  co_return co_await WithholdFiltered(command, keepalive, *outcome);
}

asio::awaitable<bool> Session::RelayHeadersFiltered(const Pending& pending,
                                                    std::string status_line) {
  const pop3::Command command = *pending.command;
  KeepAlive keepalive{std::move(status_line), {}, {}, 0};
  // Decoded where an unfiltered response would be, after its status line: only the header
  // block is held for the chain, whose block then takes the original's place there, and
  // the body follows without being held.
  client_out_ = keepalive.status_line;
  client_out_ += "\r\n";
  const std::size_t start = client_out_.size();
  const auto wire = [this, start] { return std::string_view(client_out_).substr(start); };
  pop3::MultiLineDecoder decoder(pop3::MultiLineDecoder::Output::kStuffed);
  auto progress = decoder.Feed(upstream_in_, client_out_);
  upstream_in_.erase(0, progress.consumed);
  bool done = progress.done;
  std::optional<std::size_t> header_end = pop3::FindHeaderBlockEnd(wire());
  while (!header_end && !done && wire().size() <= kMaxHeaderBlock) {
    std::size_t searched = wire().size();
    auto next = co_await DecodeNextChunk(decoder, client_out_, command.keyword);
    if (!next) {
      co_return false;
    }
    done = next->done;
    header_end = pop3::FindHeaderBlockEnd(wire(), searched);
  }
  if (!header_end && !done) {
    spdlog::info("session {} {} {}: header block over {} bytes, passed unfiltered", id_,
                 command.keyword, command.args[0], kMaxHeaderBlock);
    co_return co_await StreamRest(decoder, false, command.keyword);
  }
  // A message without a blank line is all header block.
  const std::size_t head_size = header_end.value_or(wire().size());

  auto job = std::make_shared<filter::MessageJob>();
  job->chain = chain_;
  job->context.command = command.keyword;
  job->context.number = std::stoull(command.args[0]);
  job->context.partial = true;  // the plugins see the header block only
  job->headers_only = true;
  job->user = user_;
  job->original = mail::SharedBytes(Unstuffed(wire().substr(0, head_size)));
  keepalive.content = job->original.view();

  chain_->info().client_tls = client_.is_tls();
  FilterJob run_hooks = filter::MessageHooksJob(job);
  auto outcome = co_await AwaitFilter(std::move(run_hooks), keepalive);
  if (!outcome) {
    co_return false;
  }
  if (outcome->verdict == filter::Verdict::kReject) {
    // The quarantine needs the whole original: held as a whole-message chain holds it.
    spool::HeldContent held(config_.limits.filter_memory, config_.limits.spool_dir);
    held.buffer() = Unstuffed(wire());
    client_out_.clear();
    ShrinkIfLarge(client_out_);
    decoder.set_output(pop3::MultiLineDecoder::Output::kContent);
    std::optional<bool> complete = co_await HoldRest(decoder, held, done, command.keyword);
    if (!complete) {
      co_return false;
    }
    std::optional<mail::SharedBytes> content;
    if (*complete) content = held.Take();
    if (!content) {
      if (held.error().empty()) {
        outcome->verdict = filter::Verdict::kTempFail;
        outcome->reason = "rejected, but too large to quarantine: " + outcome->reason;
      } else {
        outcome = SpoolFailure(held);
      }
      if (!co_await DrainRest(decoder, decoder.done(), command.keyword)) {
        co_return false;
      }
      co_return co_await WithholdFiltered(command, keepalive, *outcome);
    }
    job->original = std::move(*content);
    FilterJob quarantine = QuarantineJob(job, std::move(*outcome), filters_.quarantine, id_,
                                         client_address_, *chain_strand_, client_.get_executor());
    outcome = co_await AwaitFilter(std::move(quarantine), keepalive);
    if (!outcome) {
      co_return false;
    }
    LogQuarantined(id_, command, *outcome);
    if (outcome->verdict == filter::Verdict::kReject) {  // stored: the notice goes out
      co_return co_await DeliverFiltered(keepalive, outcome->head);
    }
    co_return co_await WithholdFiltered(command, keepalive, *outcome);
  }
  if (outcome->verdict != filter::Verdict::kPass) {
    client_out_.clear();
    if (!co_await DrainRest(decoder, done, command.keyword)) {
      co_return false;
    }
    co_return co_await WithholdFiltered(command, keepalive, *outcome);
  }

  // Pass. Untouched, the original's block is already in place.
  const bool untouched = outcome->head.empty() && outcome->body.size() == job->original.size();
  if (!untouched) {
    std::string head = std::move(outcome->head);
    pop3::ContentStuffer().Append(outcome->body, head);
    if (!head.starts_with(keepalive.sent_bytes())) {
      co_return co_await DeliverFiltered(keepalive, head);  // closes: it can't be delivered
    }
    client_out_.replace(start, head_size, head);
  }
  // Keep-alive sent the status line and the first header bytes: the client has them.
  if (keepalive.sent > 0) client_out_.erase(0, start + keepalive.sent);
  co_return co_await StreamRest(decoder, done, command.keyword);
}

asio::awaitable<std::optional<bool>> Session::HoldRest(pop3::MultiLineDecoder& decoder,
                                                       spool::HeldContent& held, bool done,
                                                       std::string_view during) {
  bool settled = held.Settle();
  while (settled && !done && held.size() <= config_.limits.max_filter_size) {
    auto next = co_await DecodeNextChunk(decoder, held.buffer(), during);
    if (!next) {
      co_return std::nullopt;
    }
    done = next->done;
    settled = held.Settle();
  }
  const bool complete = settled && done;
  co_return complete;
}

asio::awaitable<bool> Session::DrainRest(pop3::MultiLineDecoder& decoder, bool done,
                                         std::string_view during) {
  std::string discarded;
  while (!done) {
    discarded.clear();
    auto next = co_await DecodeNextChunk(decoder, discarded, during);
    if (!next) {
      co_return false;
    }
    done = next->done;
  }
  co_return true;
}

// ---------------------------------------------------------------------------
// Waiting for the chain, and keeping both connections alive meanwhile.

asio::awaitable<std::optional<FilterOutcome>> Session::AwaitFilter(FilterJob job,
                                                                   KeepAlive& keepalive) {
  // Shared with the job: the session may be gone when it finishes.
  auto result = std::make_shared<Completion<FilterOutcome>>();
  try {
    job([result](FilterOutcome outcome) { result->Set(std::move(outcome)); });
  } catch (const std::exception& e) {
    // The chain catches what plugins throw; this is popgate's own failure.
    FilterOutcome failed;
    failed.verdict = filter::Verdict::kTempFail;
    failed.reason = std::string("filter failed: ") + e.what();
    co_return failed;
  }
  if (result->value) {
    co_return std::move(*result->value);  // every plugin was inline: no timer, no keep-alive
  }
  result->wake.emplace(client_.get_executor(), Clock::time_point::max());
  asio::steady_timer& finished = *result->wake;
  // Nothing is read from the upstream meanwhile, so its response clock stops (a deadline
  // set when the command went out would otherwise expire during a slow plugin).
  SetUpstreamDeadline(Clock::time_point::max());
  const auto interval =
      std::chrono::duration_cast<Clock::duration>(config_.timeouts.filter_keepalive);
  auto next = Clock::now() + interval;
  while (!result->value) {
    finished.expires_at(next);
    error_code ignored;
    co_await finished.async_wait(Capture(ignored));
    if (ended_) {
      co_return std::nullopt;
    }
    if (result->value) {
      break;
    }
    if (Clock::now() < next) {
      continue;
    }
    if (keepalive.sent == 0) {
      spdlog::info("session {} filter still working after {}s: keeping the client alive", id_,
                   config_.timeouts.filter_keepalive.count());
    }
    if (!co_await SendKeepAliveByte(keepalive)) {
      co_return std::nullopt;
    }
    co_await SendUpstreamNoop();
    next = Clock::now() + interval;
  }
  co_return std::move(*result->value);
}

asio::awaitable<bool> Session::SendKeepAliveByte(KeepAlive& keepalive) {
  // Made only now: most messages are filtered before keep-alive is needed.
  if (keepalive.sent == 0) keepalive.source = KeepAliveSource(keepalive.content);
  if (keepalive.sent >= keepalive.source.size()) {
    // Nothing left that may go ahead (a message with a tiny header block): wait.
    co_return !ended_;
  }
  std::string bytes;
  if (keepalive.sent == 0) bytes = keepalive.status_line + "\r\n";
  bytes += keepalive.source[keepalive.sent];
  responding_ = true;  // from here on, a failure must not be followed by an -ERR
  if (!co_await WriteClient(bytes)) {
    co_return false;
  }
  ++keepalive.sent;
  co_return true;
}

asio::awaitable<void> Session::SendUpstreamNoop() {
  // Queued like a client command, so its answer comes in turn; RelayResponses drops it.
  if (ended_ || sasl_turn_) {
    co_return;
  }
  pop3::ParseOptions options;
  auto noop = pop3::ParseCommand("NOOP", options);
  Pending pending{std::get<pop3::Command>(std::move(noop)), {}, std::nullopt, true};
  upstream_out_ += pending.command->Canonical();
  pending_.push_back(std::move(pending));
  co_await FlushUpstream();
}

asio::awaitable<bool> Session::DeliverFiltered(const KeepAlive& keepalive, std::string_view head,
                                               mail::SharedBytes source, std::string_view body) {
  std::string_view ahead = keepalive.sent_bytes();
  if (!head.starts_with(ahead)) {
    // A plugin changed bytes the client already has: no honest way to finish this
    // message. Closing without the end line makes the client drop it and retry.
    spdlog::warn(
        "session {} a plugin changed header bytes already sent as keep-alive: closing so the "
        "client retries",
        id_);
    End(EndReason::kFilterLate);
    co_return false;
  }
  client_out_.clear();
  if (keepalive.sent == 0) client_out_ = keepalive.status_line + "\r\n";
  client_out_.append(head.substr(ahead.size()));
  if (!co_await WriteContent(std::move(source), body)) {
    co_return false;
  }
  co_return co_await WriteEndOfResponse();
}

asio::awaitable<bool> Session::WriteContent(mail::SharedBytes source, std::string_view content) {
  pop3::ContentStuffer stuffer;
  if (client_out_.size() + content.size() <= kWriteChunk) {
    stuffer.Append(content, client_out_);
    co_return true;
  }
  responding_ = true;
  if (!co_await WriteClient(client_out_)) {
    co_return false;
  }
  client_out_.clear();
  // From where it is held, a piece at a time: a piece without dot lines is sent as it
  // is, and a spooled message's pages leave memory once sent.
  std::string stuffed;
  while (!content.empty()) {
    std::string_view piece = content.substr(0, kDeliverPiece);
    std::size_t verbatim = stuffer.VerbatimPrefix(piece);
    std::string_view out;
    if (verbatim > 0) {
      piece = piece.substr(0, verbatim);
      stuffer.Skip(piece);
      out = piece;
    } else {
      stuffed.clear();
      stuffer.Append(piece, stuffed);
      out = stuffed;
    }
    if (!co_await WriteClient(out)) {
      co_return false;
    }
    spool::DropResidentPages(source, piece);
    content.remove_prefix(piece.size());
  }
  co_return true;
}

asio::awaitable<bool> Session::WithholdFiltered(const pop3::Command& command,
                                                const KeepAlive& keepalive,
                                                const FilterOutcome& outcome) {
  spdlog::info("session {} {} {} withheld ({}{}{}): {}", id_, command.keyword, command.args[0],
               filter::ToString(outcome.verdict), outcome.decided_by.empty() ? "" : " by ",
               text::Escaped(outcome.decided_by), text::Escaped(outcome.reason));
  if (keepalive.sent > 0) {
    // The client has the status line: an -ERR can't follow. Closing without the end line
    // makes it drop what it got and retry later.
    End(EndReason::kFilterLate);
    co_return false;
  }
  co_return co_await WriteClient(kFilterTempFail);
}

}  // namespace popgate::net
