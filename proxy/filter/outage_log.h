#pragma once
// A plugin's failures, logged once per outage: spamd down means every message fails the
// same way, and a warning per message buries everything else in the log. The first failure
// is logged whole; the next ones are counted, with a reminder line at most once per
// `reminder`; the first call that works again logs how many failed meanwhile. One per
// [[plugin]] table, shared by every session (thread-safe).

#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>

namespace popgate::filter {

class OutageLog {
 public:
  using Clock = std::chrono::steady_clock;

  explicit OutageLog(std::string plugin, std::chrono::seconds reminder = std::chrono::seconds(60))
      : plugin_(std::move(plugin)), reminder_(reminder) {}

  // A failed call, as its whole log line: the line to log now, or nothing (counted).
  std::optional<std::string> Failed(std::string line, Clock::time_point now = Clock::now());
  // A call that worked: the recovery line, if the plugin was failing.
  std::optional<std::string> Succeeded(Clock::time_point now = Clock::now());

 private:
  std::mutex mutex_;
  const std::string plugin_;
  const std::chrono::seconds reminder_;
  bool failing_ = false;
  std::uint64_t failures_ = 0;        // in this outage
  std::uint64_t unlogged_ = 0;        // since the last line logged
  Clock::time_point since_, logged_;  // the outage's start; the last line logged
};

}  // namespace popgate::filter
