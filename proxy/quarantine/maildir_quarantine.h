#pragma once
// The quarantine: where a rejected message goes before the client is told, and the short
// notice the client gets instead.
//
// Store keeps the original bytes (un-stuffed, exactly as the upstream sent them) as one
// file of a Maildir (https://cr.yp.to/proto/maildir.html): written to tmp/<name>, fsync'ed,
// hard-linked into new/<name> (rename where the file system has no hard links: link never
// replaces an existing file), tmp/<name> unlinked, new/ fsync'ed. Only then does Store
// return, so a crash or power cut after it loses nothing, and one before it leaves at most
// a file in tmp/ that no Maildir reader looks at. Any mail client or tool that reads a
// Maildir (mutt -f, Dovecot, a shell loop) can open the quarantine to release a message.
//
// The stored file is the message, byte for byte: what popgate knows about it (session,
// user, client, the plugin and its reason) goes to path/quarantine.log instead, one JSON
// line per stored message, appended after the message is durable:
//   {"time":"2025-07-01T12:00:00.123Z","id":"...","session":7,"user":"alice",
//    "client":"203.0.113.5:51234","decided_by":"spam_tag","reason":"...","size":1234}
// Bytes that are not UTF-8 are written as U+FFFD. The log is not fsync'ed, and a failed
// log write does not fail Store: the message is safe, and the failure goes to `warn`.
//
// Pure POSIX file I/O: no sockets, no Asio. Store blocks on the disk: call it from a
// worker thread.

#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>

#include "mail/message.h"

namespace popgate::quarantine {

// A message to keep, and what to log about it.
struct Entry {
  std::string_view original;  // the message as received: un-stuffed, unmodified
  std::uint64_t session_id = 0;
  std::string user;
  std::string client;      // "203.0.113.5:51234"
  std::string decided_by;  // the plugin that rejected it
  std::string reason;
};

// Where Store's non-fatal problems go (a failed log write), one line per call, no line
// ending. May be called from any thread that calls Store.
using WarnFn = std::function<void(std::string_view line)>;

class MaildirQuarantine {
 public:
  // Creates path (and missing parents), path/tmp, path/new and path/cur, mode 0700, where
  // they are missing. Throws std::runtime_error("quarantine path /x: <strerror>"), naming
  // the directory at fault, when one can't be created, isn't a directory, or tmp/ or new/
  // isn't writable.
  explicit MaildirQuarantine(std::string path, WarnFn warn = {});

  MaildirQuarantine(const MaildirQuarantine&) = delete;
  MaildirQuarantine& operator=(const MaildirQuarantine&) = delete;

  // Stores entry.original byte for byte as new/<id> (see above) and returns the id: the
  // Maildir unique name "<seconds>.M<microseconds>P<pid>Q<counter>.<host>", made only of
  // [A-Za-z0-9._-] (safe for a log line, a file name and a message). Throws
  // std::runtime_error on any failure, leaving nothing in new/ (nor, as far as unlink
  // can, in tmp/). Thread-safe; ids are unique across threads and instances.
  std::string Store(const Entry& entry);

  const std::string& path() const { return path_; }
  // path/quarantine.log
  const std::string& log_path() const { return log_path_; }

 private:
  void AppendLog(const Entry& entry, const std::string& id);
  void Warn(std::string_view line) const;

  std::string path_;
  std::string log_path_;
  WarnFn warn_;
  std::mutex log_mutex_;  // one line at a time from this process (O_APPEND for others)
};

// The field naming a stored original: in a reject's notice, and in a message delivered
// edited while its original was kept.
inline constexpr std::string_view kQuarantineIdHeader = "X-Popgate-Quarantine-Id";

// The message the client gets instead of a rejected one: RFC 5322, CRLF line endings,
// UTF-8 text. Headers: From "popgate <postmaster@localhost>", To (the original's, when it
// has one), Date (now), Subject "[popgate] message withheld: " + the original's subject,
// Message-ID (new), Auto-Submitted: auto-generated, X-Popgate-Quarantine-Id,
// MIME-Version, Content-Type text/plain; charset=utf-8, Content-Transfer-Encoding 8bit.
// The body names the withheld message (From, Subject, Date, Message-ID, size), the plugin
// and its reason, the quarantine id, and asks the reader to have the postmaster release
// it. Values taken from the original are read from its bytes as received
// (original.original()), made printable (control bytes become spaces, bytes that are
// not UTF-8 become '?') and capped, so no header of the original can add a field or a
// line to the notice.
std::string RejectNotice(const mail::Message& original, std::string_view quarantine_id,
                         std::string_view decided_by, std::string_view reason);

}  // namespace popgate::quarantine
