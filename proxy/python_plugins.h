#pragma once
// Wiring for Python plugins: the runtime is started only when a Python plugin is
// configured, so popgate without one has no interpreter and behaves as before.

#include <memory>

#include "bindings/python_runtime.h"
#include "chain_from_config.h"
#include "config/config.h"

namespace popgate {

// The runtime, if `config` has a Python plugin; null otherwise. Throws
// bindings::PythonPluginError when Python can't start.
std::unique_ptr<bindings::PythonRuntime> StartPythonIfConfigured(const config::Config& config);

// Loads Python plugins into `runtime` for ChainFromConfig. A relative file in a TOML
// file is found from that file's directory; from the command line, from the current one.
PythonLoader PythonLoaderFor(bindings::PythonRuntime& runtime);

}  // namespace popgate
