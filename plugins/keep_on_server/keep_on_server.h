#pragma once
// keep_on_server: refuses DELE, so mail stays on the server whatever the client is set to
// do ("remove from server after download", a phone that deletes what it fetched). The
// client gets "-ERR " + the reply and the message stays; every other command goes through.
// QUIT still ends the session normally: with no DELE accepted, the upstream's UPDATE
// state has nothing to remove.
//
// Options ([[plugin]] keys):
//   reply = "[SYS/PERM] Messages are kept on the server: DELE is disabled"
//           the -ERR text (one line: CR, LF and NUL are refused at start-up)

#include <memory>

#include "filter/plugin.h"

namespace popgate::plugins {

std::shared_ptr<filter::PluginFactory> MakeKeepOnServerFactory(const filter::Options& options);

}  // namespace popgate::plugins
