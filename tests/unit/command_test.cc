#include "pop3/command.h"

#include <gtest/gtest.h>

namespace popgate::pop3 {
namespace {

Command MustParse(std::string_view line, const ParseOptions& options = {}) {
  auto result = ParseCommand(line, options);
  EXPECT_TRUE(std::holds_alternative<Command>(result)) << "line: " << line;
  if (auto* command = std::get_if<Command>(&result)) return *command;
  return {};
}

std::string MustFail(std::string_view line) {
  auto result = ParseCommand(line);
  EXPECT_TRUE(std::holds_alternative<ParseError>(result)) << "line: " << line;
  if (auto* error = std::get_if<ParseError>(&result)) return error->reply;
  return {};
}

TEST(CommandTest, EveryVerbParsesToCanonicalForm) {
  struct Case {
    std::string_view line;
    Verb verb;
    std::string_view canonical;
  };
  const Case cases[] = {
      {"USER alice", Verb::kUser, "USER alice\r\n"},
      {"pass s3cret", Verb::kPass, "PASS s3cret\r\n"},
      {"APOP alice c4c9334bac560ecc979e58001b3e22fb", Verb::kApop,
       "APOP alice c4c9334bac560ecc979e58001b3e22fb\r\n"},
      {"AUTH", Verb::kAuth, "AUTH\r\n"},
      {"auth plain", Verb::kAuth, "AUTH PLAIN\r\n"},
      {"AUTH PLAIN AGFsaWNlAHNlY3JldA==", Verb::kAuth, "AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n"},
      {"STAT", Verb::kStat, "STAT\r\n"},
      {"LIST", Verb::kList, "LIST\r\n"},
      {"LIST 3", Verb::kList, "LIST 3\r\n"},
      {"UIDL", Verb::kUidl, "UIDL\r\n"},
      {"uidl 12", Verb::kUidl, "UIDL 12\r\n"},
      {"TOP 1 0", Verb::kTop, "TOP 1 0\r\n"},
      {"TOP 1 99999999", Verb::kTop, "TOP 1 99999999\r\n"},
      {"RETR 7", Verb::kRetr, "RETR 7\r\n"},
      {"DELE 7", Verb::kDele, "DELE 7\r\n"},
      {"NOOP", Verb::kNoop, "NOOP\r\n"},
      {"RSET", Verb::kRset, "RSET\r\n"},
      {"QUIT", Verb::kQuit, "QUIT\r\n"},
      {"CAPA", Verb::kCapa, "CAPA\r\n"},
      {"STLS", Verb::kStls, "STLS\r\n"},
      {"UTF8", Verb::kUtf8, "UTF8\r\n"},
      {"LANG", Verb::kLang, "LANG\r\n"},
      {"LANG fr", Verb::kLang, "LANG fr\r\n"},
  };
  for (const auto& c : cases) {
    Command command = MustParse(c.line);
    EXPECT_EQ(command.verb, c.verb) << c.line;
    EXPECT_EQ(command.Canonical(), c.canonical) << c.line;
  }
}

TEST(CommandTest, NormalisesSeparatorsSoBothSidesAgreeOnFraming) {
  // HAZARDS.md: "LIST " and "LIST\t1" must not reach the upstream as sent, or the
  // two sides disagree on whether the answer is multi-line.
  EXPECT_EQ(MustParse("LIST ").Canonical(), "LIST\r\n");
  EXPECT_TRUE(MustParse("LIST ").MultiLineIfOk());
  EXPECT_EQ(MustParse("list\t1").Canonical(), "LIST 1\r\n");
  EXPECT_FALSE(MustParse("LIST\t1").MultiLineIfOk());
  EXPECT_EQ(MustParse("TOP  1   5 ").Canonical(), "TOP 1 5\r\n");
  EXPECT_EQ(MustParse("UIDL ").Canonical(), "UIDL\r\n");
}

TEST(CommandTest, MultiLineDependsOnCommandAndArgumentCount) {
  EXPECT_TRUE(MustParse("RETR 1").MultiLineIfOk());
  EXPECT_TRUE(MustParse("TOP 1 0").MultiLineIfOk());
  EXPECT_TRUE(MustParse("CAPA").MultiLineIfOk());
  EXPECT_TRUE(MustParse("LIST").MultiLineIfOk());
  EXPECT_FALSE(MustParse("LIST 1").MultiLineIfOk());
  EXPECT_TRUE(MustParse("UIDL").MultiLineIfOk());
  EXPECT_FALSE(MustParse("UIDL 1").MultiLineIfOk());
  EXPECT_TRUE(MustParse("LANG").MultiLineIfOk());
  EXPECT_FALSE(MustParse("LANG en").MultiLineIfOk());
  EXPECT_TRUE(MustParse("AUTH").MultiLineIfOk());
  EXPECT_FALSE(MustParse("AUTH PLAIN").MultiLineIfOk());
  for (auto line : {"STAT", "DELE 1", "NOOP", "RSET", "QUIT", "USER a", "PASS b", "UTF8"}) {
    EXPECT_FALSE(MustParse(line).MultiLineIfOk()) << line;
  }
}

TEST(CommandTest, WrongArgumentCountsAreRefused) {
  for (auto line : {"LIST 1 2", "RETR", "RETR 1 2", "TOP 1", "TOP 1 2 3", "DELE", "STAT 1",
                    "QUIT now", "USER", "USER a b", "APOP alice", "NOOP 1", "CAPA x", "STLS x",
                    "UTF8 x", "AUTH PLAIN x y", "LANG a b"}) {
    EXPECT_EQ(MustFail(line).rfind("-ERR ", 0), 0u) << line;
  }
}

TEST(CommandTest, NumbersMustBeDecimalAndPositive) {
  for (auto line : {"RETR x", "RETR -1", "RETR 1x", "DELE 0", "RETR 0", "TOP 1 -5",
                    "LIST 12345678901", "RETR +1"}) {
    MustFail(line);
  }
  EXPECT_EQ(MustParse("TOP 1 0").args[1], "0");  // a line count may be zero
}

TEST(CommandTest, PasswordKeepsItsSpaces) {
  // RFC 1939 §7: a server may treat spaces in PASS's argument as part of the password.
  Command pass = MustParse("PASS correct horse  battery ");
  EXPECT_EQ(pass.args.size(), 1u);
  EXPECT_EQ(pass.args[0], "correct horse  battery ");
  EXPECT_TRUE(pass.CarriesSecret());
  MustFail("PASS");
  MustFail("PASS ");
}

TEST(CommandTest, SecretsAreMarked) {
  EXPECT_TRUE(MustParse("APOP a 0123456789abcdef0123456789abcdef").CarriesSecret());
  EXPECT_TRUE(MustParse("AUTH PLAIN AGEAYg==").CarriesSecret());
  EXPECT_FALSE(MustParse("USER a").CarriesSecret());
  EXPECT_FALSE(MustParse("RETR 1").CarriesSecret());
}

TEST(CommandTest, UnknownCommandsAreRefusedUnlessPassedThrough) {
  EXPECT_EQ(MustFail("XYZZY"), "-ERR Unknown command\r\n");
  EXPECT_EQ(MustFail(""), "-ERR Empty command\r\n");
  EXPECT_EQ(MustFail("   "), "-ERR Empty command\r\n");
  std::vector<std::string> relayed{"XTND"};
  ParseOptions options{relayed};
  Command xtnd = MustParse("xtnd  xmit ", options);
  EXPECT_EQ(xtnd.verb, Verb::kPassThrough);
  EXPECT_EQ(xtnd.Canonical(), "XTND xmit\r\n");  // keyword upper-cased, arguments as sent
  EXPECT_FALSE(xtnd.MultiLineIfOk());
}

TEST(CommandTest, ControlCharactersAreRefused) {
  MustFail(std::string_view("RETR 1\0", 7));
  MustFail("USER a\rSTAT");
  MustFail("USER a\x01");
  MustFail(std::string_view("PASS a\0b", 8));
}

TEST(CommandTest, StateRules) {
  using S = State;
  EXPECT_TRUE(AllowedIn(Verb::kUser, S::kAuthorization));
  EXPECT_FALSE(AllowedIn(Verb::kUser, S::kTransaction));
  EXPECT_TRUE(AllowedIn(Verb::kStls, S::kAuthorization));
  EXPECT_FALSE(AllowedIn(Verb::kStls, S::kTransaction));
  EXPECT_TRUE(AllowedIn(Verb::kUtf8, S::kAuthorization));
  EXPECT_FALSE(AllowedIn(Verb::kUtf8, S::kTransaction));
  EXPECT_FALSE(AllowedIn(Verb::kRetr, S::kAuthorization));
  EXPECT_FALSE(AllowedIn(Verb::kStat, S::kAuthorization));
  EXPECT_FALSE(AllowedIn(Verb::kNoop, S::kAuthorization));
  EXPECT_TRUE(AllowedIn(Verb::kRetr, S::kTransaction));
  for (Verb v : {Verb::kQuit, Verb::kCapa, Verb::kLang}) {
    EXPECT_TRUE(AllowedIn(v, S::kAuthorization));
    EXPECT_TRUE(AllowedIn(v, S::kTransaction));
  }
  Command retr = MustParse("RETR 1");
  EXPECT_EQ(WrongStateReply(retr, S::kAuthorization), "-ERR RETR not allowed before login\r\n");
}

}  // namespace
}  // namespace popgate::pop3
