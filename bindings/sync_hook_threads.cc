#include "bindings/sync_hook_threads.h"

#include <Python.h>

#include "bindings/python_job.h"

namespace popgate::bindings {

SyncHookThreads::SyncHookThreads(std::size_t bound, Run run, Expire expire)
    : bound_(bound == 0 ? 1 : bound), run_(std::move(run)), expire_(std::move(expire)) {
  watchdog_ = std::thread([this] { Watch(); });
}

SyncHookThreads::~SyncHookThreads() { Stop(std::chrono::milliseconds(0)); }

std::size_t SyncHookThreads::threads_started() const {
  std::lock_guard lock(mutex_);
  return workers_.size();
}

void SyncHookThreads::Submit(std::shared_ptr<PythonJob> job,
                             std::chrono::steady_clock::time_point deadline) {
  bool wake_worker = false;
  bool wake_watchdog = false;
  {
    std::lock_guard lock(mutex_);
    if (!stopping_) {
      auto [entry, inserted] = deadlines_.emplace(DeadlineKey{deadline, job.get()}, job);
      // Usually every call has the same timeout, so deadlines come in order and the
      // watchdog, already waiting for an earlier one, needn't be woken.
      wake_watchdog = inserted && entry == deadlines_.begin();
      job->deadline = deadline;
      queue_.emplace_back(std::move(job));
      if (idle_ > 0) {
        wake_worker = true;
      } else if (workers_.size() < bound_) {
        Spawn();
      }
      // else: every worker is busy or stuck; the call waits for one, or for its deadline.
    }
  }
  if (job) {  // still ours: refused after Stop. The chain hears of it as of any failure.
    if (job->Claim() && job->done) {
      std::exchange(job->done, {})(filter::CallStatus::kException,
                                   "the Python runtime has stopped");
    }
    return;
  }
  if (wake_worker) work_ready_.notify_one();
  if (wake_watchdog) deadline_moved_.notify_one();
}

void SyncHookThreads::Spawn() {
  ++running_;
  workers_.emplace_back([this] { Work(); });
}

std::shared_ptr<PythonJob> SyncHookThreads::TakeLocked() {
  while (!queue_.empty()) {
    std::shared_ptr<PythonJob> job = std::move(queue_.front());
    queue_.pop_front();
    if (!job->ended()) return job;
    // Given up while it waited: its deadline entry went with it.
  }
  return nullptr;
}

void SyncHookThreads::Work() {
  // This thread's Python thread state, made once: taking and letting go of the GIL is then
  // a PyEval_RestoreThread / PyEval_SaveThread pair, with nothing allocated per call.
  PyGILState_STATE gil_state = PyGILState_Ensure();
  PyThreadState* thread_state = PyEval_SaveThread();

  std::unique_lock lock(mutex_);
  for (;;) {
    if (queue_.empty() && !stopping_) {
      ++idle_;
      work_ready_.wait(lock, [&] { return !queue_.empty() || stopping_; });
      --idle_;
    }
    if (stopping_) break;
    lock.unlock();
    // The GIL first, then the calls: whoever holds the GIL takes what is queued.
    PyEval_RestoreThread(thread_state);
    lock.lock();
    while (!stopping_) {
      std::shared_ptr<PythonJob> job = TakeLocked();
      if (!job) break;
      lock.unlock();
      run_(job);
      lock.lock();
      // Answered, failed or given up: its deadline no longer matters.
      deadlines_.erase(DeadlineKey{job->deadline, job.get()});
      lock.unlock();
      job.reset();  // may hold the last reference to the call; GIL held, lock not
      lock.lock();
    }
    lock.unlock();
    thread_state = PyEval_SaveThread();
    lock.lock();
  }
  lock.unlock();
  PyEval_RestoreThread(thread_state);
  PyGILState_Release(gil_state);
  lock.lock();
  --running_;
  worker_ended_.notify_all();
}

void SyncHookThreads::Watch() {
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    if (deadlines_.empty()) {
      deadline_moved_.wait(lock);
      continue;
    }
    auto first = deadlines_.begin();
    const auto due = first->first.first;
    if (std::chrono::steady_clock::now() < due) {
      deadline_moved_.wait_until(lock, due);
      continue;
    }
    std::shared_ptr<PythonJob> job = std::move(first->second);
    deadlines_.erase(first);
    lock.unlock();
    expire_(*job);
    job.reset();
    lock.lock();
  }
}

bool SyncHookThreads::Stop(std::chrono::milliseconds grace) {
  std::vector<std::shared_ptr<PythonJob>> left;
  {
    std::lock_guard lock(mutex_);
    if (stopping_ && !watchdog_.joinable()) return running_ == 0;
    stopping_ = true;
    for (auto& job : queue_) left.push_back(std::move(job));
    queue_.clear();
    deadlines_.clear();
  }
  work_ready_.notify_all();
  deadline_moved_.notify_all();
  if (watchdog_.joinable()) watchdog_.join();
  for (auto& job : left) {
    if (job->Claim() && job->done) {
      std::exchange(job->done, {})(filter::CallStatus::kException,
                                   "the Python runtime has stopped");
    }
  }
  bool all_ended = false;
  {
    std::unique_lock lock(mutex_);
    all_ended = worker_ended_.wait_for(lock, grace, [&] { return running_ == 0; });
  }
  for (auto& worker : workers_) {
    if (all_ended) {
      worker.join();
    } else {
      worker.detach();  // inside a hook that never returned; see the header
    }
  }
  workers_.clear();
  return all_ended;
}

}  // namespace popgate::bindings
