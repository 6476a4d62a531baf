#include "ops/config.h"

#include <gtest/gtest.h>

#include <cstdlib>

namespace tp::ops {
namespace {

constexpr const char* kMinimal = R"(providers:
  - name: main
    base_url: "http://127.0.0.1:9000/v1"
models:
  - name: gpt-4o-mini
    routes:
      - provider: main
        input_per_mtok: "0.15"
        output_per_mtok: "0.60"
)";

TEST(Config, MinimalConfigGetsDocumentedDefaults) {
  auto c = parse_config(kMinimal, "t.yaml");
  ASSERT_TRUE(c) << c.status().message();
  EXPECT_EQ(c->listen_host, "127.0.0.1");
  EXPECT_EQ(c->listen_port, 8080);
  EXPECT_EQ(c->store, "sqlite:turnpike.db");
  EXPECT_EQ(c->server.body_bytes_max, 32u * 1024 * 1024);
  EXPECT_EQ(c->upstream.connect_timeout_ms, 5000u);
  // Below the fallback deadline: a stream route that sends no headers is followed in time.
  EXPECT_EQ(c->upstream.first_byte_timeout_ms, 20'000u);
  EXPECT_EQ(c->fallback_deadline_ms, 30'000u);
  EXPECT_TRUE(c->warnings.empty());
  EXPECT_EQ(c->upstream.answer_timeout_ms, 600'000u);  // as long as the SDKs wait
  EXPECT_EQ(c->upstream_idle_connections_max, 512u);
  EXPECT_DOUBLE_EQ(c->weights.quality, 0.4);
  EXPECT_EQ(c->breaker.failures, 5u);
  EXPECT_DOUBLE_EQ(c->breaker.error_rate, 0.5);
  EXPECT_EQ(c->breaker.window, 20u);
  EXPECT_EQ(c->breaker.cooldown.count(), 10'000);
  const auto* m = c->catalog->find_model("gpt-4o-mini");
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(m->kind, catalog::ModelKind::kChat);
  EXPECT_EQ(m->routes[0].upstream_model, "gpt-4o-mini");  // defaults to the model's name
  EXPECT_EQ(m->routes[0].prices.input.nanos(), 150'000'000);
  EXPECT_EQ(m->routes[0].prices.output.nanos(), 600'000'000);
  EXPECT_EQ(m->routes[0].prices.cached_input, m->routes[0].prices.input);  // the default
  EXPECT_EQ(c->catalog->provider(m->routes[0]).privacy_tier, catalog::PrivacyTier::kCloud);
}

TEST(Config, ContractExampleIsAccepted) {
  ::setenv("TP_CONFIG_TEST_KEY", "sk-x", 1);
  auto c = parse_config(R"(listen: "127.0.0.1:8080"
store: "sqlite:turnpike.db"
redis: "redis://127.0.0.1:6379"
providers:
  - name: main
    api: openai
    base_url: "http://127.0.0.1:9000/v1"
    api_key_env: TP_CONFIG_TEST_KEY
    privacy_tier: cloud
    rebate_percent: 0
models:
  - name: gpt-4o-mini
    quality: 0.80
    tier: small
    max_output_tokens: 16384
    routes:
      - provider: main
        upstream_model: gpt-4o-mini
        input_per_mtok: "0.15"
        output_per_mtok: "0.60"
        cached_input_per_mtok: "0.075"
routing:
  weights: { quality: 0.4, cost: 0.4, latency: 0.2 }
)", "contract.yaml");
  ASSERT_TRUE(c) << c.status().message();
  EXPECT_EQ(c->catalog->providers()[0].api_key, "sk-x");
}

void expect_error(const std::string& yaml, const std::string& fragment) {
  auto c = parse_config(yaml, "t.yaml");
  ASSERT_FALSE(c) << "accepted:\n" << yaml;
  EXPECT_NE(c.status().message().find(fragment), std::string::npos) << c.status().message();
}

TEST(Config, ErrorsNameKeyLineAndProblem) {
  expect_error(std::string(kMinimal) + "bogus: 1\n", "t.yaml:10: bogus: unknown key");
  expect_error("providers: []\n", "providers: must be a non-empty list");
  expect_error("", "t.yaml: the file: must be a mapping");
  // A bound a default breaks points at the setting that moved, and says it is the default.
  expect_error(std::string(kMinimal) + "upstream:\n  idle_timeout_ms: 600000\n",
               "t.yaml:11: billing.hold_timeout_ms: must be above twice "
               "upstream.idle_timeout_ms (1200000 ms), got 900000 (the default)");
  expect_error(std::string(kMinimal) + "upstream:\n  provider_key: x\n", "unknown key");
  expect_error(R"(providers:
  - { name: a, base_url: "http://user:pw@x/v1" }
models: [])", "must not carry credentials (user:password@): give the provider's key with "
              "api_key_env");
  expect_error(R"(providers:
  - { name: a, base_url: "http://x/v1" }
models:
  - name: m
    kind: rerank
    routes: [{provider: a, input_per_mtok: "1", output_per_mtok: "1"}]
)", "t.yaml:5: models[0].kind: must be chat or embeddings, got 'rerank'");
  expect_error(R"(providers:
  - name: a
    base_url: "http://x/v1"
    api: grpc
models: [])", "t.yaml:4: providers[0].api: must be openai or anthropic");
  expect_error(R"(providers:
  - { name: a, base_url: "http://x/v1" }
models:
  - name: m
    routes: [{provider: b, input_per_mtok: "1", output_per_mtok: "1"}]
)", "models[0].routes[0].provider: no provider named 'b'");
  expect_error(R"(providers:
  - { name: a, base_url: "http://x/v1" }
models:
  - name: m
    routes: [{provider: a, input_per_mtok: "1.5e3", output_per_mtok: "1"}]
)", "models[0].routes[0].input_per_mtok: must be a decimal");
  expect_error(R"(providers:
  - { name: a, base_url: "http://x/v1" }
models:
  - name: m
    routes: [{provider: a, input_per_mtok: "-1", output_per_mtok: "1"}]
)", "not negative");
  expect_error(R"(providers:
  - { name: a, base_url: "http://x/v1", api_key_env: TP_SURELY_UNSET_VAR }
models: [])", "environment variable TP_SURELY_UNSET_VAR is not set");
  expect_error(std::string(kMinimal) + "limits: { body_bytes_max: 10 }\n",
               "limits.body_bytes_max: must be between");
  expect_error(std::string(kMinimal) + "listen: nowhere\n", "listen: 'nowhere' is not HOST:PORT");
  // What serve would refuse, check-config refuses: a name where an address must be, a
  // store with no file.
  expect_error(std::string(kMinimal) + "listen: \"localhost:8080\"\n",
               "listen: 'localhost' is not an IP address");
  expect_error(std::string(kMinimal) + "store: \"sqlite:\"\n", "store: must be sqlite:FILE");
  for (const char* bad :
       {"redis://", "redis://:pw@host:notaport", "redis://host:0", "redis://host:65536",
        "redis://host/x", "redis://[::1", "http://host:6379", "redis://host:"}) {
    expect_error(std::string(kMinimal) + "redis: \"" + bad + "\"\n",
                 "redis: must be redis://[USER:PASSWORD@]HOST[:PORT][/DB]");
  }
  for (const char* good : {"redis://127.0.0.1:6379", "redis://:pw@cache.internal:6380/2",
                           "redis://user:p@ss@[::1]:6379", "redis://cache"}) {
    EXPECT_TRUE(parse_config(std::string(kMinimal) + "redis: \"" + good + "\"\n", "t.yaml"))
        << good;
  }
  // Numbers are decimal: no hex, inf or nan.
  expect_error(R"(providers:
  - { name: a, base_url: "http://x/v1", rebate_percent: 0x10 }
models: [])", "providers[0].rebate_percent: must be a number, got '0x10'");
  expect_error(R"(providers:
  - { name: a, base_url: "http://x/v1" }
models:
  - name: m
    max_output_tokens: 5000
    context_tokens: 4000
    routes: [{provider: a, input_per_mtok: "1", output_per_mtok: "1"}]
)", "models[0].max_output_tokens: 5000 is more than context_tokens (4000)");
  expect_error(R"(providers:
  - { name: a, base_url: "http://x/v1" }
models:
  - name: m
    routes: [{provider: a, input_per_mtok: "1", output_per_mtok: "1", tokens_per_second: 0}]
)", "tokens_per_second: must be between");
  // A key pasted where its variable's name goes is refused without being quoted back.
  {
    auto c = parse_config(R"(providers:
  - { name: a, base_url: "http://x/v1", api_key_env: "sk-proj-LEAKED-987" }
models: [])", "t.yaml");
    ASSERT_FALSE(c);
    EXPECT_NE(c.status().message().find("must name an environment variable"), std::string::npos)
        << c.status().message();
    EXPECT_EQ(c.status().message().find("LEAKED"), std::string::npos) << c.status().message();
  }
  // Names and the key go into header lines: a line break in them is refused.
  expect_error("providers:\n  - { name: \"up\\r\\nSet-Cookie: x=1\", base_url: \"http://x/v1\" }\n"
               "models: []\n",
               "providers[0].name: must not contain control characters");
  expect_error(R"(providers:
  - { name: a, base_url: "http://x/v1/x HTTP/1.1" }
models: [])", "has a space, control or non-ASCII character in its path");
  ::setenv("TP_TEST_KEY_WITH_LINE", "sk-secret\r\nX-Injected: yes", 1);
  {
    auto c = parse_config(R"(providers:
  - { name: a, base_url: "http://x/v1", api_key_env: TP_TEST_KEY_WITH_LINE }
models: [])", "t.yaml");
    ASSERT_FALSE(c);
    EXPECT_NE(c.status().message().find("has control characters"), std::string::npos);
    EXPECT_EQ(c.status().message().find("sk-secret"), std::string::npos);
  }
  ::setenv("TP_TEST_KEY_WITH_LINE", "sk-secret\n", 1);  // as read from a file
  {
    auto c = parse_config(R"(providers:
  - { name: a, base_url: "http://x/v1", api_key_env: TP_TEST_KEY_WITH_LINE }
models:
  - name: m
    routes: [{provider: a, input_per_mtok: "1", output_per_mtok: "1"}]
)", "t.yaml");
    ASSERT_TRUE(c) << c.status().message();
    EXPECT_EQ(c->catalog->providers().front().api_key, "sk-secret");
  }
  ::unsetenv("TP_TEST_KEY_WITH_LINE");
  expect_error(R"(providers:
  - { name: a, base_url: "http://x/v1" }
models:
  - name: auto
    routes: [{provider: a, input_per_mtok: "1", output_per_mtok: "1"}]
)", "models[0].name: 'auto' is reserved");
  expect_error(R"(providers:
  - { name: a, base_url: "http://x/v1" }
models:
  - name: m
    routes:
      - provider: a
        input_per_mtok: "1"
        output_per_mtok: "1"
        long_context: { above_input_tokens: ~, input_multiplier: "2", output_multiplier: "1.5" }
)", "long_context.above_input_tokens: is required");
  expect_error(R"(providers:
  - { name: a, base_url: "http://x/v1" }
models:
  - name: m
    routes: [{provider: a, input_per_mtok: "1", output_per_mtok: "1", web_search_per_1k: "2000"}]
)", "web_search_per_1k: must be at most 1000 USD per 1000 searches");
  expect_error(std::string(kMinimal) + "upstream: { idle_connections_max: 100001 }\n",
               "upstream.idle_connections_max: must be between");
  {
    auto c = parse_config(std::string(kMinimal) + "upstream: { idle_connections_max: 2000 }\n",
                          "t.yaml");
    ASSERT_TRUE(c) << c.status().message();
    EXPECT_EQ(c->upstream_idle_connections_max, 2000u);
  }
  expect_error(R"(providers:
  - { name: a, base_url: "http://x/v1" }
  - { name: a, base_url: "http://y/v1" }
models: [])", "duplicate provider name 'a'");
  expect_error("providers: [\n", "YAML");
  // A repeated key would be read as its first copy, the second (perhaps the one meant)
  // ignored: refused, at the second.
  expect_error(R"(providers:
  - name: a
    base_url: "http://x/v1"
    privacy_tier: confidential
    privacy_tier: community
models: [])", "t.yaml:5: providers[0].privacy_tier: appears more than once");
  expect_error(std::string(kMinimal) + "routing: { breaker_failures: 2 }\nrouting: {}\n",
               "routing: appears more than once");
  // Names are never empty: an empty upstream_model would be sent upstream as "model": "".
  expect_error(R"(providers:
  - { name: "", base_url: "http://x/v1" }
models: [])", "providers[0].name: must not be empty");
  expect_error(R"(providers:
  - { name: a, base_url: "http://x/v1" }
models:
  - name: m
    routes: [{provider: a, upstream_model: " ", input_per_mtok: "1", output_per_mtok: "1"}]
)", "models[0].routes[0].upstream_model: must not be empty");
}

}  // namespace
}  // namespace tp::ops

namespace tp::ops {
namespace {

TEST(Config, FlexPricesNeedBothPricesAndAnOpenAIProvider) {
  const std::string flex = R"(providers:
  - { name: main, base_url: "http://127.0.0.1:9000/v1" }
  - { name: claude, api: anthropic, base_url: "http://127.0.0.1:9001/v1" }
models:
  - name: m
    routes:
      - { provider: main, input_per_mtok: "2", output_per_mtok: "8",
          flex_input_per_mtok: "1", flex_output_per_mtok: "4" }
)";
  auto c = parse_config(flex, "t.yaml");
  ASSERT_TRUE(c) << c.status().message();
  const catalog::Route& r = c->catalog->find_model("m")->routes[0];
  ASSERT_TRUE(r.flex);
  EXPECT_EQ(r.flex->input.nanos(), 1'000'000'000);
  EXPECT_EQ(r.flex->output.nanos(), 4'000'000'000);
  EXPECT_EQ(r.flex->cached_input, r.flex->input);  // the default
  EXPECT_FALSE(parse_config(kMinimal, "t.yaml").value().catalog->models()[0].routes[0].flex);
  expect_error(flex + R"(  - name: n
    routes:
      - { provider: main, input_per_mtok: "2", output_per_mtok: "8", flex_input_per_mtok: "1" }
)",
               "flex_output_per_mtok: is required");
  expect_error(flex + R"(  - name: n
    routes:
      - { provider: claude, input_per_mtok: "2", output_per_mtok: "8",
          flex_input_per_mtok: "1", flex_output_per_mtok: "4" }
)",
               "flex prices need a provider with api: openai");
  expect_error(flex + R"(  - name: n
    routes:
      - { provider: main, input_per_mtok: "2", output_per_mtok: "8",
          flex_input_per_mtok: "1", flex_output_per_mtok: "9" }
)",
               "flex prices must not be above the standard ones");
  // A standard cached price below the flex input price is the flex cached default.
  auto cached = parse_config(flex + R"(  - name: n
    routes:
      - { provider: main, input_per_mtok: "2", output_per_mtok: "8", cached_input_per_mtok: "0.5",
          flex_input_per_mtok: "1", flex_output_per_mtok: "4" }
)", "t.yaml");
  ASSERT_TRUE(cached) << cached.status().message();
  EXPECT_EQ(cached->catalog->find_model("n")->routes[0].flex->cached_input.to_string(), "0.50");
}

// Cache writes are priced as Anthropic prices them unless configured: 1.25× the input
// price for 5 minutes, 2× for an hour (rounded up to a nano-USD); elsewhere the input price.
TEST(Config, CacheWritePricesDefaultToAnthropicsMultiples) {
  auto c = parse_config(R"(providers:
  - { name: claude, api: anthropic, base_url: "http://127.0.0.1:9001/v1" }
  - { name: main, base_url: "http://127.0.0.1:9000/v1" }
models:
  - name: a
    routes:
      - { provider: claude, input_per_mtok: "3", output_per_mtok: "15" }
  - name: b
    routes:
      - { provider: claude, input_per_mtok: "0.000000001", output_per_mtok: "1",
          cache_write_per_mtok: "4", cache_write_1h_per_mtok: "7" }
  - name: o
    routes:
      - { provider: main, input_per_mtok: "2", output_per_mtok: "8" }
)", "t.yaml");
  ASSERT_TRUE(c) << c.status().message();
  const catalog::Prices& a = c->catalog->find_model("a")->routes[0].prices;
  EXPECT_EQ(a.cache_write.to_string(), "3.75");
  EXPECT_EQ(a.cache_write_1h.to_string(), "6.00");
  const catalog::Prices& b = c->catalog->find_model("b")->routes[0].prices;
  EXPECT_EQ(b.cache_write.to_string(), "4.00");
  EXPECT_EQ(b.cache_write_1h.to_string(), "7.00");
  const catalog::Prices& o = c->catalog->find_model("o")->routes[0].prices;
  EXPECT_EQ(o.cache_write, o.input);
  EXPECT_EQ(o.cache_write_1h, o.input);
}

// Two providers, one per API, for the route keys that price audio, searches and options.
constexpr const char* kTwoApis = R"(providers:
  - { name: main, base_url: "http://127.0.0.1:9000/v1" }
  - { name: claude, api: anthropic, base_url: "http://127.0.0.1:9001/v1" }
models:
)";

// A route of model "m" on `provider` with `keys` added to its prices.
std::string route_with(std::string_view provider, std::string_view keys,
                       std::string_view prices = R"(input_per_mtok: "3", output_per_mtok: "15")") {
  return std::string(kTwoApis)
      .append("  - name: m\n    routes:\n      - { provider: ")
      .append(provider)
      .append(", ")
      .append(prices)
      .append(keys.empty() ? "" : ", ")
      .append(keys)
      .append(" }\n");
}

const catalog::Route& only_route(const Result<Config>& c) {
  return c.value().catalog->find_model("m")->routes[0];
}

TEST(Config, AudioPricesAreBothOrNeither) {
  auto priced = parse_config(
      route_with("main", R"(audio_input_per_mtok: "40", audio_output_per_mtok: "80")"), "t.yaml");
  ASSERT_TRUE(priced) << priced.status().message();
  EXPECT_TRUE(only_route(priced).audio_priced);
  EXPECT_EQ(only_route(priced).prices.audio_input.nanos(), 40'000'000'000);
  EXPECT_EQ(only_route(priced).prices.audio_output.nanos(), 80'000'000'000);
  EXPECT_EQ(only_route(priced).prices.input.nanos(), 3'000'000'000);  // text unchanged

  // Without them audio costs what text costs, and the route serves no audio request.
  auto text = parse_config(route_with("main", ""), "t.yaml");
  ASSERT_TRUE(text) << text.status().message();
  EXPECT_FALSE(only_route(text).audio_priced);
  EXPECT_EQ(only_route(text).prices.audio_input, only_route(text).prices.input);
  EXPECT_EQ(only_route(text).prices.audio_output, only_route(text).prices.output);

  expect_error(route_with("main", R"(audio_input_per_mtok: "40")"),
               "models[0].routes[0]: audio prices need both audio_input_per_mtok and "
               "audio_output_per_mtok");
  expect_error(route_with("main", R"(audio_output_per_mtok: "80")"),
               "models[0].routes[0]: audio prices need both");
  expect_error(route_with("main", R"(audio_input_per_mtok: "x", audio_output_per_mtok: "80")"),
               "models[0].routes[0].audio_input_per_mtok: must be a decimal");
}

// Anthropic charges 10 USD per 1000 web searches unless configured; OpenAI's chat
// completions report none.
TEST(Config, WebSearchPriceDefaultsByApiAndIsBounded) {
  auto anthropic = parse_config(route_with("claude", ""), "t.yaml");
  ASSERT_TRUE(anthropic) << anthropic.status().message();
  EXPECT_EQ(only_route(anthropic).prices.web_search_per_1k.nanos(), 10'000'000'000);
  auto openai = parse_config(route_with("main", ""), "t.yaml");
  ASSERT_TRUE(openai) << openai.status().message();
  EXPECT_EQ(only_route(openai).prices.web_search_per_1k.nanos(), 0);
  auto set = parse_config(route_with("claude", R"(web_search_per_1k: "12.5")"), "t.yaml");
  ASSERT_TRUE(set) << set.status().message();
  EXPECT_EQ(only_route(set).prices.web_search_per_1k.nanos(), 12'500'000'000);
  auto unpaid = parse_config(route_with("claude", R"(web_search_per_1k: "0")"), "t.yaml");
  ASSERT_TRUE(unpaid) << unpaid.status().message();
  EXPECT_EQ(only_route(unpaid).prices.web_search_per_1k.nanos(), 0);
  auto most = parse_config(route_with("claude", R"(web_search_per_1k: "1000")"), "t.yaml");
  ASSERT_TRUE(most) << most.status().message();
  EXPECT_EQ(only_route(most).prices.web_search_per_1k.nanos(), 1000 * Money::kNanosPerUsd);
  expect_error(route_with("claude", R"(web_search_per_1k: "1000.000000001")"),
               "models[0].routes[0].web_search_per_1k: must be at most 1000 USD per 1000 "
               "searches");
  expect_error(route_with("main", R"(web_search_per_1k: "-1")"),
               "models[0].routes[0].web_search_per_1k: must be a decimal");
}

// A flex tier keeps the route's audio and search prices (no flex discount is known).
TEST(Config, FlexKeepsTheAudioAndSearchPrices) {
  auto c =
      parse_config(route_with("main", R"(flex_input_per_mtok: "1", flex_output_per_mtok: "4", )"
                                      R"(audio_input_per_mtok: "40", audio_output_per_mtok: "80")"),
                   "t.yaml");
  ASSERT_TRUE(c) << c.status().message();
  const catalog::Route& r = only_route(c);
  ASSERT_TRUE(r.flex);
  EXPECT_EQ(r.flex->input.nanos(), 1'000'000'000);
  EXPECT_EQ(r.flex->audio_input.nanos(), 40'000'000'000);
  EXPECT_EQ(r.flex->audio_output.nanos(), 80'000'000'000);
  EXPECT_EQ(r.flex->web_search_per_1k, r.prices.web_search_per_1k);
}

// fast_multiplier and inference_geo_multipliers: multipliers from 1 to 10 with at most 4
// decimals, kept in catalog::kPremiumOne units; a route without them offers neither.
TEST(Config, PriceMultipliersAreReadInTenThousandths) {
  auto c = parse_config(
      route_with("claude",
                 R"(fast_multiplier: "6", inference_geo_multipliers: { us: "1.1", eu: 1.2345, )"
                 R"(apac: "1" })"),
      "t.yaml");
  ASSERT_TRUE(c) << c.status().message();
  const catalog::Route& r = only_route(c);
  EXPECT_EQ(r.fast_premium, 60'000u);
  using Geo = std::pair<std::string, std::uint32_t>;
  EXPECT_EQ(r.geo_premiums,
            (std::vector<Geo>{{"us", 11'000u}, {"eu", 12'345u}, {"apac", catalog::kPremiumOne}}));

  auto plain = parse_config(route_with("claude", ""), "t.yaml");
  ASSERT_TRUE(plain) << plain.status().message();
  EXPECT_EQ(only_route(plain).fast_premium, 0u);
  EXPECT_TRUE(only_route(plain).geo_premiums.empty());
  auto nulls = parse_config(
      route_with("claude", "fast_multiplier: ~, inference_geo_multipliers: ~"), "t.yaml");
  ASSERT_TRUE(nulls) << nulls.status().message();
  EXPECT_EQ(only_route(nulls).fast_premium, 0u);
  EXPECT_TRUE(only_route(nulls).geo_premiums.empty());

  // The bounds are in: ×1, ×10, and fast times a region at exactly 12.
  auto edges = parse_config(
      route_with("claude", R"(fast_multiplier: "10", inference_geo_multipliers: { us: "1.2" })"),
      "t.yaml");
  ASSERT_TRUE(edges) << edges.status().message();
  EXPECT_EQ(only_route(edges).fast_premium, 100'000u);
  EXPECT_EQ(only_route(edges).geo_premiums[0].second, 12'000u);
  for (const char* keys : {R"(fast_multiplier: "1")", R"(fast_multiplier: "10")",
                           R"(inference_geo_multipliers: { us: "10" })",
                           R"(fast_multiplier: "6", inference_geo_multipliers: { us: "2" })",
                           R"(fast_multiplier: "2.5", inference_geo_multipliers: { us: "4.8" })"}) {
    auto ok = parse_config(route_with("claude", keys), "t.yaml");
    EXPECT_TRUE(ok) << keys << ": " << ok.status().message();
  }
}

TEST(Config, PriceMultipliersOutOfRangeOrAmbiguousAreRefused) {
  for (const char* bad : {"0.5", "11", "1.00001", "0", "-2", "x", "1.1e0", "10.0001"}) {
    expect_error(route_with("claude", std::string("fast_multiplier: \"").append(bad).append("\"")),
                 std::string("models[0].routes[0].fast_multiplier: must be a multiplier from 1 to "
                             "10 with at most 4 decimals")
                     .append(", like \"1.1\", got '")
                     .append(bad)
                     .append("'"));
  }
  expect_error(route_with("claude", "fast_multiplier: [6]"),
               "models[0].routes[0].fast_multiplier: must be a single value");
  expect_error(route_with("claude", R"(inference_geo_multipliers: { us: "0.5" })"),
               "models[0].routes[0].inference_geo_multipliers.us: must be a multiplier from 1 to "
               "10");
  expect_error(route_with("claude", R"(inference_geo_multipliers: { us: "1.00001" })"),
               "inference_geo_multipliers.us: must be a multiplier");
  // global is the standard price, which a request asks for by leaving inference_geo out.
  expect_error(route_with("claude", R"(inference_geo_multipliers: { global: "1.1" })"),
               "models[0].routes[0].inference_geo_multipliers.global: must name a region other "
               "than global");
  expect_error(route_with("claude", R"(inference_geo_multipliers: { "": "1.1" })"),
               "must name a region other than global");
  expect_error(route_with("claude", R"(inference_geo_multipliers: { "  ": "1.1" })"),
               "must name a region other than global");
  expect_error(route_with("claude", R"(inference_geo_multipliers: { us: "1.1", us: "1.2" })"),
               "models[0].routes[0].inference_geo_multipliers.us: appears more than once");
  expect_error(route_with("claude", R"(inference_geo_multipliers: [us])"),
               "models[0].routes[0].inference_geo_multipliers: must be a mapping of inference_geo "
               "values to multipliers");
  expect_error(route_with("claude", R"(inference_geo_multipliers: "1.1")"),
               "inference_geo_multipliers: must be a mapping");
  // Anthropic's options: a route of another API may not price them.
  expect_error(route_with("main", R"(fast_multiplier: "6")"),
               "models[0].routes[0]: fast_multiplier and inference_geo_multipliers price "
               "Anthropic's speed and inference_geo options");
  expect_error(route_with("main", R"(inference_geo_multipliers: { us: "1.1" })"),
               "need a provider with api: anthropic");
  // A search fee is any API's: OpenAI's search models search once per request.
  auto search = parse_config(route_with("main", R"(web_search_per_1k: "25")"), "t.yaml");
  ASSERT_TRUE(search) << search.status().message();
  EXPECT_EQ(only_route(search).prices.web_search_per_1k.nanos(), 25 * Money::kNanosPerUsd);
}

// Every multiplier together (fast, the dearest region, long context) on the dearest token
// price must stay at most 1.2 million USD per million tokens, so that no cost passes int64;
// real price lists are far below.
TEST(Config, PriorityMultiplierIsOpenAIs) {
  auto c = parse_config(route_with("main", R"(priority_multiplier: "1.75")"), "t.yaml");
  ASSERT_TRUE(c) << c.status().message();
  EXPECT_EQ(only_route(c).priority_premium, 17'500u);
  auto none = parse_config(route_with("main", ""), "t.yaml");
  ASSERT_TRUE(none) << none.status().message();
  EXPECT_EQ(only_route(none).priority_premium, 0u);
  expect_error(route_with("claude", R"(priority_multiplier: "2")"),
               "models[0].routes[0]: priority_multiplier prices OpenAI's priority processing");
  expect_error(route_with("main", R"(priority_multiplier: "0.5")"),
               "models[0].routes[0].priority_multiplier: must be a multiplier from 1 to 10");
  // Within the bound on multiplied prices even at the dearest price (1 M USD per million).
  auto dearest = parse_config(route_with("main", R"(priority_multiplier: "10")",
                                         R"(input_per_mtok: "1", output_per_mtok: "100000")"),
                              "t.yaml");
  EXPECT_TRUE(dearest) << dearest.status().message();
}

TEST(Config, MultipliedPricesStayBelowTheirBound) {
  auto real = parse_config(
      route_with("claude", R"(fast_multiplier: "6", inference_geo_multipliers: { us: "1.1" }, )"
                           R"(long_context: { above_input_tokens: 200000, input_multiplier: "2", )"
                           R"(output_multiplier: "1.5" })"),
      "t.yaml");
  ASSERT_TRUE(real) << real.status().message();
  EXPECT_EQ(only_route(real).prices.long_above, 200'000);
  EXPECT_EQ(only_route(real).prices.long_input, 20'000u);
  EXPECT_EQ(only_route(real).prices.long_output, 15'000u);
  // 100000 USD output × 10 × 1.2001: above the bound by the rounding-up of one step.
  const std::string dear = R"(input_per_mtok: "1", output_per_mtok: "100000")";
  auto top = parse_config(
      route_with("claude", R"(fast_multiplier: "10", inference_geo_multipliers: { us: "1.2" })", dear),
      "t.yaml");
  ASSERT_TRUE(top) << top.status().message();
  expect_error(
      route_with("claude", R"(fast_multiplier: "10", inference_geo_multipliers: { us: "1.2001" })", dear),
      "models[0].routes[0]: with all its multipliers a token price here reaches 1200100.00 USD "
      "per million tokens; at most 1200000.00 is allowed");
  // The 1-hour cache-write default (2× input) counts too.
  expect_error(route_with("claude", R"(fast_multiplier: "7")",
                          R"(input_per_mtok: "100000", output_per_mtok: "1")"),
               "reaches 1400000.00 USD");
}

TEST(Config, RoutingRulesAreValidatedAtStartUp) {
  const std::string base = R"(providers:
  - { name: a, base_url: "http://127.0.0.1:9000/v1" }
  - { name: b, base_url: "http://127.0.0.1:9001/v1" }
models:
  - name: m
    routes:
      - { provider: a, input_per_mtok: "1", output_per_mtok: "1" }
      - { provider: b, input_per_mtok: "1", output_per_mtok: "1" }
routing:
  rules:
)";
  auto c = parse_config(base + R"(    - name: batch
      match: { model: "m*", account: acct_3, key_tag: batch, privacy_tier: cloud }
      exclude: [a]
      weights: { quality: 0, cost: 1, latency: 0 }
    - match: { model: m }
      fallback_order: [b, a]
)",
                        "t.yaml");
  ASSERT_TRUE(c) << c.status().message();
  ASSERT_EQ(c->rules.size(), 2u);
  EXPECT_EQ(c->rules[0].name, "batch");
  EXPECT_EQ(c->rules[0].account, 3);
  EXPECT_EQ(c->rules[0].privacy_tier, catalog::PrivacyTier::kCloud);
  EXPECT_EQ(c->rules[0].exclude, std::vector<std::size_t>{0});
  EXPECT_DOUBLE_EQ(c->rules[0].weights->cost, 1);
  EXPECT_EQ(c->rules[1].name, "rules[1]");
  EXPECT_EQ(c->rules[1].fallback_order, (std::vector<std::size_t>{1, 0}));

  expect_error(base + "    - { pin: [z] }\n", "routing.rules[0].pin[0]: no provider named 'z'");
  expect_error(base + "    - { pin: [a], exclude: [a] }\n", "'a' is both pinned and excluded");
  expect_error(base + "    - { match: { model: m } }\n", "a rule needs at least one action");
  expect_error(base + "    - { name: x, pin: [a] }\n    - { name: x, pin: [b] }\n",
               "'x' names an earlier rule");
  expect_error(base + "    - { match: { account: bob }, pin: [a] }\n",
               "must be an account id like acct_3");
  expect_error(base + "    - { match: { model: \"gpt-*\" }, pin: [a] }\n",
               "routing.rules[0].match.model: 'gpt-*' matches no model of the catalog");
  EXPECT_TRUE(parse_config(base + "    - { match: { model: auto }, pin: [a] }\n", "t.yaml"));
  expect_error(base + "    - { match: { key_tag: \"bad tag!\" }, pin: [a] }\n",
               "'bad tag!' is no tag a key can carry");
  expect_error(base + "    - { match: { account: acct_03 }, pin: [a] }\n",
               "must be an account id like acct_3, got 'acct_03'");
  expect_error(base + "    - { match: { account: 3 }, pin: [a] }\n",
               "must be an account id like acct_3, got '3'");
  expect_error(base + "    - { match: { account: \"3\" }, pin: [a] }\n",
               "must be an account id like acct_3, got '3'");
  expect_error(base + "    - { name: \"  \", pin: [a] }\n",
               "routing.rules[0].name: must not be blank (leave it out to be called rules[0])");
  expect_error(base + "    - { exclude: [a], fallback_order: [a] }\n",
               "'a' is not a candidate under this rule's pin and exclude");
  expect_error(base + "    - { match: { color: red }, pin: [a] }\n", "color");
  // An empty condition would match every request; leaving it out says so.
  expect_error(base + "    - { match: { key_tag: \"\" }, pin: [a] }\n",
               "routing.rules[0].match.key_tag: must not be empty");
  expect_error(base + "    - { match: { model: \"\" }, pin: [a] }\n",
               "routing.rules[0].match.model: must not be empty");
  // A rule's weights replace the others whole: every one is given.
  expect_error(base + "    - { weights: { cost: 1 } }\n",
               "routing.rules[0].weights: must give quality, cost and latency");
  expect_error(base + "    - { weights: { quality: 0.5, cost: 0.5, latency: ~ } }\n",
               "routing.rules[0].weights: must give quality, cost and latency");
  expect_error(base + "    - { pin: [a, a] }\n", "routing.rules[0].pin[1]: 'a' is listed twice");
  expect_error(base + "    - { fallback_order: [b, a, b] }\n", "'b' is listed twice");
  // One route per provider and upstream model: a second would only shadow the first.
  expect_error(R"(providers:
  - { name: a, base_url: "http://127.0.0.1:9000/v1" }
models:
  - name: m
    routes:
      - { provider: a, input_per_mtok: "1", output_per_mtok: "1" }
      - { provider: a, upstream_model: m-2, input_per_mtok: "1", output_per_mtok: "1" }
      - { provider: a, input_per_mtok: "2", output_per_mtok: "2" }
)",
               "models[0].routes[2]: repeats routes[0]: provider 'a' already serves 'm'");
  expect_error(std::string(kMinimal) + "routing: { breaker_window: 65 }\n",
               "routing.breaker_window: must be between 2 and 64");
  expect_error(base + "    - { weights: { quality: 0, cost: 0, latency: 0 } }\n",
               "at least one weight must be above 0");
  // The first rule that matches applies: one an earlier rule always beats is refused (a dead
  // exclude would fail open). Globs are compared conservatively.
  const std::string any_weights = "weights: { quality: 1, cost: 0, latency: 0 } }\n";
  // An `earlier` rule (its name and match) with weights only, then a `later` one.
  auto expect_dead = [&](const std::string& earlier, const std::string& later,
                         const std::string& message) {
    expect_error(base + "    - { " + earlier + ", " + any_weights + "    - { " + later + " }\n",
                 message);
  };
  expect_dead("name: all", "name: late, match: { key_tag: batch }, exclude: [a]",
              "rule 'late' never applies: rule 'all' before it matches every request it matches");
  expect_dead(R"(name: ms, match: { model: "m*" })",
              "name: m, match: { model: m, privacy_tier: cloud }, pin: [b]",
              "rule 'm' never applies: rule 'ms'");
  // A prefix glob covers the globs under its prefix, and "*" every model: a weights-only
  // "*" before an exclude left the exclude dead, unsaid.
  expect_dead(R"(name: star, match: { model: "*" })",
              R"(name: late, match: { model: "m*" }, exclude: [a])",
              "rule 'late' never applies: rule 'star'");
  expect_dead(R"(name: star, match: { model: "*" })",
              "name: late, match: { key_tag: x }, exclude: [a]",
              "rule 'late' never applies: rule 'star'");
  expect_dead(R"(name: ms, match: { model: "m*" })",
              R"(name: late, match: { model: "m**" }, exclude: [a])",
              "rule 'late' never applies: rule 'ms'");
  for (const std::string& later :
       {std::string("    - { match: { model: \"?\" }, pin: [b] }\n"),  // not under "m"
        std::string("    - { match: { model: \"*m\" }, pin: [b] }\n"),
        std::string("    - { match: { key_tag: y }, pin: [b] }\n")}) {
    const auto fine = parse_config(
        base + "    - { match: { model: \"m*\" }, " + any_weights + later, "t.yaml");
    EXPECT_TRUE(fine) << fine.status().message();
  }
  // A rule that leaves no route for any model it matches is valid (it fails closed) but
  // said: every request it matches is refused.
  const auto closed = parse_config(R"(providers:
  - { name: a, base_url: "http://127.0.0.1:9000/v1", privacy_tier: community }
  - { name: b, base_url: "http://127.0.0.1:9001/v1" }
models:
  - name: m
    routes:
      - { provider: a, input_per_mtok: "1", output_per_mtok: "1" }
routing:
  rules:
    - { name: secret, match: { privacy_tier: confidential }, pin: [a] }
    - { name: open, match: { privacy_tier: community }, pin: [a] }
    - { name: only-b, pin: [b] }
)",
                                   "t.yaml");
  ASSERT_TRUE(closed) << closed.status().message();
  ASSERT_EQ(closed->warnings.size(), 2u);
  EXPECT_NE(closed->warnings[0].find("rule 'secret' leaves no route for any model it matches at "
                                     "privacy tier confidential"),
            std::string::npos)
      << closed->warnings[0];
  EXPECT_EQ(closed->warnings[1],
            "routing.rules[2]: rule 'only-b' leaves no route for any model it matches: every "
            "request it matches is refused (403)");
}

// A CA file where no TLS is spoken is read by nobody: a likely mistake, said.
TEST(Config, ACaFileForAnHttpUrlIsWarnedOf) {
  const auto c = parse_config(R"(providers:
  - { name: a, base_url: "http://127.0.0.1:9000/v1", ca_file: /nonexistent.pem }
  - { name: b, base_url: "https://b.example/v1", ca_file: /nonexistent.pem }
models:
  - name: m
    routes: [{ provider: a, input_per_mtok: "1", output_per_mtok: "1" }]
billing: { low_balance_webhook: "http://127.0.0.1:9/hook", low_balance_webhook_ca_file: /x.pem }
)",
                              "t.yaml");
  ASSERT_TRUE(c) << c.status().message();
  EXPECT_EQ(c->warnings,
            (std::vector<std::string>{
                "providers[0].ca_file is not used: provider 'a' is reached over http://, "
                "without TLS",
                "billing.low_balance_webhook_ca_file is not used: the webhook is reached over "
                "http://, without TLS"}));
}

// A variable set but empty is not called unset; a threshold past what any balance can be
// names the bound it passes.
TEST(Config, EmptyVariablesAndHugeThresholdsAreNamedAsTheyAre) {
  ::setenv("TP_EMPTY_VAR", "", 1);
  expect_error(R"(providers:
  - { name: a, base_url: "http://x/v1", api_key_env: TP_EMPTY_VAR }
models: [])",
               "environment variable TP_EMPTY_VAR is empty");
  ::unsetenv("TP_EMPTY_VAR");
  expect_error(std::string(kMinimal) + "billing: { low_balance_usd: [\"9999999999\"] }\n",
               "billing.low_balance_usd[0]: must be a non-negative USD amount like \"5\" (at most "
               "1000000000), got '9999999999'");
}

TEST(Config, CorsOriginsAreOriginsAsBrowsersSendThem) {
  const auto c = parse_config(std::string(kMinimal) +
                                  "cors: { allow_origins: [\"https://a.example:8443\", \"*\"] }\n",
                              "t.yaml");
  ASSERT_TRUE(c) << c.status().message();
  EXPECT_EQ(c->cors_origins, (std::vector<std::string>{"https://a.example:8443", "*"}));
  EXPECT_TRUE(parse_config(kMinimal, "t.yaml")->cors_origins.empty());
  for (const char* bad : {"https://a.example/", "a.example", "ftp://a.example", "https://"}) {
    expect_error(std::string(kMinimal) + "cors: { allow_origins: [\"" + bad + "\"] }\n",
                 "is no origin");
  }
  expect_error(std::string(kMinimal) + "cors: { origins: [\"*\"] }\n", "unknown key");
}

TEST(Config, AFirstByteTimeoutPastTheFallbackDeadlineIsSaid) {
  for (const auto& [yaml, warned] : std::vector<std::pair<std::string, bool>>{
           {"upstream: { first_byte_timeout_ms: 60000 }\n", true},
           {"routing: { fallback_deadline_ms: 20000 }\n", true},
           {"upstream: { first_byte_timeout_ms: 29999 }\n", false}}) {
    const auto c = parse_config(std::string(kMinimal) + yaml, "t.yaml");
    ASSERT_TRUE(c) << c.status().message();
    ASSERT_EQ(c->warnings.size(), warned ? 1u : 0u) << yaml;
    if (warned) {
      EXPECT_NE(c->warnings[0].find("a stream route that sends no response headers is never "
                                    "followed by another"),
                std::string::npos)
          << c->warnings[0];
    }
  }
}

TEST(Config, BillingKeysHaveDefaultsAndBounds) {
  auto c = parse_config(kMinimal, "t.yaml");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->billing.trial_credit, Money::usd(20));
  EXPECT_EQ(c->billing.hold_timeout_ms, 900'000u);
  EXPECT_EQ(c->billing.disconnect_drain_ms, 30'000u);
  EXPECT_EQ(c->billing.reconcile_at_minute, 180);
  EXPECT_EQ(c->billing.low_balance.size(), 3u);
  EXPECT_TRUE(c->billing.low_balance_webhook.empty());

  auto set = parse_config(std::string(kMinimal) +
                              "billing: { trial_usd: \"0\", reconcile_at: \"23:30\", "
                              "low_balance_usd: [\"2.5\"], low_balance_webhook: "
                              "\"https://hooks.example.com/x\" }\n",
                          "t.yaml");
  ASSERT_TRUE(set) << set.status().message();
  EXPECT_EQ(set->billing.reconcile_at_minute, 23 * 60 + 30);
  EXPECT_EQ(set->billing.low_balance, std::vector<Money>{Money::parse("2.5").value()});

  for (const char* bad : {"billing: { reconcile_at: \"24:00\" }",
                          "billing: { hold_timeout_ms: 10 }",
                          // Shorter than a request's wait for its response headers: a hold
                          // could lapse under a request still running.
                          "billing: { hold_timeout_ms: 60000 }",
                          // Not twice the longest pause of a response: it could lapse
                          // between two of its bytes.
                          "billing: { hold_timeout_ms: 150000 }\nupstream: { idle_timeout_ms: 75000 }",
                          "billing: { low_balance_usd: [\"-1\"] }",
                          "billing: { low_balance_webhook: \"ftp://x\" }",
                          "billing: { surprise: 1 }"}) {
    auto r = parse_config(std::string(kMinimal) + bad + "\n", "t.yaml");
    EXPECT_FALSE(r) << bad;
  }
  // A price that could overflow a request's cost is refused.
  std::string pricey = kMinimal;
  pricey.replace(pricey.find("\"0.60\""), 6, "\"100000.01\"");
  auto r = parse_config(pricey, "t.yaml");
  ASSERT_FALSE(r);
  EXPECT_NE(r.status().message().find("at most 100000"), std::string::npos);
}

}  // namespace
}  // namespace tp::ops
