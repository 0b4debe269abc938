#include "bindings/python_runtime.h"

#include <pybind11/embed.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <mutex>
#include <thread>
#include <utility>

#include "bindings/embedded.h"
#include "bindings/option_values.h"
#include "bindings/python_job.h"
#include "bindings/python_plugin.h"
#include "bindings/sync_hook_threads.h"

namespace py = pybind11;

namespace popgate::bindings {

struct PythonRuntime::State {
  int wake_fd = -1;  // eventfd: Submit writes it, the loop reads it
  std::mutex mutex;
  std::deque<std::shared_ptr<PythonJob>> queue;
  std::thread loop;
  py::object runtime;                     // popgate._runtime.Runtime; GIL only
  py::object call_sync;                   // its call_sync, for SyncHookThreads; GIL only
  std::unique_ptr<SyncHookThreads> sync;  // sync hooks' threads, from Run on
  PyThreadState* main_state = nullptr;    // the main thread's, while it has released the GIL
  bool running = false;
  bool stopped = false;
  // Every plugin loaded, in order, for reloads. Written at start-up only.
  struct Loaded {
    ReloadSpec spec;
    std::shared_ptr<PythonPluginFactory> factory;
  };
  std::vector<Loaded> loaded;
};

namespace {

// Where the popgate package is: $POPGATE_PYTHONPATH first, then <executable dir>/python
// (a build tree), then the interpreter's own path (dist-packages, where cmake --install
// puts it).
void AddPackagePath() {
  py::list path = py::module_::import("sys").attr("path");
  std::filesystem::path build_tree =
      std::filesystem::read_symlink("/proc/self/exe").parent_path() / "python";
  if (std::filesystem::exists(build_tree / "popgate")) path.insert(0, build_tree.string());
  if (const char* extra = std::getenv("POPGATE_PYTHONPATH"); extra && *extra) {
    std::string_view rest(extra);
    std::size_t at = 0;
    while (!rest.empty()) {
      std::size_t colon = rest.find(':');
      std::string_view entry = rest.substr(0, colon);
      if (!entry.empty()) path.insert(static_cast<py::ssize_t>(at++), std::string(entry));
      if (colon == std::string_view::npos) break;
      rest.remove_prefix(colon + 1);
    }
  }
}

}  // namespace

PythonRuntime::PythonRuntime(Settings settings)
    : settings_(std::move(settings)), state_(std::make_unique<State>()) {
  state_->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (state_->wake_fd < 0) throw std::system_error(errno, std::generic_category(), "eventfd");
  // popgate handles its own signals (SIGTERM, SIGHUP): Python installs none.
  py::initialize_interpreter(/*init_signal_handlers=*/false);
  SetEmbeddedRuntime(this);
  try {
    AddPackagePath();
    py::module_ runtime = py::module_::import("popgate._runtime");
    state_->runtime = runtime.attr("Runtime")();
    state_->call_sync = state_->runtime.attr("call_sync");
  } catch (py::error_already_set& e) {
    std::string what = e.what();
    throw PythonPluginError("cannot start Python: " + what);
  }
}

PythonRuntime::~PythonRuntime() {
  try {
    Stop();
  } catch (...) {  // nothing left to tell at exit
  }
  if (state_->wake_fd >= 0) close(state_->wake_fd);
}

std::shared_ptr<filter::PluginFactory> PythonRuntime::Load(const std::string& name,
                                                           const std::string& use,
                                                           const std::string& class_name,
                                                           const filter::Options& options) {
  py::tuple loaded;
  try {
    loaded = state_->runtime.attr("load")(use, class_name, OptionsToDict(options));
  } catch (py::error_already_set& e) {
    // The runtime formats the traceback of what the plugin raised into the exception's text.
    throw PythonPluginError(py::str(e.value()).cast<std::string>());
  }
  PythonPluginInfo info;
  info.name = name;
  info.index = loaded[0].cast<int>();
  info.needs = loaded[1].cast<std::string>() == "headers" ? filter::Needs::kHeaders
                                                          : filter::Needs::kWholeMessage;
  for (py::handle hook : loaded[2]) info.hooks.insert(hook.cast<std::string>());
  for (py::handle hook : loaded[3]) info.async_hooks.insert(hook.cast<std::string>());
  auto factory = std::make_shared<PythonPluginFactory>(*this, std::move(info));
  state_->loaded.push_back({{use, class_name, options}, factory});
  return factory;
}

void PythonRuntime::Reload() {
  auto job = std::make_shared<PythonJob>();
  job->kind = PythonJob::Kind::kReload;
  Submit(std::move(job));
}

std::vector<PythonRuntime::ReloadSpec> PythonRuntime::ReloadSpecs() const {
  std::vector<ReloadSpec> specs;
  for (const auto& loaded : state_->loaded) specs.push_back(loaded.spec);
  return specs;
}

void PythonRuntime::Reloaded(std::size_t position, int index, const std::string& needs,
                             const std::vector<std::string>& hooks,
                             const std::vector<std::string>& async_hooks) {
  if (position >= state_->loaded.size()) return;
  PythonPluginFactory& factory = *state_->loaded[position].factory;
  PythonPluginInfo info;
  info.index = index;
  info.needs = needs == "headers" ? filter::Needs::kHeaders : filter::Needs::kWholeMessage;
  info.hooks.insert(hooks.begin(), hooks.end());
  info.async_hooks.insert(async_hooks.begin(), async_hooks.end());
  const filter::PluginTraits now{info.needs, HooksOf(info), filter::Execution::kAsync};
  const filter::PluginTraits before = factory.traits();
  if (now.needs != before.needs || now.hooks.session != before.hooks.session ||
      now.hooks.command != before.hooks.command || now.hooks.message != before.hooks.message ||
      now.hooks.message_done != before.hooks.message_done) {
    Log(2, "python plugin " + std::string(factory.name()) +
               ": the reloaded code needs or hooks differently; the chain keeps what it had "
               "at start-up until popgate restarts");
  }
  factory.Replace(std::move(info));
}

void PythonRuntime::Run() {
  if (state_->running) return;
  state_->running = true;
  state_->sync = std::make_unique<SyncHookThreads>(
      settings_.sync_threads,
      [this](const std::shared_ptr<PythonJob>& job) {  // a worker, GIL held
        RunSyncJob(state_->call_sync, job);
      },
      [](PythonJob& job) {  // the watchdog, no GIL
        if (job.Claim() && job.done) std::exchange(job.done, {})(filter::CallStatus::kTimeout, {});
      });
  py::object runtime = state_->runtime;
  const int fd = state_->wake_fd;
  state_->loop = std::thread([this, runtime, fd] {
    py::gil_scoped_acquire gil;
    try {
      runtime.attr("serve")(fd);
    } catch (py::error_already_set& e) {
      Log(3, std::string("python runtime stopped: ") + e.what());
    }
  });
  // Rule 2: the main thread lets go of the GIL for good (until Stop).
  state_->main_state = PyEval_SaveThread();
}

void PythonRuntime::Submit(std::shared_ptr<PythonJob> job) {
  if (job->kind == PythonJob::Kind::kHook && job->sync && state_->sync) {
    const auto timeout = std::chrono::duration_cast<std::chrono::steady_clock::duration>(
        std::chrono::duration<double>(job->timeout_seconds));
    return state_->sync->Submit(std::move(job), std::chrono::steady_clock::now() + timeout);
  }
  {
    std::lock_guard lock(state_->mutex);
    if (state_->stopped) {
      // After Stop: no Python to run it. The chain hears of it, as of any failure.
      if (job->kind == PythonJob::Kind::kHook && job->Claim() && job->done) {
        job->done(filter::CallStatus::kException, "the Python runtime has stopped");
      }
      return;
    }
    state_->queue.push_back(std::move(job));
  }
  const std::uint64_t one = 1;
  // Nonblocking: a full counter (2^64 - 2 wakes unread) still wakes the loop.
  [[maybe_unused]] ssize_t written = write(state_->wake_fd, &one, sizeof one);
}

std::vector<std::shared_ptr<PythonJob>> PythonRuntime::TakeJobs() {
  std::uint64_t count = 0;
  [[maybe_unused]] ssize_t read_bytes = read(state_->wake_fd, &count, sizeof count);
  std::lock_guard lock(state_->mutex);
  std::vector<std::shared_ptr<PythonJob>> jobs(std::make_move_iterator(state_->queue.begin()),
                                               std::make_move_iterator(state_->queue.end()));
  state_->queue.clear();
  return jobs;
}

void PythonRuntime::Stop() {
  if (state_->stopped) return;
  bool finalize = true;
  if (state_->running) {
    auto stop = std::make_shared<PythonJob>();
    stop->kind = PythonJob::Kind::kStop;
    Submit(stop);
    if (state_->loop.joinable()) state_->loop.join();  // done() ran there
    // Without the GIL: a worker needs it to end. One stuck in a given-up hook keeps
    // Python in use, so the interpreter stays up until the process exits.
    if (!state_->sync->Stop(std::chrono::seconds(1))) {
      static_cast<void>(state_->sync.release());  // the stuck worker still refers to it
      finalize = false;
      Log(2,
          "a sync Python hook given up after its timeout is still running; Python is "
          "left as it is at exit");
    }
    PyEval_RestoreThread(state_->main_state);
    state_->main_state = nullptr;
  }
  {
    std::lock_guard lock(state_->mutex);
    state_->stopped = true;
  }
  // Calls still queued can't run any more: they fail (their sessions are gone by now).
  for (auto& job : TakeJobs()) {
    if (job->kind == PythonJob::Kind::kHook && job->Claim() && job->done) {
      job->done(filter::CallStatus::kException, "the Python runtime has stopped");
    }
  }
  state_->call_sync = py::object();
  state_->runtime = py::object();
  if (!finalize) return;
  SetEmbeddedRuntime(nullptr);
  py::finalize_interpreter();
}

std::size_t PythonRuntime::sync_threads_started() const {
  return state_->sync ? state_->sync->threads_started() : 0;
}

void PythonRuntime::Log(int level, std::string_view line) const {
  if (settings_.log) settings_.log(level, line);
}

}  // namespace popgate::bindings
