#include "audit_log/audit_log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <limits>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

#include "text/errno_text.h"

namespace popgate::plugins {
namespace {

using Json = nlohmann::ordered_json;  // keeps the fields in the documented order
using SteadyClock = std::chrono::steady_clock;

constexpr std::int64_t kDefaultMaxSize = std::int64_t{100} << 20;  // 100 MiB
constexpr std::int64_t kDefaultKeep = 5;
constexpr std::int64_t kMaxKeep = 1000;
constexpr std::uint64_t kMinMaxSize = 1024;
// RFC 5322 §2.1.1's line limit: bounds what a sender can make us write per field.
constexpr std::size_t kMaxHeaderValue = 998;
// How often to ask whether `path` is still the file we have open (logrotate's move).
constexpr auto kIdentityCheckInterval = std::chrono::seconds(1);

struct Settings {
  std::string path;
  std::uint64_t max_size = 0;  // 0: never rotate by size
  std::uint64_t keep = 0;
};

Settings ParseOptions(const filter::Options& options) {
  CheckKnownOptions(options, {"path", "max_size", "keep"});
  if (!options.contains("path")) {
    throw std::invalid_argument("path: required (the audit log file)");
  }
  Settings settings;
  settings.path = OptionString(options, "path", "");
  if (settings.path.empty()) throw std::invalid_argument("path: must not be empty");
  settings.max_size = static_cast<std::uint64_t>(OptionInteger(
      options, "max_size", kDefaultMaxSize, 0, std::numeric_limits<std::int64_t>::max()));
  // A file smaller than a few records would rotate on nearly every line.
  if (settings.max_size != 0 && settings.max_size < kMinMaxSize) {
    throw std::invalid_argument("max_size: " + std::to_string(settings.max_size) +
                                " bytes is smaller than a few records; at least " +
                                std::to_string(kMinMaxSize) + ", or 0 to never rotate by size");
  }
  settings.keep =
      static_cast<std::uint64_t>(OptionInteger(options, "keep", kDefaultKeep, 0, kMaxKeep));
  return settings;
}

// -1 with errno set on failure.
int OpenForAppend(const std::string& path) {
  return ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOCTTY, 0640);
}

std::uint64_t SizeOf(int fd) {
  struct stat st {};
  return ::fstat(fd, &st) == 0 ? static_cast<std::uint64_t>(st.st_size) : 0;
}

// The audit file, shared by every session: one mutex serialises rotation and writes.
class LogFile {
 public:
  // Opens (creates) the file; throws std::invalid_argument naming `path` if it cannot.
  explicit LogFile(Settings settings) : settings_(std::move(settings)) {
    const std::string& path = settings_.path;
    struct stat st {};
    // A FIFO would block the open, and nothing but a regular file can be rotated.
    if (::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
      throw std::invalid_argument("path: not a regular file: " + path);
    }
    fd_ = OpenForAppend(path);
    if (fd_ < 0)
      throw std::invalid_argument("path: cannot open " + path + ": " + text::ErrnoText(errno));
    size_ = SizeOf(fd_);
    next_identity_check_ = SteadyClock::now() + kIdentityCheckInterval;
  }
  ~LogFile() { ::close(fd_); }
  LogFile(const LogFile&) = delete;
  LogFile& operator=(const LogFile&) = delete;

  // Appends `line` (one record and its '\n'). Throws std::runtime_error when it cannot;
  // the line is then not in the file, not even in part.
  void Append(std::string_view line) {
    std::lock_guard lock(mutex_);
    ReopenIfReplaced();
    if (IsFullFor(line.size())) Rotate();
    Write(line);
  }

 private:
  // logrotate (or an admin) moved or deleted the file: follow `path` to the new one.
  void ReopenIfReplaced() {
    auto now = SteadyClock::now();
    if (now < next_identity_check_) return;
    struct stat on_disk {};
    struct stat open {};
    bool same = ::stat(settings_.path.c_str(), &on_disk) == 0 && ::fstat(fd_, &open) == 0 &&
                on_disk.st_ino == open.st_ino && on_disk.st_dev == open.st_dev;
    if (!same) Reopen();  // on failure, the next write tries again
    next_identity_check_ = now + kIdentityCheckInterval;
  }

  bool IsFullFor(std::size_t incoming) const {
    // An empty file takes any line, however long: rotating would not make it fit.
    return settings_.max_size != 0 && size_ != 0 && size_ + incoming > settings_.max_size;
  }

  // path.(N-1) -> path.N ... path -> path.1, then a fresh path. The rename onto path.N
  // drops the oldest, so at most `keep` rotated files remain.
  void Rotate() {
    const std::string& path = settings_.path;
    if (settings_.keep == 0) {
      if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
        throw std::runtime_error("cannot remove " + path +
                                 " to rotate it: " + text::ErrnoText(errno));
      }
    } else {
      for (std::uint64_t i = settings_.keep - 1; i >= 1; --i) {
        RenameIfExists(Numbered(i), Numbered(i + 1));
      }
      RenameIfExists(path, Numbered(1));
    }
    Reopen();
  }

  std::string Numbered(std::uint64_t n) const { return settings_.path + "." + std::to_string(n); }

  static void RenameIfExists(const std::string& from, const std::string& to) {
    if (::rename(from.c_str(), to.c_str()) != 0 && errno != ENOENT) {
      throw std::runtime_error("cannot rename " + from + " to " + to + ": " +
                               text::ErrnoText(errno));
    }
  }

  // Keeps the old descriptor if the new file cannot be opened.
  void Reopen() {
    int fd = OpenForAppend(settings_.path);
    if (fd < 0) {
      throw std::runtime_error("cannot open " + settings_.path + ": " + text::ErrnoText(errno));
    }
    ::close(fd_);
    fd_ = fd;
    size_ = SizeOf(fd_);
  }

  // One write(2) of the whole line: with O_APPEND on a local file system, no other
  // writer's bytes can land inside it, even another process's.
  void Write(std::string_view line) {
    ssize_t written = 0;
    do {
      written = ::write(fd_, line.data(), line.size());
    } while (written < 0 && errno == EINTR);
    if (written < 0) {
      throw std::runtime_error("cannot write " + settings_.path + ": " + text::ErrnoText(errno));
    }
    if (static_cast<std::size_t>(written) < line.size()) {
      // Disk full or a file size limit: take the piece back so every line stays whole.
      std::uint64_t end = SizeOf(fd_);
      if (end >= static_cast<std::uint64_t>(written) &&
          ::ftruncate(fd_, static_cast<off_t>(end - written)) != 0) {
        // Nothing more to do: the error below is what matters.
      }
      throw std::runtime_error("cannot write " + settings_.path + ": only " +
                               std::to_string(written) + " of " + std::to_string(line.size()) +
                               " bytes fit (disk full?)");
    }
    size_ += static_cast<std::uint64_t>(written);
  }

  const Settings settings_;
  std::mutex mutex_;
  int fd_ = -1;
  std::uint64_t size_ = 0;  // of the open file, as we wrote it
  SteadyClock::time_point next_identity_check_;
};

// RFC 3339, UTC, milliseconds: "2024-05-01T12:34:56.789Z".
std::string Rfc3339(std::chrono::system_clock::time_point when) {
  auto ms = std::chrono::floor<std::chrono::milliseconds>(when.time_since_epoch()).count();
  std::time_t seconds = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&seconds, &tm);
  char text[40];
  std::size_t n = std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(text + n, sizeof text - n, ".%03dZ", static_cast<int>(ms % 1000));
  return text;
}

Json StringOrNull(std::string_view text) {
  return text.empty() ? Json(nullptr) : Json(std::string(text));
}

// The unfolded value of the first `name` field, cut at kMaxHeaderValue bytes; null when the
// message has none.
Json HeaderOrNull(const mail::Headers& headers, std::string_view name) {
  std::optional<std::string> value = headers.Get(name);
  if (!value) return nullptr;
  if (value->size() > kMaxHeaderValue) value->resize(kMaxHeaderValue);
  return *value;
}

std::string_view FailureName(filter::PluginRun::Failure failure) {
  switch (failure) {
    case filter::PluginRun::Failure::kNone:
      return "none";
    case filter::PluginRun::Failure::kException:
      return "exception";
    case filter::PluginRun::Failure::kTimeout:
      return "timeout";
    case filter::PluginRun::Failure::kUnavailable:
      return "unavailable";
  }
  return "unknown";
}

// The fields both records start with.
Json RecordHead(std::string_view event, const filter::SessionInfo& session) {
  Json record;
  record["time"] = Rfc3339(std::chrono::system_clock::now());
  record["event"] = event;
  record["session"] = session.id;
  record["client"] = session.client_address;
  record["user"] = StringOrNull(session.user);
  record["upstream"] = session.upstream;
  return record;
}

Json PluginRuns(const std::vector<filter::PluginRun>& runs) {
  Json list = Json::array();
  for (const filter::PluginRun& run : runs) {
    Json entry;
    entry["name"] = run.plugin;
    entry["verdict"] = filter::ToString(run.verdict);
    entry["failure"] = FailureName(run.failure);
    entry["ms"] = static_cast<double>(run.elapsed.count()) / 1000.0;
    list.push_back(std::move(entry));
  }
  return list;
}

Json MessageRecord(const filter::SessionInfo& session, const filter::MessageContext& context,
                   const mail::Message& message, const filter::MessageReport& report) {
  Json record = RecordHead("message", session);
  record["command"] = context.command;
  record["number"] = context.number;
  record["uidl"] = context.uidl ? Json(*context.uidl) : Json(nullptr);
  record["size_in"] = report.size_in;
  record["size_out"] = report.size_out;
  const mail::Headers& headers = message.headers();
  record["message_id"] = HeaderOrNull(headers, "Message-ID");
  record["from"] = HeaderOrNull(headers, "From");
  record["subject"] = HeaderOrNull(headers, "Subject");
  record["verdict"] = filter::ToString(report.result.verdict);
  record["decided_by"] = StringOrNull(report.decided_by);
  record["reason"] = StringOrNull(report.result.reason);
  record["quarantine_id"] = StringOrNull(report.quarantine_id);
  record["partial"] = context.partial;
  record["plugins"] = PluginRuns(report.runs);
  return record;
}

// One line of JSON. Header bytes are the sender's: anything that is not UTF-8 becomes
// U+FFFD rather than an exception.
std::string ToLine(const Json& record) {
  std::string line = record.dump(-1, ' ', false, Json::error_handler_t::replace);
  line += '\n';
  return line;
}

// One per session. Its counters live here, so an instance the chain replaces after a
// timeout starts them again (a new SessionStart).
class AuditLog final : public filter::Plugin {
 public:
  explicit AuditLog(std::shared_ptr<LogFile> file) : file_(std::move(file)) {}

  std::string_view name() const override { return "audit_log"; }
  // The header block is all it reads, and only after the chain: no OnMessage, so the core
  // need not hold whole messages for it.
  filter::Needs needs() const override { return filter::Needs::kHeaders; }
  filter::Hooks hooks() const override {
    filter::Hooks hooks;
    hooks.command = hooks.message = false;
    return hooks;
  }

  void SessionStart(const filter::SessionInfo&) override { started_ = SteadyClock::now(); }

  void OnMessageDone(const filter::SessionInfo& session, const filter::MessageContext& context,
                     const mail::Message& message, const filter::MessageReport& report) override {
    file_->Append(ToLine(MessageRecord(session, context, message, report)));
    ++messages_;
  }

  void SessionEnd(const filter::SessionInfo& session) override {
    Json record = RecordHead("session", session);
    record["duration_ms"] =
        std::chrono::duration_cast<std::chrono::milliseconds>(SteadyClock::now() - started_)
            .count();
    record["messages"] = messages_;
    file_->Append(ToLine(record));
  }

 private:
  std::shared_ptr<LogFile> file_;
  SteadyClock::time_point started_ = SteadyClock::now();
  std::uint64_t messages_ = 0;  // message lines written
};

}  // namespace

std::shared_ptr<filter::PluginFactory> MakeAuditLogFactory(const filter::Options& options) {
  auto file = std::make_shared<LogFile>(ParseOptions(options));
  return filter::MakeFactory("audit_log", [file]() -> std::unique_ptr<filter::Plugin> {
    return std::make_unique<AuditLog>(file);
  });
}

}  // namespace popgate::plugins
