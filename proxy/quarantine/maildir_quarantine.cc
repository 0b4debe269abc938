#include "quarantine/maildir_quarantine.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <ctime>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>

#include "mail/headers.h"
#include "pop3/multiline.h"
#include "text/errno_text.h"
#include "text/one_line.h"

namespace popgate::quarantine {
namespace {

// Process-wide, so two instances on one Maildir (or a Store and a RejectNotice) never
// make the same name in the same microsecond.
std::atomic<std::uint64_t> g_counter{0};

[[noreturn]] void FailPath(const std::string& path, const std::string& dir, int error) {
  std::string what = "quarantine path " + path + ": ";
  if (dir != path) what += dir + ": ";
  throw std::runtime_error(what + text::ErrnoText(error));
}

// `dir` exists as a directory afterwards, or this throws.
void MakeDirectory(const std::string& path, const std::string& dir) {
  struct stat st {};
  if (::stat(dir.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode)) FailPath(path, dir, ENOTDIR);
    return;
  }
  if (errno != ENOENT) FailPath(path, dir, errno);
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) FailPath(path, dir, errno);
  if (::stat(dir.c_str(), &st) != 0) FailPath(path, dir, errno);  // lost a race to an rmdir
  if (!S_ISDIR(st.st_mode)) FailPath(path, dir, ENOTDIR);
}

// mkdir -p, every directory made 0700.
// The host name as Maildir names and Message-IDs may hold it: [A-Za-z0-9-] runs joined by
// single dots (a dot-atom, RFC 5322 §3.2.3), other bytes as '_', at most 64 bytes.
const std::string& HostPart() {
  static const std::string host = [] {
    char buffer[256] = {};
    if (::gethostname(buffer, sizeof buffer - 1) != 0) buffer[0] = '\0';
    std::string out;
    for (const char* p = buffer; *p != '\0' && out.size() < 64; ++p) {
      char c = *p;
      bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
      if (alnum || c == '-') {
        out += c;
      } else if (c == '.') {
        if (!out.empty() && out.back() != '.') out += '.';
      } else {
        out += '_';
      }
    }
    while (!out.empty() && out.back() == '.') out.pop_back();
    return out.empty() ? std::string("localhost") : out;
  }();
  return host;
}

struct Now {
  std::time_t seconds;
  long micros;
};

Now CurrentTime() {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return {ts.tv_sec, ts.tv_nsec / 1000};
}

// <seconds>.M<microseconds>P<pid>Q<counter>.<host>
std::string UniqueName() {
  Now now = CurrentTime();
  std::uint64_t count = ++g_counter;
  return std::to_string(now.seconds) + ".M" + std::to_string(now.micros) + "P" +
         std::to_string(::getpid()) + "Q" + std::to_string(count) + "." + HostPart();
}

// 2025-07-01T12:00:00.123Z
std::string IsoTime(const Now& now) {
  std::tm tm{};
  ::gmtime_r(&now.seconds, &tm);
  char buffer[96];
  std::snprintf(buffer, sizeof buffer, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(now.micros / 1000));
  return buffer;
}

// RFC 5322 §3.3, in UTC and in English whatever the locale: "Tue, 01 Jul 2025 12:00:00 +0000".
std::string RfcDate(std::time_t seconds) {
  static constexpr const char* kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                            "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  std::tm tm{};
  ::gmtime_r(&seconds, &tm);
  char buffer[128];
  std::snprintf(buffer, sizeof buffer, "%s, %02d %s %04d %02d:%02d:%02d +0000",
                kDays[tm.tm_wday % 7], tm.tm_mday, kMonths[tm.tm_mon % 12], tm.tm_year + 1900,
                tm.tm_hour, tm.tm_min, tm.tm_sec);
  return buffer;
}

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }
  // close(2)'s own result: on some file systems (NFS) a write error shows up only here.
  int Close() {
    int fd = std::exchange(fd_, -1);
    return ::close(fd);
  }

 private:
  int fd_;
};

// 0, or the errno of the write that failed.
int WriteAll(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (n == 0) return EIO;
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
  return 0;
}

// 0, or errno.
int SyncDirectory(const std::string& dir) {
  Fd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0) return errno;
  if (::fsync(fd.get()) != 0) return errno;
  if (fd.Close() != 0) return errno;
  return 0;
}

// File systems without hard links: there a rename has to do.
bool NoHardLinks(int error) {
  return error == EPERM || error == ENOTSUP || error == EOPNOTSUPP || error == ENOSYS ||
         error == EMLINK;
}

// --- The notice ----------------------------------------------------------------------------

// The original's To, made printable. Too long for one header line: cut after the last
// whole address that fits, or left out.
std::optional<std::string> NoticeTo(const mail::Headers& headers) {
  static constexpr std::size_t kMax = 900;
  std::optional<std::string> to = headers.Get("To");
  if (!to) return std::nullopt;
  std::string value = text::ReadableLine(*to, 1 << 20);
  if (value.size() > kMax) {
    std::size_t comma = value.rfind(',', kMax);
    if (comma == std::string::npos) return std::nullopt;
    value.resize(comma);
    while (!value.empty() && value.back() == ' ') value.pop_back();
  }
  if (value.empty()) return std::nullopt;
  return value;
}

// An id as the notice may show it: [A-Za-z0-9._-] (Store's ids are already), at most 255.
std::string SafeId(std::string_view id) {
  std::string out;
  for (char c : id.substr(0, 255)) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-';
    out += ok ? c : '_';
  }
  return out.empty() ? std::string("unknown") : out;
}

}  // namespace

MaildirQuarantine::MaildirQuarantine(std::string path, WarnFn warn)
    : path_(std::move(path)), log_path_(path_ + "/quarantine.log"), warn_(std::move(warn)) {
  // Only the Maildir itself is made: a parent that does not exist is a mistyped path, and
  // making it would hide the mistake until someone looks for the quarantined mail.
  MakeDirectory(path_, path_);
  for (const char* sub : {"tmp", "new", "cur"}) MakeDirectory(path_, path_ + "/" + sub);
  // Fail at start-up, not at the first reject.
  for (const char* sub : {"tmp", "new"}) {
    std::string dir = path_ + "/" + sub;
    if (::access(dir.c_str(), W_OK | X_OK) != 0) FailPath(path_, dir, errno);
  }
}

std::string MaildirQuarantine::Store(const Entry& entry) {
  for (int attempt = 1;; ++attempt) {
    std::string id = UniqueName();
    std::string tmp = path_ + "/tmp/" + id;
    std::string dest = path_ + "/new/" + id;
    auto fail = [&](std::string_view step, const std::string& file, int error) {
      throw std::runtime_error("quarantine: " + std::string(step) + " " + file + ": " +
                               text::ErrnoText(error));
    };

    Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY, 0600));
    if (fd.get() < 0) {
      int error = errno;
      if (error == EEXIST && attempt < 3) continue;  // another process's file: a new name
      fail("cannot create", tmp, error);
    }
    int error = WriteAll(fd.get(), entry.original);
    const char* step = "cannot write";
    if (error == 0 && ::fsync(fd.get()) != 0) error = errno, step = "cannot fsync";
    if (error == 0 && fd.Close() != 0) error = errno, step = "cannot close";
    if (error != 0) {
      ::unlink(tmp.c_str());
      fail(step, tmp, error);
    }

    // link(2) never replaces a file that is there; rename(2) would.
    bool linked = ::link(tmp.c_str(), dest.c_str()) == 0;
    if (!linked) {
      error = errno;
      if (NoHardLinks(error)) {
        if (::rename(tmp.c_str(), dest.c_str()) != 0) {
          error = errno;
          ::unlink(tmp.c_str());
          fail("cannot move into new/:", dest, error);
        }
      } else {
        ::unlink(tmp.c_str());
        if (error == EEXIST && attempt < 3) continue;
        fail("cannot link into new/:", dest, error);
      }
    } else if (::unlink(tmp.c_str()) != 0) {
      // The message is in new/; a stray copy in tmp/ is only untidy.
      Warn("quarantine: cannot remove " + tmp + ": " + text::ErrnoText(errno) + " (message " + id +
           " is stored)");
    }
    error = SyncDirectory(path_ + "/new");
    if (error != 0) {
      ::unlink(dest.c_str());
      fail("cannot fsync", path_ + "/new", error);
    }

    try {
      AppendLog(entry, id);
    } catch (const std::exception& e) {
      Warn("quarantine log " + log_path_ + ": " + e.what() + " (message " + id + " is stored)");
    }
    return id;
  }
}

void MaildirQuarantine::AppendLog(const Entry& entry, const std::string& id) {
  using Json = nlohmann::ordered_json;
  Json record;
  record["time"] = IsoTime(CurrentTime());
  record["id"] = id;
  record["session"] = entry.session_id;
  record["user"] = entry.user;
  record["client"] = entry.client;
  record["decided_by"] = entry.decided_by;
  record["reason"] = entry.reason;
  record["size"] = entry.original.size();
  std::string line = record.dump(-1, ' ', false, Json::error_handler_t::replace) + "\n";

  std::lock_guard lock(log_mutex_);
  Fd fd(::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOCTTY, 0600));
  if (fd.get() < 0) throw std::runtime_error(text::ErrnoText(errno));
  // O_APPEND: one write(2) of the whole line, so other writers' lines can't land inside it.
  if (int error = WriteAll(fd.get(), line); error != 0)
    throw std::runtime_error(text::ErrnoText(error));
  if (fd.Close() != 0) throw std::runtime_error(text::ErrnoText(errno));
}

void MaildirQuarantine::Warn(std::string_view line) const {
  if (!warn_) return;
  try {
    warn_(line);
  } catch (...) {
    // A logger that throws must not turn a stored message into a failure.
  }
}

std::string RejectNotice(const mail::Message& original, std::string_view quarantine_id,
                         std::string_view decided_by, std::string_view reason) {
  // The headers as received, whatever plugins did to the message since.
  std::string_view bytes = original.original();
  const mail::Headers old(bytes.substr(0, pop3::SplitHeaders(bytes).header_size));
  auto field = [&](std::string_view name) -> std::string {
    std::optional<std::string> value = old.Get(name);
    std::string shown = value ? text::ReadableLine(*value, 200) : std::string();
    return shown.empty() ? std::string("(none)") : shown;
  };
  std::string id = SafeId(quarantine_id);
  std::string plugin = text::ReadableLine(decided_by, 100);
  std::string why = text::ReadableLine(reason, 300);
  Now now = CurrentTime();

  mail::Headers headers;
  headers.Add("From", "popgate <postmaster@localhost>");
  if (auto to = NoticeTo(old)) headers.Add("To", *to);
  headers.Add("Date", RfcDate(now.seconds));
  std::string subject = text::ReadableLine(old.Get("Subject").value_or(""), 150);
  headers.Add("Subject", subject.empty() ? "[popgate] message withheld"
                                         : "[popgate] message withheld: " + subject);
  headers.Add("Message-ID", "<popgate." + std::to_string(now.seconds) + "." +
                                std::to_string(now.micros) + "." + std::to_string(::getpid()) +
                                "." + std::to_string(++g_counter) + "@" + HostPart() + ">");
  headers.Add("Auto-Submitted", "auto-generated");
  headers.Add(kQuarantineIdHeader, id);
  headers.Add("MIME-Version", "1.0");
  headers.Add("Content-Type", "text/plain; charset=utf-8");
  headers.Add("Content-Transfer-Encoding", "8bit");

  std::string size = std::to_string(original.original_size()) + " bytes";
  if (original.partial()) size += " (only part of the message was seen)";
  const std::string lines[] = {
      "popgate withheld a message sent to this mailbox.",
      "",
      "The message",
      "  From:       " + field("From"),
      "  Subject:    " + field("Subject"),
      "  Date:       " + field("Date"),
      "  Message-ID: " + field("Message-ID"),
      "  Size:       " + size,
      "was rejected by the filter \"" + (plugin.empty() ? std::string("unknown") : plugin) + "\":",
      "  " + (why.empty() ? std::string("(no reason given)") : why),
      "",
      "It has not been delivered to you. It is kept in quarantine under the id",
      "  " + id,
      "",
      "If you expected this message, ask your postmaster to release it, quoting",
      "the id above.",
  };

  std::string out = headers.Serialize();
  out += "\r\n";
  for (const auto& line : lines) {
    out += line;
    out += "\r\n";
  }
  return out;
}

}  // namespace popgate::quarantine
