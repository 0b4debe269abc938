#pragma once
// audit_log: one JSON line per message (after the chain) and one per session (at its end),
// appended to a file, with rotation by size and support for external rotation (logrotate).
//
// Options ([[plugin]] keys):
//   path = "/var/log/popgate/audit.log"  required; created (0640) or appended to
//   max_size = 104857600                 bytes before rotation (path -> path.1 -> ...);
//                                        0: never rotate by size
//   keep = 5                             rotated files kept: path.1 .. path.N; 0: none
// A path that cannot be opened stops start-up ("path: cannot open /x/y: No such file or
// directory"). A failed write (disk full) throws from the hook: the chain logs it and
// applies on_error; the file keeps whole lines only.
//
// Records hold only what SessionInfo, MessageContext, MessageReport and the delivered
// message's From, Subject and Message-ID give: never a password or SASL data. Header bytes
// that are not UTF-8 are written as U+FFFD.
//
// Message line:
//   {"time","event":"message","session","client","user","upstream","command","number",
//    "uidl","size_in","size_out","message_id","from","subject","verdict","decided_by",
//    "reason","quarantine_id","partial","plugins":[{"name","verdict","failure","ms"}]}
// Session line:
//   {"time","event":"session","session","client","user","upstream","duration_ms","messages"}
// Absent or empty values (uidl, user, headers, decided_by, reason, quarantine_id) are null.

#include <memory>

#include "filter/plugin.h"

namespace popgate::plugins {

std::shared_ptr<filter::PluginFactory> MakeAuditLogFactory(const filter::Options& options);

}  // namespace popgate::plugins
