#pragma once
// Builds the filter chain from the [[plugin]] entries, in order. Every problem stops
// start-up: std::invalid_argument with one line naming where the plugin was configured.

#include "config/config.h"
#include "filter/chain.h"

namespace popgate {

filter::FilterChain ChainFromConfig(const config::Config& config, filter::LogFn log);

}  // namespace popgate
