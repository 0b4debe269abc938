#pragma once
// What sessions need to run the filter chain: the chain built from the configuration,
// the worker threads its jobs run on, the threads that run each hook with its timeout,
// and the quarantine that rejected messages go to. Plugins may block (spamd, a web
// service), so they never run on an I/O thread.

#include "filter/chain.h"
#include "filter/hook_threads.h"
#include "net/asio.h"

namespace popgate::quarantine {
class MaildirQuarantine;
}

namespace popgate::net {

struct FilterContext {
  const filter::FilterChain* chain = nullptr;  // null or empty: messages pass untouched
  asio::thread_pool* pool = nullptr;
  // Runs each hook with its plugin's timeout; null: hooks are called directly, untimed.
  filter::HookThreads* hooks = nullptr;
  // Where rejected originals go; null: a reject is withheld as a temporary failure.
  quarantine::MaildirQuarantine* quarantine = nullptr;
};

}  // namespace popgate::net
