#pragma once
// spam_tag: asks SpamAssassin's spamd about each message and adds SpamAssassin's own
// headers (X-Spam-Flag, X-Spam-Score, X-Spam-Level, X-Spam-Status, ...), optionally a
// subject prefix. Any X-Spam-* fields the sender put in the message are removed first,
// so a forged "X-Spam-Flag: NO" never survives.
//
// Options ([[plugin]] keys): spamd = "127.0.0.1:783" | "/run/spamd.sock",
// max_size = 512000 (spamc's default; larger messages pass untagged),
// timeout = 30 (seconds, the whole spamd call), subject_prefix = "[SPAM] ".
// spamd down or slow: the plugin throws, and the chain applies on_error.

#include <memory>

#include "filter/plugin.h"

namespace popgate::plugins {

std::shared_ptr<filter::PluginFactory> MakeSpamTagFactory(const filter::Options& options);

}  // namespace popgate::plugins
