#include "spool/held_content.h"

#include <system_error>
#include <utility>

namespace popgate::spool {

namespace {

// Past this, a buffer that will be held whole gets its room at once: growing by doubling
// would hold the old and the new buffer together, twice the bound for a moment.
constexpr std::size_t kReserveAbove = 256 * 1024;
// Room for one more upstream read past the memory limit before Settle() spools.
constexpr std::size_t kReadSlack = 256 * 1024;

}  // namespace

HeldContent::HeldContent(std::size_t memory_limit, std::string spool_dir)
    : memory_limit_(memory_limit), spool_dir_(std::move(spool_dir)) {}

bool HeldContent::Settle() {
  if (!spool_ && buffer_.size() <= memory_limit_) {
    if (buffer_.size() > kReserveAbove && buffer_.capacity() < memory_limit_) {
      buffer_.reserve(memory_limit_ + kReadSlack);
    }
    return true;
  }
  try {
    if (!spool_) spool_ = std::make_unique<SpoolFile>(spool_dir_);
    spool_->Append(buffer_);
  } catch (const std::system_error& e) {
    error_ = e.what();
    return false;
  }
  if (buffer_.capacity() > kReadSlack) {
    std::string().swap(buffer_);  // the memory held so far goes back now
  } else {
    buffer_.clear();
  }
  return true;
}

std::optional<mail::SharedBytes> HeldContent::Take() {
  if (!spool_) return mail::SharedBytes(std::move(buffer_));
  try {
    spool_->Append(buffer_);
    buffer_.clear();
    mail::SharedBytes mapped = spool_->Map();
    spool_.reset();
    return mapped;
  } catch (const std::system_error& e) {
    error_ = e.what();
    return std::nullopt;
  }
}

}  // namespace popgate::spool
