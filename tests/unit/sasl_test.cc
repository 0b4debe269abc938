#include "pop3/sasl.h"

#include <gtest/gtest.h>

namespace popgate::pop3 {
namespace {

TEST(SaslTest, DecodesBase64) {
  EXPECT_EQ(DecodeBase64(""), "");
  EXPECT_EQ(DecodeBase64("YQ=="), "a");
  EXPECT_EQ(DecodeBase64("YWI="), "ab");
  EXPECT_EQ(DecodeBase64("YWJj"), "abc");
  EXPECT_FALSE(DecodeBase64("YWJ"));
  EXPECT_FALSE(DecodeBase64("Y=Jj"));
  EXPECT_FALSE(DecodeBase64("YW J"));
}

TEST(SaslTest, NamesTheUserOfPlainAndLogin) {
  EXPECT_EQ(SaslUser("PLAIN", "AGFsaWNlAHNlY3JldA=="), "alice");  // "\0alice\0secret"
  EXPECT_EQ(SaslUser("LOGIN", "YWxpY2U="), "alice");
  EXPECT_FALSE(SaslUser("PLAIN", "YWxpY2U="));  // no NULs
  // "alice 0123456789abcdef0123456789abcdef"
  EXPECT_EQ(SaslUser("CRAM-MD5", "YWxpY2UgMDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="), "alice");
  EXPECT_FALSE(SaslUser("CRAM-MD5", "YWxpY2U="));
  EXPECT_FALSE(SaslUser("SCRAM-SHA-1", "YWxpY2U="));
  EXPECT_FALSE(SaslUser("PLAIN", "not base64!"));
}

}  // namespace
}  // namespace popgate::pop3
