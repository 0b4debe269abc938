// The Python runtime where threads meet: many "session" threads submit hook calls at once
// (sync hooks on the runtime's pool, async ones on its loop), completions come back on
// Python's threads, instances are dropped while calls are in flight, and a reload replaces
// the code under running calls. Built and run under TSan by scripts/test.sh.
//
// One interpreter per process: every test shares the runtime the environment starts.

#include "bindings/python_runtime.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "filter/plugin.h"
#include "mail/message.h"

namespace popgate::bindings {
namespace {

using namespace std::chrono_literals;

const char* kPlugins = R"(
import asyncio
import time
import popgate

class SyncTagger(popgate.Plugin):
    needs = popgate.HEADERS

    def configure(self, options):
        self.label = options["label"]

    def message(self, session, msg):
        time.sleep(0.001)
        msg.headers.add("X-Sync", f"{self.label} {session.user} {msg.number}")


class AsyncTagger(popgate.Plugin):
    needs = popgate.HEADERS

    async def message(self, session, msg):
        await asyncio.sleep(0.001)
        msg.headers.add("X-Async", str(msg.number))
        if msg.number % 7 == 0:
            return popgate.reject("seven")


class SyncSleeper(popgate.Plugin):
    needs = popgate.HEADERS

    def message(self, session, msg):
        time.sleep(0.6)
        msg.headers.add("X-Late", "yes")


class Sleeper(popgate.Plugin):
    needs = popgate.HEADERS

    async def message(self, session, msg):
        await asyncio.sleep(30)
)";

std::string WritePlugins() {
  std::filesystem::path dir = std::filesystem::temp_directory_path() /
                              ("popgate_runtime_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::filesystem::path file = dir / "tagger.py";
  std::ofstream(file) << kPlugins;
  return file.string();
}

struct Loaded {
  std::unique_ptr<PythonRuntime> runtime;
  std::shared_ptr<filter::PluginFactory> sync, async, sleeper, sync_sleeper;
  std::mutex log_mutex;
  std::vector<std::string> log;
};

Loaded* loaded = nullptr;

class RuntimeEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    loaded = new Loaded;
    PythonRuntime::Settings settings;
    settings.sync_threads = 4;
    settings.log = [](int, std::string_view line) {
      std::lock_guard lock(loaded->log_mutex);
      loaded->log.emplace_back(line);
    };
    loaded->runtime = std::make_unique<PythonRuntime>(std::move(settings));
    std::string file = WritePlugins();
    loaded->sync = loaded->runtime->Load("sync", file, "SyncTagger", {{"label", "L"}});
    loaded->async = loaded->runtime->Load("async", file, "AsyncTagger", {});
    loaded->sleeper = loaded->runtime->Load("sleeper", file, "Sleeper", {});
    loaded->sync_sleeper = loaded->runtime->Load("sync_sleeper", file, "SyncSleeper", {});
    loaded->runtime->Run();
  }
  void TearDown() override {
    loaded->sync.reset();
    loaded->async.reset();
    loaded->sleeper.reset();
    loaded->sync_sleeper.reset();
    loaded->runtime->Stop();
    delete loaded;
  }
};

const auto* const kEnvironment = ::testing::AddGlobalTestEnvironment(new RuntimeEnvironment);

std::shared_ptr<filter::HookCall> MessageCall(std::uint64_t number) {
  auto call = std::make_shared<filter::HookCall>();
  call->hook = filter::HookCall::Hook::kMessage;
  call->session_copy.user = "alice";
  call->session_copy.id = number;
  call->session = &call->session_copy;
  call->context.command = "RETR";
  call->context.number = number;
  call->message.emplace("Subject: hi\r\n\r\nbody\r\n", true);
  return call;
}

// Waits for `count` completions, from whatever thread they arrive on.
class Latch {
 public:
  explicit Latch(int count) : left_(count) {}
  void CountDown() {
    std::lock_guard lock(mutex_);
    if (--left_ == 0) ready_.notify_all();
  }
  bool Wait(std::chrono::seconds limit) {
    std::unique_lock lock(mutex_);
    return ready_.wait_for(lock, limit, [&] { return left_ == 0; });
  }

 private:
  std::mutex mutex_;
  std::condition_variable ready_;
  int left_;
};

TEST(PythonRuntimeTest, TraitsComeFromTheFactoryWithoutASession) {
  filter::PluginTraits traits = loaded->sync->traits();
  EXPECT_EQ(traits.execution, filter::Execution::kAsync);
  EXPECT_EQ(traits.needs, filter::Needs::kHeaders);
  EXPECT_TRUE(traits.hooks.message);
  EXPECT_FALSE(traits.hooks.command);
}

TEST(PythonRuntimeTest, ManyThreadsCallSyncAndAsyncHooksAtOnce) {
  constexpr int kThreads = 8;
  constexpr int kCallsEach = 25;
  Latch latch(kThreads * kCallsEach * 2);
  std::atomic<int> ok{0}, rejected{0}, wrong{0};
  std::vector<std::thread> sessions;
  for (int t = 0; t < kThreads; ++t) {
    sessions.emplace_back([&, t] {
      auto sync = loaded->sync->Create();
      auto async = loaded->async->Create();
      for (int i = 0; i < kCallsEach; ++i) {
        std::uint64_t number = static_cast<std::uint64_t>(t * kCallsEach + i + 1);
        for (filter::Plugin* plugin : {sync.get(), async.get()}) {
          auto call = MessageCall(number);
          bool is_sync = plugin == sync.get();
          plugin->Begin(
              call, 10s, [&, call, number, is_sync](filter::CallStatus status, std::string) {
                std::string head(call->message ? call->message->bytes() : "");
                std::string want = is_sync ? "X-Sync: L alice " + std::to_string(number)
                                           : "X-Async: " + std::to_string(number);
                if (status != filter::CallStatus::kOk || head.find(want) == std::string::npos) {
                  ++wrong;
                } else if (call->result.verdict == filter::Verdict::kReject) {
                  ++rejected;
                } else {
                  ++ok;
                }
                latch.CountDown();
              });
        }
      }
      // The instances go while their calls may still run: the calls hold what they need.
    });
  }
  for (auto& session : sessions) session.join();
  ASSERT_TRUE(latch.Wait(60s));
  EXPECT_EQ(wrong, 0);
  constexpr int kSevens = kThreads * kCallsEach / 7;
  EXPECT_EQ(rejected, kSevens);
  EXPECT_EQ(ok, kThreads * kCallsEach * 2 - kSevens);
}

TEST(PythonRuntimeTest, AnAsyncCallPastItsTimeoutIsCancelledAndReported) {
  auto plugin = loaded->sleeper->Create();
  Latch latch(4);
  std::atomic<int> timeouts{0};
  auto started = std::chrono::steady_clock::now();
  for (int i = 0; i < 4; ++i) {
    plugin->Begin(MessageCall(1), 200ms, [&](filter::CallStatus status, std::string) {
      if (status == filter::CallStatus::kTimeout) ++timeouts;
      latch.CountDown();
    });
  }
  ASSERT_TRUE(latch.Wait(20s));
  EXPECT_EQ(timeouts, 4);
  EXPECT_LT(std::chrono::steady_clock::now() - started, 5s);
}

TEST(PythonRuntimeTest, SyncCallsPastTheirTimeoutAreGivenUpWithinTheThreadBound) {
  // Twice as many stuck calls as threads (the bound is 4): the running ones are given up
  // at their timeout, the queued ones time out in the queue; no thread beyond the bound.
  constexpr int kCalls = 8;
  std::vector<std::unique_ptr<filter::Plugin>> plugins;
  Latch latch(kCalls);
  std::atomic<int> timeouts{0};
  auto started = std::chrono::steady_clock::now();
  for (int i = 0; i < kCalls; ++i) {
    plugins.push_back(loaded->sync_sleeper->Create());
    plugins.back()->Begin(MessageCall(static_cast<std::uint64_t>(i + 1)), 200ms,
                          [&](filter::CallStatus status, std::string) {
                            if (status == filter::CallStatus::kTimeout) ++timeouts;
                            latch.CountDown();
                          });
  }
  ASSERT_TRUE(latch.Wait(20s));
  EXPECT_EQ(timeouts, kCalls);
  EXPECT_LT(std::chrono::steady_clock::now() - started, 550ms);  // before any sleep ended
  EXPECT_LE(loaded->runtime->sync_threads_started(), 4u);
  // The given-up hooks return on their own; then the threads take calls again.
  Latch after(1);
  std::atomic<bool> answered{false};
  auto tagger = loaded->sync->Create();
  tagger->Begin(MessageCall(99), 10s, [&](filter::CallStatus status, std::string) {
    answered = status == filter::CallStatus::kOk;
    after.CountDown();
  });
  ASSERT_TRUE(after.Wait(20s));
  EXPECT_TRUE(answered);
}

TEST(PythonRuntimeTest, AReloadUnderRunningCallsLosesNoCall) {
  constexpr int kCalls = 200;
  Latch latch(kCalls);
  std::atomic<int> ok{0};
  std::thread caller([&] {
    for (int i = 0; i < kCalls; ++i) {
      auto plugin = loaded->sync->Create();
      plugin->Begin(MessageCall(static_cast<std::uint64_t>(i + 1)), 10s,
                    [&](filter::CallStatus status, std::string error) {
                      if (status == filter::CallStatus::kOk) {
                        ++ok;
                      } else {
                        ADD_FAILURE() << "a call failed: " << error;
                      }
                      latch.CountDown();
                    });
    }
  });
  for (int i = 0; i < 3; ++i) {
    loaded->runtime->Reload();
    std::this_thread::sleep_for(20ms);
  }
  caller.join();
  ASSERT_TRUE(latch.Wait(60s));
  EXPECT_EQ(ok, kCalls);
  // Each reload says how it went; wait for the three lines.
  auto deadline = std::chrono::steady_clock::now() + 20s;
  int reloads = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    {
      std::lock_guard lock(loaded->log_mutex);
      reloads = 0;
      for (const auto& line : loaded->log) reloads += line.starts_with("python plugins reloaded");
    }
    if (reloads == 3) break;
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_EQ(reloads, 3);
}

}  // namespace
}  // namespace popgate::bindings
