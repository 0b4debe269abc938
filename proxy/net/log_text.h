#pragma once
// Text for log lines about sockets: the peer's address, and the cause of an error in words
// an operator can act on.
// Peer text in a log line goes through text::Escaped (text/one_line.h), as an argument,
// never as a format string.

#include <string>

#include "net/asio.h"

namespace popgate::net {

// `ep` as config::FormatEndpoint writes every address: "192.0.2.1:110", "[::1]:110".
std::string EndpointText(const tcp::endpoint& ep);

// The cause of a socket error as it is, in the system's words, with what an operator
// needs to act on popgate's own trouble: "Too many open files (the process's descriptor
// limit, 1024)" for EMFILE, so it is not taken for the peer's.
std::string DescribeError(const error_code& ec);

// Whether `ec` says popgate itself ran out of descriptors or memory (EMFILE, ENFILE,
// ENOBUFS, ENOMEM): neither peer's doing.
bool IsResourceExhaustion(const error_code& ec);

}  // namespace popgate::net
