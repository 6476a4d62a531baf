#include "router/score.h"

#include <algorithm>
#include <limits>

namespace tp::router {

std::optional<Preference> parse_preference(std::string_view text) {
  if (text == "balanced") return Preference::kBalanced;
  if (text == "cost") return Preference::kCost;
  if (text == "quality") return Preference::kQuality;
  if (text == "latency") return Preference::kLatency;
  return std::nullopt;
}

Weights weights_for(Preference preference, const Weights& configured) {
  switch (preference) {
    case Preference::kBalanced: return configured;
    case Preference::kCost: return {0.1, 0.8, 0.1};
    case Preference::kQuality: return {0.8, 0.1, 0.1};
    case Preference::kLatency: return {0.1, 0.1, 0.8};
  }
  return configured;
}

namespace {

double expected_ms(const Candidate& c) {
  const double decode =
      c.tokens_per_second > 0 ? c.output_tokens / c.tokens_per_second * 1000.0 : 0.0;
  return std::max(0.0, c.ttfb_ms) + std::max(0.0, decode);
}

// best / value for "smaller is better" quantities: 1 for the best, toward 0 for worse.
double relative(double best, double value) {
  if (value <= 0) return 1.0;  // free, or instant: as good as it gets
  return std::clamp(best / value, 0.0, 1.0);
}

}  // namespace

std::vector<double> rebate_terms(std::span<const double> base,
                                 std::span<const double> rebate_percent) {
  std::vector<double> out(base.size(), 0.0);
  if (base.empty()) return out;
  const double best = *std::max_element(base.begin(), base.end());
  const double floor = best * (1.0 - kTieBand);
  // A tiebreaker needs a tie: a candidate alone in the band gets nothing.
  const auto in_band = std::count_if(base.begin(), base.end(),
                                     [&](double b) { return b >= floor && b > 0; });
  if (in_band < 2) return out;
  for (std::size_t i = 0; i < base.size(); ++i) {
    if (base[i] < floor || base[i] <= 0) continue;
    const double share = std::clamp(rebate_percent[i], 0.0, 100.0) / 100.0;
    out[i] = share * kRebateShareMax * base[i];
  }
  return out;
}

namespace {

double cost_nanos(const Candidate& c) {
  return c.exact_cost_nanos >= 0 ? c.exact_cost_nanos
                                 : static_cast<double>(std::max<std::int64_t>(c.cost.nanos(), 0));
}

}  // namespace

std::vector<Terms> score(std::span<const Candidate> candidates, const Weights& weights) {
  std::vector<Terms> terms(candidates.size());
  if (candidates.empty()) return terms;
  double cheapest = std::numeric_limits<double>::infinity();
  double fastest = std::numeric_limits<double>::infinity();
  for (const Candidate& c : candidates) {
    cheapest = std::min(cheapest, cost_nanos(c));
    fastest = std::min(fastest, expected_ms(c));
  }
  std::vector<double> base(candidates.size());
  std::vector<double> rebates(candidates.size());
  for (std::size_t i = 0; i < candidates.size(); ++i) {
    const Candidate& c = candidates[i];
    Terms& t = terms[i];
    t.quality = weights.quality * std::clamp(c.quality, 0.0, 1.0);
    t.cost = weights.cost * relative(cheapest, cost_nanos(c));
    t.latency = weights.latency * relative(fastest, expected_ms(c));
    t.base = t.quality + t.cost + t.latency;
    base[i] = t.base;
    rebates[i] = c.rebate_percent;
  }
  const std::vector<double> rebate = rebate_terms(base, rebates);
  for (std::size_t i = 0; i < terms.size(); ++i) {
    terms[i].rebate = rebate[i];
    terms[i].total = terms[i].base + rebate[i];
  }
  return terms;
}

std::optional<std::size_t> pick(std::span<const Terms> terms) {
  if (terms.empty()) return std::nullopt;
  std::size_t best = 0;
  for (std::size_t i = 1; i < terms.size(); ++i) {
    const Terms& t = terms[i];
    const Terms& b = terms[best];
    if (t.total > b.total || (t.total == b.total && t.base > b.base)) best = i;
  }
  return best;
}

std::vector<std::size_t> rank(std::span<const Terms> terms) {
  std::vector<std::size_t> order;
  const auto best = pick(terms);
  if (!best) return order;
  order.reserve(terms.size());
  order.push_back(*best);
  for (std::size_t i = 0; i < terms.size(); ++i) {
    if (i != *best) order.push_back(i);
  }
  std::stable_sort(order.begin() + 1, order.end(),
                   [&](std::size_t a, std::size_t b) { return terms[a].total > terms[b].total; });
  return order;
}

}  // namespace tp::router
