#include <spdlog/spdlog.h>

#include "mail/message.h"
#include "net/log_text.h"
#include "net/session.h"
#include "net/session_internal.h"
#include "pop3/multiline.h"

// Session: RETR and TOP through the filter chain. The message is gathered whole,
// handed to the chain on the filter pool (plugins may block), and what the chain
// decides goes to the client: the (possibly changed) message, or -ERR [SYS/TEMP]
// with nothing changed upstream, so the client retries later.

namespace popgate::net {

using pop3::Verb;
using namespace session_internal;

namespace {

// Held whole for the chain; larger messages end the session rather than grow without
// bound (spooling to disk is not built yet).
constexpr std::size_t kMaxFilteredMessage = 64 * 1024 * 1024;

constexpr const char* kFilterTempFail = "-ERR [SYS/TEMP] Message temporarily unavailable";

struct Filtered {
  filter::Verdict verdict = filter::Verdict::kPass;
  std::string reason;
  std::string wire;  // stuffed message lines, without the terminator, when passed
};

}  // namespace

bool Session::FiltersMessage(const pop3::Command& command) const {
  return filters_.chain != nullptr && !filters_.chain->empty() &&
         (command.verb == Verb::kRetr || command.verb == Verb::kTop);
}

asio::awaitable<bool> Session::RelayFiltered(const pop3::Command& command,
                                             std::string status_line) {
  auto content = co_await ReadUpstreamContent(kMaxFilteredMessage);
  if (!content) {
    co_return false;
  }
  if (!chain_) {
    filter::SessionInfo info;
    info.id = id_;
    info.client_address = client_address_;
    info.upstream =
        config_.upstream.address.host + ":" + std::to_string(config_.upstream.address.port);
    chain_ = std::make_shared<filter::ChainSession>(filters_.chain->NewSession(info, {}));
  }
  filter::MessageContext context;
  context.command = command.keyword;
  context.number = std::stoull(command.args[0]);
  context.partial = command.verb == Verb::kTop;

  // The job owns everything it touches: the session resumes on its own strand after.
  auto job = [chain = chain_, context, user = user_,
              bytes = std::move(*content)]() mutable -> asio::awaitable<Filtered> {
    chain->info().user = user;
    Filtered out;
    if (!chain->Start()) {
      out.verdict = filter::Verdict::kTempFail;
      out.reason = "a plugin could not start";
      co_return out;
    }
    mail::Message message(std::move(bytes), context.partial);
    filter::MessageReport report = chain->RunMessage(context, message);
    out.verdict = report.result.verdict;
    out.reason = report.result.reason;
    if (out.verdict == filter::Verdict::kPass) {
      auto parts = message.parts();
      pop3::StuffLines(parts.headers, out.wire);
      pop3::StuffLines(parts.separator, out.wire);
      pop3::StuffLines(parts.body, out.wire);
    }
    report.size_out = message.size();
    chain->ReportMessage(context, message, report);
    co_return out;
  };
  Filtered result = co_await asio::co_spawn(*filters_.pool, std::move(job), asio::use_awaitable);

  if (result.verdict == filter::Verdict::kPass) {
    client_out_ = std::move(status_line);
    client_out_ += "\r\n";
    client_out_ += result.wire;
    co_return co_await WriteEndOfResponse();
  }
  // Withheld. A reject would be quarantined first; until the quarantine exists it is
  // treated as a temporary failure, so nothing is ever lost: the upstream still has it.
  spdlog::info("session {} {} {} withheld ({}): {}", id_, command.keyword, command.args[0],
               filter::ToString(result.verdict), LogSafe(result.reason));
  co_return co_await WriteClient(std::string(kFilterTempFail) + "\r\n");
}

}  // namespace popgate::net
