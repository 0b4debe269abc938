#include "filter/hook_threads.h"

#include <atomic>
#include <future>
#include <stdexcept>
#include <thread>
#include <utility>

namespace popgate::filter {
namespace {

using Clock = std::chrono::steady_clock;

}  // namespace

// One call and its completion, shared by the thread that runs it and the watchdog: the
// first to claim it calls `done`.
struct Task {
  std::function<void()> call;
  std::function<void(bool)> done;
  std::atomic<bool> claimed{false};
  // Its entry in Shared::deadlines while it has one (under Shared::mutex).
  std::multimap<Clock::time_point, std::shared_ptr<Task>>::iterator deadline;
  bool has_deadline = false;

  void Complete(bool finished) {
    if (claimed.exchange(true)) return;
    std::function<void(bool)> callback = std::move(done);
    callback(finished);
  }
};

// Shared with every thread, so a thread stuck in a hook outlives HookThreads safely.
struct HookThreads::Shared {
  std::mutex mutex;
  std::condition_variable work_cv;
  std::deque<std::shared_ptr<Task>> queue;
  std::size_t threads = 0;
  std::size_t idle = 0;
  std::size_t max_threads = 0;
  bool stopping = false;
  // The watchdog: calls whose time runs out, earliest first.
  std::multimap<Clock::time_point, std::shared_ptr<Task>> deadlines;
  std::condition_variable watchdog_cv;
  bool watchdog_started = false;
};

namespace {

void WorkerLoop(const std::shared_ptr<HookThreads::Shared>& shared);
void WatchdogLoop(const std::shared_ptr<HookThreads::Shared>& shared);

}  // namespace

HookThreads::HookThreads(std::size_t max_threads) : shared_(std::make_shared<Shared>()) {
  shared_->max_threads = max_threads == 0 ? 1 : max_threads;
}

HookThreads::~HookThreads() {
  std::lock_guard lock(shared_->mutex);
  shared_->stopping = true;
  shared_->work_cv.notify_all();
  shared_->watchdog_cv.notify_all();
}

std::size_t HookThreads::threads() const {
  std::lock_guard lock(shared_->mutex);
  return shared_->threads;
}

void HookThreads::Submit(std::function<void()> call, std::chrono::milliseconds timeout,
                         std::function<void(bool)> done) {
  auto task = std::make_shared<Task>();
  task->call = std::move(call);
  task->done = std::move(done);
  std::lock_guard lock(shared_->mutex);
  // Idle threads may already be claimed by queued tasks.
  if (shared_->idle <= shared_->queue.size()) {
    if (shared_->threads >= shared_->max_threads) {
      throw std::runtime_error("all " + std::to_string(shared_->max_threads) +
                               " plugin threads are busy");
    }
    // Counted idle from now, not from when it first runs: otherwise another caller, in
    // between, would find no idle thread for its task while this one is still starting
    // and start yet another (issue 11: 19 threads for 8 callers under load). So a thread
    // starts only when every idle one is claimed, and there are never more threads than
    // calls outstanding at once (running, given up but still running, or queued).
    ++shared_->threads;
    ++shared_->idle;
    // Detached: it holds `shared`, and ends on `stopping` or stays with a stuck hook.
    std::thread([shared = shared_] { WorkerLoop(shared); }).detach();
  }
  if (!shared_->watchdog_started) {
    shared_->watchdog_started = true;
    std::thread([shared = shared_] { WatchdogLoop(shared); }).detach();
  }
  const bool earliest =
      shared_->deadlines.empty() || Clock::now() + timeout < shared_->deadlines.begin()->first;
  task->deadline = shared_->deadlines.emplace(Clock::now() + timeout, task);
  task->has_deadline = true;
  if (earliest) shared_->watchdog_cv.notify_one();
  shared_->queue.push_back(std::move(task));
  shared_->work_cv.notify_one();
}

bool HookThreads::Run(std::function<void()> call, std::chrono::milliseconds timeout) {
  auto finished = std::make_shared<std::promise<bool>>();
  std::future<bool> result = finished->get_future();
  Submit(std::move(call), timeout, [finished](bool in_time) { finished->set_value(in_time); });
  return result.get();
}

namespace {

void WorkerLoop(const std::shared_ptr<HookThreads::Shared>& shared) {
  std::unique_lock lock(shared->mutex);
  for (;;) {  // counted idle by the caller that started this thread
    shared->work_cv.wait(lock, [&] { return shared->stopping || !shared->queue.empty(); });
    if (shared->queue.empty()) break;  // stopping, nothing left to run
    std::shared_ptr<Task> task = std::move(shared->queue.front());
    shared->queue.pop_front();
    --shared->idle;
    lock.unlock();
    task->call();  // never throws: the chain's calls catch what hooks throw
    // Idle again before anyone hears of it, so the next call finds this thread; and no
    // longer watched.
    lock.lock();
    ++shared->idle;
    if (task->has_deadline) {
      shared->deadlines.erase(task->deadline);
      task->has_deadline = false;
    }
    lock.unlock();
    task->Complete(true);
    task.reset();  // what the call captured dies here, not under the lock
    lock.lock();
  }
  --shared->idle;
  --shared->threads;
}

void WatchdogLoop(const std::shared_ptr<HookThreads::Shared>& shared) {
  std::unique_lock lock(shared->mutex);
  while (!shared->stopping) {
    if (shared->deadlines.empty()) {
      shared->watchdog_cv.wait(lock);
      continue;
    }
    auto first = shared->deadlines.begin();
    // A copy: while this waits, the call may finish and its entry be erased.
    const Clock::time_point when = first->first;
    if (Clock::now() < when) {
      shared->watchdog_cv.wait_until(lock, when);
      continue;
    }
    std::shared_ptr<Task> task = std::move(first->second);
    shared->deadlines.erase(first);
    task->has_deadline = false;
    lock.unlock();
    task->Complete(false);  // given up: its thread stays with it until it returns
    task.reset();
    lock.lock();
  }
}

}  // namespace
}  // namespace popgate::filter
