// One message's trip through the chain without sockets: what the session is to send for
// each verdict (filter/message_filter.h).

#include "filter/message_filter.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace popgate::filter {
namespace {

namespace fs = std::filesystem;

const std::string kMessage =
    "Subject: hi\r\nFrom: a@example.org\r\n\r\nline one\r\n.dot\r\nthree\r\n";

// An inline plugin that does what it is told to each message.
class Doing final : public Plugin {
 public:
  using Action = std::function<FilterResult(mail::Message&)>;
  explicit Doing(Action action) : action_(std::move(action)) {}
  std::string_view name() const override { return "doing"; }
  Needs needs() const override { return Needs::kWholeMessage; }
  Execution execution() const override { return Execution::kInline; }
  FilterResult OnMessage(const SessionInfo&, const MessageContext&, mail::Message& m) override {
    return action_(m);
  }

 private:
  Action action_;
};

struct Fixture {
  explicit Fixture(Doing::Action action)
      : chain(
            {ChainEntry{MakeFactory("doing", [action] { return std::make_unique<Doing>(action); }),
                        ErrorPolicy::kPass, std::chrono::seconds(5)}},
            {}) {
    session = std::make_shared<ChainSession>(chain.NewSession(SessionInfo{}));
    EXPECT_TRUE(session->Start());
    job = std::make_shared<MessageJob>();
    job->chain = session;
    job->context.command = "RETR";
    job->context.number = 1;
    job->user = "alice";
    job->original = mail::SharedBytes(kMessage);
  }

  MessageOutcome Run() {
    std::optional<MessageOutcome> got;
    MessageHooksJob(job)([&](MessageOutcome out) { got = std::move(out); });
    EXPECT_TRUE(got) << "an inline chain answers at once";
    return got ? *got : MessageOutcome{};
  }

  FilterChain chain;
  std::shared_ptr<ChainSession> session;
  std::shared_ptr<MessageJob> job;
};

TEST(MessageFilterTest, AnUntouchedMessageIsSentFromTheOriginalWithoutACopy) {
  Fixture f([](mail::Message&) { return FilterResult::Pass(); });
  MessageOutcome out = f.Run();
  EXPECT_EQ(out.verdict, Verdict::kPass);
  EXPECT_TRUE(out.head.empty());
  EXPECT_EQ(out.body, kMessage);
  EXPECT_EQ(out.body.data(), f.job->original.view().data());  // a view, not a copy
  EXPECT_EQ(f.job->report.size_out, kMessage.size());
}

TEST(MessageFilterTest, AnEditedHeaderBlockIsSentAndTheBodyStillComesFromTheOriginal) {
  Fixture f([](mail::Message& m) {
    m.headers().Add("X-Tag", "yes");
    return FilterResult::Pass();
  });
  MessageOutcome out = f.Run();
  EXPECT_EQ(out.head, "Subject: hi\r\nFrom: a@example.org\r\nX-Tag: yes\r\n\r\n");
  EXPECT_EQ(out.body, "line one\r\n.dot\r\nthree\r\n");  // stuffed on the way out
  EXPECT_TRUE(f.job->original.contains(out.body));
}

TEST(MessageFilterTest, APluginsOwnBodyIsStuffedIntoTheHead) {
  Fixture f([](mail::Message& m) {
    m.Replace("Subject: new\r\n\r\n.starts with a dot\r\n");
    return FilterResult::Pass();
  });
  MessageOutcome out = f.Run();
  EXPECT_EQ(out.head, "Subject: new\r\n\r\n..starts with a dot\r\n");
  EXPECT_TRUE(out.body.empty());
}

TEST(MessageFilterTest, ATopWidenedToTheWholeMessageIsCutToTheLinesAsked) {
  Fixture f([](mail::Message&) { return FilterResult::Pass(); });
  f.job->context.command = "TOP";
  f.job->top_lines = 1;
  MessageOutcome out = f.Run();
  EXPECT_EQ(out.body, "Subject: hi\r\nFrom: a@example.org\r\n\r\nline one\r\n");
}

TEST(MessageFilterTest, ARejectIsATemporaryFailureWithoutAQuarantine) {
  Fixture f([](mail::Message&) { return FilterResult::Reject("virus"); });
  MessageOutcome out = f.Run();
  ASSERT_EQ(out.verdict, Verdict::kReject);  // the quarantine comes next
  MessageOutcome stored = QuarantineOriginal(*f.job, out, nullptr, 7, "127.0.0.1:5000");
  EXPECT_EQ(stored.verdict, Verdict::kTempFail);
  EXPECT_NE(stored.reason.find("no [quarantine] path"), std::string::npos) << stored.reason;
  EXPECT_EQ(f.job->report.size_out, 0u);
}

TEST(MessageFilterTest, ARejectStoresTheOriginalThenSendsTheNotice) {
  fs::path dir = fs::temp_directory_path() / ("message_filter_test_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  {
    quarantine::MaildirQuarantine store(dir.string());
    Fixture f([](mail::Message& m) {
      m.headers().Add("X-Seen", "yes");  // the quarantine keeps the original, not this
      return FilterResult::Reject("virus");
    });
    MessageOutcome stored = QuarantineOriginal(*f.job, f.Run(), &store, 7, "127.0.0.1:5000");
    EXPECT_EQ(stored.verdict, Verdict::kReject);
    ASSERT_FALSE(stored.quarantine_id.empty());
    EXPECT_EQ(f.job->report.quarantine_id, stored.quarantine_id);
    EXPECT_NE(stored.head.find(stored.quarantine_id), std::string::npos);
    EXPECT_TRUE(stored.body.empty());
    std::size_t files = 0;
    for (const auto& entry : fs::directory_iterator(dir / "new")) {
      ++files;
      std::string bytes(fs::file_size(entry.path()), '\0');
      std::FILE* file = std::fopen(entry.path().c_str(), "rb");
      ASSERT_NE(file, nullptr);
      EXPECT_EQ(std::fread(bytes.data(), 1, bytes.size(), file), bytes.size());
      std::fclose(file);
      EXPECT_EQ(bytes, kMessage);
    }
    EXPECT_EQ(files, 1u);
  }
  fs::remove_all(dir);
}

std::string ReadOnlyFileIn(const fs::path& dir) {
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(dir)) files.push_back(entry.path());
  EXPECT_EQ(files.size(), 1u);
  if (files.empty()) return {};
  std::string bytes(fs::file_size(files[0]), '\0');
  std::FILE* file = std::fopen(files[0].c_str(), "rb");
  EXPECT_NE(file, nullptr);
  if (file == nullptr) return {};
  EXPECT_EQ(std::fread(bytes.data(), 1, bytes.size(), file), bytes.size());
  std::fclose(file);
  return bytes;
}

const std::string kStripped = "Subject: hi\r\nFrom: a@example.org\r\n\r\n[removed]\r\n";

TEST(MessageFilterTest, AQuarantineStoresTheOriginalThenSendsTheEditedMessageNamingIt) {
  fs::path dir = fs::temp_directory_path() / ("message_filter_q_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  {
    quarantine::MaildirQuarantine store(dir.string());
    Fixture f([](mail::Message& m) {
      m.Replace(kStripped);
      m.headers().Add("X-Popgate-Quarantine-Id", "forged");  // a sender's: replaced
      return FilterResult::Quarantine("attachment removed");
    });
    MessageOutcome out = f.Run();
    ASSERT_EQ(out.verdict, Verdict::kQuarantine);  // the store comes before the client
    MessageOutcome stored = QuarantineOriginal(*f.job, out, &store, 7, "127.0.0.1:5000");
    EXPECT_EQ(stored.verdict, Verdict::kQuarantine);
    ASSERT_FALSE(stored.quarantine_id.empty());
    EXPECT_EQ(f.job->report.quarantine_id, stored.quarantine_id);
    EXPECT_EQ(stored.head, "Subject: hi\r\nFrom: a@example.org\r\nX-Popgate-Quarantine-Id: " +
                               stored.quarantine_id + "\r\n\r\n[removed]\r\n");
    EXPECT_TRUE(stored.body.empty());
    EXPECT_EQ(f.job->report.size_out, stored.head.size());
    EXPECT_EQ(ReadOnlyFileIn(dir / "new"), kMessage);  // the original, byte for byte
  }
  fs::remove_all(dir);
}

// Records what the report hooks are told.
class Reporting final : public Plugin {
 public:
  explicit Reporting(std::vector<MessageReport>& reports) : reports_(reports) {}
  std::string_view name() const override { return "reporting"; }
  Needs needs() const override { return Needs::kHeaders; }
  Execution execution() const override { return Execution::kInline; }
  FilterResult OnMessage(const SessionInfo&, const MessageContext&, mail::Message&) override {
    return FilterResult::Quarantine("keep it");
  }
  void OnMessageDone(const SessionInfo&, const MessageContext&, const mail::Message&,
                     const MessageReport& report) override {
    reports_.push_back(report);
  }

 private:
  std::vector<MessageReport>& reports_;
};

TEST(MessageFilterTest, AQuarantineInAHeadersOnlyJobIsATemporaryFailureReportedAsOne) {
  std::vector<MessageReport> reports;
  FilterChain chain(
      {ChainEntry{MakeFactory("reporting", [&] { return std::make_unique<Reporting>(reports); }),
                  ErrorPolicy::kPass, std::chrono::seconds(5)}},
      {});
  auto session = std::make_shared<ChainSession>(chain.NewSession(SessionInfo{}));
  ASSERT_TRUE(session->Start());
  auto job = std::make_shared<MessageJob>();
  job->chain = session;
  job->context = {"RETR", 1, std::nullopt, true};
  job->headers_only = true;
  job->original = mail::SharedBytes(std::string("Subject: hi\r\n\r\n"));
  std::optional<MessageOutcome> out;
  MessageHooksJob(job)([&](MessageOutcome o) { out = std::move(o); });
  ASSERT_TRUE(out);
  EXPECT_EQ(out->verdict, Verdict::kTempFail);
  EXPECT_EQ(out->reason,
            "quarantine needs the whole message (the chain holds headers only): "
            "keep it");
  ASSERT_EQ(reports.size(), 1u);  // message_done runs, and hears what the client got
  EXPECT_EQ(reports[0].result.verdict, Verdict::kTempFail);
  EXPECT_EQ(reports[0].result.reason, out->reason);
}

TEST(MessageFilterTest, AQuarantineWithoutAStoreIsATemporaryFailure) {
  Fixture f([](mail::Message& m) {
    m.Replace(kStripped);
    return FilterResult::Quarantine("attachment removed");
  });
  MessageOutcome stored = QuarantineOriginal(*f.job, f.Run(), nullptr, 7, "127.0.0.1:5000");
  EXPECT_EQ(stored.verdict, Verdict::kTempFail);  // the edit alone would lose the attachment
  EXPECT_NE(stored.reason.find("no [quarantine] path"), std::string::npos) << stored.reason;
  EXPECT_EQ(f.job->report.result.verdict, Verdict::kTempFail);  // what message_done sees
  EXPECT_EQ(f.job->report.size_out, 0u);
}

TEST(MessageFilterTest, AQuarantineThatCannotStoreIsATemporaryFailure) {
  fs::path dir = fs::temp_directory_path() / ("message_filter_qf_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  {
    quarantine::MaildirQuarantine store(dir.string());
    fs::remove_all(dir);  // the disk went away under it
    Fixture f([](mail::Message& m) {
      m.Replace(kStripped);
      return FilterResult::Quarantine("attachment removed");
    });
    MessageOutcome stored = QuarantineOriginal(*f.job, f.Run(), &store, 7, "127.0.0.1:5000");
    EXPECT_EQ(stored.verdict, Verdict::kTempFail);
    EXPECT_NE(stored.reason.find("quarantine failed"), std::string::npos) << stored.reason;
    EXPECT_TRUE(stored.quarantine_id.empty());
    EXPECT_TRUE(f.job->report.quarantine_id.empty());
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace popgate::filter
