#include "filter/registry.h"

#include <map>
#include <mutex>
#include <stdexcept>
#include <utility>

namespace popgate::filter {
namespace {

struct Registry {
  std::mutex mutex;
  std::map<std::string, BuiltinFactory, std::less<>> builders;
};

Registry& TheRegistry() {
  static Registry registry;
  return registry;
}

}  // namespace

void RegisterBuiltin(std::string name, BuiltinFactory build) {
  if (name.empty() || !build)
    throw std::invalid_argument("built-in plugin needs a name and a builder");
  Registry& registry = TheRegistry();
  std::lock_guard lock(registry.mutex);
  if (registry.builders.contains(name)) {
    throw std::invalid_argument("built-in plugin registered twice: " + name);
  }
  registry.builders.emplace(std::move(name), std::move(build));
}

BuiltinFactory FindBuiltin(std::string_view name) {
  Registry& registry = TheRegistry();
  std::lock_guard lock(registry.mutex);
  auto it = registry.builders.find(name);
  return it == registry.builders.end() ? BuiltinFactory() : it->second;
}

std::vector<std::string> BuiltinNames() {
  Registry& registry = TheRegistry();
  std::lock_guard lock(registry.mutex);
  std::vector<std::string> names;
  for (const auto& [name, build] : registry.builders) names.push_back(name);
  return names;
}

}  // namespace popgate::filter
