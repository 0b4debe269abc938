#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <future>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "filter/chain.h"
#include "filter/hook_threads.h"
#include "filter/registry.h"

namespace popgate::filter {
namespace {

using namespace std::chrono_literals;

const std::string kMessage = "From: a@example.com\r\nSubject: hi\r\n\r\nbody\r\n";

// What the test plugins saw and did, shared by every instance a factory makes.
struct Trace {
  std::mutex mutex;
  std::vector<std::string> events;
  int created = 0;
  void Add(std::string event) {
    std::lock_guard lock(mutex);
    events.push_back(std::move(event));
  }
};

// A plugin made of lambdas, so each test says just what it needs.
struct Behaviour {
  std::function<FilterResult(const MessageContext&, mail::Message&)> message;
  std::function<CommandDecision(const CommandView&)> command;
  std::function<void(const MessageReport&)> done;
  Hooks hooks;
  Needs needs = Needs::kWholeMessage;
  Execution execution = Execution::kWorker;
};

class TestPlugin : public Plugin {
 public:
  TestPlugin(std::string name, Behaviour behaviour, std::shared_ptr<Trace> trace)
      : name_(std::move(name)), behaviour_(std::move(behaviour)), trace_(std::move(trace)) {}

  std::string_view name() const override { return name_; }
  Needs needs() const override { return behaviour_.needs; }
  Hooks hooks() const override { return behaviour_.hooks; }
  Execution execution() const override { return behaviour_.execution; }
  void SessionStart(const SessionInfo& session) override {
    trace_->Add(name_ + ":start:" + session.client_address);
  }
  CommandDecision OnCommand(const SessionInfo&, const CommandView& command) override {
    trace_->Add(name_ + ":command:" + std::string(command.keyword));
    return behaviour_.command ? behaviour_.command(command) : CommandDecision::Allow();
  }
  FilterResult OnMessage(const SessionInfo&, const MessageContext& context,
                         mail::Message& message) override {
    trace_->Add(name_ + ":message:" + context.command);
    return behaviour_.message ? behaviour_.message(context, message) : Verdict::kPass;
  }
  void OnMessageDone(const SessionInfo&, const MessageContext&, const mail::Message&,
                     const MessageReport& report) override {
    trace_->Add(name_ + ":done");
    if (behaviour_.done) behaviour_.done(report);
  }
  void SessionEnd(const SessionInfo& session) override {
    trace_->Add(name_ + ":end:" + session.user);
  }

 private:
  std::string name_;
  Behaviour behaviour_;
  std::shared_ptr<Trace> trace_;
};

class ChainTest : public ::testing::Test {
 protected:
  // Adds a plugin to the chain being built.
  void Use(std::string name, Behaviour behaviour, ErrorPolicy on_error = ErrorPolicy::kPass) {
    auto trace = trace_;
    entries_.push_back({MakeFactory(name,
                                    [name, behaviour, trace]() -> std::unique_ptr<Plugin> {
                                      {
                                        std::lock_guard lock(trace->mutex);
                                        ++trace->created;
                                      }
                                      return std::make_unique<TestPlugin>(name, behaviour, trace);
                                    }),
                        on_error, 30s});
  }

  ChainSession Session(Invoker invoker = {}) {
    chain_ = FilterChain(entries_, [this](std::string_view line) { log_.emplace_back(line); });
    {
      // The chain made one instance per factory to learn its traits: count only sessions'.
      std::lock_guard lock(trace_->mutex);
      trace_->created = 0;
    }
    SessionInfo info;
    info.id = 7;
    info.client_address = "192.0.2.1:1234";
    info.upstream = "pop.example.com:110";
    ChainSession session = chain_.NewSession(std::move(info), std::move(invoker));
    EXPECT_TRUE(session.Start());
    return session;
  }

  static MessageContext Retr(std::uint64_t number = 1) {
    MessageContext context;
    context.command = "RETR";
    context.number = number;
    return context;
  }

  std::vector<std::string> Events() {
    std::lock_guard lock(trace_->mutex);
    return trace_->events;
  }
  void ClearEvents() {
    std::lock_guard lock(trace_->mutex);
    trace_->events.clear();
  }

  std::shared_ptr<Trace> trace_ = std::make_shared<Trace>();
  std::vector<ChainEntry> entries_;
  FilterChain chain_;
  std::vector<std::string> log_;
};

Behaviour AddHeader(std::string name, std::string value) {
  Behaviour b;
  b.message = [name, value](const MessageContext&, mail::Message& message) {
    message.headers().Add(name, value);
    return FilterResult::Pass();
  };
  return b;
}

Behaviour Returns(FilterResult result) {
  Behaviour b;
  b.message = [result](const MessageContext&, mail::Message&) { return result; };
  return b;
}

TEST_F(ChainTest, PassWithoutChangesLeavesTheOriginal) {
  Use("a", Returns(Verdict::kPass));
  ChainSession session = Session();
  mail::Message message(kMessage);
  MessageReport report = session.RunMessage(Retr(), message);
  EXPECT_EQ(report.result.verdict, Verdict::kPass);
  EXPECT_EQ(report.decided_by, "");
  EXPECT_FALSE(message.modified());
  EXPECT_EQ(message.bytes().data(), message.original().data());
  ASSERT_EQ(report.runs.size(), 1u);
  EXPECT_EQ(report.runs[0].plugin, "a");
  EXPECT_EQ(report.runs[0].verdict, Verdict::kPass);
  EXPECT_EQ(report.runs[0].failure, PluginRun::Failure::kNone);
  EXPECT_EQ(report.size_in, kMessage.size());
  EXPECT_EQ(report.size_out, kMessage.size());
  EXPECT_TRUE(log_.empty());
}

TEST_F(ChainTest, PassModified) {
  Use("tag", AddHeader("X-Spam-Flag", "YES"));
  ChainSession session = Session();
  mail::Message message(kMessage);
  MessageReport report = session.RunMessage(Retr(), message);
  EXPECT_EQ(report.result.verdict, Verdict::kPass);
  EXPECT_EQ(message.bytes(),
            "From: a@example.com\r\nSubject: hi\r\nX-Spam-Flag: YES\r\n\r\nbody\r\n");
  EXPECT_EQ(report.size_out, kMessage.size() + 18);
}

TEST_F(ChainTest, TempFail) {
  Use("a", Returns(FilterResult::TempFail("spamd busy")));
  ChainSession session = Session();
  mail::Message message(kMessage);
  MessageReport report = session.RunMessage(Retr(), message);
  EXPECT_EQ(report.result.verdict, Verdict::kTempFail);
  EXPECT_EQ(report.result.reason, "spamd busy");
  EXPECT_EQ(report.decided_by, "a");
  EXPECT_EQ(report.runs[0].verdict, Verdict::kTempFail);
}

TEST_F(ChainTest, Reject) {
  Use("virus", Returns(FilterResult::Reject("Eicar-Test-Signature\r\nInjected: 1")));
  ChainSession session = Session();
  mail::Message message(kMessage);
  MessageReport report = session.RunMessage(Retr(), message);
  EXPECT_EQ(report.result.verdict, Verdict::kReject);
  // One line, whatever the plugin said.
  EXPECT_EQ(report.result.reason, "Eicar-Test-Signature  Injected: 1");
  EXPECT_EQ(report.decided_by, "virus");
  EXPECT_EQ(message.original(), kMessage);
}

TEST_F(ChainTest, VerdictWithoutReasonGetsOne) {
  Use("policy", Returns(Verdict::kReject));
  ChainSession session = Session();
  mail::Message message(kMessage);
  EXPECT_EQ(session.RunMessage(Retr(), message).result.reason, "reject by policy");
}

TEST_F(ChainTest, PluginsRunInOrderOnTheSameMessage) {
  Use("a", AddHeader("X-A", "1"));
  Behaviour b;
  b.message = [](const MessageContext&, mail::Message& message) {
    // A's header is visible to B.
    message.headers().Add("X-B", "saw " + message.headers().Get("x-a").value_or("nothing"));
    return FilterResult::Pass();
  };
  Use("b", b);
  ChainSession session = Session();
  mail::Message message(kMessage);
  MessageReport report = session.RunMessage(Retr(), message);
  EXPECT_EQ(report.result.verdict, Verdict::kPass);
  EXPECT_EQ(message.bytes(),
            "From: a@example.com\r\nSubject: hi\r\nX-A: 1\r\nX-B: saw 1\r\n\r\nbody\r\n");
  ASSERT_EQ(report.runs.size(), 2u);
  EXPECT_EQ(report.runs[0].plugin, "a");
  EXPECT_EQ(report.runs[1].plugin, "b");
  EXPECT_EQ(Events(), (std::vector<std::string>{"a:start:192.0.2.1:1234", "b:start:192.0.2.1:1234",
                                                "a:message:RETR", "b:message:RETR"}));
}

TEST_F(ChainTest, FirstRejectStopsTheChain) {
  Use("a", AddHeader("X-A", "1"));
  Use("b", Returns(FilterResult::Reject("policy")));
  Use("c", AddHeader("X-C", "1"));
  ChainSession session = Session();
  ClearEvents();
  mail::Message message(kMessage);
  MessageReport report = session.RunMessage(Retr(), message);
  EXPECT_EQ(report.result.verdict, Verdict::kReject);
  EXPECT_EQ(report.decided_by, "b");
  EXPECT_EQ(report.runs.size(), 2u);
  EXPECT_EQ(Events(), (std::vector<std::string>{"a:message:RETR", "b:message:RETR"}));
}

TEST_F(ChainTest, FirstTempFailStopsTheChain) {
  Use("a", Returns(FilterResult::TempFail("later")));
  Use("b", AddHeader("X-B", "1"));
  ChainSession session = Session();
  ClearEvents();
  mail::Message message(kMessage);
  EXPECT_EQ(session.RunMessage(Retr(), message).result.verdict, Verdict::kTempFail);
  EXPECT_EQ(Events(), (std::vector<std::string>{"a:message:RETR"}));
}

Behaviour Strips() {
  Behaviour b;
  b.message = [](const MessageContext&, mail::Message& message) {
    message.Replace("From: a@example.com\r\nSubject: hi\r\n\r\n[removed]\r\n");
    return FilterResult::Quarantine("attachment removed");
  };
  return b;
}

TEST_F(ChainTest, AQuarantineGoesOnThroughTheChainWithTheEditedMessage) {
  Use("guard", Strips());
  Use("tag", AddHeader("X-Tag", "1"));
  Use("second", Returns(FilterResult::Quarantine("also asks")));
  ChainSession session = Session();
  ClearEvents();
  mail::Message message(kMessage);
  MessageReport report = session.RunMessage(Retr(), message);
  EXPECT_EQ(report.result.verdict, Verdict::kQuarantine);
  EXPECT_EQ(report.result.reason, "attachment removed");  // the first to ask keeps the say
  EXPECT_EQ(report.decided_by, "guard");
  EXPECT_EQ(message.bytes(), "From: a@example.com\r\nSubject: hi\r\nX-Tag: 1\r\n\r\n[removed]\r\n");
  EXPECT_EQ(message.original(), kMessage);  // what the quarantine will store
  EXPECT_EQ(report.size_out, message.size());
  ASSERT_EQ(report.runs.size(), 3u);
  EXPECT_EQ(report.runs[0].verdict, Verdict::kQuarantine);
  EXPECT_EQ(report.runs[1].verdict, Verdict::kPass);
  EXPECT_EQ(Events(), (std::vector<std::string>{"guard:message:RETR", "tag:message:RETR",
                                                "second:message:RETR"}));
}

TEST_F(ChainTest, ALaterRejectOrTempFailOverridesAQuarantine) {
  Use("guard", Strips());
  Use("virus", Returns(FilterResult::Reject("Eicar")));
  ChainSession session = Session();
  mail::Message message(kMessage);
  MessageReport report = session.RunMessage(Retr(), message);
  EXPECT_EQ(report.result.verdict, Verdict::kReject);
  EXPECT_EQ(report.decided_by, "virus");

  entries_.clear();
  Use("guard", Strips());
  Use("busy", Returns(FilterResult::TempFail("later")));
  ChainSession second = Session();
  mail::Message again(kMessage);
  MessageReport report2 = second.RunMessage(Retr(), again);
  EXPECT_EQ(report2.result.verdict, Verdict::kTempFail);
  EXPECT_EQ(report2.decided_by, "busy");
}

Behaviour EditsThenThrows() {
  Behaviour b;
  b.message = [](const MessageContext&, mail::Message& message) -> FilterResult {
    message.headers().Add("X-Half", "done");
    message.headers().Remove("Subject");
    throw std::runtime_error("spamd: connection refused");
  };
  return b;
}

TEST_F(ChainTest, ExceptionWithPassPolicyRestoresTheMessageAndContinues) {
  Use("a", AddHeader("X-A", "1"));
  Use("broken", EditsThenThrows(), ErrorPolicy::kPass);
  Behaviour c;
  c.message = [](const MessageContext&, mail::Message& message) {
    // C sees the message as it was before the broken plugin.
    EXPECT_TRUE(message.headers().Has("X-A"));
    EXPECT_TRUE(message.headers().Has("Subject"));
    EXPECT_FALSE(message.headers().Has("X-Half"));
    message.headers().Add("X-C", "1");
    return FilterResult::Pass();
  };
  Use("c", c);
  ChainSession session = Session();
  mail::Message message(kMessage);
  MessageReport report = session.RunMessage(Retr(3), message);
  EXPECT_EQ(report.result.verdict, Verdict::kPass);
  EXPECT_EQ(message.bytes(),
            "From: a@example.com\r\nSubject: hi\r\nX-A: 1\r\nX-C: 1\r\n\r\nbody\r\n");
  ASSERT_EQ(report.runs.size(), 3u);
  EXPECT_EQ(report.runs[1].plugin, "broken");
  EXPECT_EQ(report.runs[1].failure, PluginRun::Failure::kException);
  EXPECT_EQ(report.runs[1].verdict, Verdict::kPass);
  ASSERT_EQ(log_.size(), 1u);  // logged once, with the plugin's name
  EXPECT_NE(log_[0].find("session 7 plugin broken failed in RETR 3: spamd: connection refused"),
            std::string::npos)
      << log_[0];
  EXPECT_NE(log_[0].find("on_error=pass"), std::string::npos);
}

TEST_F(ChainTest, ExceptionWithPassPolicyAsTheOnlyPluginLeavesTheOriginal) {
  Use("broken", EditsThenThrows(), ErrorPolicy::kPass);
  ChainSession session = Session();
  mail::Message message(kMessage);
  EXPECT_EQ(session.RunMessage(Retr(), message).result.verdict, Verdict::kPass);
  EXPECT_FALSE(message.modified());
  EXPECT_EQ(message.bytes(), kMessage);
}

TEST_F(ChainTest, ExceptionWithTempFailPolicyGivesTempFail) {
  Use("broken", EditsThenThrows(), ErrorPolicy::kTempFail);
  Use("after", AddHeader("X-After", "1"));
  ChainSession session = Session();
  ClearEvents();
  mail::Message message(kMessage);
  MessageReport report = session.RunMessage(Retr(), message);
  EXPECT_EQ(report.result.verdict, Verdict::kTempFail);
  EXPECT_EQ(report.result.reason, "filter broken failed");
  EXPECT_EQ(report.decided_by, "broken");
  EXPECT_EQ(report.runs.back().failure, PluginRun::Failure::kException);
  EXPECT_EQ(Events(), (std::vector<std::string>{"broken:message:RETR"}));
  EXPECT_FALSE(message.modified());
  ASSERT_EQ(log_.size(), 1u);
  EXPECT_NE(log_[0].find("on_error=tempfail"), std::string::npos);
}

TEST_F(ChainTest, NonStandardExceptionIsCaughtToo) {
  Behaviour b;
  b.message = [](const MessageContext&, mail::Message&) -> FilterResult { throw 42; };
  Use("odd", b, ErrorPolicy::kTempFail);
  ChainSession session = Session();
  mail::Message message(kMessage);
  EXPECT_EQ(session.RunMessage(Retr(), message).result.verdict, Verdict::kTempFail);
  ASSERT_EQ(log_.size(), 1u);
  EXPECT_NE(log_[0].find("unknown exception"), std::string::npos);
}

// An invoker that gives up on calls to the plugins named in `hang` without running them,
// as a real one would after their timeout, and runs the others.
Invoker GivesUpOn(std::shared_ptr<std::vector<std::string>> timeouts,
                  std::shared_ptr<std::atomic<bool>> hang) {
  return [timeouts, hang](std::function<void()> call, std::chrono::milliseconds timeout) {
    if (*hang) {
      timeouts->push_back(std::to_string(timeout.count()));
      return false;
    }
    call();
    return true;
  };
}

TEST_F(ChainTest, TimeoutWithPassPolicyContinuesAndMakesAFreshInstance) {
  Use("slow", AddHeader("X-Slow", "1"), ErrorPolicy::kPass);
  auto timeouts = std::make_shared<std::vector<std::string>>();
  auto hang = std::make_shared<std::atomic<bool>>(false);
  ChainSession session = Session(GivesUpOn(timeouts, hang));
  EXPECT_EQ(trace_->created, 1);

  *hang = true;
  mail::Message first(kMessage);
  MessageReport report = session.RunMessage(Retr(1), first);
  EXPECT_EQ(report.result.verdict, Verdict::kPass);
  EXPECT_EQ(report.runs[0].failure, PluginRun::Failure::kTimeout);
  EXPECT_FALSE(first.modified());
  EXPECT_EQ(*timeouts, (std::vector<std::string>{"30000"}));
  ASSERT_EQ(log_.size(), 1u);
  EXPECT_NE(log_[0].find("plugin slow timed out (30000 ms) in RETR 1"), std::string::npos);

  // The next message gets a new instance, started first.
  *hang = false;
  ClearEvents();
  mail::Message second(kMessage);
  EXPECT_EQ(session.RunMessage(Retr(2), second).result.verdict, Verdict::kPass);
  EXPECT_TRUE(second.headers().Has("X-Slow"));
  EXPECT_EQ(trace_->created, 2);
  EXPECT_EQ(Events(), (std::vector<std::string>{"slow:start:192.0.2.1:1234", "slow:message:RETR"}));
}

TEST_F(ChainTest, TimeoutWithTempFailPolicyGivesTempFail) {
  Use("slow", AddHeader("X-Slow", "1"), ErrorPolicy::kTempFail);
  auto timeouts = std::make_shared<std::vector<std::string>>();
  auto hang = std::make_shared<std::atomic<bool>>(false);
  ChainSession session = Session(GivesUpOn(timeouts, hang));
  *hang = true;
  mail::Message message(kMessage);
  MessageReport report = session.RunMessage(Retr(), message);
  EXPECT_EQ(report.result.verdict, Verdict::kTempFail);
  EXPECT_EQ(report.result.reason, "filter slow timed out");
  EXPECT_EQ(report.runs[0].failure, PluginRun::Failure::kTimeout);
}

// A real worker thread: the plugin blocks past its timeout, the chain moves on, and the
// session and message are gone before the plugin returns. Nothing it touches may dangle
// (run under ASan to see it).
TEST_F(ChainTest, AbandonedCallOutlivesTheSession) {
  auto gate = std::make_shared<std::promise<void>>();
  std::shared_future<void> released = gate->get_future().share();
  Behaviour b;
  b.message = [released](const MessageContext& context, mail::Message& message) {
    released.wait();
    message.headers().Add("X-Late", context.command + " " + std::string(message.body()));
    return FilterResult::Pass();
  };
  Use("stuck", b, ErrorPolicy::kPass);

  std::vector<std::thread> workers;
  Invoker invoker = [&workers](std::function<void()> call, std::chrono::milliseconds) {
    auto done = std::make_shared<std::promise<void>>();
    std::future<void> finished = done->get_future();
    workers.emplace_back([call = std::move(call), done] {
      call();
      done->set_value();
    });
    return finished.wait_for(50ms) == std::future_status::ready;
  };
  {
    ChainSession session = Session(invoker);  // SessionStart runs (and returns) at once
    mail::Message message(kMessage);
    MessageReport report = session.RunMessage(Retr(), message);
    EXPECT_EQ(report.runs[0].failure, PluginRun::Failure::kTimeout);
    EXPECT_FALSE(message.modified());
    session.End();
  }
  gate->set_value();
  for (std::thread& worker : workers) worker.join();
  EXPECT_EQ(trace_->created, 1);
}

// The invoker popgate runs with: hook threads that give up on a call after its plugin's
// timeout. The chain goes on at once; the stuck call finishes later on its own thread
// (run under TSan to see the hand-over).
TEST_F(ChainTest, HookThreadsGiveUpOnASlowPluginAndTheNextMessageGetsAFreshInstance) {
  auto gate = std::make_shared<std::promise<void>>();
  std::shared_future<void> released = gate->get_future().share();
  Behaviour b;
  b.message = [released](const MessageContext&, mail::Message& message) {
    released.wait();
    message.headers().Add("X-Slow", "done");
    return FilterResult::Pass();
  };
  Use("slow", b, ErrorPolicy::kPass);
  entries_.back().timeout = 100ms;
  HookThreads threads;
  Invoker invoker = [&threads](std::function<void()> call, std::chrono::milliseconds timeout) {
    return threads.Run(std::move(call), timeout);
  };
  ChainSession session = Session(invoker);
  mail::Message first(kMessage);
  auto started = std::chrono::steady_clock::now();
  MessageReport report = session.RunMessage(Retr(1), first);
  EXPECT_LT(std::chrono::steady_clock::now() - started, 2s);
  EXPECT_EQ(report.runs[0].failure, PluginRun::Failure::kTimeout);
  EXPECT_FALSE(first.modified());

  gate->set_value();
  mail::Message second(kMessage);
  report = session.RunMessage(Retr(2), second);
  EXPECT_EQ(report.runs[0].failure, PluginRun::Failure::kNone);
  EXPECT_TRUE(second.headers().Has("X-Slow"));
  EXPECT_EQ(trace_->created, 2);
  session.End();
}

// Inline plugins are called directly, never through the invoker (which may block, and
// the caller may be an I/O thread); the chain runs inline only if all of them are.
TEST_F(ChainTest, InlinePluginsBypassTheInvoker) {
  Behaviour quick = AddHeader("X-Quick", "1");
  quick.execution = Execution::kInline;
  Use("quick", quick);
  int invoked = 0;
  Invoker counting = [&invoked](std::function<void()> call, std::chrono::milliseconds) {
    ++invoked;
    call();
    return true;
  };
  ChainSession session = Session(counting);
  EXPECT_TRUE(session.runs_inline());
  mail::Message message(kMessage);
  EXPECT_EQ(session.RunMessage(Retr(), message).result.verdict, Verdict::kPass);
  EXPECT_TRUE(message.headers().Has("X-Quick"));
  EXPECT_EQ(invoked, 0);

  Use("worker", AddHeader("X-Worker", "1"));
  ChainSession mixed = Session(counting);
  EXPECT_FALSE(mixed.runs_inline());
  mail::Message second(kMessage);
  mixed.RunMessage(Retr(), second);
  EXPECT_TRUE(second.headers().Has("X-Quick"));
  EXPECT_TRUE(second.headers().Has("X-Worker"));
  EXPECT_GE(invoked, 1);  // the worker plugin's calls (SessionStart, OnMessage)
}

TEST_F(ChainTest, UnavailablePluginWithPassPolicyIsSkipped) {
  entries_.push_back({MakeFactory("gone",
                                  []() -> std::unique_ptr<Plugin> {
                                    throw std::runtime_error("cannot open database");
                                  }),
                      ErrorPolicy::kPass, 30s});
  Use("b", AddHeader("X-B", "1"));
  ChainSession session = Session();
  ASSERT_EQ(log_.size(), 1u);
  EXPECT_NE(log_[0].find("plugin gone could not be created: cannot open database"),
            std::string::npos);
  mail::Message message(kMessage);
  MessageReport report = session.RunMessage(Retr(), message);
  EXPECT_EQ(report.result.verdict, Verdict::kPass);
  EXPECT_TRUE(message.headers().Has("X-B"));
  EXPECT_EQ(report.runs[0].failure, PluginRun::Failure::kUnavailable);
  EXPECT_EQ(session.RunCommand(CommandView{"DELE", {}, false}).decision.kind(),
            CommandDecision::Kind::kAllow);
  EXPECT_EQ(log_.size(), 1u);
}

TEST_F(ChainTest, FactoryThrowingANonStandardExceptionMakesThePluginUnavailable) {
  entries_.push_back(
      {MakeFactory("odd", []() -> std::unique_ptr<Plugin> { throw 1; }), ErrorPolicy::kPass, 30s});
  ChainSession session = Session();
  ASSERT_EQ(log_.size(), 1u);
  EXPECT_NE(log_[0].find("plugin odd could not be created: unknown exception"), std::string::npos);
  mail::Message message(kMessage);
  EXPECT_EQ(session.RunMessage(Retr(), message).result.verdict, Verdict::kPass);
}

TEST_F(ChainTest, UnavailablePluginWithTempFailPolicyRefuses) {
  entries_.push_back({MakeFactory("gone", []() -> std::unique_ptr<Plugin> { return nullptr; }),
                      ErrorPolicy::kTempFail, 30s});
  chain_ = FilterChain(entries_, [this](std::string_view line) { log_.emplace_back(line); });
  ChainSession session = chain_.NewSession({});
  EXPECT_FALSE(session.Start());
  EXPECT_TRUE(session.wants_commands());
  mail::Message message(kMessage);
  MessageReport report = session.RunMessage(Retr(), message);
  EXPECT_EQ(report.result.verdict, Verdict::kTempFail);
  EXPECT_EQ(report.decided_by, "gone");
  CommandOutcome outcome = session.RunCommand(CommandView{"DELE", {}, false});
  EXPECT_EQ(outcome.decision.kind(), CommandDecision::Kind::kDeny);
  EXPECT_EQ(outcome.decision.text().rfind("[SYS/TEMP] ", 0), 0u);
}

TEST_F(ChainTest, CommandDeny) {
  Behaviour keep;
  keep.command = [](const CommandView& command) {
    return command.keyword == "DELE" ? CommandDecision::Deny("messages stay on the server")
                                     : CommandDecision::Allow();
  };
  Use("keep_on_server", keep);
  Use("other", {});
  ChainSession session = Session();
  ClearEvents();
  std::vector<std::string> args = {"1"};
  CommandOutcome outcome = session.RunCommand(CommandView{"DELE", args, false});
  EXPECT_EQ(outcome.decision.kind(), CommandDecision::Kind::kDeny);
  EXPECT_EQ(outcome.decision.text(), "messages stay on the server");
  EXPECT_EQ(outcome.decided_by, "keep_on_server");
  // The first deny wins: "other" is not asked.
  EXPECT_EQ(Events(), (std::vector<std::string>{"keep_on_server:command:DELE"}));

  outcome = session.RunCommand(CommandView{"RETR", args, false});
  EXPECT_EQ(outcome.decision.kind(), CommandDecision::Kind::kAllow);
  EXPECT_EQ(outcome.decided_by, "");
}

TEST_F(ChainTest, CommandRewrite) {
  Behaviour rewrite;
  rewrite.command = [](const CommandView& command) {
    return command.keyword == "TOP" ? CommandDecision::Rewrite("RETR " + command.args[0])
                                    : CommandDecision::Allow();
  };
  Use("rewrite", rewrite);
  Behaviour deny;
  deny.command = [](const CommandView&) { return CommandDecision::Deny("never asked"); };
  Use("deny", deny);
  ChainSession session = Session();
  std::vector<std::string> args = {"4", "0"};
  CommandOutcome outcome = session.RunCommand(CommandView{"TOP", args, false});
  EXPECT_EQ(outcome.decision.kind(), CommandDecision::Kind::kRewrite);
  EXPECT_EQ(outcome.decision.text(), "RETR 4");
  EXPECT_EQ(outcome.decided_by, "rewrite");
}

TEST_F(ChainTest, CommandDecisionWithLineBreakIsAFailure) {
  Behaviour smuggle;
  smuggle.command = [](const CommandView&) { return CommandDecision::Rewrite("NOOP\r\nDELE 1"); };
  Use("smuggle", smuggle, ErrorPolicy::kTempFail);
  ChainSession session = Session();
  CommandOutcome outcome = session.RunCommand(CommandView{"NOOP", {}, false});
  EXPECT_EQ(outcome.decision.kind(), CommandDecision::Kind::kDeny);
  EXPECT_EQ(outcome.decision.text().rfind("[SYS/TEMP] ", 0), 0u);
  ASSERT_EQ(log_.size(), 1u);
  EXPECT_NE(log_[0].find("invalid decision"), std::string::npos);
}

TEST_F(ChainTest, CommandDenyReplyIsOneLine) {
  Behaviour deny;
  deny.command = [](const CommandView&) { return CommandDecision::Deny(""); };
  Use("deny", deny);
  ChainSession session = Session();
  EXPECT_EQ(session.RunCommand(CommandView{"DELE", {}, false}).decision.text(), "command refused");
}

TEST_F(ChainTest, CommandExceptionWithPassPolicyAllows) {
  Behaviour broken;
  broken.command = [](const CommandView&) -> CommandDecision { throw std::runtime_error("x"); };
  Use("broken", broken, ErrorPolicy::kPass);
  ChainSession session = Session();
  EXPECT_EQ(session.RunCommand(CommandView{"DELE", {}, false}).decision.kind(),
            CommandDecision::Kind::kAllow);
  EXPECT_EQ(log_.size(), 1u);
}

TEST(ViewOfTest, SecretsAreWithheld) {
  auto pass = std::get<pop3::Command>(pop3::ParseCommand("PASS hunter2"));
  CommandView view = ViewOf(pass);
  EXPECT_EQ(view.keyword, "PASS");
  EXPECT_TRUE(view.secret);
  EXPECT_TRUE(view.args.empty());
  auto dele = std::get<pop3::Command>(pop3::ParseCommand("dele 3"));
  view = ViewOf(dele);
  EXPECT_EQ(view.keyword, "DELE");
  EXPECT_FALSE(view.secret);
  ASSERT_EQ(view.args.size(), 1u);
  EXPECT_EQ(view.args[0], "3");
}

TEST_F(ChainTest, HooksLimitWhatIsCalled) {
  Behaviour only_messages = AddHeader("X-A", "1");
  only_messages.hooks = {
      .session = false, .command = false, .message = true, .message_done = false};
  Use("a", only_messages);
  ChainSession session = Session();
  EXPECT_FALSE(session.wants_commands());
  EXPECT_TRUE(session.wants_messages());
  session.RunCommand(CommandView{"DELE", {}, false});
  mail::Message message(kMessage);
  MessageReport report = session.RunMessage(Retr(), message);
  session.ReportMessage(Retr(), message, report);
  session.End();
  EXPECT_EQ(Events(), (std::vector<std::string>{"a:message:RETR"}));
}

// issue 11: audit_log alone (OnMessageDone only) got no message records because the
// chain said it wanted no messages, so the core never ran it on one.
TEST_F(ChainTest, AReportOnlyPluginWantsMessages) {
  Behaviour report_only;
  report_only.hooks = {.session = true, .command = false, .message = false, .message_done = true};
  Use("audit", report_only);
  ChainSession session = Session();
  ASSERT_TRUE(session.Start());
  EXPECT_TRUE(session.wants_messages());
  EXPECT_FALSE(session.wants_commands());
  EXPECT_EQ(session.needs(), Needs::kHeaders);  // nobody edits: the header block will do
}

TEST_F(ChainTest, ACommandOnlyPluginWantsNoMessages) {
  Behaviour commands_only;
  commands_only.hooks = {
      .session = false, .command = true, .message = false, .message_done = false};
  Use("keep", commands_only);
  ChainSession session = Session();
  ASSERT_TRUE(session.Start());
  EXPECT_FALSE(session.wants_messages());
  EXPECT_TRUE(session.wants_commands());
}

TEST_F(ChainTest, NeedsOfTheChain) {
  Behaviour headers_only;
  headers_only.needs = Needs::kHeaders;
  Use("a", headers_only);
  {
    ChainSession session = Session();
    EXPECT_EQ(session.needs(), Needs::kHeaders);
  }
  Use("b", {});  // needs the whole message
  ChainSession session = Session();
  EXPECT_EQ(session.needs(), Needs::kWholeMessage);
}

TEST_F(ChainTest, NeedsIgnoresPluginsWithoutMessageHook) {
  Behaviour headers_only;
  headers_only.needs = Needs::kHeaders;
  Use("a", headers_only);
  Behaviour commands_only;
  commands_only.hooks.message = false;
  Use("b", commands_only);
  ChainSession session = Session();
  EXPECT_EQ(session.needs(), Needs::kHeaders);
}

TEST_F(ChainTest, EmptyChain) {
  ChainSession session = Session();
  EXPECT_FALSE(session.wants_commands());
  EXPECT_FALSE(session.wants_messages());
  EXPECT_EQ(session.needs(), Needs::kHeaders);
  mail::Message message(kMessage);
  EXPECT_EQ(session.RunMessage(Retr(), message).result.verdict, Verdict::kPass);
  EXPECT_FALSE(message.modified());
}

TEST_F(ChainTest, SessionHooksAndReport) {
  MessageReport seen;
  Behaviour audit;
  audit.done = [&seen](const MessageReport& report) { seen = report; };
  Use("tag", AddHeader("X-Tag", "1"));
  Use("audit", audit);
  ChainSession session = Session();
  session.info().user = "alice";
  mail::Message message(kMessage);
  MessageReport report = session.RunMessage(Retr(), message);
  report.quarantine_id = "none";
  session.ReportMessage(Retr(), message, report);
  session.End();
  session.End();  // once only
  EXPECT_EQ(seen.runs.size(), 2u);
  EXPECT_EQ(seen.quarantine_id, "none");
  EXPECT_EQ(seen.size_out, message.size());
  EXPECT_EQ(Events(),
            (std::vector<std::string>{"tag:start:192.0.2.1:1234", "audit:start:192.0.2.1:1234",
                                      "tag:message:RETR", "audit:message:RETR", "tag:done",
                                      "audit:done", "tag:end:alice", "audit:end:alice"}));
}

TEST_F(ChainTest, TopIsMarkedPartial) {
  Behaviour b;
  b.message = [](const MessageContext& context, mail::Message& message) {
    EXPECT_EQ(context.command, "TOP");
    EXPECT_TRUE(context.partial);
    EXPECT_TRUE(message.partial());
    message.headers().Add("X-Spam-Flag", "NO");
    return FilterResult::Pass();
  };
  Use("a", b);
  ChainSession session = Session();
  MessageContext context;
  context.command = "TOP";
  context.number = 2;
  context.partial = true;
  mail::Message message("From: a\r\n\r\n", /*partial=*/true);
  session.RunMessage(context, message);
  EXPECT_EQ(message.bytes(), "From: a\r\nX-Spam-Flag: NO\r\n\r\n");
}

TEST(FilterChainTest, RejectsBadEntries) {
  std::vector<ChainEntry> no_factory(1);
  EXPECT_THROW(FilterChain{no_factory}, std::invalid_argument);
  auto factory = MakeFactory("x", [] { return std::unique_ptr<Plugin>(); });
  std::vector<ChainEntry> no_time = {ChainEntry{factory, ErrorPolicy::kPass, 0ms}};
  EXPECT_THROW(FilterChain{no_time}, std::invalid_argument);
}

TEST(RegistryTest, RegisterAndFind) {
  RegisterBuiltin("registry_test_plugin", [](const Options& options) {
    if (!options.contains("path")) throw std::invalid_argument("path is required");
    return MakeFactory("registry_test_plugin", [] { return std::unique_ptr<Plugin>(); });
  });
  BuiltinFactory build = FindBuiltin("registry_test_plugin");
  ASSERT_TRUE(build);
  EXPECT_EQ(build({{"path", "/tmp/x"}})->name(), "registry_test_plugin");
  EXPECT_THROW(build({}), std::invalid_argument);
  EXPECT_FALSE(FindBuiltin("no_such_plugin"));
  EXPECT_THROW(RegisterBuiltin("registry_test_plugin", build), std::invalid_argument);
  auto names = BuiltinNames();
  EXPECT_NE(std::find(names.begin(), names.end(), "registry_test_plugin"), names.end());
}

// ---------------------------------------------------------------------------
// The asynchronous chain: hook calls that end on other threads, resumed on the session's.

// The session's thread, as the chain sees it: continuations queue here and run when the
// test says.
class ManualExecutor {
 public:
  Resume resume() {
    return [this](std::function<void()> next) {
      std::lock_guard lock(mutex_);
      queue_.push_back(std::move(next));
      cv_.notify_all();
    };
  }
  // Runs queued continuations until `done()` holds (or 5 s pass).
  bool RunUntil(const std::function<bool()>& done) {
    auto deadline = std::chrono::steady_clock::now() + 5s;
    while (!done()) {
      std::unique_lock lock(mutex_);
      if (!cv_.wait_until(lock, deadline, [&] { return !queue_.empty(); })) return false;
      auto next = std::move(queue_.front());
      queue_.pop_front();
      lock.unlock();
      next();
    }
    return true;
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
};

// A plugin that carries its calls out on a thread of its own, as Python's runtime does.
class AsyncPlugin : public Plugin {
 public:
  struct Shared {
    std::mutex mutex;
    std::vector<std::thread> threads;
    std::vector<std::string> events;
    std::atomic<bool> time_out{false};
  };
  explicit AsyncPlugin(std::shared_ptr<Shared> shared) : shared_(std::move(shared)) {}
  std::string_view name() const override { return "async"; }
  Execution execution() const override { return Execution::kAsync; }
  void Begin(std::shared_ptr<HookCall> call, std::chrono::milliseconds, CallDone done) override {
    std::lock_guard lock(shared_->mutex);
    shared_->threads.emplace_back([shared = shared_, call, done] {
      std::this_thread::sleep_for(20ms);
      if (shared->time_out) return done(CallStatus::kTimeout, {});
      {
        std::lock_guard lock(shared->mutex);
        shared->events.push_back(std::to_string(static_cast<int>(call->hook)));
      }
      if (call->hook == HookCall::Hook::kMessage) {
        call->message->headers().Add("X-Async", call->session->client_address);
        call->result = FilterResult::Pass();
      }
      done(CallStatus::kOk, {});
    });
  }
  ~AsyncPlugin() override = default;

 private:
  std::shared_ptr<Shared> shared_;
};

class AsyncChainTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto shared = shared_;
    chain_ = FilterChain({{MakeFactory("async",
                                       [shared, this]() -> std::unique_ptr<Plugin> {
                                         ++created_;
                                         return std::make_unique<AsyncPlugin>(shared);
                                       }),
                           ErrorPolicy::kPass, 30s}},
                         [this](std::string_view line) { log_.emplace_back(line); });
    created_ = 0;
  }
  void TearDown() override {
    std::vector<std::thread> threads;
    {
      std::lock_guard lock(shared_->mutex);
      threads.swap(shared_->threads);
    }
    for (auto& thread : threads) thread.join();
  }
  std::vector<std::string> Events() {
    std::lock_guard lock(shared_->mutex);
    return shared_->events;
  }
  std::shared_ptr<ChainSession> NewSession() {
    SessionInfo info;
    info.id = 9;
    info.client_address = "[2001:db8::1]:4000";
    return std::make_shared<ChainSession>(
        chain_.NewSession(std::move(info), ChainExecutors{{}, executor_.resume()}));
  }

  std::shared_ptr<AsyncPlugin::Shared> shared_ = std::make_shared<AsyncPlugin::Shared>();
  std::atomic<int> created_{0};
  FilterChain chain_;
  ManualExecutor executor_;
  std::vector<std::string> log_;
};

TEST_F(AsyncChainTest, CallsEndElsewhereAndResumeOnTheSessionsThread) {
  std::shared_ptr<ChainSession> session = NewSession();
  EXPECT_FALSE(session->runs_inline());
  std::optional<bool> started;
  session->StartAsync([&](bool ok) { started = ok; });
  EXPECT_FALSE(started);  // the call is out: nobody waited for it
  ASSERT_TRUE(executor_.RunUntil([&] { return started.has_value(); }));
  EXPECT_TRUE(*started);

  mail::Message message(kMessage);
  MessageContext context;
  context.command = "RETR";
  context.number = 1;
  std::optional<MessageReport> report;
  std::thread::id resumed_on;
  session->RunMessageAsync(context, message, [&](MessageReport r) {
    resumed_on = std::this_thread::get_id();
    report = std::move(r);
  });
  EXPECT_FALSE(report);
  EXPECT_FALSE(message.modified());  // the plugin edits its own copy
  ASSERT_TRUE(executor_.RunUntil([&] { return report.has_value(); }));
  EXPECT_EQ(resumed_on, std::this_thread::get_id());
  EXPECT_EQ(report->result.verdict, Verdict::kPass);
  EXPECT_EQ(message.headers().Get("X-Async"), "[2001:db8::1]:4000");
}

TEST_F(AsyncChainTest, EndDuringAMessageWaitsForIt) {
  std::shared_ptr<ChainSession> session = NewSession();
  bool started = false;
  session->StartAsync([&](bool) { started = true; });
  ASSERT_TRUE(executor_.RunUntil([&] { return started; }));

  auto message = std::make_shared<mail::Message>(kMessage);
  MessageContext context;
  context.command = "TOP";
  std::optional<MessageReport> report;
  session->RunMessageAsync(context, *message, [&, session](MessageReport r) { report = r; });
  bool ended = false;
  session->EndAsync([&] { ended = true; });  // the client went away meanwhile
  ASSERT_TRUE(executor_.RunUntil([&] { return ended; }));
  ASSERT_TRUE(report.has_value());
  // SessionStart, OnMessage, then SessionEnd: never two calls at once, never out of order.
  EXPECT_EQ(Events(), (std::vector<std::string>{"0", "2", "4"}));
  // Once ended, an operation completes at once and calls nothing.
  std::optional<CommandOutcome> outcome;
  session->RunCommandAsync(CommandView{"DELE", {}, false}, [&](CommandOutcome o) { outcome = o; });
  ASSERT_TRUE(outcome.has_value());
  EXPECT_EQ(outcome->decision.kind(), CommandDecision::Kind::kAllow);
}

TEST_F(AsyncChainTest, AnAsyncTimeoutFollowsOnErrorAndTheNextCallGetsAFreshInstance) {
  std::shared_ptr<ChainSession> session = NewSession();
  bool started = false;
  session->StartAsync([&](bool) { started = true; });
  ASSERT_TRUE(executor_.RunUntil([&] { return started; }));
  EXPECT_EQ(created_.load(), 1);
  shared_->time_out = true;
  mail::Message first(kMessage);
  std::optional<MessageReport> report;
  session->RunMessageAsync(MessageContext{"RETR", 1, {}, false}, first,
                           [&](MessageReport r) { report = r; });
  ASSERT_TRUE(executor_.RunUntil([&] { return report.has_value(); }));
  EXPECT_EQ(report->result.verdict, Verdict::kPass);
  ASSERT_EQ(report->runs.size(), 1u);
  EXPECT_EQ(report->runs[0].failure, PluginRun::Failure::kTimeout);
  EXPECT_FALSE(first.modified());
  ASSERT_EQ(log_.size(), 1u);
  EXPECT_NE(log_[0].find("plugin async timed out (30000 ms) in RETR 1"), std::string::npos);

  shared_->time_out = false;
  mail::Message second(kMessage);
  report.reset();
  session->RunMessageAsync(MessageContext{"RETR", 2, {}, false}, second,
                           [&](MessageReport r) { report = r; });
  ASSERT_TRUE(executor_.RunUntil([&] { return report.has_value(); }));
  EXPECT_TRUE(second.headers().Has("X-Async"));
  EXPECT_EQ(created_.load(), 2);
}

// The chain knows each plugin's traits from its factory, before any session starts.
TEST_F(ChainTest, TraitsAreKnownBeforeTheSessionStarts) {
  Behaviour headers_inline;
  headers_inline.needs = Needs::kHeaders;
  headers_inline.execution = Execution::kInline;
  headers_inline.hooks = {
      .session = false, .command = false, .message = true, .message_done = false};
  Use("quick", headers_inline);
  chain_ = FilterChain(entries_);
  ChainSession session = chain_.NewSession(SessionInfo{});
  EXPECT_TRUE(session.runs_inline());
  EXPECT_EQ(session.needs(), Needs::kHeaders);
  EXPECT_TRUE(session.wants_messages());
  EXPECT_FALSE(session.wants_commands());
}

}  // namespace
}  // namespace popgate::filter
