#include <gtest/gtest.h>

#include <string>

#include "mail/message.h"
#include "pop3/multiline.h"

namespace popgate::mail {
namespace {

const std::string kMessage =
    "From: Alice <alice@example.com>\r\n"
    "Subject: Hello\r\n"
    " world\r\n"
    "\r\n"
    "Body line 1\r\n"
    ".dot line\r\n"
    "\r\n"
    "Last line\r\n";

TEST(MessageTest, SplitsHeadersAndBody) {
  Message message(kMessage);
  EXPECT_EQ(message.headers().Get("subject"), "Hello world");
  EXPECT_EQ(message.body(), "Body line 1\r\n.dot line\r\n\r\nLast line\r\n");
  EXPECT_FALSE(message.partial());
  EXPECT_FALSE(message.modified());
}

TEST(MessageTest, UntouchedMessageIsTheOriginalWithoutACopy) {
  Message message(kMessage);
  // Reading the headers changes nothing.
  EXPECT_TRUE(message.headers().Has("From"));
  EXPECT_FALSE(message.modified());
  EXPECT_EQ(message.bytes(), kMessage);
  EXPECT_EQ(message.bytes().data(), message.original().data());
  EXPECT_EQ(message.size(), kMessage.size());
  Message::Parts parts = message.parts();
  EXPECT_EQ(parts.headers.data(), message.original().data());
  EXPECT_EQ(parts.body.data() + parts.body.size(),
            message.original().data() + message.original().size());
}

TEST(MessageTest, TheHeaderViewIsParsedWithoutCopyingTheBytes) {
  Message message(kMessage);
  std::string_view original = message.original();
  for (const HeaderField& field : message.headers()) {
    EXPECT_GE(field.raw().data(), original.data());
    EXPECT_LE(field.raw().data() + field.raw().size(), original.data() + original.size());
  }
  EXPECT_FALSE(message.headers().empty());
}

TEST(MessageTest, CopiesShareTheBytes) {
  Message message(kMessage);
  Message copy = message;
  EXPECT_EQ(copy.bytes().data(), message.bytes().data());
  copy.headers().Add("X-Tag", "1");
  EXPECT_FALSE(message.modified());
  EXPECT_TRUE(copy.modified());
  EXPECT_EQ(copy.original().data(), message.original().data());
}

TEST(MessageTest, MessageAsInputFromTheDecoderIsByteIdentical) {
  // Round trip through the codec: un-stuffed bytes in, re-stuffed bytes out.
  std::string wire = "From: a\r\n\r\n..dot\r\nx\r\n.\r\n";
  pop3::MultiLineDecoder decoder;
  std::string content;
  ASSERT_TRUE(decoder.Feed(wire, content).done);
  Message message(std::move(content));
  std::string out;
  pop3::StuffLines(message.bytes(), out);
  out.append(pop3::kTerminator);
  EXPECT_EQ(out, wire);
}

TEST(MessageTest, EditedHeadersKeepTheSeparatorAndBody) {
  Message message(kMessage);
  message.headers().Add("X-Spam-Flag", "YES");
  EXPECT_TRUE(message.modified());
  const std::string expected =
      "From: Alice <alice@example.com>\r\n"
      "Subject: Hello\r\n"
      " world\r\n"
      "X-Spam-Flag: YES\r\n"
      "\r\n"
      "Body line 1\r\n"
      ".dot line\r\n"
      "\r\n"
      "Last line\r\n";
  EXPECT_EQ(message.bytes(), expected);
  EXPECT_EQ(message.size(), expected.size());
  EXPECT_EQ(message.original(), kMessage);
  EXPECT_EQ(message.original_size(), kMessage.size());
  Message::Parts parts = message.parts();
  EXPECT_EQ(std::string(parts.headers) + std::string(parts.separator) + std::string(parts.body),
            expected);
  // The body is still the original's, not a copy.
  EXPECT_EQ(parts.body.data(), message.original().data() + (kMessage.size() - parts.body.size()));

  // Later edits show up in bytes().
  message.headers().Set("Subject", "Changed");
  EXPECT_NE(message.bytes().find("Subject: Changed\r\nX-Spam-Flag: YES\r\n\r\n"),
            std::string::npos);
  EXPECT_EQ(message.size(), message.bytes().size());
}

TEST(MessageTest, WithoutBlankLineTheBodyIsEmpty) {
  Message message("From: a\r\nSubject: no body\r\n");
  EXPECT_EQ(message.body(), "");
  EXPECT_EQ(message.headers().Get("Subject"), "no body");
  EXPECT_EQ(message.parts().separator, "");
  message.headers().Add("X-Tag", "1");
  EXPECT_EQ(message.bytes(), "From: a\r\nSubject: no body\r\nX-Tag: 1\r\n");
}

TEST(MessageTest, BlankLineWithEmptyBody) {
  Message message("From: a\r\n\r\n");
  EXPECT_EQ(message.body(), "");
  EXPECT_EQ(message.parts().separator, "\r\n");
}

TEST(MessageTest, EmptyHeaderBlock) {
  Message message("\r\njust a body\r\n");
  EXPECT_TRUE(message.headers().empty());
  EXPECT_EQ(message.body(), "just a body\r\n");
  message.headers().Add("X-Tag", "1");
  EXPECT_EQ(message.bytes(), "X-Tag: 1\r\n\r\njust a body\r\n");
}

TEST(MessageTest, EmptyMessage) {
  Message message("");
  EXPECT_TRUE(message.headers().empty());
  EXPECT_EQ(message.body(), "");
  EXPECT_EQ(message.bytes(), "");
}

TEST(MessageTest, TopZeroKeepsTheBlankLine) {
  // What `TOP n 0` gives: the header block and the blank line (HAZARDS.md).
  Message message("From: a\r\nSubject: s\r\n\r\n", /*partial=*/true);
  EXPECT_TRUE(message.partial());
  EXPECT_EQ(message.body(), "");
  message.headers().Add("X-Spam-Flag", "NO");
  EXPECT_EQ(message.bytes(), "From: a\r\nSubject: s\r\nX-Spam-Flag: NO\r\n\r\n");
  std::string out;
  pop3::StuffLines(message.bytes(), out);
  EXPECT_EQ(out, "From: a\r\nSubject: s\r\nX-Spam-Flag: NO\r\n\r\n");
}

TEST(MessageTest, BareLfMessage) {
  Message message("From: a\nSubject: s\n\nbody\n");
  EXPECT_EQ(message.body(), "body\n");
  message.headers().Add("X-Tag", "1");
  EXPECT_EQ(message.bytes(), "From: a\nSubject: s\nX-Tag: 1\n\nbody\n");
}

TEST(MessageTest, ReplaceSwapsTheWholeMessage) {
  Message message(kMessage);
  message.headers().Add("X-Before", "dropped");
  message.Replace("Subject: notice\r\n\r\nwithheld\r\n");
  EXPECT_TRUE(message.modified());
  EXPECT_EQ(message.bytes(), "Subject: notice\r\n\r\nwithheld\r\n");
  EXPECT_EQ(message.headers().Get("Subject"), "notice");
  EXPECT_FALSE(message.headers().Has("X-Before"));
  EXPECT_EQ(message.body(), "withheld\r\n");
  EXPECT_EQ(message.original(), kMessage);
  message.headers().Add("X-After", "kept");
  EXPECT_EQ(message.bytes(), "Subject: notice\r\nX-After: kept\r\n\r\nwithheld\r\n");
  EXPECT_EQ(message.size(), message.bytes().size());
}

}  // namespace
}  // namespace popgate::mail
