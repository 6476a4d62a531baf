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

}  // namespace
}  // namespace tp::catalog
