#pragma once
// The descriptor limit (RLIMIT_NOFILE) against max_sessions. Each session holds two
// descriptors (its client and its upstream) and the process needs some of its own
// (listeners, epoll and eventfds, stdio, the audit log, plugins' sockets, spool files).
// At start-up popgate raises its soft limit to the hard one when the soft one is too
// low, and warns when max_sessions still cannot fit: otherwise the first sign of it is
// EMFILE under load.

#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>

namespace popgate::net {

inline constexpr std::uint64_t kDescriptorsPerSession = 2;
inline constexpr std::uint64_t kDescriptorReserve = 32;
inline constexpr std::uint64_t kUnlimited = std::numeric_limits<std::uint64_t>::max();

struct DescriptorLimit {
  std::uint64_t soft = 0;
  std::uint64_t hard = 0;  // kUnlimited for RLIM_INFINITY
};

struct DescriptorPlan {
  std::uint64_t needed = 0;               // for max_sessions, with the reserve
  std::optional<std::uint64_t> raise_to;  // a new soft limit, when raising helps
  std::uint64_t limit = 0;                // the soft limit after raising
  bool enough = true;                     // whether max_sessions fits `limit`
  std::uint64_t sessions_that_fit = 0;    // about, within `limit` (at most max_sessions)
};

// Pure: what to do about `current` for `max_sessions`.
DescriptorPlan PlanDescriptors(DescriptorLimit current, std::size_t max_sessions);

// The process's soft limit now, or nullopt when it cannot be read or is unlimited.
std::optional<std::uint64_t> SoftDescriptorLimit();

// At start-up: reads RLIMIT_NOFILE, raises the soft limit when that helps (logged at
// info), and warns when max_sessions does not fit what it then is.
void CheckDescriptorLimit(std::size_t max_sessions);

}  // namespace popgate::net
