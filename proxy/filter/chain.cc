#include "filter/chain.h"

#include <optional>
#include <stdexcept>
#include <utility>

namespace popgate::filter {
namespace {

// RFC 3206: popgate's own failures reach the client as [SYS/TEMP].
constexpr std::string_view kTempDeny = "[SYS/TEMP] command filter unavailable, try again later";
constexpr std::size_t kMaxReason = 200;
constexpr std::size_t kMaxLoggedError = 300;

// A reason or reply for the client: one line.
std::string OneLine(std::string text) {
  for (char& c : text) {
    if (c == '\r' || c == '\n' || c == '\0') c = ' ';
  }
  if (text.size() > kMaxReason) text.resize(kMaxReason);
  return text;
}

// An exception's text for the log: no control characters, bounded.
std::string Printable(std::string_view text) {
  std::string out(text.substr(0, kMaxLoggedError));
  for (char& c : out) {
    auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) c = '?';
  }
  return out;
}

bool HasLineBreakOrNul(std::string_view text) {
  return text.find_first_of(std::string_view("\r\n\0", 3)) != std::string_view::npos;
}

}  // namespace

struct ChainSession::Slot {
  std::shared_ptr<const PluginFactory> factory;
  ErrorPolicy on_error;
  std::chrono::milliseconds timeout;
  std::string name;  // the factory's
  std::shared_ptr<Plugin> instance;
  Hooks hooks;
  Needs needs = Needs::kWholeMessage;
  Execution execution = Execution::kWorker;
  bool made = false;         // an instance was made once (hooks and needs are known)
  bool unavailable = false;  // Create failed: the session runs without it
  bool started = false;      // SessionStart was called on `instance`
};

// Everything one hook call touches, owned by the call: if it is given up after its
// timeout it can run on safely.
struct ChainSession::Job {
  std::shared_ptr<Plugin> plugin;
  // What the plugin sees of the session: the chain's own for a call made right here,
  // `session_copy` for one on another thread, which may outlive the chain.
  const SessionInfo* session = nullptr;
  SessionInfo session_copy;
  MessageContext context;
  std::optional<mail::Message> message;
  std::string keyword;
  std::vector<std::string> args;
  bool secret = false;
  FilterResult result;
  CommandDecision decision = CommandDecision::Allow();
  MessageReport report;
};

CommandView ViewOf(const pop3::Command& command) {
  CommandView view;
  view.keyword = command.keyword;
  view.secret = command.CarriesSecret();
  if (!view.secret) view.args = command.args;
  return view;
}

ChainSession::ChainSession(const std::vector<ChainEntry>& entries, SessionInfo info, LogFn log,
                           Invoker invoker)
    : info_(std::move(info)), log_(std::move(log)), invoker_(std::move(invoker)) {
  slots_.reserve(entries.size());
  for (const ChainEntry& entry : entries) {
    Slot slot;
    slot.factory = entry.factory;
    slot.on_error = entry.on_error;
    slot.timeout = entry.timeout;
    slot.name = std::string(entry.factory->name());
    slots_.push_back(std::move(slot));
  }
}

ChainSession::ChainSession(ChainSession&&) noexcept = default;
ChainSession& ChainSession::operator=(ChainSession&&) noexcept = default;
ChainSession::~ChainSession() = default;

void ChainSession::Log(std::string_view line) const {
  if (log_) log_(line);
}

namespace {

// Runs `hook`; what it throws comes back as text.
template <typename Job>
std::optional<std::string> RunCatching(void (*hook)(Job&), Job& job) {
  try {
    hook(job);
  } catch (const std::exception& e) {
    return std::string(e.what());
  } catch (...) {
    return std::string("unknown exception");
  }
  return std::nullopt;
}

}  // namespace

ChainSession::CallResult ChainSession::Call(Slot& slot, const std::shared_ptr<Job>& job,
                                            void (*hook)(Job&)) {
  job->plugin = slot.instance;
  const auto start = std::chrono::steady_clock::now();
  const auto elapsed = [start] {
    return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() -
                                                                 start);
  };
  // Inline plugins are called right here: they return at once, and may be on an I/O
  // thread where waiting for another thread is not allowed. Nothing outlives the call, so
  // it needs no copies.
  if (!invoker_ || slot.execution == Execution::kInline) {
    job->session = &info_;
    std::optional<std::string> error = RunCatching(hook, *job);
    if (error) return {CallStatus::kException, Printable(*error), elapsed()};
    return {CallStatus::kOk, {}, elapsed()};
  }

  job->session_copy = info_;
  job->session = &job->session_copy;
  auto error = std::make_shared<std::optional<std::string>>();
  std::function<void()> call = [job, hook, error] { *error = RunCatching(hook, *job); };
  bool finished = true;
  try {
    finished = invoker_(std::move(call), slot.timeout);
  } catch (const std::exception& e) {
    *error = std::string("could not be run: ") + e.what();
  } catch (...) {
    *error = "could not be run";
  }
  if (!finished) {
    // The call may still be running: give this instance up. The next hook gets a fresh
    // one; this one lives on in `job` until its call returns.
    slot.instance.reset();
    slot.started = false;
    return {CallStatus::kTimeout, {}, elapsed()};
  }
  if (*error) return {CallStatus::kException, Printable(**error), elapsed()};
  return {CallStatus::kOk, {}, elapsed()};
}

void ChainSession::LogFailure(const Slot& slot, std::string_view where, const CallResult& result,
                              std::string_view consequence) {
  std::string line = "session " + std::to_string(info_.id) + " plugin " + slot.name;
  if (result.status == CallStatus::kTimeout) {
    line += " timed out (" + std::to_string(slot.timeout.count()) + " ms) in ";
    line += where;
  } else {
    line += " failed in ";
    line += where;
    line += ": " + result.error;
  }
  if (!consequence.empty()) {
    line += "; ";
    line += consequence;
  }
  Log(line);
}

void ChainSession::StartSlot(Slot& slot) {
  slot.started = true;
  if (!slot.hooks.session) return;
  auto job = std::make_shared<Job>();
  CallResult result = Call(slot, job, [](Job& j) { j.plugin->SessionStart(*j.session); });
  if (result.status != CallStatus::kOk) LogFailure(slot, "SessionStart", result, {});
}

bool ChainSession::EnsureInstance(Slot& slot) {
  if (slot.instance) return true;
  if (slot.unavailable) return false;
  std::string error;
  try {
    std::unique_ptr<Plugin> plugin = slot.factory->Create();
    if (!plugin) throw std::runtime_error("the factory made no plugin");
    slot.hooks = plugin->hooks();
    slot.needs = plugin->needs();
    slot.execution = plugin->execution();
    slot.instance = std::move(plugin);
    slot.made = true;
  } catch (const std::exception& e) {
    error = e.what();
  } catch (...) {
    error = "unknown exception";
  }
  if (!slot.instance) {
    slot.unavailable = true;
    Log("session " + std::to_string(info_.id) + " plugin " + slot.name +
        " could not be created: " + Printable(error) +
        (slot.on_error == ErrorPolicy::kPass ? "; on_error=pass: the session runs without it"
                                             : "; on_error=tempfail"));
    return false;
  }
  if (started_ && !ended_) StartSlot(slot);
  return slot.instance != nullptr;  // a SessionStart that timed out gave it up
}

bool ChainSession::Start() {
  started_ = true;
  bool ok = true;
  for (Slot& slot : slots_) {
    if (!EnsureInstance(slot) && slot.unavailable && slot.on_error == ErrorPolicy::kTempFail) {
      ok = false;
    }
  }
  return ok;
}

void ChainSession::End() {
  if (ended_) return;
  ended_ = true;
  for (Slot& slot : slots_) {
    if (!slot.instance || !slot.started || !slot.hooks.session) continue;
    auto job = std::make_shared<Job>();
    CallResult result = Call(slot, job, [](Job& j) { j.plugin->SessionEnd(*j.session); });
    if (result.status != CallStatus::kOk) LogFailure(slot, "SessionEnd", result, {});
  }
}

bool ChainSession::runs_inline() const {
  for (const Slot& slot : slots_) {
    if (slot.unavailable) continue;
    if (!slot.made || slot.execution != Execution::kInline) return false;
  }
  return true;
}

Needs ChainSession::needs() const {
  for (const Slot& slot : slots_) {
    if (slot.unavailable) continue;
    if (!slot.made) return Needs::kWholeMessage;
    if (slot.hooks.message && slot.needs == Needs::kWholeMessage) return Needs::kWholeMessage;
  }
  return Needs::kHeaders;
}

bool ChainSession::wants_commands() const {
  for (const Slot& slot : slots_) {
    if (slot.unavailable ? slot.on_error == ErrorPolicy::kTempFail
                         : !slot.made || slot.hooks.command) {
      return true;
    }
  }
  return false;
}

bool ChainSession::wants_messages() const {
  // OnMessageDone counts: a plugin that only reports on messages (audit_log) must see
  // every one, even when no plugin in the chain edits them.
  for (const Slot& slot : slots_) {
    if (slot.unavailable ? slot.on_error == ErrorPolicy::kTempFail
                         : !slot.made || slot.hooks.message || slot.hooks.message_done) {
      return true;
    }
  }
  return false;
}

CommandOutcome ChainSession::RunCommand(const CommandView& command) {
  std::string where = "command " + std::string(command.keyword);
  for (Slot& slot : slots_) {
    if (!EnsureInstance(slot)) {
      // No instance to ask (logged when that happened): its policy decides.
      if (slot.on_error == ErrorPolicy::kTempFail) {
        return {CommandDecision::Deny(std::string(kTempDeny)), slot.name};
      }
      continue;
    }
    if (!slot.hooks.command) continue;

    auto job = std::make_shared<Job>();
    job->keyword = std::string(command.keyword);
    job->secret = command.secret;
    if (!command.secret) job->args.assign(command.args.begin(), command.args.end());
    CallResult result = Call(slot, job, [](Job& j) {
      j.decision = j.plugin->OnCommand(*j.session, CommandView{j.keyword, j.args, j.secret});
    });
    if (result.status == CallStatus::kOk) {
      // A reply or line with a line break would let a plugin speak for the server.
      const CommandDecision& decision = job->decision;
      bool bad =
          decision.kind() != CommandDecision::Kind::kAllow && HasLineBreakOrNul(decision.text());
      bad = bad || (decision.kind() == CommandDecision::Kind::kRewrite && decision.text().empty());
      if (bad) {
        result.status = CallStatus::kException;
        result.error = "invalid decision (empty line, or CR, LF or NUL in its text)";
      }
    }
    if (result.status != CallStatus::kOk) {
      if (slot.on_error == ErrorPolicy::kPass) {
        LogFailure(slot, where, result, "on_error=pass: skipped");
        continue;
      }
      LogFailure(slot, where, result, "on_error=tempfail: command refused");
      return {CommandDecision::Deny(std::string(kTempDeny)), slot.name};
    }
    switch (job->decision.kind()) {
      case CommandDecision::Kind::kAllow:
        continue;
      case CommandDecision::Kind::kDeny: {
        std::string reply = OneLine(job->decision.text());
        if (reply.empty()) reply = "command refused";
        return {CommandDecision::Deny(std::move(reply)), slot.name};
      }
      case CommandDecision::Kind::kRewrite:
        return {std::move(job->decision), slot.name};
    }
  }
  return {};
}

MessageReport ChainSession::RunMessage(const MessageContext& context, mail::Message& message) {
  MessageReport report;
  report.size_in = message.size();
  std::string where = context.command + " " + std::to_string(context.number);
  for (Slot& slot : slots_) {
    PluginRun run;
    run.plugin = slot.name;
    if (!EnsureInstance(slot)) {
      // No instance to ask (logged when that happened): its policy decides.
      run.failure = slot.unavailable ? PluginRun::Failure::kUnavailable
                                     : PluginRun::Failure::kTimeout;  // in SessionStart
      if (slot.on_error == ErrorPolicy::kPass) {
        report.runs.push_back(std::move(run));
        continue;
      }
      run.verdict = Verdict::kTempFail;
      report.runs.push_back(std::move(run));
      report.result = FilterResult::TempFail("filter " + slot.name + " unavailable");
      report.decided_by = slot.name;
      break;
    }
    if (!slot.hooks.message) continue;

    // The plugin edits its own copy (the bytes are shared), taken back only if it returns.
    auto job = std::make_shared<Job>();
    job->context = context;
    job->message.emplace(message);
    CallResult result = Call(slot, job, [](Job& j) {
      j.result = j.plugin->OnMessage(*j.session, j.context, *j.message);
    });
    run.elapsed = result.elapsed;

    if (result.status != CallStatus::kOk) {
      run.failure = result.status == CallStatus::kTimeout ? PluginRun::Failure::kTimeout
                                                          : PluginRun::Failure::kException;
      if (slot.on_error == ErrorPolicy::kPass) {
        LogFailure(slot, where, result, "on_error=pass: the message goes on without it");
        report.runs.push_back(std::move(run));
        continue;
      }
      LogFailure(slot, where, result, "on_error=tempfail: -ERR [SYS/TEMP] to the client");
      run.verdict = Verdict::kTempFail;
      report.runs.push_back(std::move(run));
      report.result = FilterResult::TempFail(
          "filter " + slot.name +
          (result.status == CallStatus::kTimeout ? " timed out" : " failed"));
      report.decided_by = slot.name;
      break;
    }

    message = std::move(*job->message);
    FilterResult verdict = std::move(job->result);
    verdict.reason = OneLine(std::move(verdict.reason));
    run.verdict = verdict.verdict;
    report.runs.push_back(std::move(run));
    if (verdict.verdict != Verdict::kPass) {
      if (verdict.reason.empty()) {
        verdict.reason = std::string(ToString(verdict.verdict)) + " by " + slot.name;
      }
      report.result = std::move(verdict);
      report.decided_by = slot.name;
      break;
    }
  }
  report.size_out = message.size();
  return report;
}

void ChainSession::ReportMessage(const MessageContext& context, const mail::Message& message,
                                 const MessageReport& report) {
  std::string where = "OnMessageDone " + context.command + " " + std::to_string(context.number);
  for (Slot& slot : slots_) {
    if (!slot.instance || !slot.hooks.message_done) continue;
    auto job = std::make_shared<Job>();
    job->context = context;
    job->message.emplace(message);
    job->report = report;
    CallResult result = Call(slot, job, [](Job& j) {
      j.plugin->OnMessageDone(*j.session, j.context, *j.message, j.report);
    });
    if (result.status != CallStatus::kOk) LogFailure(slot, where, result, {});
  }
}

FilterChain::FilterChain(std::vector<ChainEntry> entries, LogFn log)
    : entries_(std::move(entries)), log_(std::move(log)) {
  for (const ChainEntry& entry : entries_) {
    if (!entry.factory) throw std::invalid_argument("filter chain entry without a plugin");
    if (entry.timeout <= std::chrono::milliseconds::zero()) {
      throw std::invalid_argument("plugin " + std::string(entry.factory->name()) +
                                  ": timeout must be positive");
    }
  }
}

ChainSession FilterChain::NewSession(SessionInfo info, Invoker invoker) const {
  return ChainSession(entries_, std::move(info), log_, std::move(invoker));
}

}  // namespace popgate::filter
