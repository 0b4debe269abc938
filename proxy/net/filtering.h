#pragma once
// What sessions need to run the filter chain: the chain built from the configuration,
// and the worker threads its hooks run on. Plugins may block (spamd, a web service), so
// they never run on an I/O thread.

#include "filter/chain.h"
#include "net/asio.h"

namespace popgate::net {

struct FilterContext {
  const filter::FilterChain* chain = nullptr;  // null or empty: messages pass untouched
  asio::thread_pool* pool = nullptr;
};

}  // namespace popgate::net
