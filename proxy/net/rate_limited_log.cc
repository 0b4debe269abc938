#include "net/rate_limited_log.h"

#include <spdlog/spdlog.h>

#include <cmath>

namespace popgate::net {

RateLimiter::RateLimiter(Clock::duration interval, Now now, std::size_t max_keys)
    : interval_(interval), now_(std::move(now)), max_keys_(max_keys == 0 ? 1 : max_keys) {}

RateLimiter::Decision RateLimiter::Admit(std::string_view key) {
  const Clock::time_point now = now_();
  std::lock_guard lock(mutex_);
  auto it = entries_.find(std::string(key));
  if (it == entries_.end()) {
    if (entries_.size() >= max_keys_) {
      // Forget the kind logged longest ago: at worst its count is lost, never a line.
      auto oldest = entries_.begin();
      for (auto e = entries_.begin(); e != entries_.end(); ++e) {
        if (e->second.last_logged < oldest->second.last_logged) oldest = e;
      }
      entries_.erase(oldest);
    }
    entries_.emplace(std::string(key), Entry{now, 0});
    return Decision{true, 0, {}};
  }
  Entry& entry = it->second;
  if (now - entry.last_logged < interval_) {
    ++entry.suppressed;
    return Decision{};
  }
  Decision decision{true, entry.suppressed, now - entry.last_logged};
  entry = Entry{now, 0};
  return decision;
}

std::string WithRepeatCount(std::string_view message, const RateLimiter::Decision& decision) {
  std::string text(message);
  if (decision.suppressed > 0) {
    // Whole seconds: "in the last 10 s" reads better than "10.0031 s".
    auto seconds = std::lround(std::chrono::duration<double>(decision.since_last).count());
    text += fmt::format(" (repeated {} time{} in the last {} s)", decision.suppressed,
                        decision.suppressed == 1 ? "" : "s", seconds);
  }
  return text;
}

void WarnRateLimited(std::string_view key, std::string_view message) {
  static RateLimiter limiter(std::chrono::seconds(10));
  RateLimiter::Decision decision = limiter.Admit(key);
  if (decision.log) spdlog::warn("{}", WithRepeatCount(message, decision));
}

}  // namespace popgate::net
