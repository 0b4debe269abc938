// A plugin for the integration tests, loaded as a shared object: it does what its
// options tell it, so one .so can play a tagger, a slow filter, a rejecter, a crasher
// or a command policy. Not for production: it exists to make popgate's handling of
// each case observable.
//
// Options: needs = "whole" | "headers"; add = "Name: value" (a header to add);
// delay_ms = N (sleep in each message hook); verdict = "pass" | "tempfail" | "reject";
// when = "substring" (the verdict only for messages whose Subject contains it);
// throw = "message" (throw from the message hook); deny = "DELE" (deny that command);
// record = "/path" (append one line per message seen: command, number, partial, size);
// inline = "yes" (run on the session's thread: Execution::kInline).

#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>

#include "filter/plugin.h"
#include "filter/plugin_export.h"

namespace {

using namespace popgate;

struct Settings {
  filter::Needs needs = filter::Needs::kWholeMessage;
  std::string add_name, add_value;
  long delay_ms = 0;
  filter::Verdict verdict = filter::Verdict::kPass;
  std::string when;
  bool throw_in_message = false;
  std::string deny;
  std::string record;
  bool run_inline = false;
};

// A string option, or "" when absent.
std::string Text(const filter::Options& options, const std::string& key) {
  return filter::OptionString(options, key, "");
}

std::mutex record_mutex;

class Behave final : public filter::Plugin {
 public:
  explicit Behave(std::shared_ptr<const Settings> settings) : settings_(std::move(settings)) {}

  std::string_view name() const override { return "behave"; }
  filter::Needs needs() const override { return settings_->needs; }
  filter::Execution execution() const override {
    return settings_->run_inline ? filter::Execution::kInline : filter::Execution::kWorker;
  }
  filter::Hooks hooks() const override {
    return {.session = false,
            .command = !settings_->deny.empty(),
            .message = true,
            .message_done = false};
  }

  filter::CommandDecision OnCommand(const filter::SessionInfo&,
                                    const filter::CommandView& command) override {
    if (command.keyword == settings_->deny) {
      return filter::CommandDecision::Deny("[SYS/PERM] " + settings_->deny + " refused by behave");
    }
    return filter::CommandDecision::Allow();
  }

  filter::FilterResult OnMessage(const filter::SessionInfo&, const filter::MessageContext& context,
                                 mail::Message& message) override {
    if (!settings_->record.empty()) {
      std::lock_guard lock(record_mutex);
      std::ofstream out(settings_->record, std::ios::app);
      out << context.command << " " << context.number << " partial=" << context.partial
          << " size=" << message.size() << "\n";
    }
    if (settings_->delay_ms > 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(settings_->delay_ms));
    }
    if (settings_->throw_in_message) throw std::runtime_error("behave was told to throw");
    bool applies = settings_->when.empty() || message.headers().Get("Subject").value_or("").find(
                                                  settings_->when) != std::string::npos;
    if (!settings_->add_name.empty())
      message.headers().Add(settings_->add_name, settings_->add_value);
    if (!applies) return filter::FilterResult::Pass();
    switch (settings_->verdict) {
      case filter::Verdict::kPass:
        return filter::FilterResult::Pass();
      case filter::Verdict::kTempFail:
        return filter::FilterResult::TempFail("behave says tempfail");
      case filter::Verdict::kReject:
        return filter::FilterResult::Reject("behave says reject");
      case filter::Verdict::kQuarantine:
        return filter::FilterResult::Quarantine("behave keeps the original");
    }
    return filter::FilterResult::Pass();
  }

 private:
  std::shared_ptr<const Settings> settings_;
};

std::shared_ptr<filter::PluginFactory> Build(const filter::Options& options) {
  auto settings = std::make_shared<Settings>();
  if (Text(options, "needs") == "headers") settings->needs = filter::Needs::kHeaders;
  std::string add = Text(options, "add");
  if (auto colon = add.find(':'); colon != std::string::npos) {
    settings->add_name = add.substr(0, colon);
    settings->add_value = add.substr(colon + 1);
  }
  settings->delay_ms = filter::OptionInteger(options, "delay_ms", 0, 0, 3'600'000);
  std::string verdict = Text(options, "verdict");
  if (verdict == "tempfail") settings->verdict = filter::Verdict::kTempFail;
  if (verdict == "reject") settings->verdict = filter::Verdict::kReject;
  if (verdict == "quarantine") settings->verdict = filter::Verdict::kQuarantine;
  settings->when = Text(options, "when");
  settings->throw_in_message = Text(options, "throw") == "message";
  settings->deny = Text(options, "deny");
  settings->record = Text(options, "record");
  settings->run_inline = Text(options, "inline") == "yes";
  return filter::MakeFactory("behave", [settings] { return std::make_unique<Behave>(settings); });
}

}  // namespace

POPGATE_EXPORT_PLUGIN(Build)
