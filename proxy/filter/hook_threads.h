#pragma once
// Threads that run plugin hooks with a time limit: the chain's HookExecutor for worker
// plugins (Execution::kWorker).
//
// A hook is plain blocking code (a spamd round trip, a web service) that cannot be
// interrupted, so a hook that overruns its timeout is given up rather than stopped: the
// caller goes on, and the thread running it stays with it until it returns. Threads are
// therefore kept in a growing set: a call goes to an idle thread, or to a new one when
// all are busy (some may be stuck in a given-up hook), up to a cap. Idle threads wait
// for work rather than exit, so a hook call costs a hand-off, not a thread start. Nobody
// waits for a call: it ends with a completion, from the thread that ran it, or from the
// watchdog thread when its time is up, whichever comes first.
//
// Pure standard-library code: no Asio, no plugin knowledge.

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>

namespace popgate::filter {

class HookThreads {
 public:
  // At most `max_threads` threads at once, idle, busy and stuck together.
  explicit HookThreads(std::size_t max_threads = 256);
  // Tells the threads to finish; threads still inside a hook end when it returns.
  ~HookThreads();

  HookThreads(const HookThreads&) = delete;
  HookThreads& operator=(const HookThreads&) = delete;

  // Runs `call` on one of the threads and returns at once. `done` is called exactly once:
  // with true on that thread once `call` returned, or with false on the watchdog thread once
  // `timeout` has passed (`call` may still run, and owns what it touches). Throws
  // std::runtime_error, with `call` not started, when every thread is taken.
  void Submit(std::function<void()> call, std::chrono::milliseconds timeout,
              std::function<void(bool finished)> done);
  // Submit, waiting for the completion (tests, tools). True if `call` finished in time.
  bool Run(std::function<void()> call, std::chrono::milliseconds timeout);

  // Threads started so far and still alive (for tests and logs).
  std::size_t threads() const;

  struct Shared;  // the state the threads share; defined in hook_threads.cc

 private:
  std::shared_ptr<Shared> shared_;
};

}  // namespace popgate::filter
