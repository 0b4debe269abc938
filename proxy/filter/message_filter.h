#pragma once
// One message's trip through the filter chain, without sockets: what the chain is given
// (MessageJob), running its message and report hooks, and what the session is to send
// for the verdict (MessageOutcome): the message as the plugins left it, a temporary
// failure, or for a reject the quarantined original's notice. net/session_filter.cc moves
// the bytes; this decides them.

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "filter/chain.h"
#include "mail/message.h"
#include "mail/shared_bytes.h"
#include "quarantine/maildir_quarantine.h"

namespace popgate::filter {

// What the chain made of one message, as the session needs it.
struct MessageOutcome {
  Verdict verdict = Verdict::kPass;
  std::string reason;
  std::string decided_by;
  std::string quarantine_id;
  // What the client gets on pass or reject: `head` (stuffed lines: an edited header
  // block, a replacement, a notice), then `body`, canonical content stuffed on the way out.
  // `body` is a view of what the MessageJob holds (the original, or the plugins'
  // message), so a large message is never copied whole to be sent.
  std::string head;
  std::string_view body;
};

// One message's trip through the chain: built on the session's thread, then used where the
// chain runs. Shared, so a reject can go on to the quarantine.
struct MessageJob {
  std::shared_ptr<ChainSession> chain;
  MessageContext context;
  std::string user;
  mail::SharedBytes original;              // content, as received
  std::optional<std::uint64_t> top_lines;  // TOP widened: cut the result to these
  bool headers_only = false;  // the chain holds the header block; the body streams past
  std::optional<mail::Message> message;
  MessageReport report;
};

// A step that ends by calling `done` with an outcome, on the chain's resume executor.
using OutcomeJob = std::function<void(std::function<void(MessageOutcome)> done)>;

// The content to send for a TOP widened to the whole message: what the client asked for.
std::string_view CutForTop(std::string_view content, const std::optional<std::uint64_t>& lines);

// What the session sends for the chain's verdict on the job's message.
MessageOutcome OutcomeOf(MessageJob& job);

// Runs the message hooks, then, unless the quarantine comes first, the report hooks;
// `done` with the outcome. A quarantine asked of a headers-only job is a tempfail (the
// original it would keep is not held), reported to the report hooks as such.
OutcomeJob MessageHooksJob(std::shared_ptr<MessageJob> job);

// Whether the original is stored before the client gets anything: reject, quarantine.
bool GoesToQuarantine(Verdict verdict);

// A reject or a quarantine: stores the original, then makes what the client gets instead
// (a reject's notice; a quarantine's edited message with X-Popgate-Quarantine-Id). Without
// a quarantine, or if storing fails, the message is withheld as a temporary failure: the
// upstream still has it, so nothing is lost. Blocks on the store's writes and fsyncs.
MessageOutcome QuarantineOriginal(MessageJob& job, MessageOutcome out,
                                  quarantine::MaildirQuarantine* store, std::uint64_t session_id,
                                  const std::string& client);

}  // namespace popgate::filter
