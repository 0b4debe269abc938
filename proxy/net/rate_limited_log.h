#pragma once
// Repeated identical warnings, rate-limited. The first of a kind is logged; the rest are
// counted until the interval has passed, and the next one logged says how many were held
// back. A burst (every accept failing while descriptors are exhausted, every session
// failing alike) then costs a line per interval, not ten a second, and loses no count.

#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

namespace popgate::net {

class RateLimiter {
 public:
  using Clock = std::chrono::steady_clock;
  using Now = std::function<Clock::time_point()>;

  struct Decision {
    bool log = false;
    // With `log`: how many of this kind were held back since the last one logged, and
    // how long ago that was.
    std::uint64_t suppressed = 0;
    Clock::duration since_last{};
  };

  // At most one line per key every `interval`; `now` is the clock (tests inject one).
  // At most `max_keys` kinds are remembered, so a key made of peer data cannot grow
  // the table without bound; beyond that the kind logged longest ago is forgotten.
  explicit RateLimiter(Clock::duration interval, Now now = &Clock::now, std::size_t max_keys = 256);

  // Whether a warning of kind `key` is logged now. Thread-safe.
  Decision Admit(std::string_view key);

 private:
  struct Entry {
    Clock::time_point last_logged;
    std::uint64_t suppressed = 0;
  };

  const Clock::duration interval_;
  const Now now_;
  const std::size_t max_keys_;
  std::mutex mutex_;
  std::unordered_map<std::string, Entry> entries_;
};

// `message`, and when some were held back " (repeated N times in the last S s)".
std::string WithRepeatCount(std::string_view message, const RateLimiter::Decision& decision);

// Logs `message` as a warning unless one of the same `key` was logged in the last
// 10 s (one limiter for the process, shared by all threads).
void WarnRateLimited(std::string_view key, std::string_view message);

}  // namespace popgate::net
