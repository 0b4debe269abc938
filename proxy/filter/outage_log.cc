#include "filter/outage_log.h"

namespace popgate::filter {
namespace {

std::string Seconds(OutageLog::Clock::duration elapsed) {
  return std::to_string(std::chrono::duration_cast<std::chrono::seconds>(elapsed).count()) + " s";
}

}  // namespace

std::optional<std::string> OutageLog::Failed(std::string line, Clock::time_point now) {
  std::lock_guard lock(mutex_);
  ++failures_;
  if (!failing_) {
    failing_ = true;
    since_ = logged_ = now;
    unlogged_ = 0;
    return line + " (further failures of " + plugin_ + " are counted until a call works again)";
  }
  ++unlogged_;
  if (now - logged_ < reminder_) return std::nullopt;
  std::string reminder = plugin_ + " still failing: " + std::to_string(unlogged_) +
                         " more failures in the last " + Seconds(now - logged_) +
                         ", the latest: " + line;
  logged_ = now;
  unlogged_ = 0;
  return reminder;
}

std::optional<std::string> OutageLog::Succeeded(Clock::time_point now) {
  std::lock_guard lock(mutex_);
  if (!failing_) return std::nullopt;
  failing_ = false;
  std::string line = plugin_ + " works again after " + std::to_string(failures_) +
                     (failures_ == 1 ? " failed call" : " failed calls") + " in " +
                     Seconds(now - since_);
  failures_ = unlogged_ = 0;
  return line;
}

}  // namespace popgate::filter
