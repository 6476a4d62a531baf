#pragma once
// What can be served and by whom: providers, models and the routes between them. Built once
// from config and immutable afterwards; a reload builds a new Catalog and swaps it whole.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/money.h"

namespace tp::catalog {

enum class Api { kOpenAI, kAnthropic };
enum class PrivacyTier { kConfidential, kCloud, kCommunity };

std::string_view api_name(Api api);
std::string_view privacy_tier_name(PrivacyTier tier);
// "confidential", "cloud" or "community"; nullopt for anything else.
std::optional<PrivacyTier> parse_privacy_tier(std::string_view text);

struct Provider {
  std::string name;
  Api api = Api::kOpenAI;
  std::string base_url;
  std::string api_key_env;
  std::string api_key;  // resolved from api_key_env at load; never logged
  std::string ca_file;  // extra trust anchor for https base URLs; empty: system store
  PrivacyTier privacy_tier = PrivacyTier::kCloud;
  double rebate_percent = 0;
  std::size_t index = 0;  // position in Catalog::providers
};

// A price multiplier in ten-thousandths: 10'000 is ×1, 11'000 ×1.1.
inline constexpr std::uint32_t kPremiumOne = 10'000;

// Two multipliers applied together (kPremiumOne units), rounded up: never under.
constexpr std::uint32_t combined_premium(std::uint32_t a, std::uint32_t b) {
  return static_cast<std::uint32_t>((std::uint64_t{a} * b + kPremiumOne - 1) / kPremiumOne);
}

// What a route charges per million tokens.
struct Prices {
  PricePerMtok input;
  PricePerMtok output;
  PricePerMtok cached_input;  // the input price unless configured
  // Input written to the provider's cache (Anthropic's cache_creation tokens), kept 5 minutes
  // or 1 hour; unless configured, Anthropic's 1.25× and 2× of the input price on an
  // Anthropic-API provider, else the input price.
  PricePerMtok cache_write;
  PricePerMtok cache_write_1h;
  // Audio tokens (OpenAI's prompt/completion `audio_tokens`): the text prices unless the
  // route configures its own (Route::audio_priced says which).
  PricePerMtok audio_input;
  PricePerMtok audio_output;
  // USD per 1000 server-side web searches (Anthropic's `server_tool_use`), as the price per
  // million tokens is per million: a search costs web_search_per_1k / 1000.
  PricePerMtok web_search_per_1k;
  // Long-context pricing (Anthropic's above 200k input tokens, OpenAI's above 272k): when a
  // request's whole input (cache reads and writes included) is above `long_above` tokens,
  // every input-side price is times `long_input` and every output price times `long_output`
  // (kPremiumOne units). 0: the route has none.
  std::int64_t long_above = 0;
  std::uint32_t long_input = kPremiumOne;
  std::uint32_t long_output = kPremiumOne;
};

// `prices` with every token price times `premium` (in kPremiumOne units), each rounded up
// to the nano-USD per million tokens; the web-search fee is not a token price and stays.
Prices with_premium(const Prices& prices, std::uint32_t premium);

// The prices of a request whose whole input is `input_tokens`: the long-context ones above
// the route's threshold, else `prices` (see Prices::long_above).
Prices for_input(const Prices& prices, std::int64_t input_tokens);

struct Route {
  std::size_t provider = 0;  // index into Catalog::providers
  std::string upstream_model;
  Prices prices;
  // The provider's flex tier (OpenAI `service_tier: flex`): cheaper, may start late or be
  // refused. Unset: the route offers no flex tier.
  std::optional<Prices> flex;
  // The route has audio prices of its own: requests that ask for audio may use it.
  bool audio_priced = false;
  // Options that change the provider's price, which a request may set only on a route that
  // prices them (Anthropic's `speed: "fast"` and `inference_geo`, OpenAI's priority
  // tier): each a multiplier of
  // every token price, in kPremiumOne units. 0 / absent: the route does not offer it.
  std::uint32_t fast_premium = 0;
  std::vector<std::pair<std::string, std::uint32_t>> geo_premiums;  // inference_geo → ×
  // OpenAI's priority processing (`service_tier: "priority"`, or a project's default).
  std::uint32_t priority_premium = 0;
  // The router's latency estimate until measured: time to first byte and decoding speed.
  double ttfb_ms = 500;
  double tokens_per_second = 50;
  std::size_t index = 0;  // position among all routes of the catalog (for per-route stats)
};

// What a model answers: chat completions and messages, or embeddings.
enum class ModelKind { kChat, kEmbeddings };

struct Model {
  std::string name;
  ModelKind kind = ModelKind::kChat;
  double quality = 0.5;
  std::string tier = "medium";
  std::uint32_t max_output_tokens = 4096;
  std::uint32_t context_tokens = 128'000;
  std::vector<Route> routes;
};

class Catalog {
 public:
  Catalog() = default;
  Catalog(std::vector<Provider> providers, std::vector<Model> models);
  // The name index points into models_, so copies are not allowed; moves keep it valid.
  Catalog(const Catalog&) = delete;
  Catalog& operator=(const Catalog&) = delete;
  Catalog(Catalog&&) = default;
  Catalog& operator=(Catalog&&) = default;

  const std::vector<Provider>& providers() const { return providers_; }
  const std::vector<Model>& models() const { return models_; }
  // nullptr when no model has this name.
  const Model* find_model(std::string_view name) const;
  const Provider& provider(const Route& route) const { return providers_[route.provider]; }
  std::size_t route_count() const { return route_count_; }

 private:
  std::vector<Provider> providers_;
  std::vector<Model> models_;
  std::unordered_map<std::string_view, std::size_t> by_name_;
  std::size_t route_count_ = 0;
};

// What stays known of a catalog's upstreams across a reload (health, latency, statistics)
// belongs to those that are the same in the next: for each provider of `to`, the index of
// the provider of `from` with the same name, API, base URL, credentials and trust anchor,
// or kNone; for each route of `to` (by Route::index), the index of the route of `from` of
// the same model name to the same upstream model on such a provider, or kNone.
inline constexpr std::size_t kNone = static_cast<std::size_t>(-1);
std::vector<std::size_t> same_providers(const Catalog& from, const Catalog& to);
std::vector<std::size_t> same_routes(const Catalog& from, const Catalog& to);

}  // namespace tp::catalog
