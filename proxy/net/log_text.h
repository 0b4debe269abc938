#pragma once
// Text for log lines. Peer text made safe: control characters escaped, length bounded.
// Never pass peer data as a format string; pass it as an argument of LogSafe.

#include <string>
#include <string_view>

#include "net/asio.h"

namespace popgate::net {

std::string LogSafe(std::string_view peer_text, std::size_t max_length = 200);

// The cause of a socket error as it is, in the system's words, with what an operator
// needs to act on popgate's own trouble: "Too many open files (the process's descriptor
// limit, 1024)" for EMFILE, so it is not taken for the peer's.
std::string DescribeError(const error_code& ec);

// Whether `ec` says popgate itself ran out of descriptors or memory (EMFILE, ENFILE,
// ENOBUFS, ENOMEM): neither peer's doing.
bool IsResourceExhaustion(const error_code& ec);

}  // namespace popgate::net
