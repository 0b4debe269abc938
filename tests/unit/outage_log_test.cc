// A plugin's failures logged once per outage, with reminders and a recovery line.

#include "filter/outage_log.h"

#include <gtest/gtest.h>

namespace popgate::filter {
namespace {

using namespace std::chrono_literals;

TEST(OutageLogTest, TheFirstFailureIsLoggedTheRestCountedUntilRecovery) {
  OutageLog log("spam_tag", 60s);
  OutageLog::Clock::time_point t0{};
  auto first = log.Failed("session 1 plugin spam_tag failed in RETR 1: refused", t0);
  ASSERT_TRUE(first);
  EXPECT_EQ(first->rfind("session 1 plugin spam_tag failed in RETR 1: refused", 0), 0u);
  for (int i = 0; i < 100; ++i) EXPECT_FALSE(log.Failed("again", t0 + 1s));
  auto back = log.Succeeded(t0 + 5s);
  ASSERT_TRUE(back);
  EXPECT_EQ(*back, "spam_tag works again after 101 failed calls in 5 s");
  EXPECT_FALSE(log.Succeeded(t0 + 6s));  // nothing to say while it works
  // A new outage is logged again.
  EXPECT_TRUE(log.Failed("session 9 plugin spam_tag failed", t0 + 7s));
  EXPECT_EQ(*log.Succeeded(t0 + 8s), "spam_tag works again after 1 failed call in 1 s");
}

TEST(OutageLogTest, ALongOutageIsRemindedOncePerInterval) {
  OutageLog log("clamav", 60s);
  OutageLog::Clock::time_point t0{};
  ASSERT_TRUE(log.Failed("first", t0));
  EXPECT_FALSE(log.Failed("second", t0 + 30s));
  auto reminder = log.Failed("third", t0 + 61s);
  ASSERT_TRUE(reminder);
  EXPECT_EQ(*reminder, "clamav still failing: 2 more failures in the last 61 s, the latest: third");
  EXPECT_FALSE(log.Failed("fourth", t0 + 62s));
}

}  // namespace
}  // namespace popgate::filter
