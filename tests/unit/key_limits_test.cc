#include "auth/key_limits.h"

#include <gtest/gtest.h>

namespace tp::auth {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

const KeyMeter::Clock::time_point kStart{seconds(1000)};

TEST(KeyMeter, ABurstOfAMinutesRequestsThenOneEveryShare) {
  KeyMeter meter(KeyLimits{.rpm = 3}, Money(), kStart);
  for (int i = 0; i < 3; ++i) EXPECT_FALSE(meter.admit(0, kStart)) << i;
  const auto refused = meter.admit(0, kStart);
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->retry_after_ms, 20'000);  // 60 s / 3
  EXPECT_TRUE(meter.admit(0, kStart + milliseconds(19'999)));
  EXPECT_FALSE(meter.admit(0, kStart + seconds(20)));
  // A long pause refills a minute's allowance, no more.
  const auto later = kStart + std::chrono::hours(1);
  for (int i = 0; i < 3; ++i) EXPECT_FALSE(meter.admit(0, later)) << i;
  EXPECT_TRUE(meter.admit(0, later));
}

TEST(KeyMeter, TokensAreCorrectedToWhatWasUsed) {
  KeyMeter meter(KeyLimits{.tpm = 100}, Money(), kStart);
  // More than a minute's allowance can never pass: no wait is offered.
  const auto never = meter.admit(101, kStart);
  ASSERT_TRUE(never);
  EXPECT_EQ(never->retry_after_ms, 0);
  EXPECT_FALSE(meter.admit(80, kStart));
  EXPECT_TRUE(meter.admit(80, kStart));
  meter.finish(Money(), Money(), 80, 10);  // it used 10: 90 left
  EXPECT_FALSE(meter.admit(80, kStart));
  // Using more than taken puts the bucket in debt; the next request waits it out.
  meter.finish(Money(), Money(), 80, 190);  // 10 - 110 = -100 left
  const auto waits = meter.admit(50, kStart);
  ASSERT_TRUE(waits);
  EXPECT_EQ(waits->retry_after_ms, 90'000);  // 150 tokens at 100 a minute
  // A refused request takes nothing: a rejected burst does not deepen the debt.
  EXPECT_FALSE(meter.admit(50, kStart + seconds(90)));
}

TEST(KeyMeter, ABudgetCountsWhatIsSpentAndWhatIsSetAside) {
  KeyMeter meter(KeyLimits{.budget = Money::usd(1)}, Money::from_nanos(400'000'000), kStart);
  EXPECT_FALSE(meter.reserve(Money::from_nanos(500'000'000)));
  const auto refused = meter.reserve(Money::from_nanos(200'000'000));  // 0.4 + 0.5 + 0.2
  ASSERT_TRUE(refused);
  EXPECT_NE(refused->find("0.40 USD spent, 0.50 USD set aside"), std::string::npos) << *refused;
  meter.finish(Money(), Money::from_nanos(500'000'000), 0, 0);
  meter.finish(Money::from_nanos(300'000'000), Money(), 0, 0);
  EXPECT_EQ(meter.spent(), Money::from_nanos(700'000'000));
  EXPECT_FALSE(meter.reserve(Money::from_nanos(300'000'000)));  // exactly the budget
  EXPECT_TRUE(meter.reserve(Money::from_nanos(1)));
}

TEST(KeyUse, GivesBackWhatAnUnsettledRequestTook) {
  auto meter = std::make_shared<KeyMeter>(KeyLimits{.tpm = 100, .budget = Money::usd(1)},
                                          Money(), kStart);
  {
    KeyUse use;
    ASSERT_FALSE(meter->admit(100, kStart));
    use.admitted(meter, 100);
    ASSERT_FALSE(meter->reserve(Money::usd(1)));
    use.set_aside(Money::usd(1));
    EXPECT_TRUE(meter->admit(1, kStart));
    EXPECT_TRUE(meter->reserve(Money::from_nanos(1)));
    KeyUse moved(std::move(use));  // the request's bill moves; it gives back once
  }
  EXPECT_FALSE(meter->admit(100, kStart));
  EXPECT_FALSE(meter->reserve(Money::usd(1)));
  EXPECT_EQ(meter->spent(), Money());
  meter->finish(Money(), Money::usd(1), 0, 0);
  meter->finish(Money(), Money(), 100, 0);
  {
    KeyUse use;
    ASSERT_FALSE(meter->admit(100, kStart));
    use.admitted(meter, 100);
    use.settle(30, Money::from_nanos(5));
    use.settle(99, Money::from_nanos(99));  // once only
  }
  EXPECT_EQ(meter->spent(), Money::from_nanos(5));
  EXPECT_FALSE(meter->admit(70, kStart));
  EXPECT_TRUE(meter->admit(1, kStart));
}

}  // namespace
}  // namespace tp::auth
