#include "spam_tag/spam_tag.h"

#include <stdexcept>
#include <string>

#include "spam_tag/spamd_client.h"

namespace popgate::plugins {
namespace {

// Leaves room for "Subject: " and a few characters of the subject on a 998-octet line.
constexpr std::size_t kMaxSubjectPrefix = 200;

struct Settings {
  spamd::ClientOptions client;
  std::string subject_prefix;
};

bool IsSpamHeader(std::string_view name) {
  if (name.size() < 7) return false;
  std::string prefix(name.substr(0, 7));
  for (auto& c : prefix) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return prefix == "x-spam-";
}

class SpamTag final : public filter::Plugin {
 public:
  explicit SpamTag(std::shared_ptr<const Settings> settings) : settings_(std::move(settings)) {}

  std::string_view name() const override { return "spam_tag"; }
  filter::Hooks hooks() const override {
    filter::Hooks hooks;
    hooks.session = hooks.command = hooks.message_done = false;
    return hooks;
  }

  filter::FilterResult OnMessage(const filter::SessionInfo&, const filter::MessageContext& context,
                                 mail::Message& message) override {
    // TOP gives part of a message: SpamAssassin would judge it on its headers alone.
    // Tagging it differently from RETR would be worse than not tagging it.
    if (context.partial) return filter::Verdict::kPass;
    spamd::Result result = spamd::Check(settings_->client, message.bytes());
    if (result.error == spamd::Error::kTooLarge) return filter::Verdict::kPass;
    if (!result.ok()) {
      throw std::runtime_error("spamd " + settings_->client.address + ": " +
                               std::string(spamd::ErrorName(result.error)) + ": " + result.detail);
    }
    mail::Headers& headers = message.headers();
    std::vector<std::string> forged;
    for (const auto& field : headers) {
      if (IsSpamHeader(field.name())) forged.emplace_back(field.name());
    }
    for (const auto& name : forged) headers.Remove(name);
    for (const auto& field : result.headers) headers.Add(field.name, field.value);
    if (!result.Find("X-Spam-Score")) headers.Add("X-Spam-Score", result.score_text);
    if (result.is_spam && !settings_->subject_prefix.empty()) {
      std::string subject = headers.Get("Subject").value_or("");
      if (!subject.starts_with(settings_->subject_prefix)) {
        headers.Set("Subject", settings_->subject_prefix + subject);
      }
    }
    return filter::Verdict::kPass;
  }

 private:
  std::shared_ptr<const Settings> settings_;
};

}  // namespace

std::shared_ptr<filter::PluginFactory> MakeSpamTagFactory(const filter::Options& options) {
  auto settings = std::make_shared<Settings>();
  settings->client.address = OptionString(options, "spamd", "127.0.0.1:783");
  settings->client.max_message_size = OptionInteger(options, "max_size", 512000, 1, 1 << 30);
  // The plugin's `timeout` is also the chain's limit for the hook. The spamd call gets 90%
  // of it, so it ends with its own clear error (and frees its thread) before the chain
  // gives the call up.
  const std::chrono::milliseconds hook_timeout =
      std::chrono::seconds(OptionInteger(options, "timeout", 30, 1, 3600));
  settings->client.timeout = hook_timeout * 9 / 10;
  settings->client.connect_timeout =
      std::min(settings->client.connect_timeout, settings->client.timeout);
  if (std::string problem = spamd::AddressProblem(settings->client.address); !problem.empty()) {
    throw std::invalid_argument("spamd: \"" + settings->client.address + "\": " + problem);
  }
  settings->subject_prefix = OptionString(options, "subject_prefix", "");
  // The prefixed Subject must still fit a header line (RFC 5322: 998 octets), and the
  // prefix must not end the line or start another field.
  if (settings->subject_prefix.size() > kMaxSubjectPrefix) {
    throw std::invalid_argument(
        "subject_prefix: " + std::to_string(settings->subject_prefix.size()) + " bytes, at most " +
        std::to_string(kMaxSubjectPrefix));
  }
  if (text::HasLineBreakOrNul(settings->subject_prefix)) {
    throw std::invalid_argument("subject_prefix: must not contain CR, LF or NUL");
  }
  CheckKnownOptions(options, {"spamd", "max_size", "subject_prefix"});
  return filter::MakeFactory("spam_tag", [settings]() -> std::unique_ptr<filter::Plugin> {
    return std::make_unique<SpamTag>(settings);
  });
}

}  // namespace popgate::plugins
