// The descriptor-limit arithmetic of start-up: when to raise the soft limit, and
// whether max_sessions then fits.

#include "net/fd_limit.h"

#include <gtest/gtest.h>

namespace popgate::net {
namespace {

TEST(PlanDescriptorsTest, NeedsTwoPerSessionAndAReserve) {
  auto plan = PlanDescriptors({100000, 100000}, 1000);
  EXPECT_EQ(plan.needed, 1000 * kDescriptorsPerSession + kDescriptorReserve);
  EXPECT_EQ(kDescriptorsPerSession, 2u);
}

TEST(PlanDescriptorsTest, EnoughAlreadyRaisesNothing) {
  auto plan = PlanDescriptors({4096, 1048576}, 1000);  // needs 2032
  EXPECT_FALSE(plan.raise_to);
  EXPECT_TRUE(plan.enough);
  EXPECT_EQ(plan.limit, 4096u);
  EXPECT_EQ(plan.sessions_that_fit, 1000u);
}

TEST(PlanDescriptorsTest, LowSoftLimitIsRaisedToTheHardOne) {
  auto plan = PlanDescriptors({1024, 524288}, 10000);  // needs 20032
  ASSERT_TRUE(plan.raise_to);
  EXPECT_EQ(*plan.raise_to, 524288u);
  EXPECT_EQ(plan.limit, 524288u);
  EXPECT_TRUE(plan.enough);
}

TEST(PlanDescriptorsTest, RaisingThatHelpsOnlyPartlyStillWarns) {
  auto plan = PlanDescriptors({1024, 4096}, 10000);
  ASSERT_TRUE(plan.raise_to);
  EXPECT_EQ(*plan.raise_to, 4096u);
  EXPECT_FALSE(plan.enough);
  EXPECT_EQ(plan.sessions_that_fit, (4096 - kDescriptorReserve) / 2);
}

TEST(PlanDescriptorsTest, SoftEqualToHardCannotBeRaised) {
  auto plan = PlanDescriptors({32, 32}, 10000);
  EXPECT_FALSE(plan.raise_to);
  EXPECT_FALSE(plan.enough);
  EXPECT_EQ(plan.limit, 32u);
  EXPECT_EQ(plan.sessions_that_fit, 0u);  // the reserve takes all of it
}

TEST(PlanDescriptorsTest, UnlimitedHardLimitRaisesToWhatIsNeeded) {
  auto plan = PlanDescriptors({1024, kUnlimited}, 10000);
  ASSERT_TRUE(plan.raise_to);
  EXPECT_EQ(*plan.raise_to, 10000 * 2 + kDescriptorReserve);
  EXPECT_TRUE(plan.enough);
}

TEST(PlanDescriptorsTest, HugeMaxSessionsDoesNotOverflow) {
  auto plan = PlanDescriptors({1024, 1024}, static_cast<std::size_t>(-1));
  EXPECT_EQ(plan.needed, kUnlimited);
  EXPECT_FALSE(plan.enough);
  EXPECT_EQ(plan.sessions_that_fit, (1024 - kDescriptorReserve) / 2);
}

TEST(PlanDescriptorsTest, SessionsThatFitNeverExceedMaxSessions) {
  auto plan = PlanDescriptors({65536, 65536}, 10);
  EXPECT_TRUE(plan.enough);
  EXPECT_EQ(plan.sessions_that_fit, 10u);
}

}  // namespace
}  // namespace popgate::net
