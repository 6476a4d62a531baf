#include "router/breaker.h"

#include <gtest/gtest.h>

namespace tp::router {
namespace {

using namespace std::chrono_literals;
using Change = Breaker::Change;

TEST(Breaker, OpensAfterFailuresInARowRestsThenProbes) {
  const BreakerSettings s{3, 0, 20, 100ms};
  Breaker b;
  const auto t0 = Breaker::Clock::time_point{} + 1h;
  EXPECT_EQ(b.failed(s, t0), Change::kNone);
  EXPECT_EQ(b.succeeded(), Change::kNone);  // a success resets the run
  EXPECT_EQ(b.failed(s, t0), Change::kNone);
  EXPECT_EQ(b.failed(s, t0), Change::kNone);
  EXPECT_EQ(b.failed(s, t0), Change::kOpened);
  // A request that started before the circuit opened fails as well: no probe of it.
  EXPECT_EQ(b.failed(s, t0), Change::kExtended);
  EXPECT_TRUE(b.resting(t0 + 99ms));
  EXPECT_FALSE(b.resting(t0 + 100ms));  // half-open: the next attempt is the probe
  b.attempting(s, t0 + 100ms);
  EXPECT_TRUE(b.resting(t0 + 101ms));  // and no other goes while it runs
  EXPECT_EQ(b.failed(s, t0 + 100ms), Change::kReopened);
  EXPECT_TRUE(b.resting(t0 + 150ms));
  b.attempting(s, t0 + 200ms);  // a probe that never reports...
  EXPECT_TRUE(b.resting(t0 + 299ms));
  EXPECT_FALSE(b.resting(t0 + 300ms));  // ...lets another through a cooldown later
  EXPECT_EQ(b.succeeded(), Change::kClosed);
  EXPECT_FALSE(b.resting(t0 + 150ms));
  EXPECT_EQ(b.failures_in_a_row(), 0u);
  EXPECT_EQ(b.attempts_seen(), 0u);  // closing forgets the history
}

TEST(Breaker, OpensOnAnErrorRateOverTheWindowWithoutARun) {
  const BreakerSettings s{100, 0.5, 10, 1s};
  Breaker b;
  const auto now = Breaker::Clock::time_point{} + 1h;
  // Alternate: never two failures in a row, half of all attempts failing.
  Change last = Change::kNone;
  int attempts = 0;
  while (last == Change::kNone && attempts < 100) {
    last = attempts % 2 == 0 ? b.failed(s, now) : b.succeeded();
    ++attempts;
  }
  EXPECT_EQ(last, Change::kOpened);
  EXPECT_EQ(attempts, 11);  // the first failure that makes 5 of a full window of 10
  EXPECT_GE(b.recent_failures(10), 5u);
  // Below the rate it stays closed.
  Breaker c;
  for (int i = 0; i < 200; ++i) {
    const Change ch = i % 3 == 0 ? c.failed(s, now) : c.succeeded();
    ASSERT_EQ(ch, Change::kNone) << i;
  }
  // A rate of 0 disables the check.
  const BreakerSettings off{100, 0, 10, 1s};
  Breaker d;
  for (int i = 0; i < 200; ++i) {
    ASSERT_EQ(i % 2 == 0 ? d.failed(off, now) : d.succeeded(), Change::kNone);
  }
}

}  // namespace
}  // namespace tp::router
