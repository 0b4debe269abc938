// An example plugin built outside popgate's core and loaded as a shared object
// (`use = "so:/path/libpopgate_add_header.so"`): it adds one header,
// `X-Popgate-Example: <value>`, to every message. Option: value (a string, default "1").
//
// Built like a third party's plugin: popgate's headers only (filter/plugin.h,
// filter/plugin_export.h), nothing linked from popgate. It needs the header block only,
// so the body streams past it, and it is inline: adding a header takes microseconds and
// no I/O, so it runs on the session's own thread without a hand-off.

#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>

#include "filter/plugin.h"
#include "filter/plugin_export.h"

namespace {

using namespace popgate;

constexpr std::string_view kHeader = "X-Popgate-Example";

class AddHeader final : public filter::Plugin {
 public:
  explicit AddHeader(std::shared_ptr<const std::string> value) : value_(std::move(value)) {}

  std::string_view name() const override { return "add_header"; }
  filter::Needs needs() const override { return filter::Needs::kHeaders; }
  filter::Hooks hooks() const override {
    return {.session = false, .command = false, .message = true, .message_done = false};
  }
  filter::Execution execution() const override { return filter::Execution::kInline; }

  filter::FilterResult OnMessage(const filter::SessionInfo& /*session*/,
                                 const filter::MessageContext& /*context*/,
                                 mail::Message& message) override {
    message.headers().Add(kHeader, *value_);
    return filter::FilterResult::Pass();
  }

 private:
  std::shared_ptr<const std::string> value_;
};

std::shared_ptr<filter::PluginFactory> Build(const filter::Options& options) {
  filter::CheckKnownOptions(options, {"value"});
  auto value = std::make_shared<const std::string>(filter::OptionString(options, "value", "1"));
  if (value->find_first_of(std::string_view("\r\n\0", 3)) != std::string::npos) {
    throw std::invalid_argument("value: must not contain CR, LF or NUL");
  }
  return filter::MakeFactory("add_header", [value] { return std::make_unique<AddHeader>(value); });
}

}  // namespace

POPGATE_EXPORT_PLUGIN(Build)
