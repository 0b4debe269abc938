#include "pop3/capa.h"

#include <gtest/gtest.h>

namespace popgate::pop3 {
namespace {

// Dovecot 2.3's answer with STLS and a few SASL mechanisms.
constexpr std::string_view kDovecotCapa =
    "CAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\nSTLS\r\n"
    "USER\r\nSASL PLAIN LOGIN SCRAM-SHA-256-PLUS GSSAPI CRAM-MD5\r\n";

TEST(CapabilitiesTest, ParsesLinesAndArguments) {
  auto capa = Capabilities::Parse(kDovecotCapa);
  EXPECT_TRUE(capa.Has("PIPELINING"));
  EXPECT_TRUE(capa.Has("stls"));
  EXPECT_FALSE(capa.Has("UTF8"));
  EXPECT_EQ(capa.lines().size(), 9u);
  EXPECT_EQ(capa.lines().back(), "SASL PLAIN LOGIN SCRAM-SHA-256-PLUS GSSAPI CRAM-MD5");
}

TEST(CapabilitiesTest, UpstreamStlsIsAlwaysRemoved) {
  auto capa = Capabilities::Parse(kDovecotCapa);
  capa.Rewrite({});
  EXPECT_FALSE(capa.Has("STLS"));
  EXPECT_TRUE(capa.Has("PIPELINING"));  // passes through when the upstream has it
  EXPECT_TRUE(capa.Has("USER"));
  EXPECT_EQ(capa.Serialize(),
            "CAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\nUSER\r\n"
            "SASL PLAIN LOGIN CRAM-MD5\r\n");
}

TEST(CapabilitiesTest, UnrelayableMechanismsAreRemoved) {
  auto capa = Capabilities::Parse("SASL GSSAPI SCRAM-SHA-1-PLUS DIGEST-MD5\r\nUSER\r\n");
  capa.Rewrite({});
  EXPECT_FALSE(capa.Has("SASL"));  // nothing left: the line goes
  EXPECT_TRUE(capa.Has("USER"));
}

TEST(CapabilitiesTest, PolicyOffersStlsAndHidesLogins) {
  auto capa = Capabilities::Parse(kDovecotCapa);
  capa.Rewrite({.offer_stls = true, .hide_logins = true});
  EXPECT_TRUE(capa.Has("STLS"));
  EXPECT_FALSE(capa.Has("USER"));
  EXPECT_FALSE(capa.Has("SASL"));
  EXPECT_EQ(capa.lines().back(), "STLS");
}

TEST(CapabilitiesTest, NoPipeliningUnlessUpstreamHasIt) {
  auto capa = Capabilities::Parse("TOP\r\nUIDL\r\nUSER\r\n");
  capa.Rewrite({});
  EXPECT_FALSE(capa.Has("PIPELINING"));
}

}  // namespace
}  // namespace popgate::pop3
