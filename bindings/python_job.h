#pragma once
// One hook call on its way to Python, shared by the session side (PythonPlugin), the queue
// (PythonRuntime) and the Python thread that carries it out (the embedded module's _Job).

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "filter/plugin.h"

namespace popgate::bindings {

struct PythonJob {
  enum class Kind {
    kHook,    // call `hook` of plugin `plugin`
    kForget,  // the session `session_id` is over for `plugin`: drop its Session object
    kStop,    // call done() of every plugin and stop the loop
    kRetire,  // a reload replaced plugin `plugin` and its last session is over: done(), drop
    kReload,  // load every plugin's code again (SIGHUP)
  };
  Kind kind = Kind::kHook;
  int plugin = 0;
  std::string hook;  // the Python name: "message", "command", "session_start", ...
  std::shared_ptr<filter::HookCall> call;
  double timeout_seconds = 30;
  std::uint64_t session_id = 0;
  filter::CallDone done;
  // What must outlive the call (the session's life in Python, python_plugin.cc): dropped
  // with the job, wherever its last reference goes.
  std::shared_ptr<const void> owner;
  bool sync = false;  // a sync hook: run on SyncHookThreads, not on the asyncio loop
  std::chrono::steady_clock::time_point deadline;  // a sync hook's; set by SyncHookThreads

  // The call ends once: with its answer, its failure or its timeout, whichever comes
  // first. False if it had ended already.
  bool Claim() { return !claimed_.exchange(true); }
  bool ended() const { return claimed_.load(); }

 private:
  std::atomic<bool> claimed_{false};
};

}  // namespace popgate::bindings
