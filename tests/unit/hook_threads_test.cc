// HookThreads: the chain's HookExecutor for worker plugins. Hooks run on its threads with a time
// limit; a hook that overruns is given up, not waited for.

#include "filter/hook_threads.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <thread>
#include <vector>

namespace popgate::filter {
namespace {

using std::chrono::milliseconds;

TEST(HookThreadsTest, RunsTheCallAndReportsItFinished) {
  HookThreads threads;
  int value = 0;
  EXPECT_TRUE(threads.Run([&] { value = 42; }, milliseconds(5000)));
  EXPECT_EQ(value, 42);
}

// Submit returns at once: nobody waits. An overrunning call is completed as given up by
// the watchdog at its timeout, and never completed again when it returns later.
TEST(HookThreadsTest, SubmitCompletesOnceGivenUpAtTheTimeout) {
  HookThreads threads;
  std::promise<void> release;
  auto released = release.get_future().share();
  std::atomic<int> completions{0};
  std::promise<bool> first;
  auto first_result = first.get_future();
  const auto start = std::chrono::steady_clock::now();
  threads.Submit([released] { released.wait(); }, milliseconds(100),
                 [&](bool finished) {
                   if (completions.fetch_add(1) == 0) first.set_value(finished);
                 });
  EXPECT_LT(std::chrono::steady_clock::now() - start, milliseconds(50));  // did not wait
  EXPECT_FALSE(first_result.get());
  const auto waited = std::chrono::steady_clock::now() - start;
  EXPECT_GE(waited, milliseconds(100));
  EXPECT_LT(waited, milliseconds(2000));
  release.set_value();
  // The stuck call returns; its thread is idle again and runs the next call.
  EXPECT_TRUE(threads.Run([] {}, milliseconds(5000)));
  EXPECT_EQ(completions.load(), 1);
}

// Many calls in flight at once, each completed from its own thread: the session side
// never parks a thread per call.
TEST(HookThreadsTest, SubmittedCallsCompleteWithoutAWaitingCaller) {
  HookThreads threads;
  std::atomic<int> done{0};
  std::promise<void> all;
  constexpr int kCalls = 200;
  for (int i = 0; i < kCalls; ++i) {
    threads.Submit([] {}, milliseconds(10000),
                   [&](bool finished) {
                     EXPECT_TRUE(finished);
                     if (done.fetch_add(1) + 1 == kCalls) all.set_value();
                   });
  }
  ASSERT_EQ(all.get_future().wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_EQ(done.load(), kCalls);
  EXPECT_LE(threads.threads(), static_cast<std::size_t>(kCalls));
}

TEST(HookThreadsTest, RunsOnAnotherThread) {
  HookThreads threads;
  std::thread::id ran_on;
  ASSERT_TRUE(threads.Run([&] { ran_on = std::this_thread::get_id(); }, milliseconds(5000)));
  EXPECT_NE(ran_on, std::this_thread::get_id());
}

TEST(HookThreadsTest, GivesUpAfterTheTimeoutWithoutWaitingForTheCall) {
  HookThreads threads;
  std::promise<void> release;
  auto released = release.get_future().share();
  auto started = std::chrono::steady_clock::now();
  bool finished = threads.Run([released] { released.wait(); }, milliseconds(200));
  auto waited = std::chrono::steady_clock::now() - started;
  EXPECT_FALSE(finished);
  EXPECT_GE(waited, milliseconds(200));
  EXPECT_LT(waited, milliseconds(3000));
  // The stuck thread is not handed the next call: a new one takes it.
  EXPECT_TRUE(threads.Run([] {}, milliseconds(5000)));
  EXPECT_EQ(threads.threads(), 2u);
  release.set_value();
}

TEST(HookThreadsTest, ReusesIdleThreads) {
  HookThreads threads;
  for (int i = 0; i < 200; ++i) ASSERT_TRUE(threads.Run([] {}, milliseconds(5000)));
  EXPECT_EQ(threads.threads(), 1u);
}

TEST(HookThreadsTest, ConcurrentCallersEachGetTheirCallRun) {
  HookThreads threads;
  std::atomic<int> count{0};
  std::vector<std::thread> callers;
  for (int c = 0; c < 8; ++c) {
    callers.emplace_back([&] {
      for (int i = 0; i < 100; ++i) {
        if (threads.Run([&] { count.fetch_add(1); }, milliseconds(10000))) continue;
        ADD_FAILURE() << "a call was given up";
      }
    });
  }
  for (auto& caller : callers) caller.join();
  EXPECT_EQ(count.load(), 800);
  // Threads are reused, not one per call: never more than the calls outstanding at once,
  // here one per caller (a bound the accounting guarantees, however the threads interleave).
  EXPECT_LE(threads.threads(), 8u);
}

TEST(HookThreadsTest, RefusesWhenEveryThreadIsTaken) {
  HookThreads threads(1);
  std::promise<void> release;
  auto released = release.get_future().share();
  EXPECT_FALSE(threads.Run([released] { released.wait(); }, milliseconds(50)));
  bool ran = false;
  EXPECT_THROW(threads.Run([&] { ran = true; }, milliseconds(50)), std::runtime_error);
  EXPECT_FALSE(ran);
  release.set_value();
}

TEST(HookThreadsTest, AGivenUpCallKeepsWhatItCapturedAlive) {
  std::promise<void> release;
  auto released = release.get_future().share();
  auto data = std::make_shared<std::vector<int>>(1000, 7);
  std::weak_ptr<std::vector<int>> watch = data;
  std::atomic<int> sum{0};
  {
    HookThreads threads;
    EXPECT_FALSE(threads.Run(
        [released, data = std::move(data), &sum] {
          released.wait();
          for (int v : *data) sum += v;
        },
        milliseconds(50)));
  }  // HookThreads gone; the call is still running
  EXPECT_FALSE(watch.expired());
  release.set_value();
  for (int i = 0; i < 500 && !watch.expired(); ++i) std::this_thread::sleep_for(milliseconds(10));
  EXPECT_TRUE(watch.expired());
  EXPECT_EQ(sum.load(), 7000);
}

}  // namespace
}  // namespace popgate::filter
