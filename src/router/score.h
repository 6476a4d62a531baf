#pragma once
// The router's composite score, in the open: every candidate route gets
//
//   base  = w_quality · quality + w_cost · cost_score + w_latency · latency_score
//
// where each score is in 0..1 and relative to the other candidates of the same request:
//
//   cost_score    = cheapest cost / this route's cost      (1 for the cheapest; 1 when free)
//   latency_score = fastest time / this route's time       (time = TTFB + output / tokens/s)
//
// and a disclosed rebate may break ties, never more (see pick). Nothing else enters. The
// terms are returned so that `explain` and the x-turnpike-route header can show them.

#include <cstddef>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "core/money.h"

namespace tp::router {

struct Weights {
  double quality = 0.4;
  double cost = 0.4;
  double latency = 0.2;
};

// x-turnpike-route-preference: balanced keeps the configured weights; the others lean on
// one term (0.8) and keep 0.1 for each of the two others.
enum class Preference { kBalanced, kCost, kQuality, kLatency };
std::optional<Preference> parse_preference(std::string_view text);
Weights weights_for(Preference preference, const Weights& configured);

// One route as a candidate for one request.
struct Candidate {
  double quality = 0.5;              // the model's quality, 0..1
  Money cost;                        // this request's estimated cost on the route
  double ttfb_ms = 0;                // expected time to first byte
  double tokens_per_second = 0;      // expected decoding speed; 0: unknown (TTFB only)
  double output_tokens = 0;          // the request's expected output
  double rebate_percent = 0;         // the provider's disclosed rebate, 0..100
  // `cost` before rounding up to a nano-USD (< 0: use `cost`): for a tiny request the
  // rounding would decide the cost term.
  double exact_cost_nanos = -1;
};

struct Terms {
  double quality = 0;  // w_quality · quality
  double cost = 0;     // w_cost · cost_score
  double latency = 0;  // w_latency · latency_score
  double base = 0;     // their sum: the score without rebate
  double rebate = 0;   // what the rebate adds (0 outside the tie band)
  double total = 0;    // base + rebate
};

// A rebate adds at most this share of a candidate's base score...
inline constexpr double kRebateShareMax = 0.05;
// ...and only to candidates whose base score is within this fraction of the best one.
inline constexpr double kTieBand = 0.005;

// The terms of every candidate, in order. Weights are used as given (not normalised).
std::vector<Terms> score(std::span<const Candidate> candidates, const Weights& weights);

// The rebate rule, alone: given base scores and disclosed rebates, returns each
// candidate's rebate term. A candidate whose base is below (1 − kTieBand) × the best base
// gets 0; one inside the band gets min(rebate_percent, 100) / 100 · kRebateShareMax · base,
// provided another candidate is inside the band too (alone, there is no tie to break).
std::vector<double> rebate_terms(std::span<const double> base,
                                 std::span<const double> rebate_percent);

// The index of the winner: the highest total; among equal totals the higher base, then the
// earlier candidate. Empty input: nullopt.
std::optional<std::size_t> pick(std::span<const Terms> terms);

// The order in which candidates are tried: the pick, then the others by total score
// (stable). Fallback walks it.
std::vector<std::size_t> rank(std::span<const Terms> terms);

}  // namespace tp::router
