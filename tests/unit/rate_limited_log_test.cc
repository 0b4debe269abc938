// The rate limiter for repeated warnings, on an injected clock.

#include "net/rate_limited_log.h"

#include <gtest/gtest.h>

#include <chrono>

namespace popgate::net {
namespace {

using namespace std::chrono_literals;

class RateLimiterTest : public ::testing::Test {
 protected:
  RateLimiter::Clock::time_point now_{};  // starts at the clock's epoch
  RateLimiter limiter_{10s, [this] { return now_; }};
};

TEST_F(RateLimiterTest, FirstOfAKindIsLoggedWithNoCount) {
  auto d = limiter_.Admit("accept");
  EXPECT_TRUE(d.log);
  EXPECT_EQ(d.suppressed, 0u);
  EXPECT_EQ(WithRepeatCount("cannot accept", d), "cannot accept");
}

TEST_F(RateLimiterTest, RepeatsWithinTheIntervalAreHeldBackAndCounted) {
  ASSERT_TRUE(limiter_.Admit("accept").log);
  // Ten a second, as the accept loop retries while descriptors are exhausted.
  for (int i = 0; i < 99; ++i) {
    now_ += 100ms;
    EXPECT_FALSE(limiter_.Admit("accept").log) << i;
  }
  now_ += 100ms;  // 10 s after the first
  auto d = limiter_.Admit("accept");
  ASSERT_TRUE(d.log);
  EXPECT_EQ(d.suppressed, 99u);
  EXPECT_EQ(d.since_last, 10s);
  EXPECT_EQ(WithRepeatCount("cannot accept", d),
            "cannot accept (repeated 99 times in the last 10 s)");
}

TEST_F(RateLimiterTest, CountStartsAgainAfterALineIsLogged) {
  ASSERT_TRUE(limiter_.Admit("k").log);
  now_ += 1s;
  EXPECT_FALSE(limiter_.Admit("k").log);
  now_ += 10s;
  EXPECT_EQ(limiter_.Admit("k").suppressed, 1u);
  now_ += 1s;
  EXPECT_FALSE(limiter_.Admit("k").log);
  now_ += 9s;  // 10 s after the last line logged, not after the first
  auto d = limiter_.Admit("k");
  ASSERT_TRUE(d.log);
  EXPECT_EQ(d.suppressed, 1u);
  EXPECT_EQ(WithRepeatCount("x", d), "x (repeated 1 time in the last 10 s)");
}

TEST_F(RateLimiterTest, AQuietKindIsLoggedAtOnceAfterTheInterval) {
  ASSERT_TRUE(limiter_.Admit("k").log);
  now_ += 1h;
  auto d = limiter_.Admit("k");
  EXPECT_TRUE(d.log);
  EXPECT_EQ(d.suppressed, 0u);  // nothing held back: no count in the line
}

TEST_F(RateLimiterTest, KindsAreLimitedApart) {
  ASSERT_TRUE(limiter_.Admit("accept:EMFILE").log);
  EXPECT_TRUE(limiter_.Admit("upstream-connect:EMFILE").log);
  EXPECT_FALSE(limiter_.Admit("accept:EMFILE").log);
  EXPECT_FALSE(limiter_.Admit("upstream-connect:EMFILE").log);
}

TEST(RateLimiterBoundTest, ForgetsTheOldestKindBeyondMaxKeys) {
  RateLimiter::Clock::time_point now{};
  RateLimiter limiter(
      10s, [&] { return now; }, 2);
  ASSERT_TRUE(limiter.Admit("a").log);
  now += 1s;
  ASSERT_TRUE(limiter.Admit("b").log);
  now += 1s;
  ASSERT_TRUE(limiter.Admit("c").log);  // "a" is forgotten to make room
  EXPECT_FALSE(limiter.Admit("b").log);
  EXPECT_FALSE(limiter.Admit("c").log);
  EXPECT_TRUE(limiter.Admit("a").log);  // new again: logged
}

}  // namespace
}  // namespace popgate::net
