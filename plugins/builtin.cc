#include "plugins/builtin.h"

#include "audit_log/audit_log.h"
#include "filter/registry.h"
#include "keep_on_server/keep_on_server.h"
#include "spam_tag/spam_tag.h"

namespace popgate::plugins {

void RegisterBuiltinPlugins() {
  filter::RegisterBuiltin("spam_tag", MakeSpamTagFactory);
  filter::RegisterBuiltin("audit_log", MakeAuditLogFactory);
  filter::RegisterBuiltin("keep_on_server", MakeKeepOnServerFactory);
}

}  // namespace popgate::plugins
