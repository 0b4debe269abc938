#pragma once
// The C++ plugin interface: all a plugin sees of popgate (STYLE.md layering).
//
// A plugin is a class with hook methods, every one optional (mitmproxy's addons; Envoy's
// filters): SessionStart, OnCommand, OnMessage (RETR and TOP), OnMessageDone (after the
// chain, for logging) and SessionEnd. It acts by editing the Message it is handed and by
// what it returns. A PluginFactory is built once from the plugin's configuration at
// start-up (bad options: throw std::invalid_argument, start-up stops with that message)
// and makes one Plugin per client session.
//
// Threads and time: where hooks run is the plugin's execution() (below). Worker hooks are
// plain synchronous calls that may block (a spamd round trip, a web service): the core
// runs them on a hook thread, never on an I/O thread, and gives each call the plugin's
// timeout (default 30 s). Inline hooks run on the session's own I/O thread and must not
// block. Async plugins (Python's runtime) carry each call out on threads of their own and
// say when it is over. The session awaits each call without a thread waiting for it. The
// hooks of one instance are never called concurrently, but may be called from different
// threads, one after another. A call that throws or times out follows the plugin's on_error policy
// ("pass": the message goes on as it was before this plugin; "tempfail": the client gets
// -ERR [SYS/TEMP]) and harms no other session. After a timeout the instance is given up
// (the call may still be running; it keeps the instance and what it was handed alive) and
// the session gets a fresh one from the factory for its next hook. Factories are shared
// by all sessions: Create() may be called from several threads at once.

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "filter/options.h"
#include "mail/message.h"
#include "text/one_line.h"  // replies, reasons and header values are one line: the helpers

namespace popgate::filter {

// What a plugin needs of a message. kHeaders lets the core stream the body through
// without holding it: the plugin then gets the header block and the blank line only,
// marked partial.
enum class Needs { kHeaders, kWholeMessage };

// Where a plugin's hooks run.
//  - kWorker (the default): on a worker thread, each call under the plugin's timeout. For
//    anything that may block or take long: a spamd round trip, a web service, a file.
//  - kInline: directly on the session's I/O thread, with no hand-off between threads. For
//    hooks that only look at or edit what they are handed and return in microseconds (a
//    header added by a rule), never I/O. No timeout applies (nothing could interrupt the
//    call), and a slow inline hook stalls every session on its thread. popgate runs a
//    session's chain inline only when every plugin in it is inline; otherwise all run on
//    workers.
//  - kAsync: the plugin carries each call out itself, on threads of its own, and says when
//    it is over (Plugin::Begin). For runtimes with their own scheduling: Python's runtime
//    runs sync hooks on its bounded thread pool and `async def` hooks on its event loop.
//    The plugin applies the timeout itself.
enum class Execution { kWorker, kInline, kAsync };

// Which hooks a plugin implements. The chain calls only these, saving the core a trip to
// the worker thread for the others; narrow it to what you override.
struct Hooks {
  bool session = true;       // SessionStart, SessionEnd
  bool command = true;       // OnCommand
  bool message = true;       // OnMessage
  bool message_done = true;  // OnMessageDone
};

// The closed set of outcomes for a message (Envoy's FilterStatus).
enum class Verdict {
  kPass,      // deliver it, with whatever changes plugins made
  kTempFail,  // the client gets -ERR [SYS/TEMP]; nothing changes upstream; it will retry
  kReject,    // the original goes to the quarantine, the client gets a short notice
  // The client gets the message as the plugins left it, after the original went to the
  // quarantine (an attachment removed, the original kept). Later plugins still run; a
  // later tempfail or reject overrides it. Added last: ABI 4 plugins keep their values.
  kQuarantine,
};

std::string_view ToString(Verdict verdict);

struct FilterResult {
  FilterResult(Verdict v = Verdict::kPass, std::string why = {})  // NOLINT: implicit on purpose
      : verdict(v), reason(std::move(why)) {}
  static FilterResult Pass() { return {}; }
  static FilterResult TempFail(std::string why) { return {Verdict::kTempFail, std::move(why)}; }
  static FilterResult Reject(std::string why) { return {Verdict::kReject, std::move(why)}; }
  static FilterResult Quarantine(std::string why) { return {Verdict::kQuarantine, std::move(why)}; }

  Verdict verdict;
  // One line for the client and the logs (tempfail, reject). The chain turns CR, LF and
  // NUL into spaces and keeps at most 200 bytes.
  std::string reason;
};

// The session a hook runs in. Secrets never appear here.
struct SessionInfo {
  std::uint64_t id = 0;
  std::string client_address;  // "203.0.113.5:51234", "[2001:db8::1]:51234"
  std::string user;            // empty until the client has logged in
  std::string upstream;        // "pop.example.com:995"
  bool client_tls = false;     // the client's connection is TLS (implicit, or after STLS)
  bool upstream_tls = false;   // the upstream connection is TLS
};

// A client command, as forwarded upstream.
struct CommandView {
  std::string_view keyword;           // upper case: "DELE", "RETR", "USER", ...
  std::span<const std::string> args;  // empty when `secret`
  // The command carries a password or SASL data (PASS, APOP, AUTH): plugins never see
  // its arguments.
  bool secret = false;
};

class CommandDecision {
 public:
  enum class Kind { kAllow, kDeny, kRewrite };

  static CommandDecision Allow() { return CommandDecision(Kind::kAllow, {}); }
  // The command is not forwarded; the client gets "-ERR " + `reply` (one line, no CRLF).
  static CommandDecision Deny(std::string reply) {
    return CommandDecision(Kind::kDeny, std::move(reply));
  }
  // `line` (one command line, no CRLF) is forwarded instead; the core parses and checks
  // it as it would a client's line.
  static CommandDecision Rewrite(std::string line) {
    return CommandDecision(Kind::kRewrite, std::move(line));
  }

  Kind kind() const { return kind_; }
  // The -ERR text for kDeny, the new line for kRewrite.
  const std::string& text() const { return text_; }

 private:
  CommandDecision(Kind kind, std::string text) : kind_(kind), text_(std::move(text)) {}
  Kind kind_;
  std::string text_;
};

// The message a hook is looking at.
struct MessageContext {
  std::string command;              // "RETR" or "TOP"
  std::uint64_t number = 0;         // the message number the client asked for
  std::optional<std::string> uidl;  // when known (UIDL seen or asked for)
  bool partial = false;             // TOP, or a headers-only view: the body may be cut
};

// One plugin's part in a message, for the audit log.
struct PluginRun {
  enum class Failure { kNone, kException, kTimeout, kUnavailable };
  std::string plugin;
  Verdict verdict = Verdict::kPass;  // as returned, or as its on_error made of a failure
  Failure failure = Failure::kNone;  // kUnavailable: no instance (Create failed)
  std::chrono::microseconds elapsed{0};
};

// What the chain made of a message. The core fills in what only it knows (quarantine id,
// the size actually sent) before handing it to OnMessageDone.
struct MessageReport {
  FilterResult result;
  std::string decided_by;       // the plugin behind a tempfail, reject or quarantine
  std::vector<PluginRun> runs;  // in chain order; plugins after a stop don't appear
  std::size_t size_in = 0;      // un-stuffed bytes, as received
  std::size_t size_out = 0;     // un-stuffed bytes, as delivered
  std::string quarantine_id;    // for a reject or quarantine, once stored
};

// One hook call, as the chain hands it to a plugin's executor: what the hook is given,
// and what it answers. Owned by the call: if it is given up after its timeout it can run
// on safely with what it holds.
struct HookCall {
  enum class Hook { kSessionStart, kCommand, kMessage, kMessageDone, kSessionEnd };
  Hook hook = Hook::kSessionStart;
  // What the plugin sees of the session: the chain's own for an inline call, `session_copy`
  // for one on another thread, which may outlive the chain.
  const SessionInfo* session = nullptr;
  SessionInfo session_copy;
  MessageContext context;                // kMessage, kMessageDone
  std::optional<mail::Message> message;  // kMessage: to edit; kMessageDone: as delivered
  std::string keyword;                   // kCommand, as in CommandView
  std::vector<std::string> args;
  bool secret = false;
  MessageReport report;  // kMessageDone
  // The answers: kMessage's verdict, kCommand's decision.
  FilterResult result;
  CommandDecision decision = CommandDecision::Allow();
};

// How an async call ended. kException's text is one line for the log (an async plugin
// logs anything longer, such as a traceback, itself).
enum class CallStatus { kOk, kException, kTimeout };
using CallDone = std::function<void(CallStatus status, std::string error)>;

class Plugin {
 public:
  virtual ~Plugin() = default;

  virtual std::string_view name() const = 0;
  virtual Needs needs() const { return Needs::kWholeMessage; }
  virtual Hooks hooks() const { return {}; }
  virtual Execution execution() const { return Execution::kWorker; }

  virtual void SessionStart(const SessionInfo& /*session*/) {}
  // Commands from the client, before they are forwarded. The first deny or rewrite in
  // the chain wins.
  virtual CommandDecision OnCommand(const SessionInfo& /*session*/,
                                    const CommandView& /*command*/) {
    return CommandDecision::Allow();
  }
  // RETR and TOP. Edit `message` to change what the client gets.
  virtual FilterResult OnMessage(const SessionInfo& /*session*/, const MessageContext& /*context*/,
                                 mail::Message& /*message*/) {
    return Verdict::kPass;
  }
  // After the chain (and the quarantine, for a reject), before delivery.
  virtual void OnMessageDone(const SessionInfo& /*session*/, const MessageContext& /*context*/,
                             const mail::Message& /*message*/, const MessageReport& /*report*/) {}
  virtual void SessionEnd(const SessionInfo& /*session*/) {}

  // Execution::kAsync only: starts `call` (it names the hook) and returns at once. `done`
  // is called exactly once, from any thread, after `call`'s answers are filled in, or with
  // kTimeout once `timeout` has passed (the call may go on; it owns `call`). Must not
  // throw once it has arranged to call `done`.
  virtual void Begin(std::shared_ptr<HookCall> /*call*/, std::chrono::milliseconds /*timeout*/,
                     CallDone done) {
    done(CallStatus::kException, "this plugin has no asynchronous hooks");
  }
};

// What the chain knows of a plugin before any session: what it needs, which hooks it has,
// where they run. So a session that never fetches a message touches no plugin runtime.
struct PluginTraits {
  Needs needs = Needs::kWholeMessage;
  Hooks hooks;
  Execution execution = Execution::kWorker;
};

class PluginFactory {
 public:
  virtual ~PluginFactory() = default;
  virtual std::string_view name() const = 0;
  // One instance per session, made on a worker thread when the session starts (and again
  // after a timeout). May throw: the session then runs without it, as its on_error says.
  // Logs and reports name the plugin by the factory's name().
  virtual std::unique_ptr<Plugin> Create() const = 0;
  // Called once, when the chain is built at start-up. The default asks an instance made
  // for the purpose; a factory that knows them without one overrides it. Every instance
  // must answer needs(), hooks() and execution() the same way.
  virtual PluginTraits traits() const {
    std::unique_ptr<Plugin> probe = Create();
    if (!probe) return {};
    return {probe->needs(), probe->hooks(), probe->execution()};
  }
};

// A factory from a name and a function, for plugins built from a few captured options.
inline std::shared_ptr<PluginFactory> MakeFactory(std::string name,
                                                  std::function<std::unique_ptr<Plugin>()> create) {
  class Factory final : public PluginFactory {
   public:
    Factory(std::string n, std::function<std::unique_ptr<Plugin>()> c)
        : name_(std::move(n)), create_(std::move(c)) {}
    std::string_view name() const override { return name_; }
    std::unique_ptr<Plugin> Create() const override { return create_(); }

   private:
    std::string name_;
    std::function<std::unique_ptr<Plugin>()> create_;
  };
  return std::make_shared<Factory>(std::move(name), std::move(create));
}

inline std::string_view ToString(Verdict verdict) {
  switch (verdict) {
    case Verdict::kPass:
      return "pass";
    case Verdict::kTempFail:
      return "tempfail";
    case Verdict::kReject:
      return "reject";
    case Verdict::kQuarantine:
      return "quarantine";
  }
  return "unknown";
}

}  // namespace popgate::filter
