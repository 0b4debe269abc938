#pragma once
// Plugins from shared objects (`use = "so:/path/libx.so"`; the plugin side is
// filter/plugin_export.h).
//
// The library is opened with RTLD_NOW | RTLD_LOCAL: every symbol it needs must resolve at
// load time (popgate's own, such as mail::Headers::Add, come from the executable, which
// exports them), and its symbols never resolve anyone else's. It stays loaded while
// anything from it can still run: the factory returned here and every plugin instance it
// makes hold the library, so a hook given up after its timeout can run on safely.

#include <memory>
#include <string>

#include "filter/plugin.h"

namespace popgate::filter {

// Loads the library at `path` (one without a '/' is taken relative to the working
// directory, never searched for), checks its plugin ABI version and build tag, and builds
// its factory from `options`. Throws std::invalid_argument with one line: the loader's
// error (dlerror) when it cannot be loaded, "not a popgate plugin (...)", "built for plugin
// ABI N, popgate has M", a build tag mismatch, or the builder's own message.
std::shared_ptr<PluginFactory> LoadSharedObjectPlugin(const std::string& path,
                                                      const Options& options);

}  // namespace popgate::filter
