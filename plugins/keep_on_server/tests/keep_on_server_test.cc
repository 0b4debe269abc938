#include "keep_on_server/keep_on_server.h"

#include <gtest/gtest.h>

#include <optional>
#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

#include "filter/chain.h"
#include "filter/registry.h"
#include "plugins/builtin.h"
#include "pop3/command.h"

namespace popgate::plugins {
namespace {

const std::string kDefaultReply = "[SYS/PERM] Messages are kept on the server: DELE is disabled";

// The plugin as the core runs it: in a chain, one session, commands parsed from client lines.
class KeepOnServerTest : public ::testing::Test {
 protected:
  void StartChain(const filter::Options& options = {}) {
    chain_ = filter::FilterChain({filter::ChainEntry{MakeKeepOnServerFactory(options)}},
                                 [this](std::string_view line) { log_.emplace_back(line); });
    filter::SessionInfo info;
    info.id = 1;
    info.client_address = "203.0.113.5:51234";
    info.user = "alice";
    session_.emplace(chain_.NewSession(info));
    ASSERT_TRUE(session_->Start());
  }

  filter::CommandOutcome Run(std::string_view line) {
    pop3::ParseResult parsed = pop3::ParseCommand(line);
    const auto* command = std::get_if<pop3::Command>(&parsed);
    if (command == nullptr)
      throw std::logic_error("test line does not parse: " + std::string(line));
    return session_->RunCommand(filter::ViewOf(*command));
  }

  filter::FilterChain chain_;
  std::optional<filter::ChainSession> session_;
  std::vector<std::string> log_;
};

TEST_F(KeepOnServerTest, WantsCommandsOnly) {
  auto plugin = MakeKeepOnServerFactory({})->Create();
  EXPECT_EQ(plugin->name(), "keep_on_server");
  filter::Hooks hooks = plugin->hooks();
  EXPECT_TRUE(hooks.command);
  EXPECT_FALSE(hooks.session);
  EXPECT_FALSE(hooks.message);
  EXPECT_FALSE(hooks.message_done);
  StartChain();
  EXPECT_TRUE(session_->wants_commands());
  EXPECT_FALSE(session_->wants_messages());
}

TEST_F(KeepOnServerTest, DeniesDeleWithTheDefaultReply) {
  StartChain();
  for (std::string_view line : {"DELE 1", "dele 2", "Dele 30"}) {
    filter::CommandOutcome outcome = Run(line);
    EXPECT_EQ(outcome.decision.kind(), filter::CommandDecision::Kind::kDeny) << line;
    EXPECT_EQ(outcome.decision.text(), kDefaultReply) << line;
    EXPECT_EQ(outcome.decided_by, "keep_on_server") << line;
  }
  EXPECT_TRUE(log_.empty());
}

TEST_F(KeepOnServerTest, AllowsEverythingElse) {
  StartChain();
  for (std::string_view line : {"USER alice", "STAT", "LIST", "LIST 1", "UIDL", "RETR 1", "TOP 1 0",
                                "NOOP", "RSET", "CAPA", "QUIT"}) {
    filter::CommandOutcome outcome = Run(line);
    EXPECT_EQ(outcome.decision.kind(), filter::CommandDecision::Kind::kAllow) << line;
    EXPECT_TRUE(outcome.decided_by.empty()) << line;
  }
  // A password is never looked at, and allowed.
  EXPECT_EQ(Run("PASS secret").decision.kind(), filter::CommandDecision::Kind::kAllow);
  // Still denying after the others.
  EXPECT_EQ(Run("DELE 1").decision.kind(), filter::CommandDecision::Kind::kDeny);
}

TEST_F(KeepOnServerTest, CustomReply) {
  StartChain({{"reply", "Deleting is not allowed here"}});
  filter::CommandOutcome outcome = Run("DELE 1");
  EXPECT_EQ(outcome.decision.kind(), filter::CommandDecision::Kind::kDeny);
  EXPECT_EQ(outcome.decision.text(), "Deleting is not allowed here");
  EXPECT_EQ(Run("RETR 1").decision.kind(), filter::CommandDecision::Kind::kAllow);
}

TEST(KeepOnServerOptionsTest, RejectsBadOptions) {
  auto throws = [](const filter::Options& options, const std::string& expected) {
    try {
      MakeKeepOnServerFactory(options);
      ADD_FAILURE() << "no exception for " << expected;
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(expected), std::string::npos) << e.what();
    }
  };
  throws({{"reply", "two\nlines"}}, "reply");
  throws({{"reply", "a\rb"}}, "reply");
  throws({{"reply", "a\nb"}}, "reply");
  throws({{"reply", std::string("\"a\0b\"", 5)}}, "reply");
  throws({{"reply", 42}}, "reply: expected a string");
  throws({{"replies", "x"}}, "replies: unknown option");
  EXPECT_NO_THROW(MakeKeepOnServerFactory({{"reply", "'literal'"}}));
}

TEST(KeepOnServerRegistryTest, RegisteredAsBuiltin) {
  RegisterBuiltinPlugins();
  filter::BuiltinFactory build = filter::FindBuiltin("keep_on_server");
  ASSERT_TRUE(build);
  auto factory = build({});
  EXPECT_EQ(factory->name(), "keep_on_server");
  filter::CommandView dele;
  dele.keyword = "DELE";
  EXPECT_EQ(factory->Create()->OnCommand({}, dele).text(), kDefaultReply);
}

}  // namespace
}  // namespace popgate::plugins
