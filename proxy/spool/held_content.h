#pragma once
// A message being received for a whole-message filter chain: its content (un-stuffed)
// is held in memory up to a threshold and moved to a spool file past it, so a session
// holds at most about the threshold however large the message.
//
// The session appends what each upstream read decodes to buffer(), then calls Settle().
// Nothing here does network I/O.

#include <cstddef>
#include <memory>
#include <optional>
#include <string>

#include "mail/shared_bytes.h"
#include "spool/spool_file.h"

namespace popgate::spool {

class HeldContent {
 public:
  // In memory up to `memory_limit` bytes; beyond, spooled in `spool_dir`.
  HeldContent(std::size_t memory_limit, std::string spool_dir);

  // Where the next decoded bytes go.
  std::string& buffer() { return buffer_; }
  // After appending to buffer(): spools once past the memory limit. False if spooling
  // failed (error() says why); what is held stays as it was counted.
  bool Settle();
  // Everything held so far, in memory and spooled.
  std::size_t size() const { return (spool_ ? spool_->size() : 0) + buffer_.size(); }
  bool spooled() const { return spool_ != nullptr; }
  const std::string& error() const { return error_; }

  // All of it, shared: the string itself, or the spool file mapped. Spent afterwards.
  // Nullopt if the spool failed (error() says why).
  std::optional<mail::SharedBytes> Take();

 private:
  std::size_t memory_limit_;
  std::string spool_dir_;
  std::string buffer_;
  std::unique_ptr<SpoolFile> spool_;
  std::string error_;
};

}  // namespace popgate::spool
