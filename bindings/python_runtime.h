#pragma once
// Python inside popgate: the interpreter, the plugins loaded into it, and the threads that
// run their hooks (STYLE.md, "The GIL, in five rules").
//
//  - The main thread starts the interpreter, loads and configures the plugins, then
//    releases the GIL for good (Run).
//  - Hook calls reach Python through a queue: Submit, called on an I/O thread, takes a lock,
//    never the GIL. `async def` hooks go to the asyncio loop thread (popgate/_runtime.py),
//    woken by an eventfd; sync hooks to SyncHookThreads, C++ threads that take the GIL
//    themselves (sync_hook_threads.h). Each call ends with its completion, made without
//    the GIL, which resumes the session on its own thread.
//  - Python objects are created and dropped only on Python's threads, with the GIL held.
//  - Stop, in order: (sessions drained, I/O threads joined by the caller) done() of every
//    plugin on the loop, the loop thread joined, the plugins dropped, the interpreter
//    finalized.
//
// No pybind11 in this header: the core and main.cpp see only this.

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "filter/plugin.h"

namespace popgate::bindings {

// A Python plugin that could not be loaded or configured; what() is the traceback.
class PythonPluginError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Where the runtime's log lines go: 0 debug, 1 info, 2 warning, 3 error.
using RuntimeLog = std::function<void(int level, std::string_view line)>;

struct PythonJob;  // one hook call on its way to Python (python_runtime.cc)

class PythonRuntime {
 public:
  struct Settings {
    std::size_t sync_threads =
        32;  // sync hooks' threads (SyncHookThreads); at the bound, calls queue
    RuntimeLog log;
  };

  // Starts the interpreter, on the main thread, before any other thread exists.
  explicit PythonRuntime(Settings settings);
  ~PythonRuntime();  // Stop(), if not called yet
  PythonRuntime(const PythonRuntime&) = delete;
  PythonRuntime& operator=(const PythonRuntime&) = delete;

  // Loads `use` (a .py file or "python:package.module"), makes the Plugin subclass
  // (`class_name`, or the module's only one) and calls its configure() with `options`
  // (typed, as the config has them: they reach Python as native values). Main thread,
  // before Run. Throws PythonPluginError with the traceback. `name` names it in logs.
  std::shared_ptr<filter::PluginFactory> Load(const std::string& name, const std::string& use,
                                              const std::string& class_name,
                                              const filter::Options& options);

  // Starts the loop thread and releases the GIL on this thread for good.
  void Run();
  // Calls done() of every plugin, stops the loop and joins it, drops the plugins and
  // finalizes the interpreter. Main thread; after every session has ended.
  void Stop();

  // Hands one call to Python. Never blocks on Python and never takes the GIL.
  void Submit(std::shared_ptr<PythonJob> job);

  // SIGHUP: loads every plugin's file or module again, as a fresh module, and configures
  // it with the same options. New sessions get the new code; running ones finish on the
  // old, whose done() is called when the last of them ends. A plugin whose new code fails
  // to load keeps its old code; the traceback is logged. Returns at once; any thread.
  void Reload();

  // For the embedded module: what to load again, and what a reload made of plugin
  // `position` (its new Python object's index, needs and hooks).
  struct ReloadSpec {
    std::string use, class_name;
    filter::Options options;
  };
  std::vector<ReloadSpec> ReloadSpecs() const;
  void Reloaded(std::size_t position, int index, const std::string& needs,
                const std::vector<std::string>& hooks, const std::vector<std::string>& async_hooks);

  // For the embedded module (python_runtime.cc): the calls waiting, taken at once.
  std::vector<std::shared_ptr<PythonJob>> TakeJobs();
  void Log(int level, std::string_view line) const;

  // The threads Python runs hooks on, for tests: the loop, and the sync pool's bound.
  std::size_t sync_threads() const { return settings_.sync_threads; }
  std::size_t sync_threads_started() const;

 private:
  struct State;
  Settings settings_;
  std::unique_ptr<State> state_;
};

}  // namespace popgate::bindings
