#include <gtest/gtest.h>

#include "net/log_text.h"

namespace popgate::net {
namespace {

tcp::endpoint Ep(const char* address, unsigned short port) {
  return tcp::endpoint(asio::ip::make_address(address), port);
}

// SessionInfo::client_address (filter/plugin.h), the log and the audit trail all write
// what this writes: an IPv6 address in brackets, so its last group is not read as the port.
TEST(EndpointTextTest, Ipv4AsAddressColonPort) {
  EXPECT_EQ(EndpointText(Ep("203.0.113.5", 51234)), "203.0.113.5:51234");
  EXPECT_EQ(EndpointText(Ep("127.0.0.1", 110)), "127.0.0.1:110");
}

TEST(EndpointTextTest, Ipv6InBrackets) {
  EXPECT_EQ(EndpointText(Ep("::1", 49388)), "[::1]:49388");
  EXPECT_EQ(EndpointText(Ep("2001:db8::1", 51234)), "[2001:db8::1]:51234");
  // An IPv4 client of a dual-stack listener ([::]) arrives as an IPv4-mapped address.
  EXPECT_EQ(EndpointText(Ep("::ffff:192.0.2.7", 110)), "[::ffff:192.0.2.7]:110");
}

}  // namespace
}  // namespace popgate::net
