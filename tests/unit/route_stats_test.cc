#include "router/route_stats.h"

#include <gtest/gtest.h>

#include <random>
#include <thread>

namespace tp::router {
namespace {

using namespace std::chrono_literals;

TEST(LatencyBuckets, EveryValueFallsInABucketWhoseBoundIsWithinAQuarterAboveIt) {
  EXPECT_EQ(LatencyBuckets::bucket(0), 0u);
  EXPECT_EQ(LatencyBuckets::bucket(63), 0u);
  EXPECT_EQ(LatencyBuckets::bucket(64), 1u);
  EXPECT_EQ(LatencyBuckets::bucket(std::int64_t{1} << 40), LatencyBuckets::kCount - 1);
  std::mt19937_64 rng(7);
  for (int i = 0; i < 100'000; ++i) {
    const std::int64_t v = static_cast<std::int64_t>(rng() % (std::uint64_t{1} << 31));
    const std::size_t b = LatencyBuckets::bucket(v);
    ASSERT_LT(b, LatencyBuckets::kCount);
    const std::int64_t upper = LatencyBuckets::upper_micros(b);
    ASSERT_GT(upper, v) << v;
    if (v >= 64) {
      ASSERT_LE(upper, v + v / 4 + 1) << v;  // never more than 25% above
    }
    if (b > 0) {
      ASSERT_LE(LatencyBuckets::upper_micros(b - 1), v) << v;  // and the right bucket
    }
  }
  // (The last bucket is open-ended: it reports its lower bound, 2^31 µs.)
  for (std::size_t b = 1; b + 1 < LatencyBuckets::kCount; ++b) {
    EXPECT_GT(LatencyBuckets::upper_micros(b), LatencyBuckets::upper_micros(b - 1));
  }
}

TEST(RouteStats, SumsEveryThreadsBlockAndReadsQuantiles) {
  RouteStats stats(2);
  auto a = stats.add_thread();
  auto b = stats.add_thread();
  // Writers on their own threads while the main thread reads.
  std::thread ta([&] {
    for (int i = 0; i < 1000; ++i) {
      a->attempt(0, false);
      a->served(0, false);
      a->latency(0, std::chrono::milliseconds(i < 900 ? 10 : 1000));
    }
  });
  std::thread tb([&] {
    for (int i = 0; i < 500; ++i) {
      b->attempt(0, i % 2 == 0);
      b->error(0);
      b->fallback(0);
    }
    b->rate_limited(1);
    b->decoding(1, 100, 2s);
    b->decoding(1, 1, 1s);  // too few tokens to say anything
  });
  (void)stats.snapshot(std::chrono::steady_clock::now());
  ta.join();
  tb.join();
  const auto now = std::chrono::steady_clock::now();
  b->circuit_open_until(1, now + 1s);
  a->circuit_open_until(1, now - 1s);
  const std::vector<RouteSnapshot> s = stats.snapshot(now);
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(stats.threads(), 2u);
  EXPECT_EQ(s[0].attempts, 1500u);
  EXPECT_EQ(s[0].flex_attempts, 250u);
  EXPECT_EQ(s[0].served, 1000u);
  EXPECT_EQ(s[0].errors, 500u);
  EXPECT_EQ(s[0].fallbacks, 500u);
  EXPECT_EQ(s[1].rate_limited, 1u);
  EXPECT_DOUBLE_EQ(s[1].tokens_per_second(), 50.0);
  EXPECT_EQ(s[0].tokens_per_second(), -1);
  EXPECT_EQ(s[1].open_on_threads, 1u);
  EXPECT_EQ(s[0].open_on_threads, 0u);
  // 90% at 10 ms, 10% at 1 s: p50 near 10 ms, p95 and p99 near 1 s, each at most 25% high.
  const double p50 = RouteSnapshot::quantile_ms(s[0].latency, 0.5);
  const double p95 = RouteSnapshot::quantile_ms(s[0].latency, 0.95);
  EXPECT_GE(p50, 10.0);
  EXPECT_LE(p50, 12.5);
  EXPECT_GE(p95, 1000.0);
  EXPECT_LE(p95, 1250.0);
  EXPECT_EQ(RouteSnapshot::quantile_ms(s[1].latency, 0.5), -1);  // nothing measured
}

// A reload's catalog starts its routes from what the same upstreams counted before: every
// counter, both histograms and the circuit, route by route (here the routes swap places).
TEST(RouteStats, CarriesARouteFromTheCatalogBefore) {
  RouteStats before(2);
  auto old_block = before.add_thread();
  old_block->attempt(1, true);
  old_block->served(1, true);
  old_block->error(1);
  old_block->rate_limited(1);
  old_block->fallback(1);
  old_block->latency(1, std::chrono::milliseconds(40));
  old_block->ttfb(1, std::chrono::milliseconds(5));
  old_block->decoding(1, 100, 2s);
  const auto now = std::chrono::steady_clock::now();
  old_block->circuit_open_until(1, now + 1s);
  old_block->attempt(0, false);

  RouteStats after(3);
  auto block = after.add_thread();
  block->carry(0, *old_block, 1);
  const std::vector<RouteSnapshot> was = before.snapshot(now);
  const std::vector<RouteSnapshot> is = after.snapshot(now);
  EXPECT_EQ(is[0].attempts, 1u);
  EXPECT_EQ(is[0].flex_attempts, 1u);
  EXPECT_EQ(is[0].served, 1u);
  EXPECT_EQ(is[0].flex_served, 1u);
  EXPECT_EQ(is[0].errors, 1u);
  EXPECT_EQ(is[0].rate_limited, 1u);
  EXPECT_EQ(is[0].fallbacks, 1u);
  EXPECT_EQ(is[0].latency, was[1].latency);
  EXPECT_EQ(is[0].latency_micros, was[1].latency_micros);
  EXPECT_EQ(is[0].ttfb, was[1].ttfb);
  EXPECT_EQ(is[0].ttfb_micros, was[1].ttfb_micros);
  EXPECT_DOUBLE_EQ(is[0].tokens_per_second(), 50.0);
  EXPECT_EQ(is[0].open_on_threads, 1u);
  // The others start from nothing.
  EXPECT_EQ(is[1].attempts, 0u);
  EXPECT_EQ(is[2].attempts, 0u);
  EXPECT_EQ(is[1].open_on_threads, 0u);
}

}  // namespace
}  // namespace tp::router
