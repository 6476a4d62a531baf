// The router's composite score and the rebate rule.
#include "router/score.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>

namespace tp::router {
namespace {

Candidate route(double quality, const char* cost_usd, double ttfb_ms, double tps,
                double rebate = 0) {
  return Candidate{quality, Money::parse(cost_usd).value(), ttfb_ms, tps, 100, rebate};
}

TEST(RouterScore, EachPreferencePicksItsChampion) {
  // 0: cheap and slow, 1: fast and dear, 2: best quality, middling otherwise.
  const std::vector<Candidate> c = {route(0.6, "0.0001", 900, 20), route(0.6, "0.0010", 100, 200),
                                    route(0.95, "0.0005", 400, 60)};
  const Weights configured;
  EXPECT_EQ(pick(score(c, weights_for(Preference::kCost, configured))), 0u);
  EXPECT_EQ(pick(score(c, weights_for(Preference::kLatency, configured))), 1u);
  EXPECT_EQ(pick(score(c, weights_for(Preference::kQuality, configured))), 2u);
}

// A tiny request's costs are compared before rounding up to whole nano-USD: 0.2 against 1.3
// nano-USD is 0.15 of the cost term, not the 0.5 that 1 against 2 would give.
TEST(RouterScore, TinyCostsAreComparedBeforeRounding) {
  std::vector<Candidate> c = {route(1.0, "0.000000001", 100, 0), route(1.0, "0.000000002", 100, 0)};
  c[0].exact_cost_nanos = 0.2;
  c[1].exact_cost_nanos = 1.3;
  const auto t = score(c, Weights{0, 1, 0});
  EXPECT_DOUBLE_EQ(t[0].cost, 1.0);
  EXPECT_NEAR(t[1].cost, 0.2 / 1.3, 1e-12);
}

TEST(RouterScore, ScoresAreRelativeToTheOtherCandidates) {
  const std::vector<Candidate> c = {route(1.0, "0.002", 200, 0), route(1.0, "0.001", 100, 0)};
  const auto t = score(c, Weights{0, 1, 0});
  EXPECT_DOUBLE_EQ(t[1].cost, 1.0);  // the cheapest
  EXPECT_DOUBLE_EQ(t[0].cost, 0.5);  // twice the price
  const auto l = score(c, Weights{0, 0, 1});
  EXPECT_DOUBLE_EQ(l[1].latency, 1.0);
  EXPECT_DOUBLE_EQ(l[0].latency, 0.5);
  // A free route is as cheap as it gets; a lone candidate scores 1 on both.
  const std::vector<Candidate> free = {route(0.5, "0", 100, 10)};
  const auto f = score(free, Weights{0, 1, 1});
  EXPECT_DOUBLE_EQ(f[0].cost, 1.0);
  EXPECT_DOUBLE_EQ(f[0].latency, 1.0);
  EXPECT_FALSE(pick(std::vector<Terms>{}));
}

TEST(RouterScore, PreferencesParse) {
  EXPECT_EQ(parse_preference("balanced"), Preference::kBalanced);
  EXPECT_EQ(parse_preference("latency"), Preference::kLatency);
  EXPECT_FALSE(parse_preference("fastest"));
  const Weights configured{0.5, 0.3, 0.2};
  EXPECT_DOUBLE_EQ(weights_for(Preference::kBalanced, configured).quality, 0.5);
  EXPECT_DOUBLE_EQ(weights_for(Preference::kCost, configured).cost, 0.8);
}

TEST(RebateRule, OnlyInsideTheTieBandAndAtMostFivePercent) {
  const std::vector<double> base = {1.0, 0.996, 0.99, 0.5};
  const std::vector<double> rebate = {0, 100, 100, 100};
  const auto r = rebate_terms(base, rebate);
  EXPECT_DOUBLE_EQ(r[0], 0.0);
  EXPECT_DOUBLE_EQ(r[1], 0.05 * 0.996);  // inside the 0.5% band: breaks the tie
  EXPECT_DOUBLE_EQ(r[2], 0.0);           // 1% below the best: no help at all
  EXPECT_DOUBLE_EQ(r[3], 0.0);
  const auto capped =
      rebate_terms(std::vector<double>{1.0, 1.0}, std::vector<double>{250, 0});
  EXPECT_DOUBLE_EQ(capped[0], 0.05);  // a rebate over 100% counts as 100%
}

TEST(RebateRule, NothingWithoutATieToBreak) {
  // Alone, or alone in the band: the rebate adds nothing, so the score a lone route shows
  // (x-turnpike-route, explain) is its score without rebate.
  EXPECT_DOUBLE_EQ(rebate_terms(std::vector<double>{0.8}, std::vector<double>{10})[0], 0.0);
  const auto apart = rebate_terms(std::vector<double>{1.0, 0.9}, std::vector<double>{100, 100});
  EXPECT_DOUBLE_EQ(apart[0], 0.0);
  EXPECT_DOUBLE_EQ(apart[1], 0.0);
}

TEST(RebateRule, WorkedExampleOfDocsRouting) {
  // docs/routing.md: three routes of one model (quality 0.8), default weights.
  const std::vector<Candidate> c = {
      {0.8, Money::parse("0.000300").value(), 300, 50, 100, 0},   // a
      {0.8, Money::parse("0.000250").value(), 400, 40, 100, 0},   // b
      {0.8, Money::parse("0.000252").value(), 380, 40, 100, 10},  // c, 10% rebate
  };
  const auto t = score(c, Weights{});
  // a: 0.32 + 0.4·(250/300) + 0.2·1          = 0.853333
  // b: 0.32 + 0.4·1         + 0.2·(2300/2900) = 0.878621
  // c: 0.32 + 0.4·(250/252) + 0.2·(2300/2880) = 0.876548, within 0.5% of b
  EXPECT_NEAR(t[0].base, 0.853333, 1e-6);
  EXPECT_NEAR(t[1].base, 0.878621, 1e-6);
  EXPECT_NEAR(t[2].base, 0.876548, 1e-6);
  EXPECT_DOUBLE_EQ(t[0].rebate, 0.0);
  EXPECT_NEAR(t[2].rebate, 0.10 * 0.05 * 0.876548, 1e-6);  // 0.004383
  EXPECT_EQ(pick(t), 2u);  // the tie is broken by the disclosed rebate
}

// Over many random candidate sets: (1) a rebate adds at most 5% of a candidate's score and
// only inside the tie band; (2) the pick is never beaten by a route whose score without
// rebate is better by more than the band, and it differs from the best score without
// rebate only when its own rebate is larger.
TEST(RebateRule, PropertyHoldsOverRandomCandidateSets) {
  std::mt19937_64 rng(2026);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  for (int round = 0; round < 20'000; ++round) {
    const std::size_t n = 1 + rng() % 10;
    std::vector<Candidate> c(n);
    for (auto& x : c) {
      x.quality = unit(rng);
      x.cost = Money::from_nanos(static_cast<std::int64_t>(rng() % 5'000'000));
      x.ttfb_ms = 50 + unit(rng) * 2000;
      x.tokens_per_second = unit(rng) < 0.1 ? 0 : 5 + unit(rng) * 300;
      x.output_tokens = static_cast<double>(rng() % 2000);
      x.rebate_percent = unit(rng) < 0.5 ? 0 : unit(rng) * 120;
      // Near-ties on purpose: copy another candidate and nudge it.
      if (n > 1 && unit(rng) < 0.3) {
        x = c[rng() % n];
        x.cost = x.cost + Money::from_nanos(static_cast<std::int64_t>(rng() % 3));
        x.rebate_percent = unit(rng) * 100;
      }
    }
    const Weights w{unit(rng), unit(rng), unit(rng)};
    const auto t = score(c, w);
    double best_base = 0;
    std::size_t best_index = 0;
    for (std::size_t i = 0; i < n; ++i) {
      if (t[i].base > best_base) best_base = t[i].base, best_index = i;
    }
    for (std::size_t i = 0; i < n; ++i) {
      ASSERT_LE(t[i].rebate, kRebateShareMax * t[i].base + 1e-12);
      ASSERT_LE(t[i].rebate, kRebateShareMax * t[i].total + 1e-12);
      if (t[i].base < best_base * (1 - kTieBand)) {
        ASSERT_EQ(t[i].rebate, 0.0);
      }
    }
    const auto in_band = std::count_if(t.begin(), t.end(), [&](const Terms& x) {
      return x.base > 0 && x.base >= best_base * (1 - kTieBand);
    });
    if (in_band < 2) {
      for (const Terms& x : t) ASSERT_EQ(x.rebate, 0.0) << "round " << round << ": no tie";
    }
    const std::size_t p = *pick(t);
    for (std::size_t j = 0; j < n; ++j) {
      ASSERT_FALSE(t[j].base * (1 - kTieBand) > t[p].base + 1e-12)
          << "round " << round << ": candidate " << j << " has a clearly better score";
    }
    if (t[p].base < best_base) {
      ASSERT_GT(c[p].rebate_percent, std::min(c[best_index].rebate_percent, 100.0))
          << "round " << round << ": only a larger rebate may break a tie";
    }
    // Without rebates the best score wins.
    for (auto& x : c) x.rebate_percent = 0;
    const auto plain = score(c, w);
    ASSERT_DOUBLE_EQ(plain[*pick(plain)].base, best_base);
  }
}

}  // namespace
}  // namespace tp::router

namespace tp::router {
namespace {

TEST(RouterScore, RankPutsThePickFirstThenTheRestByTotal) {
  std::vector<Terms> t(4);
  t[0].base = t[0].total = 0.5;
  t[1].base = 0.80;
  t[1].total = 0.80;
  t[2].base = 0.799;  // inside the tie band, with a rebate that wins it
  t[2].total = 0.82;
  t[3].base = t[3].total = 0.7;
  EXPECT_EQ(rank(t), (std::vector<std::size_t>{2, 1, 3, 0}));
  EXPECT_TRUE(rank(std::vector<Terms>{}).empty());
}

}  // namespace
}  // namespace tp::router
