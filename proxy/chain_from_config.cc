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
filter::ChainEntry CommonSettings(const filter::Options& options) {
  filter::ChainEntry entry;
  std::string on_error = filter::OptionString(options, "on_error", "pass");
  if (on_error == "tempfail") {
    entry.on_error = filter::ErrorPolicy::kTempFail;
  } else if (on_error != "pass") {
    throw std::invalid_argument("on_error: expected \"pass\" or \"tempfail\", got \"" + on_error +
                                "\"");
  }
  entry.timeout = std::chrono::seconds(filter::OptionInteger(options, "timeout", 30, 1, 3600));
  // Both stay in the options: a plugin may bound its own work by the same timeout
  // (spam_tag's spamd call), and CheckKnownOptions accepts them everywhere.
  return entry;
}

// An error about one option ("max_size: expected ...") is reported at that option's line
// ("popgate.toml:14: plugin[1].max_size: expected ..."); any other at the plugin's table.
std::string WhereOf(const config::PluginSpec& spec, std::string_view error,
                    const std::string& table_where) {
  std::size_t colon = error.find(": ");
  if (colon != std::string_view::npos) {
    auto it = spec.option_where.find(error.substr(0, colon));
    if (it != spec.option_where.end()) return it->second + std::string(error.substr(colon));
  }
  return table_where + ": " + std::string(error);
}

}  // namespace

bool IsPythonPlugin(std::string_view use) {
  // "so:/x/y.py" names a shared object, however odd its name.
  if (use.starts_with(kSharedObjectPrefix)) return false;
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
      entry.factory = build(options);
      entries.push_back(std::move(entry));
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(WhereOf(spec, e.what(), where));
    }
  }
  return filter::FilterChain(std::move(entries), std::move(log));
}

}  // namespace popgate
