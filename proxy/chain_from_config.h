#pragma once
// Builds the filter chain from the [[plugin]] entries, in order. Every problem stops
// start-up: std::invalid_argument with one line naming where the plugin was configured.

#include <functional>
#include <memory>

#include "config/config.h"
#include "filter/chain.h"

namespace popgate {

// A Python plugin's `use` ("x.py", "python:package.module").
bool IsPythonPlugin(std::string_view use);

// Makes a Python plugin's factory from its spec and its own options (main.cpp hands in
// the Python runtime's loader; without one, Python plugins are refused). Throws
// std::invalid_argument, or bindings::PythonPluginError with the traceback.
using PythonLoader = std::function<std::shared_ptr<filter::PluginFactory>(
    const config::PluginSpec& spec, const filter::Options& options)>;

filter::FilterChain ChainFromConfig(const config::Config& config, filter::LogFn log,
                                    const PythonLoader& python = {});

}  // namespace popgate
