#include "keep_on_server/keep_on_server.h"

#include <stdexcept>
#include <string>
#include <string_view>

namespace popgate::plugins {
namespace {

constexpr const char* kDefaultReply =
    "[SYS/PERM] Messages are kept on the server: DELE is disabled";

class KeepOnServer final : public filter::Plugin {
 public:
  explicit KeepOnServer(std::shared_ptr<const std::string> reply) : reply_(std::move(reply)) {}

  std::string_view name() const override { return "keep_on_server"; }
  filter::Hooks hooks() const override {
    filter::Hooks hooks;
    hooks.session = hooks.message = hooks.message_done = false;
    return hooks;
  }
  // A string compare per command: no reason to leave the session's thread for it.
  filter::Execution execution() const override { return filter::Execution::kInline; }

  filter::CommandDecision OnCommand(const filter::SessionInfo&,
                                    const filter::CommandView& command) override {
    if (command.keyword == "DELE") return filter::CommandDecision::Deny(*reply_);
    return filter::CommandDecision::Allow();
  }

 private:
  std::shared_ptr<const std::string> reply_;
};

}  // namespace

std::shared_ptr<filter::PluginFactory> MakeKeepOnServerFactory(const filter::Options& options) {
  auto reply = std::make_shared<const std::string>(OptionString(options, "reply", kDefaultReply));
  if (text::HasLineBreakOrNul(*reply)) {
    throw std::invalid_argument("reply: must be one line (no CR, LF or NUL)");
  }
  CheckKnownOptions(options, {"reply"});
  return filter::MakeFactory("keep_on_server", [reply]() -> std::unique_ptr<filter::Plugin> {
    return std::make_unique<KeepOnServer>(reply);
  });
}

}  // namespace popgate::plugins
