#include "bindings/python_plugin.h"

#include <utility>

#include "bindings/python_job.h"
#include "bindings/python_runtime.h"

namespace popgate::bindings {
namespace {

const char* PythonName(filter::HookCall::Hook hook) {
  switch (hook) {
    case filter::HookCall::Hook::kSessionStart:
      return "session_start";
    case filter::HookCall::Hook::kCommand:
      return "command";
    case filter::HookCall::Hook::kMessage:
      return "message";
    case filter::HookCall::Hook::kMessageDone:
      return "message_done";
    case filter::HookCall::Hook::kSessionEnd:
      return "session_end";
  }
  return "";
}

}  // namespace

struct PythonPluginFactory::Generation {
  Generation(PythonRuntime& r, PythonPluginInfo i) : runtime(r), info(std::move(i)) {}
  // The last session on this code is over and a reload replaced it: done(), then drop it.
  ~Generation() {
    if (!retired) return;
    auto job = std::make_shared<PythonJob>();
    job->kind = PythonJob::Kind::kRetire;
    job->plugin = info.index;
    runtime.Submit(std::move(job));
  }
  PythonRuntime& runtime;
  PythonPluginInfo info;
  mutable bool retired = false;  // set under the factory's mutex when replaced
};

filter::Hooks HooksOf(const PythonPluginInfo& info) {
  return {.session = info.hooks.contains("session_start") || info.hooks.contains("session_end"),
          .command = info.hooks.contains("command"),
          .message = info.hooks.contains("message"),
          .message_done = info.hooks.contains("message_done")};
}

namespace {

// One session's life in Python for one plugin: its Session object (and session.data)
// lives there until this goes, which is when the session is over for the plugin *and* its
// last call has ended (every job holds it): a forget can't overtake a call still queued
// for a sync thread, nor a retire (done(), the old code dropped) a call on the old code.
struct SessionInPython {
  SessionInPython(PythonRuntime& r, std::shared_ptr<const PythonPluginFactory::Generation> c,
                  std::uint64_t id)
      : runtime(r), code(std::move(c)), session_id(id) {}
  ~SessionInPython() {
    auto job = std::make_shared<PythonJob>();
    job->kind = PythonJob::Kind::kForget;
    job->plugin = code->info.index;
    job->session_id = session_id;
    runtime.Submit(std::move(job));  // takes no GIL: fine from any thread
  }
  PythonRuntime& runtime;
  std::shared_ptr<const PythonPluginFactory::Generation> code;
  std::uint64_t session_id;
};

class PythonPlugin final : public filter::Plugin {
 public:
  PythonPlugin(PythonRuntime& runtime, std::shared_ptr<const PythonPluginFactory::Generation> code,
               filter::PluginTraits traits)
      : runtime_(runtime), code_(std::move(code)), traits_(traits) {}

  std::string_view name() const override { return code_->info.name; }
  filter::Needs needs() const override { return traits_.needs; }
  filter::Hooks hooks() const override { return traits_.hooks; }
  filter::Execution execution() const override { return filter::Execution::kAsync; }

  void Begin(std::shared_ptr<filter::HookCall> call, std::chrono::milliseconds timeout,
             filter::CallDone done) override {
    const char* hook = PythonName(call->hook);
    // SessionStart and SessionEnd come as a pair: a plugin may define only one of them
    // (and code loaded by a reload may lack a hook the chain knows of).
    if (!code_->info.hooks.contains(hook)) return done(filter::CallStatus::kOk, {});
    if (!in_python_) {
      in_python_ = std::make_shared<SessionInPython>(runtime_, code_, call->session->id);
    }
    auto job = std::make_shared<PythonJob>();
    job->plugin = code_->info.index;
    job->hook = hook;
    job->sync = !code_->info.async_hooks.contains(hook);
    job->call = std::move(call);
    job->timeout_seconds = std::chrono::duration<double>(timeout).count();
    job->session_id = in_python_->session_id;
    job->owner = in_python_;
    job->done = std::move(done);
    runtime_.Submit(std::move(job));
  }

 private:
  PythonRuntime& runtime_;
  std::shared_ptr<const PythonPluginFactory::Generation> code_;
  filter::PluginTraits traits_;
  std::shared_ptr<SessionInPython> in_python_;  // from the first call on
};

}  // namespace

PythonPluginFactory::PythonPluginFactory(PythonRuntime& runtime, PythonPluginInfo info)
    : runtime_(runtime),
      name_(info.name),
      traits_{info.needs, HooksOf(info), filter::Execution::kAsync},
      current_(std::make_shared<const Generation>(runtime, std::move(info))) {}

std::unique_ptr<filter::Plugin> PythonPluginFactory::Create() const {
  std::lock_guard lock(mutex_);
  return std::make_unique<PythonPlugin>(runtime_, current_, traits_);
}

void PythonPluginFactory::Replace(PythonPluginInfo info) {
  info.name = name_;
  auto next = std::make_shared<const Generation>(runtime_, std::move(info));
  std::shared_ptr<const Generation> old;
  {
    std::lock_guard lock(mutex_);
    old = std::move(current_);
    old->retired = true;
    current_ = std::move(next);
  }
  // `old` goes when its last session does (maybe here).
}

}  // namespace popgate::bindings
