#pragma once
// A Python plugin as the chain sees it: an Execution::kAsync plugin whose calls go to the
// PythonRuntime. The factory knows the plugin's traits from Python at start-up, so the
// chain never asks Python anything per session; an instance is a few C++ fields.

#include <memory>
#include <mutex>
#include <set>
#include <string>

#include "filter/plugin.h"

namespace popgate::bindings {

class PythonRuntime;

// One loaded generation of a plugin's code: its Python object (by index) and what it
// defines. Sessions hold the generation they started with; when the last of them ends
// after a reload replaced it, the old object's done() is called and it is dropped.
struct PythonPluginInfo {
  std::string name;  // for logs and reports: the `use` of its [[plugin]] table
  int index = 0;     // the runtime's handle for the Python object
  filter::Needs needs = filter::Needs::kWholeMessage;
  std::set<std::string> hooks;        // the Python hook names it defines
  std::set<std::string> async_hooks;  // those of them that are `async def`
};

class PythonPluginFactory final : public filter::PluginFactory {
 public:
  PythonPluginFactory(PythonRuntime& runtime, PythonPluginInfo info);

  std::string_view name() const override { return name_; }
  std::unique_ptr<filter::Plugin> Create() const override;
  // As at start-up: a reload that changes needs or hooks takes effect on restart.
  filter::PluginTraits traits() const override { return traits_; }

  // A reload's new code: new sessions get it; running ones keep theirs.
  void Replace(PythonPluginInfo info);

  struct Generation;

 private:
  PythonRuntime& runtime_;
  std::string name_;
  filter::PluginTraits traits_;
  mutable std::mutex mutex_;
  std::shared_ptr<const Generation> current_;
};

filter::Hooks HooksOf(const PythonPluginInfo& info);

}  // namespace popgate::bindings
