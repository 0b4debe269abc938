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
// A ChainSession is used by one thread at a time, and its hooks may block: the core calls
// it from a worker thread, never from an I/O thread. Pure code: no sockets, no Asio.

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "filter/plugin.h"
#include "mail/message.h"
#include "pop3/command.h"

namespace popgate::filter {

enum class ErrorPolicy { kPass, kTempFail };

struct ChainEntry {
  std::shared_ptr<const PluginFactory> factory;
  ErrorPolicy on_error = ErrorPolicy::kPass;
  std::chrono::milliseconds timeout = std::chrono::seconds(30);
};

// Where the chain's lines go (plugin failures), one line per call, no line ending.
using LogFn = std::function<void(std::string_view line)>;

// Runs one hook call and waits at most `timeout` for it. Returns true if `call` finished
// (what it did is then visible to the caller), false if it was given up: `call` may still
// be running, and owns everything it touches. `call` never throws. If the invoker throws,
// `call` must not have started. Empty: the chain calls hooks directly, with no timeout
// (tests, tools).
using Invoker = std::function<bool(std::function<void()> call, std::chrono::milliseconds timeout)>;

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
  ChainSession(const std::vector<ChainEntry>& entries, SessionInfo info, LogFn log = {},
               Invoker invoker = {});
  ChainSession(ChainSession&&) noexcept;
  ChainSession& operator=(ChainSession&&) noexcept;
  ~ChainSession();

  // The session as plugins see it; the core sets `user` after login.
  SessionInfo& info() { return info_; }
  const SessionInfo& info() const { return info_; }

  // Makes the plugin instances and calls their SessionStart. Returns false when a plugin with
  // on_error = tempfail has no instance (its factory failed): the core should refuse the session
  // with -ERR [SYS/TEMP] rather than run without it.
  bool Start();
  // SessionEnd of every started plugin. Call it once, from a worker thread: the destructor
  // calls no hooks.
  void End();

  // kWholeMessage if any plugin with a message hook needs the whole message (also for a
  // plugin not made yet: ask after Start).
  Needs needs() const;
  // Whether every plugin (made so far: ask after Start) is inline: the core may then call
  // this chain on the session's own thread.
  bool runs_inline() const;
  // Whether RunCommand can do anything; if not the core can skip it.
  bool wants_commands() const;
  // Whether RunMessage or ReportMessage can do anything (false for an empty chain).
  bool wants_messages() const;

  CommandOutcome RunCommand(const CommandView& command);
  // Runs the message hooks in order on `message`. The report's size_out is the size of
  // `message` afterwards; the core corrects it when it delivers something else.
  MessageReport RunMessage(const MessageContext& context, mail::Message& message);
  // OnMessageDone of every plugin, with the report the core completed. Failures are
  // logged and change nothing.
  void ReportMessage(const MessageContext& context, const mail::Message& message,
                     const MessageReport& report);

 private:
  struct Slot;
  struct Job;
  enum class CallStatus { kOk, kException, kTimeout };
  struct CallResult {
    CallStatus status;
    std::string error;
    std::chrono::microseconds elapsed;
  };

  // Makes the slot's instance if it has none (and starts it if the session has started).
  // False when there is none to call: its factory failed, or its SessionStart timed out.
  bool EnsureInstance(Slot& slot);
  void StartSlot(Slot& slot);
  // Runs `hook` on `job` through the invoker, catching what it throws.
  CallResult Call(Slot& slot, const std::shared_ptr<Job>& job, void (*hook)(Job&));
  void LogFailure(const Slot& slot, std::string_view where, const CallResult& result,
                  std::string_view consequence);
  void Log(std::string_view line) const;

  std::vector<Slot> slots_;
  SessionInfo info_;
  LogFn log_;
  Invoker invoker_;
  bool started_ = false;
  bool ended_ = false;
};

class FilterChain {
 public:
  FilterChain() = default;
  // Throws std::invalid_argument for an entry without a factory or a timeout <= 0.
  explicit FilterChain(std::vector<ChainEntry> entries, LogFn log = {});

  // The plugin instances for one client session (not started yet).
  ChainSession NewSession(SessionInfo info, Invoker invoker = {}) const;

  const std::vector<ChainEntry>& entries() const { return entries_; }
  bool empty() const { return entries_.empty(); }

 private:
  std::vector<ChainEntry> entries_;
  LogFn log_;
};

}  // namespace popgate::filter
