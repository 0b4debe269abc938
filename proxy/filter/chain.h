#pragma once
// The filter chain: the configured plugins, in order, and their per-session instances.
//
// FilterChain is built once from config (the factories, each with its on_error policy and
// timeout) and shared by all sessions. Each session gets a ChainSession holding one
// instance per plugin; it runs the hooks in order and turns failures into verdicts:
//  - messages: every plugin's OnMessage in turn on the same Message, so one plugin sees
//    what the ones before it did; the first tempfail or reject stops the chain;
//  - commands: the first deny or rewrite wins;
//  - a hook that throws or times out follows its plugin's policy (kPass: the plugin is
//    skipped and the message goes on exactly as it was before it; kTempFail: tempfail),
//    is logged once with the plugin's name, and recorded in the report.
// Each hook works on its own cheap copy of what it is handed (the message bytes are
// shared, not copied), committed when it returns: so a plugin that throws half-way
// through its edits leaves no trace, and a call given up after its timeout can run on
// safely with what it holds.
//
// The chain is asynchronous: each hook call is a step the session awaits, carried out
// where its plugin's execution() says (inline: right here; worker: on the HookExecutor;
// async: by the plugin itself), and the chain goes on through `resume` once the call is
// over, so no thread waits for a hook. The synchronous Start/RunMessage/... wrap the async
// operations and wait: for tests and tools whose executors don't need the caller's thread.
//
// A ChainSession runs one operation at a time (the core waits for each), and must outlive
// it: the core keeps it in a shared_ptr that the completions hold. EndAsync during another
// operation waits for that one. Pure code: no sockets, no Asio.

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "filter/outage_log.h"
#include "filter/plugin.h"
#include "mail/message.h"
#include "pop3/command.h"

namespace popgate::filter {

enum class ErrorPolicy { kPass, kTempFail };

struct ChainEntry {
  std::shared_ptr<const PluginFactory> factory;
  ErrorPolicy on_error = ErrorPolicy::kPass;
  std::chrono::milliseconds timeout = std::chrono::seconds(30);
  // Its failures, logged once per outage; FilterChain makes one if this is null.
  std::shared_ptr<OutageLog> outages = nullptr;
};

// Where the chain's lines go (plugin failures), one line per call, no line ending.
using LogFn = std::function<void(std::string_view line)>;

// Runs one hook call and waits at most `timeout` for it. Returns true if `call` finished
// (what it did is then visible to the caller), false if it was given up: `call` may still
// be running, and owns everything it touches. `call` never throws. If the invoker throws,
// `call` must not have started. Empty: the chain calls hooks directly, with no timeout
// (tests, tools).
using Invoker = std::function<bool(std::function<void()> call, std::chrono::milliseconds timeout)>;

// Carries out one worker hook call without waiting for it: runs `call` elsewhere and calls
// `done` exactly once, from any thread: true once `call` finished (what it did is then
// visible), false when it was given up after `timeout` (it may still run, and owns what it
// touches). `call` never throws. May throw itself, with `call` not started.
using HookExecutor =
    std::function<void(std::function<void()> call, std::chrono::milliseconds timeout,
                       std::function<void(bool finished)> done)>;
// Where the chain goes on after a call that ended on another thread: the core posts `next`
// to the session's own executor. Empty: it goes on right there.
using Resume = std::function<void(std::function<void()> next)>;

struct ChainExecutors {
  HookExecutor worker;  // empty: worker hooks are called directly, with no timeout
  Resume resume;
};

// The synchronous Invoker as a HookExecutor (tests, tools).
HookExecutor FromInvoker(Invoker invoker);

// A client command as a plugin sees it: the arguments of PASS, APOP and AUTH withheld.
// The view refers to `command`.
CommandView ViewOf(const pop3::Command& command);

// What the command hooks decided.
struct CommandOutcome {
  CommandDecision decision = CommandDecision::Allow();
  std::string decided_by;  // the plugin behind a deny or rewrite (or its failure)
};

class ChainSession {
 public:
  // `traits`: one per entry (FilterChain asks the factories once).
  ChainSession(const std::vector<ChainEntry>& entries, const std::vector<PluginTraits>& traits,
               SessionInfo info, LogFn log = {}, ChainExecutors executors = {});
  ChainSession(ChainSession&&) noexcept;
  ChainSession& operator=(ChainSession&&) noexcept;
  ~ChainSession();

  // The session as plugins see it; the core sets `user` after login.
  SessionInfo& info() { return info_; }
  const SessionInfo& info() const { return info_; }

  // Makes the plugin instances and calls their SessionStart. Its result is false when a
  // plugin with on_error = tempfail has no instance (its factory failed): the core should
  // refuse the session with -ERR [SYS/TEMP] rather than run without it.
  void StartAsync(std::function<void(bool ok)> done);
  bool Start();
  // SessionEnd of every started plugin, once (later calls only complete): the destructor
  // calls no hooks. Called while another operation runs, it waits for that one.
  void EndAsync(std::function<void()> done = {});
  void End();

  // kWholeMessage if any plugin with a message hook needs the whole message. Known from
  // the factories, before Start.
  Needs needs() const;
  // Whether every plugin is inline: every operation then completes before it returns.
  bool runs_inline() const;
  // Whether RunCommand can do anything; if not the core can skip it.
  bool wants_commands() const;
  // Whether RunMessage or ReportMessage can do anything (false for an empty chain).
  bool wants_messages() const;

  void RunCommandAsync(const CommandView& command, std::function<void(CommandOutcome)> done);
  CommandOutcome RunCommand(const CommandView& command);
  // Runs the message hooks in order on `message`, which must live until `done`. The report's
  // size_out is the size of `message` afterwards; the core corrects it when it delivers
  // something else.
  void RunMessageAsync(const MessageContext& context, mail::Message& message,
                       std::function<void(MessageReport)> done);
  MessageReport RunMessage(const MessageContext& context, mail::Message& message);
  // OnMessageDone of every plugin, with the report the core completed. Failures are
  // logged and change nothing. `message` and `report` must live until `done`.
  void ReportMessageAsync(const MessageContext& context, const mail::Message& message,
                          const MessageReport& report, std::function<void()> done);
  void ReportMessage(const MessageContext& context, const mail::Message& message,
                     const MessageReport& report);

 private:
  struct Slot;
  struct MessageRun;
  struct CommandRun;
  struct CallResult {
    CallStatus status;
    std::string error;
    std::chrono::microseconds elapsed;
  };
  using Next = std::function<void()>;

  // Makes the slot's instance if it has none. False when there is none to call: its
  // factory failed.
  bool MakeInstance(Slot& slot);
  // Makes the instance if needed and, once the session has started, its SessionStart;
  // then `next(available)`: false when there is none to call (no instance, or its
  // SessionStart timed out).
  void EnsureInstance(Slot& slot, std::function<void(bool available)> next);
  void StartSlot(Slot& slot, Next next);
  // Carries out `call` where its plugin runs, then `next` with how it went, here (inline)
  // or through resume.
  void Call(Slot& slot, std::shared_ptr<HookCall> call, std::function<void(CallResult)> next);
  void MessageStep(std::shared_ptr<MessageRun> run);
  void CommandStep(std::shared_ptr<CommandRun> run);
  void StartStep(std::size_t index, std::shared_ptr<bool> ok, std::function<void(bool)> done);
  void EndStep(std::size_t index);
  void ReportStep(std::size_t index, std::shared_ptr<HookCall> prototype, Next done);
  // Operations are one at a time; an EndAsync meanwhile waits for the current one. False
  // once the session is ending: the operation then completes at once, doing nothing.
  bool Begin();
  void Finished();
  // A call that worked ends its plugin's outage, if there was one (OutageLog).
  void NoteSuccess(const Slot& slot) const;
  void LogFailure(const Slot& slot, std::string_view where, const CallResult& result,
                  std::string_view consequence);
  void Log(std::string_view line) const;

  std::vector<Slot> slots_;
  SessionInfo info_;
  LogFn log_;
  ChainExecutors executors_;
  bool started_ = false;
  bool ended_ = false;
  bool busy_ = false;
  std::vector<std::function<void()>> end_waiters_;
  bool end_requested_ = false;
};

class FilterChain {
 public:
  FilterChain() = default;
  // Throws std::invalid_argument for an entry without a factory or a timeout <= 0. Asks
  // each factory for its traits.
  explicit FilterChain(std::vector<ChainEntry> entries, LogFn log = {});

  // The plugin instances for one client session (not started yet).
  ChainSession NewSession(SessionInfo info, ChainExecutors executors) const;
  ChainSession NewSession(SessionInfo info, Invoker invoker = {}) const;

  const std::vector<ChainEntry>& entries() const { return entries_; }
  bool empty() const { return entries_.empty(); }

 private:
  std::vector<ChainEntry> entries_;
  std::vector<PluginTraits> traits_;  // one per entry, from its factory
  LogFn log_;
};

}  // namespace popgate::filter
