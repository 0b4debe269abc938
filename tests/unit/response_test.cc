#include "pop3/response.h"

#include <gtest/gtest.h>

namespace popgate::pop3 {
namespace {

TEST(ResponseTest, ClassifiesStatusLines) {
  EXPECT_EQ(ClassifyStatus("+OK"), Status::kOk);
  EXPECT_EQ(ClassifyStatus("+OK 2 320"), Status::kOk);
  EXPECT_EQ(ClassifyStatus("+ok fine"), Status::kOk);
  EXPECT_EQ(ClassifyStatus("-ERR"), Status::kErr);
  EXPECT_EQ(ClassifyStatus("-ERR [IN-USE] locked"), Status::kErr);
  EXPECT_EQ(ClassifyStatus("+ "), Status::kContinuation);
  EXPECT_EQ(ClassifyStatus("+"), Status::kContinuation);
  EXPECT_EQ(ClassifyStatus("+ PDE4OTYuMTIzQGV4YW1wbGU+"), Status::kContinuation);
  EXPECT_EQ(ClassifyStatus("+OKAY"), Status::kInvalid);
  EXPECT_EQ(ClassifyStatus("-ERROR"), Status::kInvalid);
  EXPECT_EQ(ClassifyStatus(""), Status::kInvalid);
  EXPECT_EQ(ClassifyStatus("* OK imap"), Status::kInvalid);
}

TEST(ResponseTest, ControlCharactersMakeALineInvalid) {
  // A bare CR would let a lenient client see a second, injected answer.
  EXPECT_EQ(ClassifyStatus("+OK 1 2\r+OK injected"), Status::kInvalid);
  EXPECT_EQ(ClassifyStatus(std::string_view("+OK 1 2\0\0x", 11)), Status::kInvalid);
  EXPECT_EQ(ClassifyStatus("-ERR a\x1b[31m"), Status::kInvalid);
  EXPECT_EQ(ClassifyStatus("+ abc\x7f"), Status::kInvalid);
  EXPECT_EQ(ClassifyStatus("+OK tab\tis fine"), Status::kOk);
  EXPECT_EQ(ClassifyStatus("+OK 8-bit \xc3\xa9 is text"), Status::kOk);
}

TEST(ResponseTest, Greetings) {
  EXPECT_TRUE(IsValidGreeting("+OK Dovecot ready. <1896.697170952@dbc.mtview.ca.us>"));
  EXPECT_FALSE(IsValidGreeting("-ERR go away"));
  EXPECT_FALSE(IsValidGreeting(std::string_view("+OK\0", 4)));
}

TEST(ResponseTest, StripsTheApopTimestamp) {
  EXPECT_EQ(StripApopTimestamp("+OK Dovecot ready. <1896.697170952@dbc.mtview.ca.us>"),
            "+OK Dovecot ready.");
  EXPECT_EQ(StripApopTimestamp("+OK <1.2@host> POP3 server ready"), "+OK POP3 server ready");
  EXPECT_EQ(StripApopTimestamp("+OK no timestamp"), "+OK no timestamp");
  EXPECT_EQ(StripApopTimestamp("+OK a <b> c"), "+OK a <b> c");  // no @: not a timestamp
}

}  // namespace
}  // namespace popgate::pop3
