#include "catalog/catalog.h"

#include "core/assert.h"

#include <limits>

namespace tp::catalog {

std::string_view api_name(Api api) { return api == Api::kOpenAI ? "openai" : "anthropic"; }

std::string_view privacy_tier_name(PrivacyTier tier) {
  switch (tier) {
    case PrivacyTier::kConfidential: return "confidential";
    case PrivacyTier::kCloud: return "cloud";
    case PrivacyTier::kCommunity: return "community";
  }
  return "cloud";
}

std::optional<PrivacyTier> parse_privacy_tier(std::string_view text) {
  if (text == "confidential") return PrivacyTier::kConfidential;
  if (text == "cloud") return PrivacyTier::kCloud;
  if (text == "community") return PrivacyTier::kCommunity;
  return std::nullopt;
}

namespace {

// `p` times `premium` (kPremiumOne units), rounded up to the nano-USD per million tokens.
PricePerMtok times(PricePerMtok p, std::uint32_t premium) {
  __extension__ using Int128 = __int128;
  const Int128 scaled = (static_cast<Int128>(p.nanos()) * premium + kPremiumOne - 1) / kPremiumOne;
  TP_CHECK(scaled <= std::numeric_limits<std::int64_t>::max());
  return PricePerMtok::from_nanos(static_cast<std::int64_t>(scaled));
}

// Scales the input-side and the output prices of `prices` apart.
Prices scaled(const Prices& prices, std::uint32_t input, std::uint32_t output) {
  Prices out = prices;
  for (PricePerMtok* p : {&out.input, &out.cached_input, &out.cache_write, &out.cache_write_1h,
                          &out.audio_input}) {
    *p = times(*p, input);
  }
  out.output = times(out.output, output);
  out.audio_output = times(out.audio_output, output);
  return out;
}

}  // namespace

Prices with_premium(const Prices& prices, std::uint32_t premium) {
  return premium == kPremiumOne ? prices : scaled(prices, premium, premium);
}

Prices for_input(const Prices& prices, std::int64_t input_tokens) {
  if (prices.long_above == 0 || input_tokens <= prices.long_above) return prices;
  Prices out = scaled(prices, prices.long_input, prices.long_output);
  out.long_above = 0;  // these are the long-context prices already
  return out;
}

Catalog::Catalog(std::vector<Provider> providers, std::vector<Model> models)
    : providers_(std::move(providers)), models_(std::move(models)) {
  for (std::size_t i = 0; i < providers_.size(); ++i) {
    TP_ASSERT(providers_[i].index == i);
  }
  for (std::size_t i = 0; i < models_.size(); ++i) {
    for (Route& r : models_[i].routes) {
      TP_ASSERT(r.provider < providers_.size());
      r.index = route_count_++;
    }
    by_name_.emplace(models_[i].name, i);
  }
}

const Model* Catalog::find_model(std::string_view name) const {
  const auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &models_[it->second];
}

std::vector<std::size_t> same_providers(const Catalog& from, const Catalog& to) {
  std::vector<std::size_t> same(to.providers().size(), kNone);
  for (const Provider& p : to.providers()) {
    for (const Provider& q : from.providers()) {
      if (p.name == q.name && p.api == q.api && p.base_url == q.base_url &&
          p.api_key == q.api_key && p.ca_file == q.ca_file) {
        same[p.index] = q.index;
        break;
      }
    }
  }
  return same;
}

std::vector<std::size_t> same_routes(const Catalog& from, const Catalog& to) {
  const std::vector<std::size_t> providers = same_providers(from, to);
  std::vector<std::size_t> same(to.route_count(), kNone);
  std::vector<bool> taken(from.route_count(), false);  // a model listing one route twice
  for (const Model& m : to.models()) {
    const Model* before = from.find_model(m.name);
    if (before == nullptr) continue;
    for (const Route& r : m.routes) {
      for (const Route& q : before->routes) {
        if (!taken[q.index] && providers[r.provider] == q.provider &&
            r.upstream_model == q.upstream_model) {
          same[r.index] = q.index;
          taken[q.index] = true;
          break;
        }
      }
    }
  }
  return same;
}

}  // namespace tp::catalog
