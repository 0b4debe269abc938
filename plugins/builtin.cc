#include "plugins/builtin.h"

#include "filter/registry.h"
#include "spam_tag/spam_tag.h"

namespace popgate::plugins {

void RegisterBuiltinPlugins() { filter::RegisterBuiltin("spam_tag", MakeSpamTagFactory); }

}  // namespace popgate::plugins
