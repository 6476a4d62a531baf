#include "catalog/catalog.h"

#include <gtest/gtest.h>

namespace tp::catalog {
namespace {

TEST(Catalog, FindsModelsAndTheirProviders) {
  std::vector<Provider> providers(2);
  providers[0].name = "a";
  providers[0].index = 0;
  providers[1].name = "b";
  providers[1].index = 1;
  providers[1].api = Api::kAnthropic;
  std::vector<Model> models(2);
  models[0].name = "m1";
  models[0].routes.push_back({.provider = 1, .upstream_model = "up1"});
  models[1].name = "m2";
  models[1].routes.push_back({.provider = 0, .upstream_model = "up2"});
  Catalog catalog(std::move(providers), std::move(models));
  // The name index survives a move of the catalog.
  Catalog moved = std::move(catalog);
  const Model* m = moved.find_model("m1");
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(m->routes[0].upstream_model, "up1");
  EXPECT_EQ(moved.provider(m->routes[0]).name, "b");
  EXPECT_EQ(moved.find_model("m3"), nullptr);
  EXPECT_EQ(moved.find_model(""), nullptr);
  EXPECT_EQ(api_name(Api::kAnthropic), "anthropic");
  EXPECT_EQ(privacy_tier_name(PrivacyTier::kConfidential), "confidential");
}

Prices distinct_prices() {
  Prices p;
  p.input = PricePerMtok::parse("3").value();
  p.output = PricePerMtok::parse("15").value();
  p.cached_input = PricePerMtok::parse("0.3").value();
  p.cache_write = PricePerMtok::parse("3.75").value();
  p.cache_write_1h = PricePerMtok::from_nanos(1);
  p.audio_input = PricePerMtok::from_nanos(7);
  p.audio_output = PricePerMtok::parse("100000").value();
  p.web_search_per_1k = PricePerMtok::parse("10").value();
  return p;
}

TEST(Catalog, PremiumOneLeavesPricesAsTheyAre) {
  const Prices p = distinct_prices();
  const Prices same = with_premium(p, kPremiumOne);
  EXPECT_EQ(same.input, p.input);
  EXPECT_EQ(same.output, p.output);
  EXPECT_EQ(same.cached_input, p.cached_input);
  EXPECT_EQ(same.cache_write, p.cache_write);
  EXPECT_EQ(same.cache_write_1h, p.cache_write_1h);
  EXPECT_EQ(same.audio_input, p.audio_input);
  EXPECT_EQ(same.audio_output, p.audio_output);
  EXPECT_EQ(same.web_search_per_1k, p.web_search_per_1k);
}

// Every token price is scaled and rounded up to the nano-USD per million tokens, never
// down; the web-search fee is not a token price and stays.
TEST(Catalog, PremiumScalesEveryTokenPriceRoundingUp) {
  const Prices p = with_premium(distinct_prices(), 11'000);  // ×1.1
  EXPECT_EQ(p.input.nanos(), 3'300'000'000);
  EXPECT_EQ(p.output.nanos(), 16'500'000'000);
  EXPECT_EQ(p.cached_input.nanos(), 330'000'000);
  EXPECT_EQ(p.cache_write.nanos(), 4'125'000'000);
  EXPECT_EQ(p.cache_write_1h.nanos(), 2);  // 1.1 rounded up, not to the nearest
  EXPECT_EQ(p.audio_input.nanos(), 8);     // 7.7 rounded up
  EXPECT_EQ(p.audio_output.to_string(), "110000.00");
  EXPECT_EQ(p.web_search_per_1k.nanos(), 10'000'000'000);

  // The largest multiplier (×12, fast times a region at the config's cap) on the largest
  // price a route may have: 1e14 × 120'000 passes int64 before the division, which the
  // 128-bit product must survive.
  EXPECT_EQ(with_premium(distinct_prices(), 12 * kPremiumOne).audio_output.to_string(),
            "1200000.00");
  // A fraction of a ten-thousandth: 3 USD × 1.0001 = 3.0003 USD exactly; 1 nano × 1.0001 is
  // rounded up to 2.
  const Prices small = with_premium(distinct_prices(), 10'001);
  EXPECT_EQ(small.input.nanos(), 3'000'300'000);
  EXPECT_EQ(small.cache_write_1h.nanos(), 2);
  EXPECT_EQ(small.web_search_per_1k.nanos(), 10'000'000'000);
}

// What a reload keeps of an upstream is matched by what reaches it: the provider's name, API,
// base URL, credentials and trust anchor, and the route's model and upstream model. Prices,
// order and seeds may change.
TEST(Catalog, SameUpstreamsAcrossAReload) {
  auto make = [](std::string b_url, std::string b_key, bool swap) {
    std::vector<Provider> providers(2);
    providers[0] = {.name = "a", .base_url = "http://a/v1", .index = 0};
    providers[1] = {.name = "b", .base_url = b_url, .api_key = b_key, .index = 1};
    if (swap) {
      std::swap(providers[0], providers[1]);
      providers[0].index = 0;
      providers[1].index = 1;
    }
    const std::size_t a = swap ? 1 : 0;
    const std::size_t b = 1 - a;
    std::vector<Model> models(2);
    models[0].name = "m1";
    models[0].routes.push_back({.provider = a, .upstream_model = "x"});
    models[0].routes.push_back({.provider = b, .upstream_model = "x"});
    models[0].routes.push_back({.provider = b, .upstream_model = "x"});  // listed twice
    models[1].name = swap ? "m3" : "m2";
    models[1].routes.push_back({.provider = a, .upstream_model = "y"});
    return Catalog(std::move(providers), std::move(models));
  };
  const Catalog before = make("http://b/v1", "k1", false);
  // Providers swapped in the file, m2 renamed m3.
  const Catalog reordered = make("http://b/v1", "k1", true);
  EXPECT_EQ(same_providers(before, reordered), (std::vector<std::size_t>{1, 0}));
  EXPECT_EQ(same_routes(before, reordered), (std::vector<std::size_t>{0, 1, 2, kNone}));
  // Provider b moved, or given another key: another upstream, its routes start afresh.
  const Catalog moved = make("http://b2/v1", "k1", false);
  EXPECT_EQ(same_providers(before, moved), (std::vector<std::size_t>{0, kNone}));
  EXPECT_EQ(same_routes(before, moved), (std::vector<std::size_t>{0, kNone, kNone, 3}));
  const Catalog rekeyed = make("http://b/v1", "k2", false);
  EXPECT_EQ(same_routes(before, rekeyed), (std::vector<std::size_t>{0, kNone, kNone, 3}));
}

}  // namespace
}  // namespace tp::catalog
