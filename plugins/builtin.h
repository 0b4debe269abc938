#pragma once
// Registers the built-in plugins with the filter registry. Called once at start-up
// (static registrars in a static library would be dropped by the linker).

namespace popgate::plugins {

void RegisterBuiltinPlugins();

}  // namespace popgate::plugins
