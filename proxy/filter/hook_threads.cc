#include "filter/hook_threads.h"

#include <stdexcept>
#include <thread>
#include <utility>

namespace popgate::filter {
namespace {

// One call and its completion, shared by the caller and the thread that runs it: a
// caller that gives up leaves, and the thread still finds what it needs here.
struct Task {
  std::function<void()> call;
  std::mutex mutex;
  std::condition_variable finished_cv;
  bool finished = false;
};

}  // namespace

// Shared with every thread, so a thread stuck in a hook outlives HookThreads safely.
struct HookThreads::Shared {
  std::mutex mutex;
  std::condition_variable work_cv;
  std::deque<std::shared_ptr<Task>> queue;
  std::size_t threads = 0;
  std::size_t idle = 0;
  std::size_t max_threads = 0;
  bool stopping = false;
};

namespace {

void WorkerLoop(const std::shared_ptr<HookThreads::Shared>& shared);

}  // namespace

HookThreads::HookThreads(std::size_t max_threads) : shared_(std::make_shared<Shared>()) {
  shared_->max_threads = max_threads == 0 ? 1 : max_threads;
}

HookThreads::~HookThreads() {
  std::lock_guard lock(shared_->mutex);
  shared_->stopping = true;
  shared_->work_cv.notify_all();
}

std::size_t HookThreads::threads() const {
  std::lock_guard lock(shared_->mutex);
  return shared_->threads;
}

bool HookThreads::Run(std::function<void()> call, std::chrono::milliseconds timeout) {
  auto task = std::make_shared<Task>();
  task->call = std::move(call);
  {
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
    shared_->queue.push_back(task);
    shared_->work_cv.notify_one();
  }
  std::unique_lock lock(task->mutex);
  return task->finished_cv.wait_for(lock, timeout, [&] { return task->finished; });
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
    // Idle again before the caller hears of it, so its next call finds this thread.
    lock.lock();
    ++shared->idle;
    lock.unlock();
    {
      std::lock_guard done(task->mutex);
      task->finished = true;
    }
    task->finished_cv.notify_one();
    task.reset();  // what the call captured dies here, not under the lock
    lock.lock();
  }
  --shared->idle;
  --shared->threads;
}

}  // namespace
}  // namespace popgate::filter
