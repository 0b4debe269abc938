#pragma once
// Peer text made safe for a log line: control characters escaped, length bounded.
// Never pass peer data as a format string; pass it as an argument of this.

#include <string>
#include <string_view>

namespace popgate::net {

std::string LogSafe(std::string_view peer_text, std::size_t max_length = 200);

}  // namespace popgate::net
