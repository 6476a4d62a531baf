// Usage priced apart from text tokens, end to end against turnpike-sim: Anthropic cache
// writes and web searches, OpenAI audio tokens, and the options that change a provider's
// price (Anthropic's speed and inference_geo), each billed at its route's price or refused.
#include <gtest/gtest.h>
#include <simdjson.h>

#include "core/money.h"
#include "integration/harness.h"

namespace tp::test {
namespace {

PricePerMtok usd(const char* text) { return PricePerMtok::parse(text).value(); }

// Models appended to the harness's catalog (its `models:` list comes last).
constexpr const char* kPricedModels = R"(  - name: opus-test
    routes:
      - provider: sim-anthropic
        upstream_model: opus-upstream
        input_per_mtok: "5"
        output_per_mtok: "25"
        fast_multiplier: "6"
        inference_geo_multipliers: { us: "1.1" }
  - name: audio-test
    routes:
      - provider: sim-openai
        upstream_model: audio-upstream
        input_per_mtok: "2.5"
        output_per_mtok: "10"
        audio_input_per_mtok: "40"
        audio_output_per_mtok: "80"
  - name: search-test
    routes:
      - provider: sim-openai
        upstream_model: search-upstream
        input_per_mtok: "2.5"
        output_per_mtok: "10"
        web_search_per_1k: "25"
  - name: priority-test
    routes:
      - provider: sim-openai
        upstream_model: priority-upstream
        input_per_mtok: "1.25"
        output_per_mtok: "10"
        priority_multiplier: "2"
  - name: fast-test
    routes:
      - provider: sim-anthropic
        upstream_model: fast-upstream
        input_per_mtok: "5"
        output_per_mtok: "25"
        fast_multiplier: "6"
  - name: split-test
    routes:
      - { provider: sim-anthropic, upstream_model: fast-only, input_per_mtok: "5", output_per_mtok: "25", fast_multiplier: "6" }
      - { provider: sim-anthropic, upstream_model: us-only, input_per_mtok: "5", output_per_mtok: "25", inference_geo_multipliers: { us: "1.1" } }
  - name: long-test
    routes:
      - provider: sim-anthropic
        upstream_model: long-upstream
        input_per_mtok: "3"
        output_per_mtok: "15"
        cached_input_per_mtok: "0.3"
        long_context: { above_input_tokens: 100, input_multiplier: "2", output_multiplier: "1.5" }
)";

// The stack again on the same data directory (its key still works), with kPricedModels.
bool with_priced_models(Stack& stack) {
  if (!stack.stop_gateway()) return false;
  stack.config_path =
      stack.dir.write("turnpike.yaml", Stack::config_yaml(stack.sim_port, "") + kPricedModels);
  return stack.start_gateway();
}

struct Row {
  std::int64_t input = 0, cached = 0, output = 0;
  std::int64_t audio_input = 0, audio_output = 0, web_searches = 0;
  std::string price_multiplier;
  Money cost, input_cost;
};

// The usage row of `request_id` (the test's account has few).
std::optional<Row> row_of(const Stack& stack, const std::string& request_id) {
  const auto res = http_request(stack.port, "GET", "/api/usage?limit=100", {}, stack.auth());
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  if (res.status != 200 || parser.parse(res.body).get(doc)) return std::nullopt;
  for (simdjson::dom::element r : doc["data"].get_array()) {
    std::string_view id;
    if (r["request_id"].get_string().get(id) || id != request_id) continue;
    Row row;
    row.input = r["input_tokens"].get_int64().value();
    row.cached = r["cached_tokens"].get_int64().value();
    row.output = r["output_tokens"].get_int64().value();
    row.audio_input = r["audio_input_tokens"].get_int64().value();
    row.audio_output = r["audio_output_tokens"].get_int64().value();
    row.web_searches = r["web_search_requests"].get_int64().value();
    row.price_multiplier = std::string(r["price_multiplier"].get_string().value());
    row.cost = Money::parse(r["cost_usd"].get_string().value()).value();
    row.input_cost = Money::parse(r["input_cost_usd"].get_string().value()).value();
    return row;
  }
  return std::nullopt;
}

std::int64_t sim_requests(const Stack& stack) {
  const std::string body = http_request(stack.sim_port, "GET", "/sim/requests").body;
  return std::stoll(body.substr(body.find("\"count\":") + 8));
}

TEST(Pricing, AnthropicCacheWritesAndWebSearchesAreChargedAtTheirPrices) {
  Stack stack;
  ASSERT_GT(stack.port, 0);
  // claude-test: input 3, output 15 USD/Mtok; writes 1.25× and 2× the input; searches 10
  // USD per 1000.
  for (const bool stream : {false, true}) {
    const auto res = http_request(
        stack.port, "POST", "/v1/messages",
        std::string(R"({"model":"claude-test","max_tokens":50,"stream":)") +
            (stream ? "true" : "false") +
            R"(,"messages":[{"role":"user","content":"look it up"}],"sim":{"input_tokens":40,)"
            R"("output_tokens":7,"cache_write_tokens":100,"cache_write_1h_tokens":60,)"
            R"("web_search_requests":3},"tools":[{"type":"web_search_20250305",)"
            R"("name":"web_search","max_uses":5}]})",
        {{"x-api-key", stack.key}});
    ASSERT_EQ(res.status, 200) << res.body;
    const auto row = row_of(stack, res.header("x-request-id"));
    ASSERT_TRUE(row) << stream;
    EXPECT_EQ(row->input, 200) << stream;  // plain input and both writes
    EXPECT_EQ(row->output, 7);
    EXPECT_EQ(row->web_searches, 3);
    const Money tokens = cost_of({{40, usd("3")}, {100, usd("3.75")}, {60, usd("6")},
                                  {7, usd("15")}, {3000, usd("10")}});
    EXPECT_EQ(row->cost, tokens) << stream;
    // The searches are in the output part: the input part prices the input alone.
    EXPECT_EQ(row->input_cost, cost_of({{40, usd("3")}, {100, usd("3.75")}, {60, usd("6")}}));
    if (!stream) {
      EXPECT_EQ(res.header("x-turnpike-cost-usd"), row->cost.to_string());
    }
  }
}

// OpenAI's search models search once for each request that sets web_search_options, and
// report no count: the request is charged one search at its route's fee.
TEST(Pricing, AnOpenAISearchRequestIsChargedOneSearch) {
  Stack stack;
  ASSERT_GT(stack.port, 0);
  ASSERT_TRUE(with_priced_models(stack));
  for (const bool search : {true, false}) {
    for (const bool stream : {false, true}) {
      const auto res = http_request(
          stack.port, "POST", "/v1/chat/completions",
          std::string(R"({"model":"search-test","stream":)") + (stream ? "true" : "false") +
              (search ? R"(,"web_search_options":{})" : "") +
              R"(,"messages":[],"sim":{"input_tokens":100,"output_tokens":10}})",
          stack.auth());
      ASSERT_EQ(res.status, 200) << res.body;
      const auto row = row_of(stack, res.header("x-request-id"));
      ASSERT_TRUE(row);
      EXPECT_EQ(row->web_searches, search ? 1 : 0) << stream;
      EXPECT_EQ(row->cost, cost_of({{100, usd("2.5")}, {10, usd("10")},
                                    {search ? 1000 : 0, usd("25")}}))
          << search << stream;
    }
  }
}

// OpenAI's priority processing: asked for, on a route that prices it, or a project's
// default that the response reports. A route without priority_multiplier refuses it, and a
// default it cannot price is charged as standard (and logged).
TEST(Pricing, PriorityProcessingIsChargedWhereItServedAndPriced) {
  Stack stack;
  ASSERT_GT(stack.port, 0);
  ASSERT_TRUE(with_priced_models(stack));
  struct Case {
    const char* model;
    const char* tier;
    const char* knobs;
    const char* multiplier;
  };
  for (const Case c : {Case{"priority-test", R"("service_tier":"priority",)", "", "2.00"},
                       Case{"priority-test", "", R"(,"default_priority":1)", "2.00"},
                       Case{"priority-test", "", "", "1.00"},
                       Case{"gpt-test", "", R"(,"default_priority":1)", "1.00"}}) {
    for (const bool stream : {false, true}) {
      const auto res = http_request(
          stack.port, "POST", "/v1/chat/completions",
          std::string(R"({"model":")") + c.model + R"(","stream":)" +
              (stream ? "true," : "false,") + c.tier +
              R"("messages":[],"sim":{"input_tokens":100,"output_tokens":10)" + c.knobs + "}}",
          stack.auth());
      ASSERT_EQ(res.status, 200) << res.body;
      const auto row = row_of(stack, res.header("x-request-id"));
      ASSERT_TRUE(row);
      EXPECT_EQ(row->price_multiplier, c.multiplier) << c.model << c.tier << c.knobs << stream;
      const bool gpt = std::string_view(c.model) == "gpt-test";
      const std::int64_t m = std::string_view(c.multiplier) == "2.00" ? 2 : 1;
      const Money expected =
          gpt ? cost_of({{100, usd("0.15")}, {10, usd("0.60")}})
              : cost_of({{100, PricePerMtok::from_nanos(usd("1.25").nanos() * m)},
                         {10, PricePerMtok::from_nanos(usd("10").nanos() * m)}});
      EXPECT_EQ(row->cost, expected) << c.model << c.tier << c.knobs << stream;
    }
  }
  EXPECT_NE(stack.gateway->log().find("tier its route does not price"), std::string::npos);
  // The tier asked for reaches the provider.
  EXPECT_NE(http_request(stack.sim_port, "GET", "/sim/requests").body.find(
                R"("service_tier":"priority")"),
            std::string::npos);
  // Asked for where no route prices it, or beside a flex start_within: refused.
  const auto unpriced = http_request(
      stack.port, "POST", "/v1/chat/completions",
      R"({"model":"gpt-test","service_tier":"priority","messages":[]})", stack.auth());
  EXPECT_EQ(unpriced.status, 400);
  EXPECT_NE(unpriced.body.find("priority_multiplier"), std::string::npos) << unpriced.body;
  const auto both = http_request(
      stack.port, "POST", "/v1/chat/completions",
      R"({"model":"priority-test","service_tier":"priority","start_within":"00h-00m-05s","messages":[]})",
      stack.auth());
  EXPECT_EQ(both.status, 400);
  EXPECT_NE(both.body.find("ask for different tiers"), std::string::npos) << both.body;
}

TEST(Pricing, TheHoldCoversTheSearchesADeclaredWebSearchToolMayRun) {
  Stack stack("billing: { trial_usd: \"0.05\" }");
  ASSERT_GT(stack.port, 0);
  // Five searches alone are 0.05 USD: with the tokens, more than the trial holds.
  const std::string tools =
      R"("tools":[{"type":"web_search_20250305","name":"web_search","max_uses":5}])";
  auto res = http_request(stack.port, "POST", "/v1/messages",
                          R"({"model":"claude-test","max_tokens":10,"messages":[],)" + tools + "}",
                          {{"x-api-key", stack.key}});
  EXPECT_EQ(res.status, 402) << res.body;
  // Two fit.
  res = http_request(stack.port, "POST", "/v1/messages",
                     R"({"model":"claude-test","max_tokens":10,"messages":[],"tools":[)"
                     R"({"type":"web_search_20250305","name":"web_search","max_uses":2}],)"
                     R"("sim":{"web_search_requests":2}})",
                     {{"x-api-key", stack.key}});
  ASSERT_EQ(res.status, 200) << res.body;
  const auto row = row_of(stack, res.header("x-request-id"));
  ASSERT_TRUE(row);
  EXPECT_EQ(row->web_searches, 2);
  EXPECT_GE(row->cost, Money::from_nanos(20'000'000));
}

TEST(Pricing, FastModeAndRegionalInferenceAreBilledAtTheirMultipliers) {
  Stack stack;
  ASSERT_GT(stack.port, 0);
  ASSERT_TRUE(with_priced_models(stack));
  struct Case {
    const char* options;
    const char* multiplier;
  };
  for (const Case c : {Case{R"("speed":"fast",)", "6.00"}, Case{R"("inference_geo":"us",)", "1.10"},
                       Case{R"("speed":"fast","inference_geo":"us",)", "6.60"},
                       Case{R"("speed":"standard","inference_geo":"global",)", "1.00"}}) {
    const auto res = http_request(
        stack.port, "POST", "/v1/messages",
        std::string(R"({"model":"opus-test","max_tokens":50,)") + c.options +
            R"("messages":[],"sim":{"input_tokens":1000,"output_tokens":20,"cached_tokens":300}})",
        {{"x-api-key", stack.key}});
    ASSERT_EQ(res.status, 200) << c.options << res.body;
    const auto row = row_of(stack, res.header("x-request-id"));
    ASSERT_TRUE(row);
    // Every token price times the multiplier (opus-test: 5 in, 25 out, cached at input).
    const std::int64_t ten_thousandths = Money::parse(c.multiplier).value().nanos() / 100'000;
    auto times = [&](const char* price) {
      return PricePerMtok::from_nanos(usd(price).nanos() * ten_thousandths / 10'000);
    };
    EXPECT_EQ(row->cost, cost_of({{1000, times("5")}, {300, times("5")}, {20, times("25")}}))
        << c.options;
    EXPECT_EQ(row->price_multiplier, c.multiplier);  // the row explains its cost
  }
  // The options reach the provider as the client sent them.
  const std::string seen = http_request(stack.sim_port, "GET", "/sim/requests").body;
  EXPECT_NE(seen.find(R"("speed":"fast")"), std::string::npos);
  EXPECT_NE(seen.find(R"("inference_geo":"us")"), std::string::npos);
}

// Anthropic reports the speed and region that served: fast mode may fall back to standard,
// and a workspace's default region applies when the request names none. What served is
// charged, when its route prices it.
TEST(Pricing, TheSpeedAndRegionThatServedAreCharged) {
  Stack stack;
  ASSERT_GT(stack.port, 0);
  ASSERT_TRUE(with_priced_models(stack));
  struct Case {
    const char* options;
    const char* knobs;
    std::int64_t ten_thousandths;
  };
  for (const Case c : {Case{R"("speed":"fast",)", R"("fast_unavailable":1)", 10'000},
                       Case{"", R"("default_geo_us":1)", 11'000},
                       Case{R"("speed":"fast",)", R"("default_geo_us":1)", 66'000}}) {
    for (const bool stream : {false, true}) {
      const auto res = http_request(
          stack.port, "POST", "/v1/messages",
          std::string(R"({"model":"opus-test","max_tokens":50,"stream":)") +
              (stream ? "true," : "false,") + c.options +
              R"("messages":[],"sim":{"input_tokens":1000,"output_tokens":20,)" + c.knobs + "}}",
          {{"x-api-key", stack.key}});
      ASSERT_EQ(res.status, 200) << res.body;
      const auto row = row_of(stack, res.header("x-request-id"));
      ASSERT_TRUE(row);
      auto times = [&](const char* price) {
        return PricePerMtok::from_nanos(usd(price).nanos() * c.ten_thousandths / 10'000);
      };
      EXPECT_EQ(row->cost, cost_of({{1000, times("5")}, {20, times("25")}}))
          << c.options << c.knobs << stream;
    }
  }
  // Each part on its own: fast mode fell back to standard, and the workspace's default
  // region, which this route does not price, is charged as asked (global).
  const auto fell_back = http_request(
      stack.port, "POST", "/v1/messages",
      R"({"model":"fast-test","max_tokens":50,"speed":"fast","messages":[],"sim":{)"
      R"("input_tokens":1000,"output_tokens":20,"fast_unavailable":1,"default_geo_us":1}})",
      {{"x-api-key", stack.key}});
  ASSERT_EQ(fell_back.status, 200) << fell_back.body;
  const auto standard = row_of(stack, fell_back.header("x-request-id"));
  ASSERT_TRUE(standard);
  EXPECT_EQ(standard->cost, cost_of({{1000, usd("5")}, {20, usd("25")}}));
  // A region the route does not price is charged at what was asked, and logged.
  const auto res = http_request(
      stack.port, "POST", "/v1/messages",
      R"({"model":"claude-test","max_tokens":50,"messages":[],"sim":{"input_tokens":1000,)"
      R"("output_tokens":20,"default_geo_us":1}})",
      {{"x-api-key", stack.key}});
  ASSERT_EQ(res.status, 200) << res.body;
  const auto row = row_of(stack, res.header("x-request-id"));
  ASSERT_TRUE(row);
  EXPECT_EQ(row->cost, cost_of({{1000, usd("3")}, {20, usd("15")}}));
  EXPECT_NE(stack.gateway->log().find("does not price"), std::string::npos);
}

TEST(Pricing, AnOptionNoRoutePricesIsRefusedBeforeTheProviderSeesIt) {
  Stack stack;
  ASSERT_GT(stack.port, 0);
  ASSERT_TRUE(with_priced_models(stack));
  const std::int64_t before = sim_requests(stack);
  struct Case {
    const char* model;
    const char* options;
    const char* named;
  };
  for (const Case c :
       {Case{"claude-test", R"("speed":"fast",)", R"(speed \"fast\" (a route's fast_multiplier))"},
        Case{"opus-test", R"("speed":"turbo",)", R"(speed \"turbo\")"},
        Case{"opus-test", R"("inference_geo":"eu",)", "inference_geo_multipliers"},
        // Only what no route prices is named: opus-test prices fast.
        Case{"opus-test", R"("speed":"fast","inference_geo":"eu",)",
             R"x(prices inference_geo \"eu\" (a route's inference_geo_multipliers)"})x"},
        // Each has a route, none has both.
        Case{"split-test", R"("speed":"fast","inference_geo":"us",)",
             R"(prices all of speed \"fast\" (a route's fast_multiplier), inference_geo \"us\")"}}) {
    const auto res = http_request(
        stack.port, "POST", "/v1/messages",
        std::string(R"({"model":")") + c.model + R"(","max_tokens":5,)" + c.options +
            R"("messages":[]})",
        {{"x-api-key", stack.key}});
    EXPECT_EQ(res.status, 400) << c.options;
    EXPECT_NE(res.body.find("has no route that prices"), std::string::npos) << res.body;
    EXPECT_NE(res.body.find(c.named), std::string::npos) << res.body;
  }
  const auto audio = http_request(
      stack.port, "POST", "/v1/chat/completions",
      R"({"model":"gpt-test","modalities":["text","audio"],"messages":[]})", stack.auth());
  EXPECT_EQ(audio.status, 400);
  EXPECT_NE(audio.body.find(R"("code":"option_not_priced")"), std::string::npos) << audio.body;
  EXPECT_NE(audio.body.find("audio (a route's audio_input_per_mtok and audio_output_per_mtok)"),
            std::string::npos)
      << audio.body;
  EXPECT_EQ(sim_requests(stack), before);
  // Explain says why each route is out.
  const auto explained = http_request(
      stack.port, "POST", "/v1/route/explain",
      R"({"model":"gpt-test","messages":[{"role":"user","content":[{"type":"input_audio","input_audio":{"data":"","format":"wav"}}]}]})",
      stack.auth());
  EXPECT_NE(explained.body.find("excluded: no price for audio"), std::string::npos)
      << explained.body;
}

TEST(Pricing, AudioTokensAreChargedAtTheRoutesAudioPrices) {
  Stack stack;
  ASSERT_GT(stack.port, 0);
  ASSERT_TRUE(with_priced_models(stack));
  for (const bool stream : {false, true}) {
    const auto res = http_request(
        stack.port, "POST", "/v1/chat/completions",
        std::string(R"({"model":"audio-test","modalities":["text","audio"],"stream":)") +
            (stream ? "true" : "false") +
            R"(,"messages":[],"sim":{"input_tokens":30,"output_tokens":6,)"
            R"("audio_input_tokens":11,"audio_output_tokens":13}})",
        stack.auth());
    ASSERT_EQ(res.status, 200) << res.body;
    const auto row = row_of(stack, res.header("x-request-id"));
    ASSERT_TRUE(row) << stream;
    // The sim's prompt_tokens is 30 + 11 audio, its completion_tokens 6 + 13 audio.
    EXPECT_EQ(row->input, 41) << stream;
    EXPECT_EQ(row->output, 19) << stream;
    EXPECT_EQ(row->audio_input, 11);
    EXPECT_EQ(row->audio_output, 13);
    EXPECT_EQ(row->cost, cost_of({{30, usd("2.5")}, {11, usd("40")}, {6, usd("10")},
                                  {13, usd("80")}}))
        << stream;
  }
}

TEST(Pricing, AnInputAboveTheLongContextThresholdIsChargedTheLongContextPrices) {
  Stack stack;
  ASSERT_GT(stack.port, 0);
  ASSERT_TRUE(with_priced_models(stack));
  struct Case {
    std::int64_t input, cached, write;
    bool long_context;
  };
  // The whole input counts: plain, read from the cache and written to it.
  for (const Case c : {Case{100, 0, 0, false}, Case{101, 0, 0, true}, Case{60, 30, 10, false},
                       Case{60, 30, 11, true}}) {
    for (const bool stream : {false, true}) {
      const auto res = http_request(
          stack.port, "POST", "/v1/messages",
          std::string(R"({"model":"long-test","max_tokens":50,"stream":)") +
              (stream ? "true" : "false") + R"(,"messages":[],"sim":{"input_tokens":)" +
              std::to_string(c.input) + R"(,"cached_tokens":)" + std::to_string(c.cached) +
              R"(,"cache_write_tokens":)" + std::to_string(c.write) + R"(,"output_tokens":9}})",
          {{"x-api-key", stack.key}});
      ASSERT_EQ(res.status, 200) << res.body;
      const auto row = row_of(stack, res.header("x-request-id"));
      ASSERT_TRUE(row);
      // Long: input-side prices ×2 (writes at 1.25× the input), output ×1.5.
      const Money expected =
          c.long_context
              ? cost_of({{c.input, usd("6")}, {c.cached, usd("0.6")}, {c.write, usd("7.5")},
                         {9, usd("22.5")}})
              : cost_of({{c.input, usd("3")}, {c.cached, usd("0.3")}, {c.write, usd("3.75")},
                         {9, usd("15")}});
      EXPECT_EQ(row->cost, expected) << c.input << " " << c.cached << " " << c.write << " "
                                     << stream;
    }
  }
}

}  // namespace
}  // namespace tp::test
