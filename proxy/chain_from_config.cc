#include "chain_from_config.h"

#include <stdexcept>
#include <string>
#include <string_view>

#include "filter/registry.h"
#include "filter/shared_object.h"

namespace popgate {
namespace {

// `use = "so:/path/libx.so"`: a plugin loaded from a shared object.
constexpr std::string_view kSharedObjectPrefix = "so:";

// The keys every [[plugin]] table may have, whatever the plugin; the rest is its own.
filter::ChainEntry CommonSettings(filter::Options& options) {
  filter::ChainEntry entry;
  std::string on_error = filter::OptionString(options, "on_error", "pass");
  if (on_error == "tempfail") {
    entry.on_error = filter::ErrorPolicy::kTempFail;
  } else if (on_error != "pass") {
    throw std::invalid_argument("on_error: expected \"pass\" or \"tempfail\", got \"" + on_error +
                                "\"");
  }
  entry.timeout = std::chrono::seconds(filter::OptionInteger(options, "timeout", 30, 1, 3600));
  options.erase("on_error");
  options.erase("timeout");
  return entry;
}

}  // namespace

bool IsPythonPlugin(std::string_view use) {
  return use.starts_with("python:") || use.ends_with(".py");
}

filter::FilterChain ChainFromConfig(const config::Config& config, filter::LogFn log,
                                    const PythonLoader& python) {
  std::vector<filter::ChainEntry> entries;
  for (const auto& spec : config.plugins) {
    const std::string where = spec.origin + ": plugin " + spec.use;
    filter::BuiltinFactory build;
    if (spec.use.starts_with(kSharedObjectPrefix)) {
      std::string path = spec.use.substr(kSharedObjectPrefix.size());
      build = [path](const filter::Options& options) {
        return filter::LoadSharedObjectPlugin(path, options);
      };
    } else if (IsPythonPlugin(spec.use) && python) {
      build = [&python, &spec](const filter::Options& options) { return python(spec, options); };
    } else {
      build = filter::FindBuiltin(spec.use);
    }
    if (!build) {
      std::string known;
      for (const auto& name : filter::BuiltinNames()) known += (known.empty() ? "" : ", ") + name;
      throw std::invalid_argument(
          where + ": unknown plugin (built in: " + known +
          "; a shared object is \"so:/path/libx.so\"; Python: \"file.py\" or "
          "\"python:package.module\")");
    }
    filter::Options options = spec.options;
    try {
      filter::ChainEntry entry = CommonSettings(options);
      // The plugin's own timeout option, if it has one, is its own; the chain's is kept.
      entry.factory = build(options);
      entries.push_back(std::move(entry));
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(where + ": " + e.what());
    }
  }
  return filter::FilterChain(std::move(entries), std::move(log));
}

}  // namespace popgate
