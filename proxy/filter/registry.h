#pragma once
// Built-in plugins by name (`use = "spam_tag"`). Each built-in registers a function that
// validates its options and builds its factory; the config layer looks names up.
//
// Registration is explicit (a RegisterBuiltins() call at start-up, not static
// initialisers): objects in a static library that nothing references are dropped by the
// linker, and their registrations with them.

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "filter/plugin.h"

namespace popgate::filter {

// Builds a factory from the plugin's options; throws std::invalid_argument on a bad one.
using BuiltinFactory = std::function<std::shared_ptr<PluginFactory>(const Options& options)>;

// Throws std::invalid_argument if `name` is already taken or `build` is empty.
void RegisterBuiltin(std::string name, BuiltinFactory build);

// The builder registered under `name`; an empty function when there is none.
BuiltinFactory FindBuiltin(std::string_view name);

// Every registered name, sorted (for "unknown plugin" messages).
std::vector<std::string> BuiltinNames();

}  // namespace popgate::filter
