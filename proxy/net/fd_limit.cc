#include "net/fd_limit.h"

#include <spdlog/spdlog.h>
#include <sys/resource.h>

#include <cerrno>
#include <string>

#include "text/errno_text.h"

namespace popgate::net {

DescriptorPlan PlanDescriptors(DescriptorLimit current, std::size_t max_sessions) {
  DescriptorPlan plan;
  const std::uint64_t sessions = max_sessions;
  plan.needed = sessions > (kUnlimited - kDescriptorReserve) / kDescriptorsPerSession
                    ? kUnlimited
                    : sessions * kDescriptorsPerSession + kDescriptorReserve;
  plan.limit = current.soft;
  if (current.soft < plan.needed && current.hard > current.soft) {
    // Up to the hard limit, which is as far as an unprivileged process may go. An
    // unlimited hard limit: only what is needed (the kernel's nr_open bounds the rest).
    plan.raise_to = current.hard == kUnlimited ? plan.needed : current.hard;
    plan.limit = *plan.raise_to;
  }
  plan.enough = plan.limit >= plan.needed;
  plan.sessions_that_fit = plan.limit <= kDescriptorReserve
                               ? 0
                               : (plan.limit - kDescriptorReserve) / kDescriptorsPerSession;
  if (plan.sessions_that_fit > sessions) plan.sessions_that_fit = sessions;
  return plan;
}

namespace {

std::uint64_t FromRlim(rlim_t value) {
  return value == RLIM_INFINITY ? kUnlimited : static_cast<std::uint64_t>(value);
}

std::string Shown(std::uint64_t value) {
  return value == kUnlimited ? "unlimited" : std::to_string(value);
}

}  // namespace

std::optional<std::uint64_t> SoftDescriptorLimit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) {
    return std::nullopt;
  }
  return static_cast<std::uint64_t>(limit.rlim_cur);
}

void CheckDescriptorLimit(std::size_t max_sessions) {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) {
    spdlog::warn("cannot read the file descriptor limit: {}", text::ErrnoText(errno));
    return;
  }
  const DescriptorLimit current{FromRlim(limit.rlim_cur), FromRlim(limit.rlim_max)};
  DescriptorPlan plan = PlanDescriptors(current, max_sessions);
  if (plan.raise_to) {
    rlimit raised = limit;
    raised.rlim_cur = *plan.raise_to == kUnlimited ? RLIM_INFINITY : *plan.raise_to;
    if (setrlimit(RLIMIT_NOFILE, &raised) == 0) {
      spdlog::info("file descriptor limit raised from {} to {} (hard limit {}) for max_sessions {}",
                   Shown(current.soft), Shown(*plan.raise_to), Shown(current.hard), max_sessions);
    } else {
      spdlog::warn("cannot raise the file descriptor limit from {} to {}: {}", Shown(current.soft),
                   Shown(*plan.raise_to), text::ErrnoText(errno));
      plan = PlanDescriptors(DescriptorLimit{current.soft, current.soft}, max_sessions);
    }
  }
  if (!plan.enough) {
    spdlog::warn(
        "max_sessions {} needs about {} file descriptors ({} per session and {} for popgate "
        "itself), but the limit is {} (hard limit {}): about {} sessions fit before clients "
        "meet 'too many open files'; raise ulimit -n (LimitNOFILE=) or lower max_sessions",
        max_sessions, Shown(plan.needed), kDescriptorsPerSession, kDescriptorReserve,
        Shown(plan.limit), Shown(current.hard), plan.sessions_that_fit);
  }
}

}  // namespace popgate::net
