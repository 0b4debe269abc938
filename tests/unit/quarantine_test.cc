#include <gtest/gtest.h>
#include <linux/capability.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <regex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "mail/message.h"
#include "quarantine/maildir_quarantine.h"

namespace popgate::quarantine {
namespace {

namespace fs = std::filesystem;
using namespace std::string_literals;

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::vector<std::string> Names(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir)) {
    names.push_back(entry.path().filename().string());
  }
  return names;
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::size_t start = 0;
  for (std::size_t end; (end = text.find('\n', start)) != std::string::npos; start = end + 1) {
    lines.push_back(text.substr(start, end - start));
  }
  if (start < text.size()) lines.push_back(text.substr(start));
  return lines;
}

Entry MakeEntry(std::string_view original) {
  Entry entry;
  entry.original = original;
  entry.session_id = 42;
  entry.user = "alice";
  entry.client = "203.0.113.5:51234";
  entry.decided_by = "spam_tag";
  entry.reason = "score 12.5 > 5";
  return entry;
}

// Drops, for the calling thread only (capabilities are per thread; the raw syscall does
// not spread the change to the process), what lets root ignore file modes.
bool DropFileOverrides() {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2] = {};
  if (::syscall(SYS_capget, &header, data) != 0) return false;
  for (int cap : {CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER}) {
    data[cap / 32].effective &= ~(1u << (cap % 32));
  }
  return ::syscall(SYS_capset, &header, data) == 0;
}

class QuarantineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/popgate-quarantine-test-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    root_ = pattern;
    maildir_ = root_ / "quarantine";
  }
  void TearDown() override {
    std::error_code ec;
    for (const char* sub : {"tmp", "new", "cur"}) {
      fs::permissions(maildir_ / sub, fs::perms::owner_all, ec);
    }
    fs::remove_all(root_, ec);
  }

  fs::path root_;
  fs::path maildir_;
};

// --- Storing ---------------------------------------------------------------------------------

TEST_F(QuarantineTest, AMissingParentIsAnErrorNotCreated) {
  // A typo in the path must not make a new tree somewhere: the parent must exist.
  fs::path missing = root_ / "typo" / "quarantine";
  try {
    MaildirQuarantine quarantine(missing.string());
    FAIL() << "no error";
  } catch (const std::runtime_error& error) {
    EXPECT_NE(std::string(error.what()).find("No such file or directory"), std::string::npos)
        << error.what();
  }
  EXPECT_FALSE(fs::exists(root_ / "typo"));
}

TEST_F(QuarantineTest, CreatesTheMaildirWithPrivateModes) {
  fs::path nested = root_ / "a" / "b" / "quarantine";
  fs::create_directories(nested.parent_path());
  MaildirQuarantine quarantine(nested.string());
  EXPECT_EQ(quarantine.path(), nested.string());
  for (const fs::path& dir : {nested, nested / "tmp", nested / "new", nested / "cur"}) {
    struct stat st {};
    ASSERT_EQ(::stat(dir.c_str(), &st), 0) << dir;
    EXPECT_TRUE(S_ISDIR(st.st_mode)) << dir;
    EXPECT_EQ(st.st_mode & 07777, 0700u) << dir;
  }
  // An existing Maildir is used as it is.
  MaildirQuarantine again(nested.string());
  EXPECT_TRUE(Names(nested / "new").empty());
}

TEST_F(QuarantineTest, StoresTrickyBytesByteIdentical) {
  std::string all_bytes;
  for (int i = 0; i < 256; ++i) all_bytes += static_cast<char>(i);
  std::string big(5 * 1024 * 1024, '\0');
  std::mt19937 rng(7);
  for (auto& c : big) c = static_cast<char>(rng());
  const std::vector<std::string> messages = {
      "Subject: nul\r\n\r\nbefore\0after\r\n"s,
      "Subject: 8bit \xE9\xFF\x80\r\n\r\n\xC3\xA9t\xE9\r\n"s,
      "Subject: lone\r\n\r\nlone CR\rhere\nlone LF\r\r\nend\r\n"s,
      "Subject: no final newline\r\n\r\nlast line"s,
      "Subject: dots\r\n\r\n.\r\n..\r\n.hidden\r\n"s,
      "no header block at all"s,
      ""s,
      all_bytes,
      big,
  };
  MaildirQuarantine quarantine(maildir_.string());
  for (std::size_t i = 0; i < messages.size(); ++i) {
    SCOPED_TRACE("message " + std::to_string(i));
    std::string id = quarantine.Store(MakeEntry(messages[i]));
    fs::path stored = maildir_ / "new" / id;
    ASSERT_TRUE(fs::is_regular_file(stored));
    EXPECT_EQ(fs::file_size(stored), messages[i].size());
    EXPECT_TRUE(ReadFile(stored) == messages[i]);  // not EXPECT_EQ: 5 MB in a failure message
  }
  EXPECT_EQ(Names(maildir_ / "new").size(), messages.size());
}

TEST_F(QuarantineTest, FileLandsInNewAndNothingStaysInTmp) {
  MaildirQuarantine quarantine(maildir_.string());
  const std::string message = "Subject: x\r\n\r\nbody\r\n";
  std::string id = quarantine.Store(MakeEntry(message));
  EXPECT_EQ(Names(maildir_ / "new"), std::vector<std::string>{id});
  EXPECT_TRUE(Names(maildir_ / "tmp").empty());
  EXPECT_TRUE(Names(maildir_ / "cur").empty());
  struct stat st {};
  ASSERT_EQ(::stat((maildir_ / "new" / id).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(st.st_nlink, 1u);  // linked into new/, unlinked from tmp/
}

TEST_F(QuarantineTest, IdsAreMaildirNamesOfSafeCharacters) {
  MaildirQuarantine quarantine(maildir_.string());
  std::string id = quarantine.Store(MakeEntry("x"));
  EXPECT_TRUE(std::regex_match(id, std::regex(R"([A-Za-z0-9._-]+)"))) << id;
  EXPECT_TRUE(
      std::regex_match(id, std::regex(R"(\d+\.M\d+P\d+Q\d+\.[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*)")))
      << id;
  EXPECT_NE(id.find("P" + std::to_string(::getpid()) + "Q"), std::string::npos) << id;
}

TEST_F(QuarantineTest, IdsAreUniqueAcrossThreads) {
  constexpr int kThreads = 8;
  constexpr int kStores = 200;
  MaildirQuarantine quarantine(maildir_.string());
  MaildirQuarantine second(maildir_.string());  // another instance on the same Maildir
  std::mutex mutex;
  std::vector<std::pair<std::string, std::string>> stored;  // id, content
  std::vector<std::string> errors;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      MaildirQuarantine& q = t % 2 == 0 ? quarantine : second;
      for (int i = 0; i < kStores; ++i) {
        std::string content = "Subject: " + std::to_string(t) + "/" + std::to_string(i) + "\r\n";
        try {
          std::string id = q.Store(MakeEntry(content));
          std::lock_guard lock(mutex);
          stored.emplace_back(id, content);
        } catch (const std::exception& e) {
          std::lock_guard lock(mutex);
          errors.push_back(e.what());
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  ASSERT_TRUE(errors.empty()) << errors.front();
  ASSERT_EQ(stored.size(), std::size_t{kThreads * kStores});
  std::set<std::string> ids;
  for (const auto& [id, content] : stored) {
    ids.insert(id);
    EXPECT_EQ(ReadFile(maildir_ / "new" / id), content) << id;
  }
  EXPECT_EQ(ids.size(), stored.size());
  EXPECT_EQ(Names(maildir_ / "new").size(), stored.size());
  EXPECT_TRUE(Names(maildir_ / "tmp").empty());
  // One whole log line per store.
  std::set<std::string> logged;
  for (const auto& line : Lines(ReadFile(maildir_ / "quarantine.log"))) {
    logged.insert(nlohmann::json::parse(line).at("id").get<std::string>());
  }
  EXPECT_EQ(logged, ids);
}

TEST_F(QuarantineTest, UncreatablePathThrowsNamingIt) {
  std::ofstream(root_ / "file") << "not a directory";
  std::string path = (root_ / "file" / "quarantine").string();
  try {
    MaildirQuarantine quarantine(path);
    FAIL() << "no exception";
  } catch (const std::runtime_error& e) {
    std::string what = e.what();
    EXPECT_TRUE(what.starts_with("quarantine path " + path + ": ")) << what;
    EXPECT_NE(what.find("Not a directory"), std::string::npos) << what;
  }
}

TEST_F(QuarantineTest, PathThatIsAFileThrows) {
  std::ofstream(root_ / "file") << "not a directory";
  std::string path = (root_ / "file").string();
  try {
    MaildirQuarantine quarantine(path);
    FAIL() << "no exception";
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(std::string(e.what()), "quarantine path " + path + ": Not a directory");
  }
}

TEST_F(QuarantineTest, ReadOnlyNewThrowsAndLeavesNoFile) {
  MaildirQuarantine quarantine(maildir_.string());
  fs::permissions(maildir_ / "new", fs::perms::owner_read | fs::perms::owner_exec);
  // Root ignores modes: Store runs on a thread without the capabilities that let it.
  bool dropped = false;
  std::string error;
  std::thread thread([&] {
    dropped = DropFileOverrides();
    try {
      quarantine.Store(MakeEntry("Subject: x\r\n\r\nbody\r\n"));
    } catch (const std::runtime_error& e) {
      error = e.what();
    }
  });
  thread.join();
  ASSERT_TRUE(dropped);
  EXPECT_NE(error.find("Permission denied"), std::string::npos) << "error: " << error;
  EXPECT_NE(error.find((maildir_ / "new").string()), std::string::npos) << error;
  EXPECT_TRUE(Names(maildir_ / "new").empty());
  EXPECT_TRUE(Names(maildir_ / "tmp").empty());
  EXPECT_FALSE(fs::exists(maildir_ / "quarantine.log"));  // nothing logged for a failure
}

TEST_F(QuarantineTest, FailedWriteThrowsAndLeavesNoFile) {
  MaildirQuarantine quarantine(maildir_.string());
  const std::string message(64 * 1024, 'x');
  // A file size limit makes write(2) fail with EFBIG part way, as a full disk would.
  struct sigaction ignore {
  }, old_action{};
  ignore.sa_handler = SIG_IGN;
  ASSERT_EQ(::sigaction(SIGXFSZ, &ignore, &old_action), 0);
  rlimit old_limit{};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old_limit), 0);
  rlimit limit = old_limit;
  limit.rlim_cur = 4096;
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &limit), 0);
  std::string error;
  try {
    quarantine.Store(MakeEntry(message));
  } catch (const std::runtime_error& e) {
    error = e.what();
  }
  ::setrlimit(RLIMIT_FSIZE, &old_limit);
  ::sigaction(SIGXFSZ, &old_action, nullptr);
  EXPECT_NE(error.find("cannot write"), std::string::npos) << "error: " << error;
  EXPECT_TRUE(Names(maildir_ / "new").empty());
  EXPECT_TRUE(Names(maildir_ / "tmp").empty());
}

TEST_F(QuarantineTest, LogsOneJsonLinePerStore) {
  MaildirQuarantine quarantine(maildir_.string());
  Entry entry = MakeEntry("Subject: x\r\n\r\nbody\r\n");
  entry.reason = "bad byte \xFF here";  // not UTF-8: must not throw
  std::string first = quarantine.Store(entry);
  std::string second = quarantine.Store(MakeEntry("y"));
  std::vector<std::string> lines = Lines(ReadFile(maildir_ / "quarantine.log"));
  ASSERT_EQ(lines.size(), 2u);
  auto record = nlohmann::json::parse(lines[0]);
  EXPECT_EQ(record.at("id"), first);
  EXPECT_EQ(record.at("session"), 42);
  EXPECT_EQ(record.at("user"), "alice");
  EXPECT_EQ(record.at("client"), "203.0.113.5:51234");
  EXPECT_EQ(record.at("decided_by"), "spam_tag");
  EXPECT_EQ(record.at("reason"), "bad byte \xEF\xBF\xBD here");
  EXPECT_EQ(record.at("size"), entry.original.size());
  EXPECT_TRUE(std::regex_match(record.at("time").get<std::string>(),
                               std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)")));
  EXPECT_EQ(nlohmann::json::parse(lines[1]).at("id"), second);
  struct stat st {};
  ASSERT_EQ(::stat((maildir_ / "quarantine.log").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST_F(QuarantineTest, FailedLogWriteWarnsButStores) {
  std::vector<std::string> warnings;
  MaildirQuarantine quarantine(maildir_.string(),
                               [&](std::string_view line) { warnings.emplace_back(line); });
  fs::create_directory(maildir_ / "quarantine.log");  // open(2) for writing fails: EISDIR
  const std::string message = "Subject: x\r\n\r\nbody\r\n";
  std::string id = quarantine.Store(MakeEntry(message));
  EXPECT_EQ(ReadFile(maildir_ / "new" / id), message);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("quarantine.log"), std::string::npos) << warnings[0];
  EXPECT_NE(warnings[0].find(id), std::string::npos) << warnings[0];
  EXPECT_NE(warnings[0].find("Is a directory"), std::string::npos) << warnings[0];
}

// --- The notice ------------------------------------------------------------------------------

const std::string kOriginal =
    "From: Mallory <mallory@example.net>\r\n"
    "To: Alice <alice@example.com>\r\n"
    "Subject: Cheap pills\r\n"
    "Date: Tue, 01 Jul 2025 10:00:00 +0200\r\n"
    "Message-ID: <spam-1@example.net>\r\n"
    "\r\n"
    "Buy now.\r\n";

// Every line ends in CRLF; no CR or NUL anywhere else.
bool CrlfOnly(const std::string& text) {
  if (text.empty() || !text.ends_with("\r\n")) return false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\0') return false;
    if (text[i] == '\n' && (i == 0 || text[i - 1] != '\r')) return false;
    if (text[i] == '\r' && (i + 1 == text.size() || text[i + 1] != '\n')) return false;
  }
  return true;
}

std::vector<std::string> FieldNames(const mail::Message& message) {
  std::vector<std::string> names;
  for (const auto& field : message.headers()) names.emplace_back(field.name());
  return names;
}

const std::vector<std::string> kNoticeFields = {"From",
                                                "To",
                                                "Date",
                                                "Subject",
                                                "Message-ID",
                                                "Auto-Submitted",
                                                "X-Popgate-Quarantine-Id",
                                                "MIME-Version",
                                                "Content-Type",
                                                "Content-Transfer-Encoding"};

TEST(RejectNoticeTest, IsAWellFormedMessageNamingIdPluginAndReason) {
  mail::Message original(kOriginal);
  std::string id = "1751364000.M123456P4242Q7.mail.example.com";
  std::string notice = RejectNotice(original, id, "spam_tag", "score 12.5 > 5");
  EXPECT_TRUE(CrlfOnly(notice)) << notice;

  mail::Message parsed(notice);
  EXPECT_EQ(FieldNames(parsed), kNoticeFields);
  const mail::Headers& h = parsed.headers();
  EXPECT_EQ(h.Get("From"), "popgate <postmaster@localhost>");
  EXPECT_EQ(h.Get("To"), "Alice <alice@example.com>");
  EXPECT_EQ(h.Get("Subject"), "[popgate] message withheld: Cheap pills");
  EXPECT_EQ(h.Get("Auto-Submitted"), "auto-generated");
  EXPECT_EQ(h.Get("X-Popgate-Quarantine-Id"), id);
  EXPECT_EQ(h.Get("MIME-Version"), "1.0");
  EXPECT_EQ(h.Get("Content-Type"), "text/plain; charset=utf-8");
  EXPECT_TRUE(std::regex_match(
      *h.Get("Date"),
      std::regex(R"([A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d \+0000)")))
      << *h.Get("Date");
  EXPECT_TRUE(
      std::regex_match(*h.Get("Message-ID"), std::regex(R"(<[A-Za-z0-9._-]+@[A-Za-z0-9._-]+>)")))
      << *h.Get("Message-ID");
  EXPECT_NE(*h.Get("Message-ID"), "<spam-1@example.net>");

  std::string body(parsed.body());
  for (const std::string& expected :
       {id, "\"spam_tag\""s, "score 12.5 > 5"s, "Mallory <mallory@example.net>"s, "Cheap pills"s,
        "Tue, 01 Jul 2025 10:00:00 +0200"s, "<spam-1@example.net>"s,
        std::to_string(kOriginal.size()) + " bytes", "postmaster"s}) {
    EXPECT_NE(body.find(expected), std::string::npos) << expected << "\n" << body;
  }
  for (const auto& line : Lines(notice)) EXPECT_LE(line.size(), 78u + 1) << line;
}

TEST(RejectNoticeTest, MessageIdsDiffer) {
  mail::Message original(kOriginal);
  mail::Message a(RejectNotice(original, "id", "p", "r"));
  mail::Message b(RejectNotice(original, "id", "p", "r"));
  EXPECT_NE(a.headers().Get("Message-ID"), b.headers().Get("Message-ID"));
}

TEST(RejectNoticeTest, WithoutToOrSubjectLeavesThemOut) {
  mail::Message original("From: a@example.com\r\n\r\nbody\r\n"s);
  mail::Message parsed(RejectNotice(original, "id", "p", "r"));
  EXPECT_FALSE(parsed.headers().Has("To"));
  EXPECT_EQ(parsed.headers().Get("Subject"), "[popgate] message withheld");
  EXPECT_NE(std::string(parsed.body()).find("Subject:    (none)"), std::string::npos)
      << parsed.body();
}

TEST(RejectNoticeTest, HostileHeadersCannotInjectFields) {
  // Lone CR, NUL, a folded line that looks like a field, 8-bit garbage, a Unicode line
  // separator; and the same in To, Message-ID and the reason.
  const std::string original_bytes =
      "From: x@example.net\rX-Evil-From: 1\r\n"
      "To: alice@example.com\rBcc: eve@example.net\r\n"
      "Subject: hi\rX-Evil: 1\0Bcc: eve@example.net\xFF\xE2\x80\xA8X-Evil-2: 2\r\n"
      "  \r\n"
      "\tX-Evil-3: 3\r\n"
      "Message-ID: <a@b>\r\r\n"
      "\r\n"
      "body\r\n"s;
  mail::Message original(original_bytes);
  std::string notice =
      RejectNotice(original, "id\r\nX-Evil-Id: 1", "plug\rX-Evil-Plugin: 1", "why\r\nX-Evil-R: 1");
  EXPECT_TRUE(CrlfOnly(notice)) << notice;

  mail::Message parsed(notice);
  EXPECT_EQ(FieldNames(parsed), kNoticeFields);
  std::string subject = *parsed.headers().Get("Subject");
  EXPECT_TRUE(subject.starts_with("[popgate] message withheld: hi X-Evil: 1 Bcc: eve@example.net?"))
      << subject;
  for (unsigned char c : subject) EXPECT_GE(c, 0x20) << subject;
  EXPECT_EQ(parsed.headers().Get("X-Popgate-Quarantine-Id"), "id__X-Evil-Id__1");
  // No line of the notice, header or body, starts with what the original smuggled in.
  for (const auto& line : Lines(notice)) {
    EXPECT_FALSE(line.starts_with("X-Evil")) << line;
    EXPECT_FALSE(line.starts_with("Bcc")) << line;
  }
}

TEST(RejectNoticeTest, LongSubjectIsCapped) {
  std::string words;
  while (words.size() < 10000) words += "spam ";
  std::string unbroken(5000, 'A');
  for (const std::string& text : {words, unbroken}) {
    mail::Message original("To: a@example.com\r\nSubject: " + text + "\r\n\r\nbody\r\n");
    std::string notice = RejectNotice(original, "id", "p", "r");
    mail::Message parsed(notice);
    std::string subject = *parsed.headers().Get("Subject");
    EXPECT_LE(subject.size(), 200u);
    EXPECT_TRUE(subject.ends_with("...")) << subject;
    for (const auto& line : Lines(notice)) EXPECT_LE(line.size(), 998u);
  }
}

TEST(RejectNoticeTest, CutsNoCharacterOrEncodedWordInTwo) {
  std::string subject(140, 'a');
  subject += " =?utf-8?B?SGVsbG8gd29ybGQgaGVsbG8gd29ybGQ=?= ";
  std::string accents;
  for (int i = 0; i < 100; ++i) accents += "\xC3\xA9";  // é
  for (const std::string& text : {subject, accents}) {
    mail::Message original("Subject: " + text + "\r\n\r\n");
    mail::Message parsed(RejectNotice(original, "id", "p", "r"));
    std::string value = *parsed.headers().Get("Subject");
    EXPECT_EQ(value.find("=?"), std::string::npos) << value;
    EXPECT_EQ(value.find('?'), std::string::npos) << value;  // no broken UTF-8 made '?'
    EXPECT_TRUE(value.ends_with("...")) << value;
  }
}

TEST(RejectNoticeTest, DescribesTheMessageAsReceived) {
  mail::Message original(kOriginal);
  original.headers().Set("Subject", "edited by a plugin");
  original.headers().Remove("To");
  mail::Message parsed(RejectNotice(original, "id", "p", "r"));
  EXPECT_EQ(parsed.headers().Get("Subject"), "[popgate] message withheld: Cheap pills");
  EXPECT_EQ(parsed.headers().Get("To"), "Alice <alice@example.com>");
}

}  // namespace
}  // namespace popgate::quarantine
