#include "audit_log/audit_log.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "filter/chain.h"

namespace popgate::plugins {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;  // parsed in file order, to check the field order too
using namespace std::chrono_literals;

const std::string kMessage =
    "From: Alice <alice@example.com>\r\n"
    "Subject: hello\r\n"
    "Message-ID: <1@example.com>\r\n"
    "\r\n"
    "body\r\n";

const std::vector<std::string> kMessageFields = {
    "time",    "event",      "session", "client",        "user",       "upstream", "command",
    "number",  "uidl",       "size_in", "size_out",      "message_id", "from",     "subject",
    "verdict", "decided_by", "reason",  "quarantine_id", "partial",    "plugins"};
const std::vector<std::string> kSessionFields = {"time", "event",    "session",     "client",
                                                 "user", "upstream", "duration_ms", "messages"};

// A plugin placed before audit_log in the chain: its OnMessage does what the script says.
class Scripted final : public filter::Plugin {
 public:
  using Script = std::function<filter::FilterResult(mail::Message&)>;
  Scripted(std::string name, Script script) : name_(std::move(name)), script_(std::move(script)) {}

  std::string_view name() const override { return name_; }
  filter::Hooks hooks() const override {
    filter::Hooks hooks;
    hooks.session = hooks.command = hooks.message_done = false;
    return hooks;
  }
  filter::FilterResult OnMessage(const filter::SessionInfo&, const filter::MessageContext&,
                                 mail::Message& message) override {
    return script_(message);
  }

 private:
  std::string name_;
  Script script_;
};

std::shared_ptr<filter::PluginFactory> ScriptedFactory(std::string name, Scripted::Script script) {
  return filter::MakeFactory(name, [name, script]() -> std::unique_ptr<filter::Plugin> {
    return std::make_unique<Scripted>(name, script);
  });
}

Scripted::Script TagSubject() {
  return [](mail::Message& message) {
    message.headers().Set("Subject", "[tagged] " + message.headers().Get("Subject").value_or(""));
    return filter::FilterResult::Pass();
  };
}

Scripted::Script RejectWith(std::string reason) {
  return [reason](mail::Message&) { return filter::FilterResult::Reject(reason); };
}

Scripted::Script Throw() {
  return [](mail::Message&) -> filter::FilterResult { throw std::runtime_error("boom"); };
}

std::string MessageWithSubject(const std::string& subject) {
  return "From: a@example.com\r\nSubject: " + subject + "\r\n\r\nbody\r\n";
}

filter::MessageContext Retr(std::uint64_t number, std::optional<std::string> uidl = {}) {
  filter::MessageContext context;
  context.command = "RETR";
  context.number = number;
  context.uidl = std::move(uidl);
  return context;
}

filter::SessionInfo Info(std::uint64_t id = 7) {
  filter::SessionInfo info;
  info.id = id;
  info.client_address = "192.0.2.1:1234";
  info.upstream = "pop.example.com:110";
  return info;
}

// Runs a message through the chain and reports it, as the core does.
filter::MessageReport Deliver(filter::ChainSession& session, const filter::MessageContext& context,
                              const std::string& bytes = kMessage,
                              const std::string& quarantine_id = {}) {
  mail::Message message(bytes, context.partial);
  filter::MessageReport report = session.RunMessage(context, message);
  report.quarantine_id = quarantine_id;
  session.ReportMessage(context, message, report);
  return report;
}

std::vector<std::string> Lines(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// Every line of the file as JSON; a line that does not parse fails the test.
std::vector<Json> Records(const std::string& path) {
  std::vector<Json> records;
  for (const std::string& line : Lines(path)) {
    Json record = Json::parse(line, nullptr, /*allow_exceptions=*/false);
    EXPECT_FALSE(record.is_discarded()) << "not JSON: " << line;
    records.push_back(std::move(record));
  }
  return records;
}

std::vector<std::string> Keys(const Json& record) {
  std::vector<std::string> keys;
  for (const auto& item : record.items()) keys.push_back(item.key());
  return keys;
}

// What building the factory throws as std::invalid_argument; "" if it builds.
std::string BuildError(const filter::Options& options) {
  try {
    MakeAuditLogFactory(options);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "";
}

class AuditLogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/audit_log_test.XXXXXX";
    ASSERT_NE(::mkdtemp(dir), nullptr);
    dir_ = dir;
    path_ = (dir_ / "audit.log").string();
  }
  void TearDown() override { fs::remove_all(dir_); }

  filter::Options Options(const filter::Options& extra = {}) const {
    filter::Options options{{"path", path_}};
    for (const auto& [key, value] : extra) options[key] = value;
    return options;
  }

  // `before` (if any), then audit_log. The chain's log lines go to log_.
  filter::FilterChain Chain(const filter::Options& options,
                            std::shared_ptr<filter::PluginFactory> before = nullptr,
                            filter::ErrorPolicy before_on_error = filter::ErrorPolicy::kPass) {
    std::vector<filter::ChainEntry> entries;
    if (before) entries.push_back({before, before_on_error, 30s});
    entries.push_back({MakeAuditLogFactory(options), filter::ErrorPolicy::kPass, 30s});
    return filter::FilterChain(std::move(entries), [this](std::string_view line) {
      std::lock_guard lock(log_mutex_);
      log_.emplace_back(line);
    });
  }

  filter::ChainSession Started(const filter::FilterChain& chain, std::uint64_t id = 7) {
    filter::ChainSession session = chain.NewSession(Info(id));
    EXPECT_TRUE(session.Start());
    return session;
  }

  fs::path dir_;
  std::string path_;
  std::mutex log_mutex_;
  std::vector<std::string> log_;
};

// --- records ---

TEST_F(AuditLogTest, MessageLineCarriesEveryField) {
  filter::FilterChain chain = Chain(Options(), ScriptedFactory("tagger", TagSubject()));
  filter::ChainSession session = Started(chain);
  session.info().user = "alice";
  filter::MessageReport report = Deliver(session, Retr(3, "uid-3"));

  std::vector<Json> records = Records(path_);
  ASSERT_EQ(records.size(), 1u);
  const Json& r = records[0];
  EXPECT_EQ(Keys(r), kMessageFields);
  std::string time = r["time"].get<std::string>();
  ASSERT_TRUE(std::regex_match(time, std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)")))
      << time;
  std::tm tm{};
  ASSERT_NE(::strptime(time.c_str(), "%Y-%m-%dT%H:%M:%S", &tm), nullptr);
  EXPECT_LE(std::abs(::timegm(&tm) - std::time(nullptr)), 5) << "not UTC now: " << time;
  EXPECT_EQ(r["event"], "message");
  EXPECT_EQ(r["session"], 7);
  EXPECT_EQ(r["client"], "192.0.2.1:1234");
  EXPECT_EQ(r["user"], "alice");
  EXPECT_EQ(r["upstream"], "pop.example.com:110");
  EXPECT_EQ(r["command"], "RETR");
  EXPECT_EQ(r["number"], 3);
  EXPECT_EQ(r["uidl"], "uid-3");
  EXPECT_EQ(r["size_in"], kMessage.size());
  EXPECT_EQ(r["size_out"], report.size_out);
  EXPECT_GT(report.size_out, kMessage.size());  // the tagger's change is what was delivered
  EXPECT_EQ(r["message_id"], "<1@example.com>");
  EXPECT_EQ(r["from"], "Alice <alice@example.com>");
  EXPECT_EQ(r["subject"], "[tagged] hello");
  EXPECT_EQ(r["verdict"], "pass");
  EXPECT_TRUE(r["decided_by"].is_null());
  EXPECT_TRUE(r["reason"].is_null());
  EXPECT_TRUE(r["quarantine_id"].is_null());
  EXPECT_EQ(r["partial"], false);
  ASSERT_EQ(r["plugins"].size(), 1u);
  const Json& run = r["plugins"][0];
  EXPECT_EQ(Keys(run), (std::vector<std::string>{"name", "verdict", "failure", "ms"}));
  EXPECT_EQ(run["name"], "tagger");
  EXPECT_EQ(run["verdict"], "pass");
  EXPECT_EQ(run["failure"], "none");
  EXPECT_TRUE(run["ms"].is_number_float());
  EXPECT_GE(run["ms"].get<double>(), 0.0);
  EXPECT_TRUE(log_.empty());
}

TEST_F(AuditLogTest, RejectNamesTheDeciderAndTheQuarantine) {
  filter::FilterChain chain = Chain(Options(), ScriptedFactory("virus", RejectWith("Eicar")));
  filter::ChainSession session = Started(chain);
  Deliver(session, Retr(1), kMessage, "q-42");

  std::vector<Json> records = Records(path_);
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0]["verdict"], "reject");
  EXPECT_EQ(records[0]["decided_by"], "virus");
  EXPECT_EQ(records[0]["reason"], "Eicar");
  EXPECT_EQ(records[0]["quarantine_id"], "q-42");
  EXPECT_EQ(records[0]["plugins"][0]["verdict"], "reject");
}

TEST_F(AuditLogTest, FailedPluginIsRecordedWithItsPolicy) {
  filter::FilterChain chain =
      Chain(Options(), ScriptedFactory("broken", Throw()), filter::ErrorPolicy::kTempFail);
  filter::ChainSession session = Started(chain);
  Deliver(session, Retr(1));

  std::vector<Json> records = Records(path_);
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0]["verdict"], "tempfail");
  EXPECT_EQ(records[0]["decided_by"], "broken");
  EXPECT_EQ(records[0]["reason"], "filter broken failed");
  EXPECT_EQ(records[0]["plugins"][0]["verdict"], "tempfail");
  EXPECT_EQ(records[0]["plugins"][0]["failure"], "exception");
}

TEST_F(AuditLogTest, UnknownUidlAbsentHeadersAndNoUserAreNull) {
  filter::FilterChain chain = Chain(Options());
  filter::ChainSession session = Started(chain);
  filter::MessageContext top;
  top.command = "TOP";
  top.number = 2;
  top.partial = true;
  Deliver(session, top, "X-Other: 1\r\n\r\n");

  std::vector<Json> records = Records(path_);
  ASSERT_EQ(records.size(), 1u);
  const Json& r = records[0];
  EXPECT_EQ(r["command"], "TOP");
  EXPECT_EQ(r["partial"], true);
  for (const char* key : {"uidl", "user", "message_id", "from", "subject"}) {
    EXPECT_TRUE(r[key].is_null()) << key << ": " << r[key];
  }
  EXPECT_TRUE(r["plugins"].is_array());
  EXPECT_TRUE(r["plugins"].empty());  // audit_log has no OnMessage: it is not a run
}

TEST_F(AuditLogTest, FoldedSubjectIsUnfolded) {
  filter::FilterChain chain = Chain(Options());
  filter::ChainSession session = Started(chain);
  Deliver(session, Retr(1), MessageWithSubject("a long\r\n\tfolded\r\n  subject"));

  std::vector<Json> records = Records(path_);
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0]["subject"], "a long\tfolded  subject");
}

TEST_F(AuditLogTest, EightBitSubjectBecomesReplacementCharacters) {
  filter::FilterChain chain = Chain(Options());
  filter::ChainSession session = Started(chain);
  Deliver(session, Retr(1), MessageWithSubject("caf\xe9 \xff ok \xc3\xa9"));

  EXPECT_TRUE(log_.empty()) << log_.front();  // nothing thrown
  std::vector<Json> records = Records(path_);
  ASSERT_EQ(records.size(), 1u);
  // Invalid bytes become U+FFFD; valid UTF-8 ("é") stays.
  EXPECT_EQ(records[0]["subject"], "caf\xef\xbf\xbd \xef\xbf\xbd ok \xc3\xa9");
}

TEST_F(AuditLogTest, LongHeaderValueIsCut) {
  filter::FilterChain chain = Chain(Options());
  filter::ChainSession session = Started(chain);
  Deliver(session, Retr(1), MessageWithSubject(std::string(5000, 'x')));

  std::vector<Json> records = Records(path_);
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0]["subject"], std::string(998, 'x'));
}

TEST_F(AuditLogTest, SessionLineCountsItsMessages) {
  filter::FilterChain chain = Chain(Options());
  filter::ChainSession session = Started(chain, 9);
  session.info().user = "bob";
  for (std::uint64_t n = 1; n <= 3; ++n) Deliver(session, Retr(n));
  std::this_thread::sleep_for(30ms);
  session.End();

  std::vector<Json> records = Records(path_);
  ASSERT_EQ(records.size(), 4u);
  const Json& r = records.back();
  EXPECT_EQ(Keys(r), kSessionFields);
  EXPECT_EQ(r["event"], "session");
  EXPECT_EQ(r["session"], 9);
  EXPECT_EQ(r["client"], "192.0.2.1:1234");
  EXPECT_EQ(r["user"], "bob");
  EXPECT_EQ(r["upstream"], "pop.example.com:110");
  EXPECT_TRUE(r["duration_ms"].is_number_integer());
  EXPECT_GE(r["duration_ms"].get<std::int64_t>(), 30);
  EXPECT_LT(r["duration_ms"].get<std::int64_t>(), 30000);
  EXPECT_EQ(r["messages"], 3);
}

// audit_log sees no commands (so never a PASS argument) and holds no message in full.
TEST_F(AuditLogTest, HooksAreSessionAndMessageDoneOnly) {
  std::unique_ptr<filter::Plugin> plugin = MakeAuditLogFactory(Options())->Create();
  EXPECT_EQ(plugin->name(), "audit_log");
  filter::Hooks hooks = plugin->hooks();
  EXPECT_TRUE(hooks.session);
  EXPECT_FALSE(hooks.command);
  EXPECT_FALSE(hooks.message);
  EXPECT_TRUE(hooks.message_done);
  EXPECT_EQ(plugin->needs(), filter::Needs::kHeaders);

  filter::FilterChain chain = Chain(Options());
  filter::ChainSession session = Started(chain);
  EXPECT_FALSE(session.wants_commands());
  // Alone in the chain it must still see every RETR and TOP (issue 11: it got none),
  // and the header block is enough for its record.
  EXPECT_TRUE(session.wants_messages());
  EXPECT_EQ(session.needs(), filter::Needs::kHeaders);
}

// --- the file ---

TEST_F(AuditLogTest, CreatesWithMode0640AndAppends) {
  mode_t old_umask = ::umask(022);
  MakeAuditLogFactory(Options());
  ::umask(old_umask);
  struct stat st {};
  ASSERT_EQ(::stat(path_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0640u);

  { std::ofstream(path_, std::ios::binary) << "earlier line\n"; }
  filter::FilterChain chain = Chain(Options());
  filter::ChainSession session = Started(chain);
  Deliver(session, Retr(1));
  std::vector<std::string> lines = Lines(path_);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0], "earlier line");
}

TEST_F(AuditLogTest, RotatesBySizeAndKeepsAtMostKeep) {
  filter::FilterChain chain = Chain(Options({{"max_size", 1500}, {"keep", 2}}));
  filter::ChainSession session = Started(chain);
  for (std::uint64_t n = 1; n <= 40; ++n) Deliver(session, Retr(n));

  ASSERT_TRUE(fs::exists(path_ + ".1"));
  ASSERT_TRUE(fs::exists(path_ + ".2"));
  EXPECT_FALSE(fs::exists(path_ + ".3"));
  // Oldest first: path.2, path.1, path. The numbers run on without a gap to 40.
  std::vector<std::uint64_t> numbers;
  for (const std::string& file : {path_ + ".2", path_ + ".1", path_}) {
    EXPECT_LE(fs::file_size(file), 1500u) << file;
    std::vector<Json> records = Records(file);
    EXPECT_FALSE(records.empty()) << file;
    for (const Json& r : records) numbers.push_back(r["number"].get<std::uint64_t>());
  }
  ASSERT_FALSE(numbers.empty());
  EXPECT_EQ(numbers.back(), 40u);
  for (std::size_t i = 1; i < numbers.size(); ++i) EXPECT_EQ(numbers[i], numbers[i - 1] + 1);
}

TEST_F(AuditLogTest, KeepZeroStartsAfreshWithoutCopies) {
  filter::FilterChain chain = Chain(Options({{"max_size", 1024}, {"keep", 0}}));
  filter::ChainSession session = Started(chain);
  for (std::uint64_t n = 1; n <= 10; ++n) Deliver(session, Retr(n));

  EXPECT_FALSE(fs::exists(path_ + ".1"));
  EXPECT_LE(fs::file_size(path_), 1024u);
  std::vector<Json> records = Records(path_);
  ASSERT_FALSE(records.empty());
  EXPECT_EQ(records.back()["number"], 10);
}

TEST_F(AuditLogTest, MaxSizeZeroNeverRotates) {
  filter::FilterChain chain = Chain(Options({{"max_size", 0}}));
  filter::ChainSession session = Started(chain);
  for (std::uint64_t n = 1; n <= 100; ++n) Deliver(session, Retr(n));

  EXPECT_FALSE(fs::exists(path_ + ".1"));
  EXPECT_EQ(Records(path_).size(), 100u);
}

// logrotate without copytruncate: moves the file away and expects a new one at `path`.
TEST_F(AuditLogTest, FollowsExternalRotation) {
  filter::FilterChain chain = Chain(Options());
  filter::ChainSession session = Started(chain);
  Deliver(session, Retr(1));
  fs::rename(path_, path_ + ".moved");
  std::this_thread::sleep_for(1100ms);  // the file's identity is checked once a second
  Deliver(session, Retr(2));

  ASSERT_TRUE(fs::exists(path_));
  std::vector<Json> moved = Records(path_ + ".moved");
  std::vector<Json> fresh = Records(path_);
  ASSERT_EQ(moved.size(), 1u);
  ASSERT_EQ(fresh.size(), 1u);
  EXPECT_EQ(moved[0]["number"], 1);
  EXPECT_EQ(fresh[0]["number"], 2);
}

TEST_F(AuditLogTest, EightThreadsWriteIntactLines) {
  constexpr int kThreads = 8;
  constexpr std::uint64_t kPerThread = 500;
  // Long lines make a torn or interleaved write likely if writes were not whole.
  const std::string message = MessageWithSubject(std::string(900, 's'));
  filter::FilterChain chain = Chain(Options({{"max_size", 0}}));
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      filter::ChainSession session = chain.NewSession(Info(100 + t));
      session.Start();
      for (std::uint64_t n = 1; n <= kPerThread; ++n) Deliver(session, Retr(n), message);
      session.End();
    });
  }
  for (auto& thread : threads) thread.join();

  std::vector<Json> records = Records(path_);
  ASSERT_EQ(records.size(), kThreads * kPerThread + kThreads);
  std::map<std::uint64_t, std::set<std::uint64_t>> numbers;  // by session
  std::size_t session_lines = 0;
  for (const Json& r : records) {
    ASSERT_TRUE(r.is_object());
    if (r["event"] == "session") {
      ++session_lines;
      EXPECT_EQ(r["messages"], kPerThread);
    } else {
      EXPECT_EQ(r["subject"], std::string(900, 's'));
      numbers[r["session"].get<std::uint64_t>()].insert(r["number"].get<std::uint64_t>());
    }
  }
  EXPECT_EQ(session_lines, static_cast<std::size_t>(kThreads));
  ASSERT_EQ(numbers.size(), static_cast<std::size_t>(kThreads));
  for (const auto& [id, seen] : numbers) {
    EXPECT_EQ(seen.size(), kPerThread) << "session " << id;
    EXPECT_EQ(*seen.rbegin(), kPerThread) << "session " << id;
  }
  EXPECT_TRUE(log_.empty());
}

// Rotation under load: no line lost or torn, no file over max_size.
TEST_F(AuditLogTest, ConcurrentRotationLosesNoLine) {
  constexpr int kThreads = 8;
  constexpr std::uint64_t kPerThread = 200;
  constexpr std::uintmax_t kMaxSize = 20000;
  const std::string message = MessageWithSubject(std::string(900, 's'));
  filter::FilterChain chain = Chain(Options({{"max_size", 20000}, {"keep", 1000}}));
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      filter::ChainSession session = chain.NewSession(Info(100 + t));
      session.Start();
      for (std::uint64_t n = 1; n <= kPerThread; ++n) Deliver(session, Retr(n), message);
    });
  }
  for (auto& thread : threads) thread.join();

  std::set<std::pair<std::uint64_t, std::uint64_t>> seen;  // (session, number)
  std::vector<std::string> files = {path_};
  for (int n = 1; fs::exists(path_ + "." + std::to_string(n)); ++n) {
    files.push_back(path_ + "." + std::to_string(n));
  }
  EXPECT_GT(files.size(), 50u);
  for (const std::string& file : files) {
    EXPECT_LE(fs::file_size(file), kMaxSize) << file;
    for (const Json& r : Records(file)) {
      ASSERT_TRUE(r.is_object());
      seen.emplace(r["session"].get<std::uint64_t>(), r["number"].get<std::uint64_t>());
    }
  }
  EXPECT_EQ(seen.size(), kThreads * kPerThread);
  EXPECT_TRUE(log_.empty()) << log_.front();
}

// A full disk, simulated with a file size limit: the hook throws, the chain logs it, and
// the file keeps whole lines only.
TEST_F(AuditLogTest, WriteFailureThrowsFromTheHookAndLeavesNoPartialLine) {
  filter::FilterChain chain = Chain(Options());
  filter::ChainSession session = Started(chain);
  Deliver(session, Retr(1));

  struct rlimit saved {};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &saved), 0);
  auto old_handler = ::signal(SIGXFSZ, SIG_IGN);  // EFBIG instead of death
  struct rlimit small = saved;
  small.rlim_cur = static_cast<rlim_t>(fs::file_size(path_) + 50);
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
  Deliver(session, Retr(2));
  ::setrlimit(RLIMIT_FSIZE, &saved);
  ::signal(SIGXFSZ, old_handler);

  ASSERT_EQ(log_.size(), 1u);
  EXPECT_NE(log_[0].find("plugin audit_log failed in OnMessageDone RETR 2: cannot write"),
            std::string::npos)
      << log_[0];
  std::vector<Json> records = Records(path_);
  ASSERT_EQ(records.size(), 1u);

  // Space again: it goes on, and the session line counts only what was written.
  Deliver(session, Retr(3));
  session.End();
  records = Records(path_);
  ASSERT_EQ(records.size(), 3u);
  EXPECT_EQ(records[1]["number"], 3);
  EXPECT_EQ(records[2]["messages"], 2);
}

// --- options ---

TEST_F(AuditLogTest, UnknownOptionIsNamed) {
  EXPECT_EQ(BuildError(Options({{"colour", "red"}})), "colour: unknown option");
}

TEST_F(AuditLogTest, PathIsRequired) {
  EXPECT_EQ(BuildError({}), "path: required (the audit log file)");
  EXPECT_EQ(BuildError({{"path", ""}}), "path: must not be empty");
  EXPECT_EQ(BuildError({{"path", 42}}).rfind("path: expected a string", 0), 0u);
}

TEST_F(AuditLogTest, PathThatCannotBeOpenedStopsStartUp) {
  std::string missing_dir = (dir_ / "no" / "such" / "audit.log").string();
  EXPECT_EQ(BuildError({{"path", missing_dir}}),
            "path: cannot open " + missing_dir + ": No such file or directory");

  { std::ofstream(dir_ / "file") << "x"; }
  std::string under_file = (dir_ / "file" / "audit.log").string();
  EXPECT_EQ(BuildError({{"path", under_file}}),
            "path: cannot open " + under_file + ": Not a directory");

  EXPECT_EQ(BuildError({{"path", dir_.string()}}), "path: not a regular file: " + dir_.string());
}

TEST_F(AuditLogTest, UnwritableDirectoryStopsStartUp) {
  if (::geteuid() == 0) GTEST_SKIP() << "root writes anywhere";
  fs::path locked = dir_ / "locked";
  fs::create_directory(locked);
  fs::permissions(locked, fs::perms::owner_read | fs::perms::owner_exec);
  std::string path = (locked / "audit.log").string();
  EXPECT_EQ(BuildError({{"path", path}}), "path: cannot open " + path + ": Permission denied");
}

TEST_F(AuditLogTest, BadSizesAreNamed) {
  EXPECT_EQ(BuildError(Options({{"max_size", -1}})).rfind("max_size: expected an integer", 0), 0u);
  EXPECT_EQ(BuildError(Options({{"keep", "5"}})).rfind("keep: expected an integer", 0), 0u);
  EXPECT_EQ(BuildError(Options({{"keep", 1001}})).rfind("keep: expected an integer", 0), 0u);
  EXPECT_EQ(BuildError(Options({{"keep", 1000}, {"max_size", 0}})), "");
  EXPECT_EQ(BuildError(Options({{"max_size", 100}})).rfind("max_size: 100 bytes is smaller", 0),
            0u);
  EXPECT_EQ(BuildError(Options({{"max_size", 1024}})), "");
}

}  // namespace
}  // namespace popgate::plugins
