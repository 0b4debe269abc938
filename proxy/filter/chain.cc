#include "filter/chain.h"

#include <atomic>
#include <future>
#include <optional>
#include <stdexcept>
#include <utility>

#include "text/one_line.h"

namespace popgate::filter {
namespace {

// RFC 3206: popgate's own failures reach the client as [SYS/TEMP].
constexpr std::string_view kTempDeny = "[SYS/TEMP] command filter unavailable, try again later";
constexpr std::size_t kMaxReason = 200;       // a reason or reply for the client: one line
constexpr std::size_t kMaxLoggedError = 300;  // an exception's text in the log

}  // namespace

struct ChainSession::Slot {
  std::shared_ptr<const PluginFactory> factory;
  ErrorPolicy on_error;
  std::chrono::milliseconds timeout;
  std::string name;  // the factory's
  PluginTraits traits;
  std::shared_ptr<Plugin> instance;
  std::shared_ptr<OutageLog> outages;
  bool unavailable = false;  // Create failed: the session runs without it
  bool started = false;      // SessionStart was called on `instance`
};

// One RunMessageAsync, from plugin to plugin.
struct ChainSession::MessageRun {
  MessageContext context;
  mail::Message* message = nullptr;
  MessageReport report;
  std::string where;
  std::size_t index = 0;
  std::function<void(MessageReport)> done;
};

// One RunCommandAsync.
struct ChainSession::CommandRun {
  std::string keyword;
  std::vector<std::string> args;
  bool secret = false;
  std::string where;
  std::size_t index = 0;
  std::function<void(CommandOutcome)> done;
};

namespace {

// Calls a synchronous plugin's hook named by `call`; what it throws comes back as text.
std::optional<std::string> RunHook(Plugin& plugin, HookCall& call) {
  try {
    switch (call.hook) {
      case HookCall::Hook::kSessionStart:
        plugin.SessionStart(*call.session);
        break;
      case HookCall::Hook::kCommand:
        call.decision =
            plugin.OnCommand(*call.session, CommandView{call.keyword, call.args, call.secret});
        break;
      case HookCall::Hook::kMessage:
        call.result = plugin.OnMessage(*call.session, call.context, *call.message);
        break;
      case HookCall::Hook::kMessageDone:
        plugin.OnMessageDone(*call.session, call.context, *call.message, call.report);
        break;
      case HookCall::Hook::kSessionEnd:
        plugin.SessionEnd(*call.session);
        break;
    }
  } catch (const std::exception& e) {
    return std::string(e.what());
  } catch (...) {
    return std::string("unknown exception");
  }
  return std::nullopt;
}

// Waits for one of the chain's asynchronous operations: the synchronous wrappers.
template <typename T, typename Start>
T Wait(Start start) {
  std::promise<T> promise;
  std::future<T> result = promise.get_future();
  start([&promise](T value) { promise.set_value(std::move(value)); });
  return result.get();
}

}  // namespace

HookExecutor FromInvoker(Invoker invoker) {
  if (!invoker) return {};
  return
      [invoker = std::move(invoker)](std::function<void()> call, std::chrono::milliseconds timeout,
                                     std::function<void(bool)> done) {
        bool finished = invoker(std::move(call), timeout);  // throws with `call` not started
        done(finished);
      };
}

CommandView ViewOf(const pop3::Command& command) {
  CommandView view;
  view.keyword = command.keyword;
  view.secret = command.CarriesSecret();
  if (!view.secret) view.args = command.args;
  return view;
}

ChainSession::ChainSession(const std::vector<ChainEntry>& entries,
                           const std::vector<PluginTraits>& traits, SessionInfo info, LogFn log,
                           ChainExecutors executors)
    : info_(std::move(info)), log_(std::move(log)), executors_(std::move(executors)) {
  slots_.reserve(entries.size());
  for (std::size_t i = 0; i < entries.size(); ++i) {
    const ChainEntry& entry = entries[i];
    Slot slot;
    slot.factory = entry.factory;
    slot.on_error = entry.on_error;
    slot.timeout = entry.timeout;
    slot.outages = entry.outages;
    slot.name = std::string(entry.factory->name());
    slot.traits = i < traits.size() ? traits[i] : PluginTraits{};
    slots_.push_back(std::move(slot));
  }
}

ChainSession::ChainSession(ChainSession&&) noexcept = default;
ChainSession& ChainSession::operator=(ChainSession&&) noexcept = default;
ChainSession::~ChainSession() = default;

void ChainSession::Log(std::string_view line) const {
  if (log_) log_(line);
}

void ChainSession::Call(Slot& slot, std::shared_ptr<HookCall> call,
                        std::function<void(CallResult)> next) {
  std::shared_ptr<Plugin> plugin = slot.instance;
  const Execution execution = slot.traits.execution;
  const auto start = std::chrono::steady_clock::now();
  const auto elapsed = [start] {
    return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() -
                                                                 start);
  };
  // Inline plugins are called right here: they return at once, on the session's thread.
  // Nothing outlives the call, so it needs no copies.
  if (execution == Execution::kInline || (execution == Execution::kWorker && !executors_.worker)) {
    call->session = &info_;
    std::optional<std::string> error = RunHook(*plugin, *call);
    if (error)
      return next({CallStatus::kException, text::Escaped(*error, kMaxLoggedError), elapsed()});
    NoteSuccess(slot);
    return next({CallStatus::kOk, {}, elapsed()});
  }

  call->session_copy = info_;
  call->session = &call->session_copy;
  // Back on the session once the call is over, wherever it ended. The slot is found again
  // by its index: a call given up after its timeout gives its instance up; the next hook
  // gets a fresh one, and this one lives on in the call until it returns.
  const std::size_t index = static_cast<std::size_t>(&slot - slots_.data());
  auto finish = [this, index, elapsed, next = std::move(next)](CallStatus status,
                                                               const std::string& error) {
    if (status == CallStatus::kTimeout) {
      slots_[index].instance.reset();
      slots_[index].started = false;
    }
    if (status == CallStatus::kOk) NoteSuccess(slots_[index]);
    next({status,
          status == CallStatus::kException ? text::Escaped(error, kMaxLoggedError) : std::string(),
          elapsed()});
  };
  // Exactly once, whatever the executor or plugin does wrong.
  auto once = std::make_shared<std::atomic<bool>>(false);
  CallDone ended = [this, once, finish = std::move(finish)](CallStatus status, std::string error) {
    if (once->exchange(true)) return;
    if (!executors_.resume) return finish(status, error);
    executors_.resume([finish, status, error = std::move(error)] { finish(status, error); });
  };

  if (execution == Execution::kAsync) {
    try {
      plugin->Begin(std::move(call), slot.timeout, ended);
    } catch (const std::exception& e) {
      ended(CallStatus::kException, std::string("could not be run: ") + e.what());
    } catch (...) {
      ended(CallStatus::kException, "could not be run");
    }
    return;
  }
  auto error = std::make_shared<std::optional<std::string>>();
  std::function<void()> work = [plugin, call, error] { *error = RunHook(*plugin, *call); };
  try {
    executors_.worker(std::move(work), slot.timeout, [ended, error](bool finished) {
      if (!finished) return ended(CallStatus::kTimeout, {});
      if (*error) return ended(CallStatus::kException, **error);
      ended(CallStatus::kOk, {});
    });
  } catch (const std::exception& e) {
    ended(CallStatus::kException, std::string("could not be run: ") + e.what());
  } catch (...) {
    ended(CallStatus::kException, "could not be run");
  }
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
  if (!slot.outages) return Log(line);
  if (auto now = slot.outages->Failed(std::move(line))) Log(*now);
}

void ChainSession::NoteSuccess(const Slot& slot) const {
  if (!slot.outages) return;
  if (auto line = slot.outages->Succeeded()) Log(*line);
}

bool ChainSession::MakeInstance(Slot& slot) {
  if (slot.instance) return true;
  if (slot.unavailable) return false;
  std::string error;
  try {
    std::unique_ptr<Plugin> plugin = slot.factory->Create();
    if (!plugin) throw std::runtime_error("the factory made no plugin");
    slot.instance = std::move(plugin);
  } catch (const std::exception& e) {
    error = e.what();
  } catch (...) {
    error = "unknown exception";
  }
  if (slot.instance) return true;
  slot.unavailable = true;
  Log("session " + std::to_string(info_.id) + " plugin " + slot.name +
      " could not be created: " + text::Escaped(error, kMaxLoggedError) +
      (slot.on_error == ErrorPolicy::kPass ? "; on_error=pass: the session runs without it"
                                           : "; on_error=tempfail"));
  return false;
}

void ChainSession::StartSlot(Slot& slot, Next next) {
  slot.started = true;
  if (!slot.traits.hooks.session) return next();
  auto call = std::make_shared<HookCall>();
  call->hook = HookCall::Hook::kSessionStart;
  const std::size_t index = static_cast<std::size_t>(&slot - slots_.data());
  Call(slot, std::move(call), [this, index, next = std::move(next)](CallResult result) {
    if (result.status != CallStatus::kOk) LogFailure(slots_[index], "SessionStart", result, {});
    next();
  });
}

void ChainSession::EnsureInstance(Slot& slot, std::function<void(bool available)> next) {
  if (slot.instance) return next(true);
  if (!MakeInstance(slot)) return next(false);
  if (!started_ || ended_) return next(true);
  const std::size_t index = static_cast<std::size_t>(&slot - slots_.data());
  // A SessionStart that timed out gave the instance up.
  StartSlot(slot,
            [this, index, next = std::move(next)] { next(slots_[index].instance != nullptr); });
}

bool ChainSession::Begin() {
  if (ended_ || end_requested_) return false;
  busy_ = true;
  return true;
}

void ChainSession::Finished() {
  busy_ = false;
  if (end_requested_) {
    end_requested_ = false;
    EndAsync();
  }
}

void ChainSession::StartAsync(std::function<void(bool ok)> done) {
  if (!Begin()) return done(false);
  started_ = true;
  StartStep(0, std::make_shared<bool>(true), std::move(done));
}

void ChainSession::StartStep(std::size_t index, std::shared_ptr<bool> ok,
                             std::function<void(bool)> done) {
  if (index == slots_.size()) {
    Finished();
    return done(*ok);
  }
  Slot& slot = slots_[index];
  if (!MakeInstance(slot)) {
    if (slot.on_error == ErrorPolicy::kTempFail) *ok = false;
    return StartStep(index + 1, std::move(ok), std::move(done));
  }
  StartSlot(slot, [this, index, ok, done = std::move(done)]() mutable {
    StartStep(index + 1, std::move(ok), std::move(done));
  });
}

bool ChainSession::Start() {
  return Wait<bool>([this](std::function<void(bool)> done) { StartAsync(std::move(done)); });
}

void ChainSession::EndAsync(std::function<void()> done) {
  if (done) end_waiters_.push_back(std::move(done));
  if (busy_) {
    end_requested_ = true;  // Finished() comes back here
    return;
  }
  if (ended_) {
    EndStep(slots_.size());  // already over: only the waiters
    return;
  }
  ended_ = true;
  busy_ = true;
  EndStep(0);
}

void ChainSession::EndStep(std::size_t index) {
  while (index < slots_.size()) {
    Slot& slot = slots_[index];
    if (slot.instance && slot.started && slot.traits.hooks.session) break;
    ++index;
  }
  if (index == slots_.size()) {
    busy_ = false;
    std::vector<std::function<void()>> waiters = std::move(end_waiters_);
    end_waiters_.clear();
    for (auto& waiter : waiters) waiter();
    return;
  }
  auto call = std::make_shared<HookCall>();
  call->hook = HookCall::Hook::kSessionEnd;
  Call(slots_[index], std::move(call), [this, index](CallResult result) {
    if (result.status != CallStatus::kOk) LogFailure(slots_[index], "SessionEnd", result, {});
    EndStep(index + 1);
  });
}

void ChainSession::End() {
  Wait<bool>([this](std::function<void(bool)> done) { EndAsync([done] { done(true); }); });
}

bool ChainSession::runs_inline() const {
  for (const Slot& slot : slots_) {
    if (slot.unavailable) continue;
    if (slot.traits.execution != Execution::kInline) return false;
  }
  return true;
}

Needs ChainSession::needs() const {
  for (const Slot& slot : slots_) {
    if (slot.unavailable) continue;
    if (slot.traits.hooks.message && slot.traits.needs == Needs::kWholeMessage) {
      return Needs::kWholeMessage;
    }
  }
  return Needs::kHeaders;
}

bool ChainSession::wants_commands() const {
  for (const Slot& slot : slots_) {
    if (slot.unavailable ? slot.on_error == ErrorPolicy::kTempFail : slot.traits.hooks.command) {
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
                         : slot.traits.hooks.message || slot.traits.hooks.message_done) {
      return true;
    }
  }
  return false;
}

void ChainSession::RunCommandAsync(const CommandView& command,
                                   std::function<void(CommandOutcome)> done) {
  if (!Begin()) return done({});
  auto run = std::make_shared<CommandRun>();
  run->keyword = std::string(command.keyword);
  run->secret = command.secret;
  if (!command.secret) run->args.assign(command.args.begin(), command.args.end());
  run->where = "command " + run->keyword;
  run->done = [this, done = std::move(done)](CommandOutcome outcome) {
    Finished();
    done(std::move(outcome));
  };
  CommandStep(std::move(run));
}

void ChainSession::CommandStep(std::shared_ptr<CommandRun> run) {
  if (run->index == slots_.size()) return run->done({});
  EnsureInstance(slots_[run->index], [this, run](bool available) {
    Slot& slot = slots_[run->index];
    if (!available) {
      // No instance to ask (logged when that happened): its policy decides.
      if (slot.on_error == ErrorPolicy::kTempFail) {
        return run->done({CommandDecision::Deny(std::string(kTempDeny)), slot.name});
      }
      ++run->index;
      return CommandStep(run);
    }
    if (!slot.traits.hooks.command) {
      ++run->index;
      return CommandStep(run);
    }
    auto call = std::make_shared<HookCall>();
    call->hook = HookCall::Hook::kCommand;
    call->keyword = run->keyword;
    call->args = run->args;
    call->secret = run->secret;
    Call(slot, call, [this, run, call](CallResult result) {
      Slot& slot = slots_[run->index];
      if (result.status == CallStatus::kOk) {
        // A reply or line with a line break would let a plugin speak for the server.
        const CommandDecision& decision = call->decision;
        bool bad = decision.kind() != CommandDecision::Kind::kAllow &&
                   text::HasLineBreakOrNul(decision.text());
        bad =
            bad || (decision.kind() == CommandDecision::Kind::kRewrite && decision.text().empty());
        if (bad) {
          result.status = CallStatus::kException;
          result.error = "invalid decision (empty line, or CR, LF or NUL in its text)";
        }
      }
      if (result.status != CallStatus::kOk) {
        if (slot.on_error == ErrorPolicy::kPass) {
          LogFailure(slot, run->where, result, "on_error=pass: skipped");
          ++run->index;
          return CommandStep(run);
        }
        LogFailure(slot, run->where, result, "on_error=tempfail: command refused");
        return run->done({CommandDecision::Deny(std::string(kTempDeny)), slot.name});
      }
      switch (call->decision.kind()) {
        case CommandDecision::Kind::kAllow:
          ++run->index;
          return CommandStep(run);
        case CommandDecision::Kind::kDeny: {
          std::string reply = text::SpacedLine(call->decision.text(), kMaxReason);
          if (reply.empty()) reply = "command refused";
          return run->done({CommandDecision::Deny(std::move(reply)), slot.name});
        }
        case CommandDecision::Kind::kRewrite:
          return run->done({std::move(call->decision), slot.name});
      }
    });
  });
}

CommandOutcome ChainSession::RunCommand(const CommandView& command) {
  return Wait<CommandOutcome>([this, &command](std::function<void(CommandOutcome)> done) {
    RunCommandAsync(command, std::move(done));
  });
}

void ChainSession::RunMessageAsync(const MessageContext& context, mail::Message& message,
                                   std::function<void(MessageReport)> done) {
  auto run = std::make_shared<MessageRun>();
  run->report.size_in = message.size();
  if (!Begin()) {
    run->report.size_out = message.size();
    return done(std::move(run->report));
  }
  run->context = context;
  run->message = &message;
  run->where = context.command + " " + std::to_string(context.number);
  run->done = [this, done = std::move(done)](MessageReport report) {
    Finished();
    done(std::move(report));
  };
  MessageStep(std::move(run));
}

void ChainSession::MessageStep(std::shared_ptr<MessageRun> run) {
  if (run->index == slots_.size()) {
    run->report.size_out = run->message->size();
    return run->done(std::move(run->report));
  }
  EnsureInstance(slots_[run->index], [this, run](bool available) {
    Slot& slot = slots_[run->index];
    MessageReport& report = run->report;
    PluginRun plugin_run;
    plugin_run.plugin = slot.name;
    if (!available) {
      // No instance to ask (logged when that happened): its policy decides.
      plugin_run.failure = slot.unavailable ? PluginRun::Failure::kUnavailable
                                            : PluginRun::Failure::kTimeout;  // in SessionStart
      if (slot.on_error == ErrorPolicy::kPass) {
        report.runs.push_back(std::move(plugin_run));
        ++run->index;
        return MessageStep(run);
      }
      plugin_run.verdict = Verdict::kTempFail;
      report.runs.push_back(std::move(plugin_run));
      report.result = FilterResult::TempFail("filter " + slot.name + " unavailable");
      report.decided_by = slot.name;
      report.size_out = run->message->size();
      return run->done(std::move(report));
    }
    if (!slot.traits.hooks.message) {
      ++run->index;
      return MessageStep(run);
    }
    // The plugin edits its own copy (the bytes are shared), taken back only if it returns.
    auto call = std::make_shared<HookCall>();
    call->hook = HookCall::Hook::kMessage;
    call->context = run->context;
    call->message.emplace(*run->message);
    Call(slot, call, [this, run, call](CallResult result) {
      Slot& slot = slots_[run->index];
      MessageReport& report = run->report;
      PluginRun plugin_run;
      plugin_run.plugin = slot.name;
      plugin_run.elapsed = result.elapsed;
      if (result.status != CallStatus::kOk) {
        plugin_run.failure = result.status == CallStatus::kTimeout ? PluginRun::Failure::kTimeout
                                                                   : PluginRun::Failure::kException;
        if (slot.on_error == ErrorPolicy::kPass) {
          LogFailure(slot, run->where, result, "on_error=pass: the message goes on without it");
          report.runs.push_back(std::move(plugin_run));
          ++run->index;
          return MessageStep(run);
        }
        LogFailure(slot, run->where, result, "on_error=tempfail: -ERR [SYS/TEMP] to the client");
        plugin_run.verdict = Verdict::kTempFail;
        report.runs.push_back(std::move(plugin_run));
        report.result = FilterResult::TempFail(
            "filter " + slot.name +
            (result.status == CallStatus::kTimeout ? " timed out" : " failed"));
        report.decided_by = slot.name;
        report.size_out = run->message->size();
        return run->done(std::move(report));
      }
      *run->message = std::move(*call->message);
      FilterResult verdict = std::move(call->result);
      verdict.reason = text::SpacedLine(verdict.reason, kMaxReason);
      plugin_run.verdict = verdict.verdict;
      report.runs.push_back(std::move(plugin_run));
      if (verdict.verdict == Verdict::kPass) {
        ++run->index;
        return MessageStep(run);
      }
      if (verdict.reason.empty()) {
        verdict.reason = std::string(ToString(verdict.verdict)) + " by " + slot.name;
      }
      // A quarantine delivers the edited message: the rest of the chain still sees it.
      // The first plugin that asked keeps the say, unless a later one stops the message.
      const bool goes_on = verdict.verdict == Verdict::kQuarantine;
      if (!goes_on || report.result.verdict != Verdict::kQuarantine) {
        report.result = std::move(verdict);
        report.decided_by = slot.name;
      }
      if (goes_on) {
        ++run->index;
        return MessageStep(run);
      }
      report.size_out = run->message->size();
      run->done(std::move(report));
    });
  });
}

MessageReport ChainSession::RunMessage(const MessageContext& context, mail::Message& message) {
  return Wait<MessageReport>([&](std::function<void(MessageReport)> done) {
    RunMessageAsync(context, message, std::move(done));
  });
}

void ChainSession::ReportMessageAsync(const MessageContext& context, const mail::Message& message,
                                      const MessageReport& report, std::function<void()> done) {
  if (!Begin()) return done();
  auto prototype = std::make_shared<HookCall>();
  prototype->hook = HookCall::Hook::kMessageDone;
  prototype->context = context;
  prototype->message.emplace(message);
  prototype->report = report;
  ReportStep(0, std::move(prototype), [this, done = std::move(done)] {
    Finished();
    done();
  });
}

void ChainSession::ReportStep(std::size_t index, std::shared_ptr<HookCall> prototype, Next done) {
  while (index < slots_.size() &&
         (!slots_[index].instance || !slots_[index].traits.hooks.message_done)) {
    ++index;
  }
  if (index == slots_.size()) return done();
  // Each call has its own copy: one given up after its timeout keeps what it holds.
  auto call = std::make_shared<HookCall>(*prototype);
  Call(slots_[index], std::move(call),
       [this, index, prototype, done = std::move(done)](CallResult result) mutable {
         if (result.status != CallStatus::kOk) {
           const std::string where = "OnMessageDone " + prototype->context.command + " " +
                                     std::to_string(prototype->context.number);
           LogFailure(slots_[index], where, result, {});
         }
         ReportStep(index + 1, std::move(prototype), std::move(done));
       });
}

void ChainSession::ReportMessage(const MessageContext& context, const mail::Message& message,
                                 const MessageReport& report) {
  Wait<bool>([&](std::function<void(bool)> done) {
    ReportMessageAsync(context, message, report, [done] { done(true); });
  });
}

FilterChain::FilterChain(std::vector<ChainEntry> entries, LogFn log)
    : entries_(std::move(entries)), log_(std::move(log)) {
  for (ChainEntry& entry : entries_) {
    if (!entry.factory) throw std::invalid_argument("filter chain entry without a plugin");
    if (!entry.outages)
      entry.outages = std::make_shared<OutageLog>(std::string(entry.factory->name()));
    if (entry.timeout <= std::chrono::milliseconds::zero()) {
      throw std::invalid_argument("plugin " + std::string(entry.factory->name()) +
                                  ": timeout must be positive");
    }
    try {
      traits_.push_back(entry.factory->traits());
    } catch (...) {
      // A factory that can't make an instance now may later: assume it does everything,
      // on a worker; each session then finds out for itself.
      traits_.push_back(PluginTraits{});
    }
  }
}

ChainSession FilterChain::NewSession(SessionInfo info, ChainExecutors executors) const {
  return ChainSession(entries_, traits_, std::move(info), log_, std::move(executors));
}

ChainSession FilterChain::NewSession(SessionInfo info, Invoker invoker) const {
  return NewSession(std::move(info), ChainExecutors{FromInvoker(std::move(invoker)), {}});
}

}  // namespace popgate::filter
