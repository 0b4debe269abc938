#pragma once
// The threads sync Python hooks run on: C++ threads that take the GIL themselves.
//
// Why not Python threads fed by the asyncio loop: that path woke the loop thread, which
// armed a timer and woke a pool thread, whose answer woke the loop again to cancel the
// timer; each hop a futex wake and a GIL hand-off, about 50 µs a call on this kind of
// machine. Here the session's thread queues the call and a worker that already holds the
// GIL takes it next; under load the workers never sleep.
//
//  - A woken worker takes the GIL first and only then the queue's calls, one after another
//    while it holds it: a call never waits on one particular thread for the GIL.
//  - Each submit wakes an idle worker, or starts one, up to the bound: a hook that blocks
//    (a socket, time.sleep) lets the GIL go, and the next call runs on the next worker.
//  - The deadlines are watched by one more thread, without the GIL: a call past its
//    timeout is given up (the chain follows on_error) wherever it is, queued or running;
//    a running one finishes on its own thread, its answer dropped.
//  - At the bound, with every worker stuck in a given-up hook, calls wait in the queue and
//    time out there: never more threads than the bound.
//
// Lock order: the GIL, then the queue's mutex; never the other way round (the I/O threads
// and the watchdog never take the GIL).

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

namespace popgate::bindings {

struct PythonJob;

class SyncHookThreads {
 public:
  // Runs one call; on a worker, with the GIL held. Must not throw.
  using Run = std::function<void(const std::shared_ptr<PythonJob>&)>;
  // Gives a call up at its deadline; on the watchdog thread, without the GIL.
  using Expire = std::function<void(PythonJob&)>;

  SyncHookThreads(std::size_t bound, Run run, Expire expire);
  ~SyncHookThreads();
  SyncHookThreads(const SyncHookThreads&) = delete;
  SyncHookThreads& operator=(const SyncHookThreads&) = delete;

  // Queues a call, due by `deadline`. Any thread, GIL not held (it is never taken here).
  void Submit(std::shared_ptr<PythonJob> job, std::chrono::steady_clock::time_point deadline);

  // Stops taking calls and ends the threads. Idle workers end at once; one still inside a
  // hook (given up, stuck) is waited for until `grace` passes. Returns false if any is
  // still inside Python then: the caller must not finalize the interpreter, and must keep
  // this object alive (the worker will touch it when its hook returns). Call it without the
  // GIL.
  bool Stop(std::chrono::milliseconds grace);

  std::size_t bound() const { return bound_; }
  std::size_t threads_started() const;

 private:
  using DeadlineKey = std::pair<std::chrono::steady_clock::time_point, const PythonJob*>;

  void Work();
  void Watch();
  std::shared_ptr<PythonJob> TakeLocked();
  void Spawn();

  const std::size_t bound_;
  const Run run_;
  const Expire expire_;

  mutable std::mutex mutex_;
  std::condition_variable work_ready_;      // workers wait here, without the GIL
  std::condition_variable deadline_moved_;  // the watchdog waits here
  std::condition_variable worker_ended_;    // Stop waits here
  std::deque<std::shared_ptr<PythonJob>> queue_;
  std::map<DeadlineKey, std::shared_ptr<PythonJob>> deadlines_;
  std::vector<std::thread> workers_;
  std::size_t idle_ = 0;     // workers waiting for work
  std::size_t running_ = 0;  // workers not yet ended
  bool stopping_ = false;
  std::thread watchdog_;
};

}  // namespace popgate::bindings
