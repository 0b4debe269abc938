#include "python_plugins.h"

#include <spdlog/spdlog.h>

#include <filesystem>
#include <string>
#include <string_view>

namespace popgate {
namespace {

// "popgate.toml:12" -> "popgate.toml"; "--plugin" has no file.
std::filesystem::path ConfigFileOf(const std::string& origin) {
  std::size_t colon = origin.rfind(':');
  if (origin.starts_with("--") || colon == std::string::npos) return {};
  return origin.substr(0, colon);
}

std::string ResolvedUse(const config::PluginSpec& spec) {
  if (spec.use.starts_with("python:")) return spec.use;
  std::filesystem::path file(spec.use);
  std::filesystem::path config_file = ConfigFileOf(spec.origin);
  if (file.is_relative() && !config_file.empty()) file = config_file.parent_path() / file;
  return file.string();
}

}  // namespace

std::unique_ptr<bindings::PythonRuntime> StartPythonIfConfigured(const config::Config& config) {
  bool wanted = false;
  for (const auto& spec : config.plugins) wanted = wanted || IsPythonPlugin(spec.use);
  if (!wanted) return nullptr;
  bindings::PythonRuntime::Settings settings;
  settings.log = [](int level, std::string_view line) {
    switch (level) {
      case 0:
        return spdlog::debug("{}", line);
      case 1:
        return spdlog::info("{}", line);
      case 2:
        return spdlog::warn("{}", line);
      default:
        return spdlog::error("{}", line);
    }
  };
  return std::make_unique<bindings::PythonRuntime>(std::move(settings));
}

PythonLoader PythonLoaderFor(bindings::PythonRuntime& runtime) {
  return [&runtime](const config::PluginSpec& spec, const filter::Options& options) {
    filter::Options own = options;
    std::string class_name = filter::OptionString(own, "class", "");
    own.erase("class");
    // The chain's: configure() gets the plugin's own options only (DESIGN.md).
    for (auto key : filter::kCommonOptionKeys) own.erase(std::string(key));
    try {
      return runtime.Load(spec.use, ResolvedUse(spec), class_name, own);
    } catch (const bindings::PythonPluginError& error) {
      // Where in the config, and the error itself, on the first line (as for any other
      // plugin); the traceback after it, whole: the plugin's author needs every line.
      std::string_view traceback = error.what();
      while (traceback.ends_with('\n')) traceback.remove_suffix(1);
      std::string_view last = traceback.substr(traceback.rfind('\n') + 1);
      throw bindings::PythonPluginError(spec.origin + ": plugin " + spec.use + ": " +
                                        std::string(last) + "\n" + std::string(traceback));
    }
  };
}

}  // namespace popgate
