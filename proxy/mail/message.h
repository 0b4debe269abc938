#pragma once
// A message as it leaves the upstream through RETR or TOP: its un-stuffed bytes (what
// pop3::MultiLineDecoder outputs in kContent mode), a header view plugins can edit, the
// body, and full replacement.
//
// The bytes are shared, never copied: a Message is cheap to copy (the header view, if
// parsed, is copied; the bytes are not), so the filter chain can keep the state before a
// plugin and go back to it. While nothing changed, bytes() is the original itself.
//
// Layout (RFC 5322 §2.1): header block, separator (the first empty line: CRLF, or a bare
// LF), body. A message without an empty line is all header block, with an empty body.
// The separator is kept as it was, so `TOP n 0` output keeps its blank line (HAZARDS.md).
//
// One thread at a time per Message, const accessors included (they fill caches); copies
// are independent.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "mail/headers.h"
#include "mail/shared_bytes.h"
#include "pop3/multiline.h"

namespace popgate::mail {

class Message {
 public:
  // `partial`: the body may be cut short (TOP).
  explicit Message(std::string bytes, bool partial = false);
  explicit Message(SharedBytes bytes, bool partial = false);

  // The header view, parsed on first use. Edits through it change bytes().
  Headers& headers();
  const Headers& headers() const;

  // The bytes after the separator (of the replacement, after Replace).
  std::string_view body() const;

  // The message as it stands: while unmodified, original() itself (no copy); otherwise the
  // edited header block, the separator and the body, built once per change. The view is
  // valid until the message next changes.
  std::string_view bytes() const;

  // bytes() in three pieces, for writing without building it in one buffer. A piece
  // followed by a non-empty one ends at a line boundary, so each can be stuffed alone.
  struct Parts {
    std::string_view headers;
    std::string_view separator;  // empty when the message has no blank line
    std::string_view body;
  };
  Parts parts() const;

  // Full replacement (un-stuffed bytes). Edits made before are dropped; the header view
  // then reads the replacement.
  void Replace(std::string bytes);

  // The message as received, whatever was done to it since (for the quarantine).
  std::string_view original() const { return original_.view(); }

  bool modified() const { return replacement_ != nullptr || headers_modified(); }
  bool partial() const { return partial_; }
  std::size_t original_size() const { return original_.size(); }
  // bytes().size(), without building bytes().
  std::size_t size() const;

 private:
  std::string_view base() const {
    return replacement_ ? std::string_view(*replacement_) : original_.view();
  }
  bool headers_modified() const { return headers_ && headers_->modified(); }
  std::string_view separator() const;
  std::string_view header_block() const;

  SharedBytes original_;
  std::shared_ptr<const std::string> replacement_;  // set by Replace
  pop3::HeaderSplit split_;                         // of base()
  bool partial_;
  // Built on demand; keyed by the header view's version.
  mutable std::optional<Headers> headers_;
  mutable std::string header_cache_;
  mutable std::uint64_t header_cache_version_ = 0;
  mutable std::shared_ptr<const std::string> bytes_cache_;  // shared: copies stay cheap
  mutable std::uint64_t bytes_cache_version_ = 0;
};

}  // namespace popgate::mail
