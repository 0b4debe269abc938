#include "filter/shared_object.h"

#include <dlfcn.h>

#include <cstring>
#include <stdexcept>
#include <string_view>
#include <utility>

#include "filter/plugin_export.h"

namespace popgate::filter {
namespace {

using AbiVersionFn = int (*)();
using BuildTagFn = const char* (*)();
using CreateFn = std::shared_ptr<PluginFactory>* (*)(const Options*, std::string*);

std::string LastDlError(std::string_view fallback) {
  const char* text = dlerror();
  return text != nullptr ? std::string(text) : std::string(fallback);
}

using Library = std::shared_ptr<void>;

void* Symbol(const Library& library, const char* name) {
  dlerror();  // clear
  return dlsym(library.get(), name);
}

// A plugin instance from the library; holds the library while it lives (the instance
// goes first: members are destroyed in reverse order).
class LoadedPlugin final : public Plugin {
 public:
  LoadedPlugin(Library library, std::unique_ptr<Plugin> plugin)
      : library_(std::move(library)), plugin_(std::move(plugin)) {}

  std::string_view name() const override { return plugin_->name(); }
  Needs needs() const override { return plugin_->needs(); }
  Hooks hooks() const override { return plugin_->hooks(); }
  Execution execution() const override { return plugin_->execution(); }
  void SessionStart(const SessionInfo& session) override { plugin_->SessionStart(session); }
  CommandDecision OnCommand(const SessionInfo& session, const CommandView& command) override {
    return plugin_->OnCommand(session, command);
  }
  FilterResult OnMessage(const SessionInfo& session, const MessageContext& context,
                         mail::Message& message) override {
    return plugin_->OnMessage(session, context, message);
  }
  void OnMessageDone(const SessionInfo& session, const MessageContext& context,
                     const mail::Message& message, const MessageReport& report) override {
    plugin_->OnMessageDone(session, context, message, report);
  }
  void SessionEnd(const SessionInfo& session) override { plugin_->SessionEnd(session); }
  void Begin(std::shared_ptr<HookCall> call, std::chrono::milliseconds timeout,
             CallDone done) override {
    plugin_->Begin(std::move(call), timeout, std::move(done));
  }

 private:
  Library library_;
  std::unique_ptr<Plugin> plugin_;
};

class LoadedFactory final : public PluginFactory {
 public:
  LoadedFactory(Library library, std::shared_ptr<PluginFactory> factory)
      : library_(std::move(library)), factory_(std::move(factory)), name_(factory_->name()) {}

  std::string_view name() const override { return name_; }
  std::unique_ptr<Plugin> Create() const override {
    std::unique_ptr<Plugin> plugin = factory_->Create();
    if (!plugin) throw std::runtime_error("the plugin's factory made no instance");
    return std::make_unique<LoadedPlugin>(library_, std::move(plugin));
  }

 private:
  Library library_;
  std::shared_ptr<PluginFactory> factory_;
  std::string name_;  // a copy: the factory's own may point into the library
};

}  // namespace

std::shared_ptr<PluginFactory> LoadSharedObjectPlugin(const std::string& path,
                                                      const Options& options) {
  if (path.empty()) throw std::invalid_argument("expected a path after \"so:\"");
  // Without a '/', dlopen would search the library path; this is a file name.
  const std::string file = path.find('/') == std::string::npos ? "./" + path : path;

  dlerror();  // glibc keeps its text per thread
  void* handle = dlopen(file.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    throw std::invalid_argument("cannot load: " + LastDlError(file + ": dlopen failed"));
  }
  Library library(handle, [](void* h) { dlclose(h); });

  auto abi_version = reinterpret_cast<AbiVersionFn>(Symbol(library, "popgate_plugin_abi_version"));
  if (abi_version == nullptr) {
    throw std::invalid_argument("not a popgate plugin (no popgate_plugin_abi_version)");
  }
  const int version = abi_version();
  if (version != POPGATE_PLUGIN_ABI_VERSION) {
    throw std::invalid_argument("built for plugin ABI " + std::to_string(version) +
                                ", popgate has " + std::to_string(POPGATE_PLUGIN_ABI_VERSION));
  }
  auto build_tag = reinterpret_cast<BuildTagFn>(Symbol(library, "popgate_plugin_build_tag"));
  if (build_tag == nullptr) {
    throw std::invalid_argument("not a popgate plugin (no popgate_plugin_build_tag)");
  }
  const char* tag = build_tag();
  if (tag == nullptr || std::strcmp(tag, POPGATE_PLUGIN_BUILD_TAG) != 0) {
    throw std::invalid_argument(std::string("built with \"") + (tag ? tag : "") +
                                "\", popgate with \"" + POPGATE_PLUGIN_BUILD_TAG +
                                "\" (rebuild it against the same C++ library as popgate)");
  }
  auto create = reinterpret_cast<CreateFn>(Symbol(library, "popgate_plugin_create_v1"));
  if (create == nullptr) {
    throw std::invalid_argument("not a popgate plugin (no popgate_plugin_create_v1)");
  }
  std::string error;
  std::unique_ptr<std::shared_ptr<PluginFactory>> made(create(&options, &error));
  if (!made || !*made) {
    throw std::invalid_argument(error.empty() ? "the plugin made no factory" : error);
  }
  std::shared_ptr<PluginFactory> factory = std::move(*made);
  made.reset();
  return std::make_shared<LoadedFactory>(std::move(library), std::move(factory));
}

}  // namespace popgate::filter
