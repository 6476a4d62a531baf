// End-to-end through real processes: client → turnpike → turnpike-sim.

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/types.h>
#include <simdjson.h>

#include <optional>
#include <thread>
#include <tuple>

#include "core/clock.h"
#include "core/limits.h"
#include "core/rfc3339.h"
#include "integration/harness.h"

namespace tp::test {
namespace {

using namespace std::chrono_literals;


simdjson::dom::element parse(simdjson::dom::parser& parser, const std::string& text) {
  return parser.parse(text).value();
}

// The sim's record of the last request it received.
simdjson::dom::element last_upstream_request(simdjson::dom::parser& parser, int sim_port) {
  static std::string text;
  text = http_request(sim_port, "GET", "/sim/requests").body;
  simdjson::dom::element doc = parser.parse(text).value();
  simdjson::dom::array list = doc["requests"].get_array().value();
  simdjson::dom::element last;
  for (auto r : list) last = r;
  return last;
}

class GatewayTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { stack_ = new Stack(); }
  static void TearDownTestSuite() {
    delete stack_;
    stack_ = nullptr;
  }
  void SetUp() override {
    ASSERT_GT(stack_->sim_port, 0) << stack_->sim->log();
    ASSERT_GT(stack_->port, 0) << stack_->gateway->log();
    ASSERT_FALSE(stack_->key.empty()) << stack_->gateway->log();
  }
  HttpResponse post(const std::string& path, const std::string& body,
                    std::optional<std::map<std::string, std::string>> headers = std::nullopt) {
    return http_request(stack_->port, "POST", path, body, headers ? *headers : stack_->auth());
  }
  static Stack* stack_;
};
Stack* GatewayTest::stack_ = nullptr;

TEST_F(GatewayTest, ChatCompletionMapsModelAndSwapsKey) {
  const auto res = post("/v1/chat/completions",
                        R"({"model":"gpt-test","messages":[{"role":"user","content":"hi"}],)"
                        R"("custom_field":{"kept":[1,2,3]},"sim":{"output_tokens":5}})");
  ASSERT_EQ(res.status, 200) << res.body;
  EXPECT_EQ(res.header("x-turnpike-provider"), "sim-openai");
  EXPECT_TRUE(res.header("x-request-id").starts_with("req_"));
  EXPECT_EQ(res.header("content-type"), "application/json");
  simdjson::dom::parser p;
  auto doc = parse(p, res.body);
  EXPECT_EQ(std::string_view(doc["object"].get_string().value()), "chat.completion");
  EXPECT_EQ(doc["usage"]["completion_tokens"].get_int64().value(), 5);

  simdjson::dom::parser p2;
  auto seen = last_upstream_request(p2, stack_->sim_port);
  EXPECT_EQ(std::string_view(seen["path"].get_string().value()), "/v1/chat/completions");
  // The client's key never goes upstream; the provider's does.
  EXPECT_EQ(std::string_view(seen["authorization"].get_string().value()),
            "Bearer sk-provider-secret");
  EXPECT_EQ(std::string_view(seen["body"]["model"].get_string().value()), "gpt-upstream");
  // Unknown fields pass through untouched.
  EXPECT_EQ(simdjson::minify(seen["body"]["custom_field"]), R"({"kept":[1,2,3]})");
}

TEST_F(GatewayTest, BodyForwardedByteForByteWhenNoRewriteIsNeeded) {
  // Turnpike's own options are removed; everything else keeps its order and values.
  const auto res = post("/v1/chat/completions",
                        R"({"model":"gpt-test","privacy_tier":"cloud","messages":[],"z":1,"a":2})",
                        {{{"authorization", "Bearer " + stack_->key}, {"x-turnpike-start-within", "auto"}}});
  ASSERT_EQ(res.status, 200) << res.body;
  simdjson::dom::parser p;
  auto seen = last_upstream_request(p, stack_->sim_port);
  EXPECT_EQ(simdjson::minify(seen["body"]), R"({"model":"gpt-upstream","messages":[],"z":1,"a":2})");
}

TEST_F(GatewayTest, StreamRelaysEveryChunkAndUsage) {
  const auto res = post("/v1/chat/completions",
                        R"({"model":"gpt-test","stream":true,"stream_options":{"include_usage":true},)"
                        R"("messages":[{"role":"user","content":"hi"}],"sim":{"output_tokens":7}})");
  ASSERT_EQ(res.status, 200) << res.body;
  EXPECT_TRUE(res.header("content-type").starts_with("text/event-stream"));
  EXPECT_EQ(res.header("transfer-encoding"), "chunked");
  std::size_t content_chunks = 0;
  std::size_t pos = 0;
  while ((pos = res.body.find("\"delta\":{\"content\":", pos)) != std::string::npos) {
    ++content_chunks;
    ++pos;
  }
  EXPECT_EQ(content_chunks, 7u);
  EXPECT_NE(res.body.find(R"("completion_tokens":7)"), std::string::npos);
  EXPECT_TRUE(res.body.ends_with("data: [DONE]\n\n"));
}

TEST_F(GatewayTest, StreamArrivesIncrementally) {
  // 5 tokens at 10 tokens/s: the first event must reach the client long before the last.
  RawConnection c(stack_->port);
  const std::string body =
      R"({"model":"gpt-test","stream":true,"messages":[],"sim":{"output_tokens":5,"tokens_per_second":10}})";
 ASSERT_TRUE(c.send("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                     stack_->key + "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body));
  const auto first = c.read_until("\"role\":\"assistant\"", 2s);
  ASSERT_NE(first.find("\"role\":\"assistant\""), std::string::npos);
  EXPECT_EQ(first.find("[DONE]"), std::string::npos) << "stream was buffered whole";
  const auto rest = c.read_until("[DONE]", 5s);
  EXPECT_NE(rest.find("[DONE]"), std::string::npos);
}

TEST_F(GatewayTest, AnthropicMessagesStreamAndNonStream) {
  const std::map<std::string, std::string> headers = {{"x-api-key", stack_->key},
                                                      {"anthropic-version", "2023-06-01"}};
  auto res = post("/v1/messages",
                  R"({"model":"claude-test","max_tokens":4,"messages":[{"role":"user","content":"hi"}]})",
                  headers);
  ASSERT_EQ(res.status, 200) << res.body;
  EXPECT_NE(res.body.find(R"("type":"message")"), std::string::npos);
  EXPECT_NE(res.body.find(R"("output_tokens":4)"), std::string::npos);
  simdjson::dom::parser p;
  auto seen = last_upstream_request(p, stack_->sim_port);
  EXPECT_EQ(std::string_view(seen["x_api_key"].get_string().value()), "sk-provider-secret");
  EXPECT_EQ(std::string_view(seen["anthropic_version"].get_string().value()), "2023-06-01");
  EXPECT_EQ(std::string_view(seen["body"]["model"].get_string().value()), "claude-upstream");

  res = post("/v1/messages",
             R"({"model":"claude-test","max_tokens":3,"stream":true,"messages":[{"role":"user","content":"hi"}]})",
             headers);
  ASSERT_EQ(res.status, 200) << res.body;
  for (const char* event : {"message_start", "content_block_start", "content_block_delta",
                            "content_block_stop", "message_delta", "message_stop"}) {
    EXPECT_NE(res.body.find(std::string("event: ") + event), std::string::npos) << event;
  }
}

// The Anthropic SDK sends a bearer token beside x-api-key when its environment also sets an
// auth token (for another service): the key shaped as a Turnpike key is the one that counts.
TEST_F(GatewayTest, TheTurnpikeShapedKeyCountsWhenBothHeadersCome) {
  const std::string body =
      R"({"model":"claude-test","max_tokens":4,"messages":[{"role":"user","content":"hi"}]})";
  for (const auto& [bearer, api_key, status] :
       std::vector<std::tuple<std::string, std::string, int>>{
           {"sk-ant-oat01-elsewhere", stack_->key, 200},
           {stack_->key, "sk-ant-api03-elsewhere", 200},
           {"tp_sk_revokedorwrong", stack_->key, 401},  // both Turnpike keys: the bearer's
       }) {
    const std::map<std::string, std::string> headers = {{"authorization", "Bearer " + bearer},
                                                        {"x-api-key", api_key},
                                                        {"anthropic-version", "2023-06-01"}};
    const auto res = post("/v1/messages", body, headers);
    EXPECT_EQ(res.status, status) << bearer << " / " << api_key << ": " << res.body;
    const auto models = http_request(stack_->port, "GET", "/v1/models", {}, headers);
    EXPECT_EQ(models.status, status) << models.body;
  }
  // The OpenAI surface reads only the bearer token.
  const std::map<std::string, std::string> openai = {{"authorization", "Bearer sk-elsewhere"},
                                                     {"x-api-key", stack_->key}};
  EXPECT_EQ(post("/v1/chat/completions", R"({"model":"gpt-test","messages":[]})", openai).status,
            401);
}

// Anthropic's models list comes in pages: `limit` models after `after_id`, or before
// `before_id`, with `has_more` in that direction.
TEST(Models, TheAnthropicListComesInPages) {
  Process sim(bin("turnpike-sim"), std::vector<std::string>{"--listen", "127.0.0.1:0"});
  const int sim_port = sim.wait_listening();
  std::ostringstream y;
  y << "listen: \"127.0.0.1:0\"\nproviders:\n"
    << "  - { name: a, api: anthropic, base_url: \"http://127.0.0.1:" << sim_port << "/v1\" }\n"
    << "models:\n";
  for (const char* name : {"a1", "a2", "a3"}) {
    y << "  - { name: " << name
      << ", routes: [{ provider: a, input_per_mtok: \"1\", output_per_mtok: \"1\" }] }\n";
  }
  const TestGateway gw(y.str());
  ASSERT_GT(gw.port, 0) << gw.log();
  const auto headers = gw.auth({{"anthropic-version", "2023-06-01"}});
  auto page = [&](const std::string& query) {
    return http_request(gw.port, "GET", "/v1/models" + query, {}, headers);
  };
  EXPECT_NE(page("?limit=2").body.find(R"("has_more":true,"first_id":"a1","last_id":"a2")"),
            std::string::npos);
  EXPECT_NE(page("?limit=2&after_id=a2").body.find(
                R"({"data":[{"type":"model","id":"a3",)"),
            std::string::npos);
  EXPECT_NE(page("?limit=2&after_id=a2").body.find(R"("has_more":false,"first_id":"a3")"),
            std::string::npos);
  EXPECT_NE(page("?limit=1&before_id=a3").body.find(
                R"("has_more":true,"first_id":"a2","last_id":"a2")"),
            std::string::npos);
  EXPECT_NE(page("").body.find(R"("has_more":false,"first_id":"a1","last_id":"a3")"),
            std::string::npos);
  for (const std::string bad : {"?limit=0", "?limit=x", "?after_id=a1&before_id=a3",
                                "?limit=1&limit=2", "?after_id=a1&after_id=a2"}) {
    const auto res = page(bad);
    EXPECT_EQ(res.status, 400) << bad;
    EXPECT_NE(res.body.find(R"("type":"error")"), std::string::npos) << res.body;  // its shape
  }
  EXPECT_EQ(page("?limit=1&foo=bar").status, 200);
  // A method the path does not take is refused in the caller's shape too.
  const auto post = http_request(gw.port, "POST", "/v1/models", "{}", headers);
  EXPECT_EQ(post.status, 405);
  EXPECT_NE(post.body.find(R"("type":"error")"), std::string::npos) << post.body;
  // An id no longer listed (a reload, a narrower allowlist) ends the paging.
  EXPECT_NE(page("?after_id=gone").body.find(
                R"({"data":[],"has_more":false,"first_id":null,"last_id":null})"),
            std::string::npos);
}

TEST_F(GatewayTest, EmbeddingsAndModels) {
  auto res = post("/v1/embeddings", R"({"model":"embed-test","input":["a","b"]})");
  ASSERT_EQ(res.status, 200) << res.body;
  EXPECT_NE(res.body.find(R"("index":1)"), std::string::npos);

  res = http_request(stack_->port, "GET", "/v1/models", {}, stack_->auth());
  ASSERT_EQ(res.status, 200);
  simdjson::dom::parser p;
  auto doc = parse(p, res.body);
  EXPECT_EQ(std::string_view(doc["object"].get_string().value()), "list");
  EXPECT_NE(res.body.find(R"("id":"gpt-test")"), std::string::npos);
  // The list takes a key (either SDK's way of sending it) and shows what the key may use.
  EXPECT_EQ(http_request(stack_->port, "GET", "/v1/models").status, 401);
  EXPECT_EQ(http_request(stack_->port, "GET", "/v1/models", {}, {{"x-api-key", stack_->key}}).status,
            200);
  const std::string narrow = create_key(stack_->port, R"({"models":["embed-test"]})");
  const auto listed = http_request(stack_->port, "GET", "/v1/models", {},
                                   {{"authorization", "Bearer " + narrow}});
  EXPECT_NE(listed.body.find(R"("id":"embed-test")"), std::string::npos) << listed.body;
  EXPECT_EQ(listed.body.find(R"("id":"gpt-test")"), std::string::npos) << listed.body;
  std::vector<std::string> ids;
  simdjson::dom::array data = doc["data"].get_array().value();
  for (auto m : data) ids.emplace_back(m["id"].get_string().value());
  // Not claude-test: only Anthropic's API serves it, which the OpenAI SDK does not call.
  EXPECT_EQ(ids, (std::vector<std::string>{"gpt-test", "embed-test", "dead-model"}));
  EXPECT_EQ(http_request(stack_->port, "GET", "/v1/models/claude-test", {}, stack_->auth()).status,
            404);

  // One model, by its percent-encoded id, as both SDKs' models.retrieve ask for it.
  const auto one = http_request(stack_->port, "GET", "/v1/models/gpt%2Dtest", {}, stack_->auth());
  EXPECT_EQ(one.status, 200);
  EXPECT_EQ(one.body, R"({"id":"gpt-test","object":"model","created":)" +
                          std::to_string(doc["data"].at(0)["created"].get_int64().value()) +
                          R"(,"owned_by":"turnpike"})");
  for (const char* hidden : {"/v1/models/nope", "/v1/models/%zz"}) {
    const auto missing = http_request(stack_->port, "GET", hidden, {}, stack_->auth());
    EXPECT_EQ(missing.status, 404) << hidden;
    EXPECT_NE(missing.body.find("model_not_found"), std::string::npos) << missing.body;
  }
  EXPECT_EQ(http_request(stack_->port, "GET", "/v1/models/gpt-test", {},
                         {{"authorization", "Bearer " + narrow}})
                .status,
            404);  // a model the key may not use is not shown to exist
  // The Anthropic SDK (which always sends anthropic-version) gets Anthropic's shapes.
  const std::map<std::string, std::string> anthropic = {{"x-api-key", stack_->key},
                                                        {"anthropic-version", "2023-06-01"}};
  const auto page = http_request(stack_->port, "GET", "/v1/models", {}, anthropic);
  ASSERT_EQ(page.status, 200);
  simdjson::dom::parser ap;
  const auto adoc = parse(ap, page.body);
  EXPECT_FALSE(adoc["has_more"].get_bool().value());
  // Only what the Messages API can be sent: no OpenAI-only or embeddings model.
  EXPECT_EQ(adoc["data"].get_array().size(), 1u) << page.body;
  EXPECT_EQ(std::string_view(adoc["first_id"].get_string().value()), "claude-test");
  EXPECT_EQ(std::string_view(adoc["last_id"].get_string().value()), "claude-test");
  EXPECT_EQ(std::string_view(adoc["data"].at(0)["type"].get_string().value()), "model");
  EXPECT_EQ(std::string_view(adoc["data"].at(0)["display_name"].get_string().value()),
            "claude-test");
  EXPECT_TRUE(adoc["data"].at(0)["created_at"].is_string());
  EXPECT_EQ(http_request(stack_->port, "GET", "/v1/models/gpt-test", {}, anthropic).status, 404);
  const auto claude = http_request(stack_->port, "GET", "/v1/models/claude-test", {}, anthropic);
  EXPECT_EQ(claude.status, 200);
  EXPECT_NE(claude.body.find(R"("type":"model","id":"claude-test")"), std::string::npos)
      << claude.body;
  const auto gone = http_request(stack_->port, "GET", "/v1/models/nope", {}, anthropic);
  EXPECT_EQ(gone.status, 404);
  EXPECT_NE(gone.body.find(R"("type":"error")"), std::string::npos) << gone.body;
  // Its id where the Anthropic SDK reads it: the body and `request-id`.
  EXPECT_FALSE(gone.header("request-id").empty());
  EXPECT_NE(gone.body.find(R"("request_id":")" + gone.header("request-id")), std::string::npos)
      << gone.body;
}

// The usage log's page with no rows.
constexpr std::string_view kEmptyUsagePage = R"({"data":[],"next_cursor":null})";

// A `to` alone may be the epoch or before it: there is no `from` to be out of order with.
TEST_F(GatewayTest, UsageToAloneMayBeTheEpochOrBefore) {
  ASSERT_EQ(post("/v1/chat/completions", R"({"model":"gpt-test","messages":[]})").status, 200);
  for (const char* to : {"1970-01-01T00:00:00Z", "1969-12-31T23:59:59.5Z"}) {
    const auto alone = http_request(stack_->port, "GET", std::string("/api/usage?to=") + to, {},
                                    stack_->auth());
    EXPECT_EQ(alone.status, 200) << to << ": " << alone.body;
    EXPECT_EQ(alone.body, kEmptyUsagePage);
  }
}

// Two bounds within one millisecond, which both round up to it, are an empty range: 200 with
// no rows. 400 is for bounds out of order or equal, compared as sent (docs/api.md).
TEST_F(GatewayTest, UsageBoundsWithinOneMillisecondAreAnEmptyPage) {
  ASSERT_EQ(post("/v1/chat/completions", R"({"model":"gpt-test","messages":[]})").status, 200);
  const auto usage = [&](const std::string& query) {
    return http_request(stack_->port, "GET", "/api/usage?" + query, {}, stack_->auth());
  };
  const auto all = usage("limit=1000");
  ASSERT_EQ(all.status, 200) << all.body;
  simdjson::dom::parser parser;
  std::string_view last_id, last_at;
  const simdjson::dom::array rows = parse(parser, all.body)["data"].get_array().value();
  for (auto row : rows) {
    last_id = row["request_id"].get_string().value();
    last_at = row["timestamp"].get_string().value();
  }
  const std::optional<std::int64_t> at = parse_rfc3339(last_at);
  ASSERT_TRUE(at) << all.body;
  // Sub-millisecond times in the millisecond before the row's: both bounds round up to the
  // row's own millisecond, yet the row is not in [.xxx5, .xxx9).
  const std::string before = format_rfc3339(*at - 1, /*millis=*/true);  // "…T04:54:24.122Z"
  const auto within = [&](const std::string& digits) {
    return before.substr(0, before.size() - 1) + digits + 'Z';  // "…T04:54:24.1225Z"
  };
  const auto empty = usage("from=" + within("5") + "&to=" + within("9"));
  EXPECT_EQ(empty.status, 200) << empty.body;
  EXPECT_EQ(empty.body, kEmptyUsagePage);
  // Rounding up stays as documented: with `to` a millisecond past the row, the row is in.
  const auto rounded = usage("from=" + within("5") + "&to=" + format_rfc3339(*at + 1, true));
  EXPECT_EQ(rounded.status, 200) << rounded.body;
  EXPECT_NE(rounded.body.find(last_id), std::string::npos) << rounded.body;
  for (const std::string& query : {"from=" + within("9") + "&to=" + within("5"),
                                   "from=" + within("5") + "&to=" + within("5000")}) {
    const auto refused = usage(query);
    EXPECT_EQ(refused.status, 400) << query;
    EXPECT_NE(refused.body.find("'from' must be before 'to'"), std::string::npos) << refused.body;
  }
}

// count_tokens goes to the provider as a Messages request would (model mapped, key
// swapped) and comes back as it answered, unbilled.
TEST_F(GatewayTest, CountTokensIsRelayedAndFree) {
  const std::map<std::string, std::string> headers = {{"x-api-key", stack_->key},
                                                      {"anthropic-version", "2023-06-01"}};
  const auto usage_rows = [&] {
    return http_request(stack_->port, "GET", "/api/usage?limit=1000", {}, stack_->auth()).body;
  };
  const std::string before = usage_rows();
  const auto res = post("/v1/messages/count_tokens",
                        R"({"model":"claude-test","messages":[{"role":"user","content":"hi"}]})",
                        headers);
  ASSERT_EQ(res.status, 200) << res.body;
  EXPECT_NE(res.body.find(R"("input_tokens":)"), std::string::npos) << res.body;
  EXPECT_TRUE(res.headers.count("request-id")) << res.body;
  EXPECT_EQ(res.headers.count("x-turnpike-cost-usd"), 0u);
  simdjson::dom::parser p;
  auto seen = last_upstream_request(p, stack_->sim_port);
  EXPECT_EQ(std::string_view(seen["path"].get_string().value()), "/v1/messages/count_tokens");
  EXPECT_EQ(std::string_view(seen["x_api_key"].get_string().value()), "sk-provider-secret");
  EXPECT_EQ(std::string_view(seen["body"]["model"].get_string().value()), "claude-upstream");
  EXPECT_EQ(usage_rows(), before);  // nothing logged, nothing charged
  // Routed as Messages: an OpenAI model is the other API's, an unknown one 404.
  EXPECT_EQ(post("/v1/messages/count_tokens", R"({"model":"gpt-test","messages":[]})", headers)
                .status,
            400);
  const auto unknown =
      post("/v1/messages/count_tokens", R"({"model":"nope","messages":[]})", headers);
  EXPECT_EQ(unknown.status, 404);
  EXPECT_NE(unknown.body.find(R"("type":"error")"), std::string::npos) << unknown.body;
}

// Every anthropic-beta line reaches the provider: repeated lines are one list.
TEST_F(GatewayTest, EveryAnthropicBetaLineIsForwarded) {
  RawConnection c(stack_->port);
  const std::string body =
      R"({"model":"claude-test","max_tokens":2,"messages":[{"role":"user","content":"hi"}]})";
  ASSERT_TRUE(c.send("POST /v1/messages HTTP/1.1\r\nHost: x\r\nx-api-key: " + stack_->key +
                     "\r\nanthropic-version: 2023-06-01\r\nanthropic-beta: a-1\r\n"
                     "anthropic-beta: b-2,c-3\r\nContent-Type: application/json\r\n"
                     "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body));
  ASSERT_NE(c.read_until("\"type\":\"message\"", 5s).find("HTTP/1.1 200"), std::string::npos);
  simdjson::dom::parser p;
  auto seen = last_upstream_request(p, stack_->sim_port);
  EXPECT_EQ(std::string_view(seen["anthropic_beta"].get_string().value()), "a-1, b-2,c-3");
}

void expect_openai_error(const HttpResponse& res, int status, const std::string& type) {
  EXPECT_EQ(res.status, status) << res.body;
  simdjson::dom::parser p;
  auto doc = p.parse(res.body);
  ASSERT_FALSE(doc.error()) << res.body;
  EXPECT_EQ(std::string_view(doc["error"]["type"].get_string().value()), type) << res.body;
  EXPECT_FALSE(std::string_view(doc["error"]["message"].get_string().value()).empty());
}

TEST_F(GatewayTest, ErrorsUseOpenAIShapeAndStatus) {
  expect_openai_error(post("/v1/chat/completions", R"({"model":"gpt-test",)"), 400,
                      "invalid_request_error");
  expect_openai_error(post("/v1/chat/completions", R"([1,2])"), 400, "invalid_request_error");
  expect_openai_error(post("/v1/chat/completions", R"({"messages":[]})"), 400,
                      "invalid_request_error");
  expect_openai_error(post("/v1/chat/completions", R"({"model":"gpt-test","stream":"yes"})"), 400,
                      "invalid_request_error");
  expect_openai_error(post("/v1/chat/completions", R"({"model":"gpt-test","privacy_tier":"x"})"),
                      400, "invalid_request_error");
  expect_openai_error(post("/v1/chat/completions", R"({"model":"nope","messages":[]})"), 404,
                      "not_found_error");
  expect_openai_error(post("/v1/nothing", "{}"), 404, "not_found_error");
  expect_openai_error(http_request(stack_->port, "GET", "/v1/chat/completions"), 405,
                      "invalid_request_error");
  // Every known path answers a wrong method with 405 and the methods it takes.
  const std::map<std::string, std::string> admin = {
      {"authorization", std::string("Bearer ") + kAdminKey}};
  for (const auto& [method, path, allowed] :
       std::vector<std::tuple<std::string, std::string, std::string>>{
           {"GET", "/v1/embeddings", "POST"},
           {"POST", "/v1/models", "GET, HEAD"},
           {"POST", "/api/balance", "GET, HEAD"},
           {"DELETE", "/api/usage", "GET, HEAD"},
           {"GET", "/v1/route/explain", "POST"},
           {"POST", "/healthz", "GET, HEAD"},
           {"DELETE", "/admin/v1/accounts", "GET, HEAD, POST"},
           {"GET", "/admin/v1/accounts/acct_1/credits", "POST"},
           {"POST", "/admin/v1/accounts/acct_1/balance", "GET, HEAD"},
           {"DELETE", "/admin/v1/accounts/acct_1", "GET, HEAD, PATCH"},
           {"GET", "/admin/v1/keys/key_1", "DELETE"},
           {"POST", "/admin/v1/ledger/verify", "GET, HEAD"}}) {
    const auto res = http_request(stack_->port, method, path, "", admin);
    expect_openai_error(res, 405, "invalid_request_error");
    EXPECT_EQ(res.header("allow"), allowed) << method << " " << path;
  }
  expect_openai_error(http_request(stack_->port, "GET", "/admin/v1/nothing", "", admin), 404,
                      "not_found_error");
  // Without any key, every client path says the key is missing (not that it is wrong).
  for (const auto& [method, path] : std::vector<std::pair<std::string, std::string>>{
           {"GET", "/api/usage"}, {"GET", "/api/balance"}, {"POST", "/v1/route/explain"},
           {"POST", "/v1/chat/completions"}}) {
    const auto res = http_request(stack_->port, method, path, "{}");
    expect_openai_error(res, 401, "authentication_error");
    EXPECT_NE(res.body.find("missing API key"), std::string::npos) << path << ": " << res.body;
  }
  expect_openai_error(post("/v1/chat/completions", R"({"model":"gpt-test"})",
                           std::map<std::string, std::string>{}),
                      401, "authentication_error");
  // Connection refused upstream (after one retry on a fresh connection) → 502.
  expect_openai_error(post("/v1/chat/completions", R"({"model":"dead-model","messages":[]})"), 502,
                      "upstream_error");
  // The provider's 500 → 502 naming the provider, never the provider's text.
  const auto res = post("/v1/chat/completions",
                        R"({"model":"gpt-test","messages":[],"sim":{"error_status":500}})");
  expect_openai_error(res, 502, "upstream_error");
  EXPECT_NE(res.body.find("sim-openai"), std::string::npos);
  EXPECT_EQ(res.body.find("simulated"), std::string::npos);
  // Client errors from the provider pass through as they are.
  const auto rate = post("/v1/chat/completions",
                         R"({"model":"gpt-test","messages":[],"sim":{"error_status":429}})");
  EXPECT_EQ(rate.status, 429);
  EXPECT_EQ(rate.header("retry-after"), "1");
}

TEST_F(GatewayTest, KeysAreCheckedAndManagedThroughTheAdminApi) {
  const std::string chat = R"({"model":"gpt-test","messages":[]})";
  const auto as = [](const std::string& key) {
    return std::map<std::string, std::string>{{"authorization", "Bearer " + key}};
  };
  // Unknown keys, well-formed or not, are 401; so is the admin key used as a client key.
  expect_openai_error(post("/v1/chat/completions", chat, as("tp_sk_" + std::string(43, 'a'))),
                      401, "authentication_error");
  expect_openai_error(post("/v1/chat/completions", chat, as("sk-whatever")), 401,
                      "authentication_error");
  expect_openai_error(post("/v1/chat/completions", chat, as(kAdminKey)), 401,
                      "authentication_error");
  // Authentication comes first: a bad key learns nothing about models or the body.
  expect_openai_error(post("/v1/chat/completions", R"({"model":"no-such-model"})", as("x")), 401,
                      "authentication_error");
  expect_openai_error(post("/v1/chat/completions", "{not json", as("x")), 401,
                      "authentication_error");

  const std::map<std::string, std::string> admin = {
      {"authorization", std::string("Bearer ") + kAdminKey}};
  auto account = http_request(stack_->port, "POST", "/admin/v1/accounts",
                              R"({"name":"Acme","kind":"customer"})", admin);
  ASSERT_EQ(account.status, 201) << account.body;
  simdjson::dom::parser p;
  const std::string id(parse(p, account.body)["id"].get_string().value());
  EXPECT_TRUE(id.starts_with("acct_"));

  // A key limited to one model.
  auto created = http_request(stack_->port, "POST", "/admin/v1/accounts/" + id + "/keys",
                              R"({"name":"ci","models":["embed-test"]})", admin);
  ASSERT_EQ(created.status, 201) << created.body;
  simdjson::dom::parser p2;
  auto doc = parse(p2, created.body);
  const std::string key(doc["key"].get_string().value());
  const std::string key_id(doc["id"].get_string().value());
  EXPECT_EQ(std::string_view(doc["last4"].get_string().value()), key.substr(key.size() - 4));
  expect_openai_error(post("/v1/chat/completions", chat, as(key)), 403, "permission_error");
  EXPECT_EQ(post("/v1/embeddings", R"({"model":"embed-test","input":"x"})", as(key)).status, 200);

  // The account shows its keys by last4 only.
  auto shown = http_request(stack_->port, "GET", "/admin/v1/accounts/" + id, "", admin);
  ASSERT_EQ(shown.status, 200);
  EXPECT_EQ(shown.body.find(key), std::string::npos);
  EXPECT_NE(shown.body.find(key.substr(key.size() - 4)), std::string::npos);

  // Suspension is 403 until lifted.
  ASSERT_EQ(http_request(stack_->port, "POST", "/admin/v1/accounts/" + id + "/suspend", "", admin)
                .status, 200);
  expect_openai_error(post("/v1/embeddings", R"({"model":"embed-test","input":"x"})", as(key)),
                      403, "permission_error");
  ASSERT_EQ(
      http_request(stack_->port, "POST", "/admin/v1/accounts/" + id + "/unsuspend", "", admin)
          .status, 200);
  EXPECT_EQ(post("/v1/embeddings", R"({"model":"embed-test","input":"x"})", as(key)).status, 200);

  // Rotation: both keys work during the grace window; with no grace, the old one stops.
  const std::string embed = R"({"model":"embed-test","input":"x"})";
  auto rotated = http_request(stack_->port, "POST", "/admin/v1/keys/" + key_id + "/rotate",
                              R"({"grace_seconds":3600})", admin);
  ASSERT_EQ(rotated.status, 200) << rotated.body;
  simdjson::dom::parser p3;
  auto rdoc = parse(p3, rotated.body);
  const std::string new_key(rdoc["key"].get_string().value());
  const std::string new_id(rdoc["id"].get_string().value());
  EXPECT_FALSE(std::string_view(rdoc["old_key_expires_at"].get_string().value()).empty());
  EXPECT_EQ(post("/v1/embeddings", embed, as(key)).status, 200);
  EXPECT_EQ(post("/v1/embeddings", embed, as(new_key)).status, 200);
  // The new key keeps the old one's model allowlist.
  expect_openai_error(post("/v1/chat/completions", chat, as(new_key)), 403, "permission_error");
  // A key is rotated once: a second rotation (a retry whose answer was lost) would make a
  // successor that inherits the grace deadline and dies with it. It is 409 naming the key
  // to rotate instead, which the old key's listing names too.
  const auto again = http_request(stack_->port, "POST", "/admin/v1/keys/" + key_id + "/rotate",
                                  R"({"grace_seconds":3600})", admin);
  EXPECT_EQ(again.status, 409) << again.body;
  EXPECT_NE(again.body.find("rotate " + new_id + " instead"), std::string::npos) << again.body;
  const auto listed = http_request(stack_->port, "GET", "/admin/v1/accounts/" + id,
                                   "", admin);
  EXPECT_NE(listed.body.find(R"("replaced_by":")" + new_id + "\""), std::string::npos)
      << listed.body;
  ASSERT_EQ(http_request(stack_->port, "POST", "/admin/v1/keys/" + new_id + "/rotate",
                         R"({"grace_seconds":0})", admin).status, 200);
  expect_openai_error(post("/v1/embeddings", embed, as(new_key)), 401, "authentication_error");
  EXPECT_EQ(http_request(stack_->port, "POST", "/admin/v1/keys/" + key_id + "/rotate",
                         R"({"grace_seconds":-1})", admin).status, 400);
  // A field the call does not know is named, never ignored.
  const auto misspelt = http_request(stack_->port, "POST", "/admin/v1/keys/" + key_id + "/rotate",
                                     R"({"grace_seconds":0,"revoke_old_now":true})", admin);
  EXPECT_EQ(misspelt.status, 400) << misspelt.body;
  EXPECT_NE(misspelt.body.find("revoke_old_now"), std::string::npos) << misspelt.body;
  const auto unfreeze = http_request(stack_->port, "POST", "/admin/v1/ledger/unfreeze",
                                     R"({"note":"x","reason":"y"})", admin);
  EXPECT_EQ(unfreeze.status, 400) << unfreeze.body;
  EXPECT_NE(unfreeze.body.find("reason"), std::string::npos) << unfreeze.body;

  // Revoked: 401 at once; a second revoke (a retry) is 204 too, an unknown key 404.
  EXPECT_EQ(http_request(stack_->port, "DELETE", "/admin/v1/keys/" + key_id, "", admin).status,
            204);
  EXPECT_NE(stack_->gateway->log().find(R"("msg":"key revoked","key":)" +
                                        key_id.substr(key_id.find('_') + 1)),
            std::string::npos);
  expect_openai_error(post("/v1/embeddings", R"({"model":"embed-test","input":"x"})", as(key)),
                      401, "authentication_error");
  EXPECT_EQ(http_request(stack_->port, "DELETE", "/admin/v1/keys/" + key_id, "", admin).status,
            204);
  EXPECT_EQ(http_request(stack_->port, "DELETE", "/admin/v1/keys/key_999", "", admin).status,
            404);

  // Admin errors.
  EXPECT_EQ(http_request(stack_->port, "POST", "/admin/v1/accounts", "{}", admin).status, 400);
  EXPECT_EQ(http_request(stack_->port, "POST", "/admin/v1/accounts", R"({"name":"x","kind":"y"})",
                         admin).status, 400);
  EXPECT_EQ(http_request(stack_->port, "GET", "/admin/v1/accounts/acct_999", "", admin).status,
            404);
  EXPECT_EQ(http_request(stack_->port, "GET", "/admin/v1/accounts/" + id, "",
                         {{"authorization", "Bearer wrong"}}).status, 401);
  EXPECT_EQ(http_request(stack_->port, "GET", "/admin/v1/accounts/" + id).status, 401);
  // A lifetime past 100 years is refused, not wrapped into a key that expired long ago.
  for (const char* lifetime : {"0", "3153600001", "9223372036854775807", "1.5", "\"60\""}) {
    const auto refused =
        http_request(stack_->port, "POST", "/admin/v1/accounts/" + id + "/keys",
                     std::string(R"({"expires_in_seconds":)") + lifetime + "}", admin);
    EXPECT_EQ(refused.status, 400) << lifetime << ": " << refused.body;
    EXPECT_NE(refused.body.find("from 1 to 3153600000"), std::string::npos) << refused.body;
  }
  EXPECT_EQ(http_request(stack_->port, "POST", "/admin/v1/accounts/" + id + "/keys",
                         R"({"expires_in_seconds":3153600000})", admin)
                .status,
            201);
  // Lists that are not lists are 400, and the gateway lives on.
  for (const auto& [method, path, body] :
       std::vector<std::tuple<std::string, std::string, std::string>>{
           {"POST", "/admin/v1/accounts/" + id + "/keys", R"({"models":"embed-test"})"},
           {"POST", "/admin/v1/accounts/" + id + "/keys", R"({"tags":"batch"})"},
           {"POST", "/admin/v1/accounts/" + id + "/keys", R"({"models":{"a":1}})"},
           {"PATCH", "/admin/v1/accounts/" + id, R"({"models":"embed-test"})"},
           {"POST", "/admin/v1/accounts", R"({"name":"x","models":"embed-test"})"}}) {
    const auto res = http_request(stack_->port, method, path, body, admin);
    EXPECT_EQ(res.status, 400) << method << " " << path << " " << body << ": " << res.body;
  }
  EXPECT_EQ(http_request(stack_->port, "GET", "/healthz").status, 200);
  // A field the call does not know is refused; CONTRACT's limits are taken, and listed
  // with the key.
  const auto mistyped = http_request(stack_->port, "POST", "/admin/v1/accounts/" + id + "/keys",
                                     R"({"model":["embed-test"]})", admin);
  EXPECT_EQ(mistyped.status, 400) << mistyped.body;
  EXPECT_NE(mistyped.body.find("unknown field 'model'"), std::string::npos) << mistyped.body;
  const auto limited = http_request(stack_->port, "POST", "/admin/v1/accounts/" + id + "/keys",
                                    R"({"rpm":10,"tpm":1000,"budget_usd":"5"})", admin);
  EXPECT_EQ(limited.status, 201) << limited.body;
  const auto with_limits =
      http_request(stack_->port, "GET", "/admin/v1/accounts/" + id, {}, admin);
  EXPECT_NE(with_limits.body.find(
                R"("rpm":10,"tpm":1000,"budget_usd":"5.00","budget_spent_usd":"0.00")"),
            std::string::npos)
      << with_limits.body;
}

// A successor revoked during its predecessor's grace leaves the predecessor working: it can
// be rotated again (not told to rotate the revoked key), and the new successor ends when the
// revoked one would have, not at the grace deadline.
TEST_F(GatewayTest, AKeyWhoseSuccessorWasRevokedCanBeRotatedAgain) {
  const std::map<std::string, std::string> admin = {
      {"authorization", std::string("Bearer ") + kAdminKey}};
  const auto as = [](const std::string& key) {
    return std::map<std::string, std::string>{{"authorization", "Bearer " + key}};
  };
  const std::string key = create_key(stack_->port, R"({"expires_in_seconds":86400})");
  ASSERT_FALSE(key.empty());
  const std::string account = string_field(
      http_request(stack_->port, "GET", "/api/balance", {}, as(key)).body, "account");
  const auto shown = http_request(stack_->port, "GET", "/admin/v1/accounts/" + account, {}, admin);
  const std::string key_id = string_field(shown.body, "id", shown.body.find(R"("keys")"));
  const std::string lifetime_end = string_field(shown.body, "expires_at");
  ASSERT_FALSE(lifetime_end.empty()) << shown.body;
  const auto first = http_request(stack_->port, "POST", "/admin/v1/keys/" + key_id + "/rotate",
                                  R"({"grace_seconds":600})", admin);
  ASSERT_EQ(first.status, 200) << first.body;
  // To the millisecond: the old key works until then.
  EXPECT_EQ(string_field(first.body, "old_key_expires_at").size(), 24u) << first.body;
  const std::string revoked_id = string_field(first.body, "id");
  ASSERT_EQ(http_request(stack_->port, "DELETE", "/admin/v1/keys/" + revoked_id, "", admin).status,
            204);
  const std::string embed = R"({"model":"embed-test","input":"x"})";
  EXPECT_EQ(post("/v1/embeddings", embed, as(key)).status, 200);
  const auto again = http_request(stack_->port, "POST", "/admin/v1/keys/" + key_id + "/rotate",
                                  R"({"grace_seconds":600})", admin);
  ASSERT_EQ(again.status, 200) << again.body;
  const std::string successor = string_field(again.body, "key");
  const std::string successor_id = string_field(again.body, "id");
  EXPECT_EQ(post("/v1/embeddings", embed, as(successor)).status, 200);
  const auto listed = http_request(stack_->port, "GET", "/admin/v1/accounts/" + account, {}, admin);
  const std::size_t entry = listed.body.find(R"("id":")" + successor_id + "\"");
  ASSERT_NE(entry, std::string::npos) << listed.body;
  EXPECT_EQ(string_field(listed.body, "expires_at", entry), lifetime_end) << listed.body;
}

// A large image is no 200,000 tokens of text: it is not refused as longer than the
// model's context, nor held as if it were. An embeddings batch longer than one input's
// limit is the provider's to judge, input by input.
TEST_F(GatewayTest, ImagesAndEmbeddingBatchesAreNotTakenForLongText) {
  std::string image = R"({"model":"claude-test","max_tokens":10,"messages":[{"role":"user",)"
                      R"("content":[{"type":"image","source":{"type":"base64",)"
                      R"("media_type":"image/jpeg","data":")";
  image.append(800 * 1024, 'Q').append(R"("}},{"type":"text","text":"what is this?"}]}]})");
  const auto seen = post("/v1/messages", image,
                         std::map<std::string, std::string>{
                             {"x-api-key", stack_->key}, {"anthropic-version", "2023-06-01"}});
  EXPECT_EQ(seen.status, 200) << seen.body.substr(0, 300);
  // A 3 MB PDF: about 47,000 tokens by its size, held as at most the model's context.
  std::string pdf = R"({"model":"claude-test","max_tokens":10,"messages":[{"role":"user",)"
                    R"("content":[{"type":"document","source":{"type":"base64",)"
                    R"("media_type":"application/pdf","data":")";
  pdf.append(3 * 1000 * 1000, 'J').append(R"("}},{"type":"text","text":"summarise"}]}]})");
  const auto read = post("/v1/messages", pdf,
                         std::map<std::string, std::string>{
                             {"x-api-key", stack_->key}, {"anthropic-version", "2023-06-01"}});
  EXPECT_EQ(read.status, 200) << read.body.substr(0, 300);
  std::string batch = R"({"model":"embed-test","input":[)";
  for (int i = 0; i < 400; ++i) {
    batch.append(i == 0 ? "\"" : ",\"").append(2000, 'w').append("\"");
  }
  batch.append("]}");
  const auto embedded = post("/v1/embeddings", batch);
  EXPECT_EQ(embedded.status, 200) << embedded.body.substr(0, 300);
}

TEST_F(GatewayTest, WrongSurfaceForModelIsAClearError) {
  expect_openai_error(post("/v1/chat/completions", R"({"model":"claude-test","messages":[]})"), 400,
                      "invalid_request_error");
}

TEST_F(GatewayTest, AnthropicErrorsUseAnthropicShape) {
  const auto res = post("/v1/messages", R"({"model":"missing","max_tokens":1,"messages":[]})",
                        {{{"x-api-key", stack_->key}}});
  EXPECT_EQ(res.status, 404);
  simdjson::dom::parser p;
  auto doc = parse(p, res.body);
  EXPECT_EQ(std::string_view(doc["type"].get_string().value()), "error");
  EXPECT_EQ(std::string_view(doc["error"]["type"].get_string().value()), "not_found_error");
  // The request's id is in the body too, as Anthropic puts it.
  EXPECT_EQ(std::string_view(doc["request_id"].get_string().value()), res.header("request-id"));
  // A path under /v1/messages that Turnpike does not serve (the batches API) is refused in
  // the same shape, well-formed or not.
  for (const std::string body : {R"({"model":"claude-test","messages":[]})", "{"}) {
    const auto sub = post("/v1/messages/batches", body, {{{"x-api-key", stack_->key}}});
    EXPECT_EQ(sub.status, 404) << sub.body;
    EXPECT_TRUE(sub.headers.count("request-id")) << sub.body;
    EXPECT_NE(sub.body.find(R"("request_id":"req_)"), std::string::npos) << sub.body;
    simdjson::dom::parser sp;
    auto sub_doc = parse(sp, sub.body);
    EXPECT_EQ(std::string_view(sub_doc["type"].get_string().value()), "error") << sub.body;
  }
}

TEST_F(GatewayTest, BodyOverLimitIs413) {
  const std::string big = R"({"model":"gpt-test","pad":")" + std::string(tp::limits::kBodyBytesMax, 'x') + "\"}";
  expect_openai_error(post("/v1/chat/completions", big), 413, "invalid_request_error");
}

TEST_F(GatewayTest, MidStreamUpstreamDropIsReportedInBand) {
  const auto res = post("/v1/chat/completions",
                        R"({"model":"gpt-test","stream":true,"messages":[],"sim":{"output_tokens":10,"drop_after_chunks":3}})");
  // The connection is cut after an error event: the chunked body never terminates, so the
  // test client sees a failed read (status 0) — what any HTTP client reports.
  EXPECT_EQ(res.status, 0);
}

TEST_F(GatewayTest, LogsCarryNoBodies) {
  post("/v1/chat/completions",
       R"({"model":"gpt-test","messages":[{"role":"user","content":"SECRET-PROMPT-TEXT"}]})");
  std::this_thread::sleep_for(100ms);
  const std::string log = stack_->gateway->log();
  EXPECT_NE(log.find("\"msg\":\"request\""), std::string::npos);
  EXPECT_EQ(log.find("SECRET-PROMPT-TEXT"), std::string::npos);
  EXPECT_EQ(log.find(stack_->key), std::string::npos);
  EXPECT_EQ(log.find("sk-provider-secret"), std::string::npos);
}

// A promo credit retried under its idempotency key after its expiry has passed gets the
// first answer (a client that lost it can still learn its transfer), not a refusal.
TEST(Credits, APromoCreditRetriedAfterItsExpiryAnswersTheFirstResult) {
  Stack stack;
  ASSERT_GT(stack.port, 0) << stack.gateway->log();
  const std::map<std::string, std::string> admin = {
      {"authorization", std::string("Bearer ") + kAdminKey}};
  auto account = http_request(stack.port, "POST", "/admin/v1/accounts", R"({"name":"P"})", admin);
  ASSERT_EQ(account.status, 201);
  simdjson::dom::parser p;
  const std::string base =
      "/admin/v1/accounts/" + std::string(p.parse(account.body)["id"].get_string().value());
  const std::string soon = format_rfc3339(SystemClock::instance().unix_millis() + 1500);
  const std::string body =
      R"({"amount_usd":"3","kind":"promo","expires_at":")" + soon + R"(","idempotency_key":"p1"})";
  const auto first = http_request(stack.port, "POST", base + "/credits", body, admin);
  ASSERT_EQ(first.status, 200) << first.body;
  std::this_thread::sleep_for(2s);
  const auto again = http_request(stack.port, "POST", base + "/credits", body, admin);
  EXPECT_EQ(again.status, 200) << again.body;
  EXPECT_EQ(again.body, first.body);
  // A new call with a past expiry is refused.
  const std::string past =
      R"({"amount_usd":"3","kind":"promo","expires_at":")" + soon + R"(","idempotency_key":"p2"})";
  const auto late = http_request(stack.port, "POST", base + "/credits", past, admin);
  EXPECT_EQ(late.status, 400) << late.body;
  EXPECT_NE(late.body.find("promo credit must expire in the future"), std::string::npos)
      << late.body;
}

// Key paths: DELETE takes a key, POST its /rotate; any other path under /keys/ is unknown.
// suspend and unsuspend take no fields. Ids have one spelling.
// Names and plans are bounded and free of control characters; an optional member given as
// null is absent; a rotation's 409 names a key that may be rotated.
// Browser clients, where the config allows their origin: the client API answers
// preflights and exposes the headers the SDKs read; the admin API never answers them.
TEST(Cors, AllowedOriginsGetPreflightsAndExposedHeaders) {
  Stack stack("cors: { allow_origins: [\"https://app.example\"] }");
  ASSERT_GT(stack.port, 0) << stack.gateway->log();
  const auto preflight = http_request(stack.port, "OPTIONS", "/v1/chat/completions", {},
                                      {{"origin", "https://app.example"},
                                       {"access-control-request-method", "POST"},
                                       {"access-control-request-headers",
                                        "authorization, content-type, x-stainless-os"}});
  EXPECT_EQ(preflight.status, 204) << preflight.body;
  EXPECT_EQ(preflight.header("access-control-allow-origin"), "https://app.example");
  EXPECT_EQ(preflight.header("access-control-allow-headers"),
            "authorization, content-type, x-stainless-os");
  EXPECT_EQ(preflight.header("access-control-allow-methods"), "GET, POST, OPTIONS");
  auto with_origin = stack.auth();
  with_origin["origin"] = "https://app.example";
  const auto res = http_request(stack.port, "POST", "/v1/chat/completions",
                                R"({"model":"gpt-test","messages":[]})", with_origin);
  EXPECT_EQ(res.status, 200) << res.body;
  EXPECT_EQ(res.header("access-control-allow-origin"), "https://app.example");
  EXPECT_NE(res.header("access-control-expose-headers").find("x-request-id"), std::string::npos);
  // Another origin, and the admin API: nothing of it.
  with_origin["origin"] = "https://evil.example";
  EXPECT_EQ(http_request(stack.port, "POST", "/v1/chat/completions",
                         R"({"model":"gpt-test","messages":[]})", with_origin)
                .header("access-control-allow-origin"),
            "");
  EXPECT_EQ(http_request(stack.port, "OPTIONS", "/v1/chat/completions", {},
                         {{"origin", "https://evil.example"},
                          {"access-control-request-method", "POST"}})
                .status,
            405);
  EXPECT_EQ(http_request(stack.port, "GET", "/admin/v1/accounts/acct_1", {},
                         {{"authorization", std::string("Bearer ") + kAdminKey},
                          {"origin", "https://app.example"}})
                .header("access-control-allow-origin"),
            "");
}

TEST(Admin, NamesPlansNullsAndTheKeyToRotate) {
  Stack stack;
  ASSERT_GT(stack.port, 0) << stack.gateway->log();
  const std::map<std::string, std::string> admin = {
      {"authorization", std::string("Bearer ") + kAdminKey}};
  auto post = [&](const std::string& path, const std::string& body) {
    return http_request(stack.port, "POST", "/admin/v1" + path, body, admin);
  };
  const std::vector<std::string> bad_bodies = {
      R"({"name":"a\u0000b"})", R"({"name":"a\nb"})",
      R"({"name":"p","plan":")" + std::string(65, 'p') + "\"}", R"({"name":"p","plan":"x\ty"})"};
  for (const std::string& bad : bad_bodies) {
    const auto res = post("/accounts", bad);
    EXPECT_EQ(res.status, 400) << bad << ": " << res.body;
    EXPECT_NE(res.body.find("without control characters"), std::string::npos) << res.body;
  }
  const auto made =
      post("/accounts", R"({"name":"N","kind":null,"plan":null,"idempotency_key":null})");
  ASSERT_EQ(made.status, 201) << made.body;
  const std::string id = string_field(made.body, "id");
  const auto key = post("/accounts/" + id + "/keys",
                        R"({"name":null,"tags":null,"expires_in_seconds":null})");
  ASSERT_EQ(key.status, 201) << key.body;
  EXPECT_EQ(post("/accounts/" + id + "/keys", R"({"name":"a\rb"})").status, 400);
  // A→B→C, C revoked: B may be rotated again (its successor was revoked unrotated), so a
  // rotation of A names B, not the revoked C.
  const std::string a = string_field(key.body, "id");
  const auto b = post("/keys/" + a + "/rotate", R"({"grace_seconds":3600})");
  ASSERT_EQ(b.status, 200) << b.body;
  const std::string b_id = string_field(b.body, "id");
  const auto c = post("/keys/" + b_id + "/rotate", R"({"grace_seconds":3600})");
  ASSERT_EQ(c.status, 200) << c.body;
  ASSERT_EQ(http_request(stack.port, "DELETE", "/admin/v1/keys/" + string_field(c.body, "id"), "",
                         admin)
                .status,
            204);
  const auto again = post("/keys/" + a + "/rotate", R"({"grace_seconds":3600})");
  EXPECT_EQ(again.status, 409) << again.body;
  EXPECT_NE(again.body.find("rotate " + b_id + " instead"), std::string::npos) << again.body;
  // B revoked too: no key of the line is left to rotate, and the 409 says so.
  ASSERT_EQ(http_request(stack.port, "DELETE", "/admin/v1/keys/" + b_id, "", admin).status, 204);
  const auto none = post("/keys/" + a + "/rotate", R"({"grace_seconds":3600})");
  EXPECT_EQ(none.status, 409) << none.body;
  EXPECT_NE(none.body.find("create a new key"), std::string::npos) << none.body;
  // An account id is written one way only.
  EXPECT_EQ(http_request(stack.port, "GET", "/api/usage?account=acct_01", {}, admin).status, 400);
}

TEST(Admin, PathsMethodsAndBodiesOfKeysAndSuspension) {
  Stack stack;
  ASSERT_GT(stack.port, 0) << stack.gateway->log();
  const std::map<std::string, std::string> admin = {
      {"authorization", std::string("Bearer ") + kAdminKey}};
  const auto wrong_method = http_request(stack.port, "DELETE", "/admin/v1/keys/key_7/rotate", "",
                                         admin);
  EXPECT_EQ(wrong_method.status, 405) << wrong_method.body;
  EXPECT_EQ(wrong_method.headers.count("allow") ? wrong_method.headers.at("allow") : std::string(),
            "POST");
  EXPECT_EQ(http_request(stack.port, "POST", "/admin/v1/keys/key_1/foo", "{}", admin).status, 404);
  EXPECT_EQ(http_request(stack.port, "DELETE", "/admin/v1/keys/key_1/foo", "", admin).status, 404);
  auto account = http_request(stack.port, "POST", "/admin/v1/accounts", R"({"name":"S"})", admin);
  ASSERT_EQ(account.status, 201);
  simdjson::dom::parser p;
  const std::string id(p.parse(account.body)["id"].get_string().value());
  const auto fielded = http_request(stack.port, "POST", "/admin/v1/accounts/" + id + "/suspend",
                                    R"({"x":1})", admin);
  EXPECT_EQ(fielded.status, 400);
  EXPECT_NE(fielded.body.find(R"("suspend takes no fields: unknown field 'x'")"),
            std::string::npos)
      << fielded.body;
  EXPECT_EQ(http_request(stack.port, "POST", "/admin/v1/accounts/" + id + "/suspend", "{}", admin)
                .status,
            200);
  EXPECT_EQ(http_request(stack.port, "POST", "/admin/v1/accounts/" + id + "/unsuspend", "", admin)
                .status,
            200);
  const std::string zeroed = "acct_0" + id.substr(5);
  EXPECT_EQ(http_request(stack.port, "GET", "/admin/v1/accounts/" + zeroed, "", admin).status,
            404);
  // Key limits are checked even though they are not enforced yet.
  for (const char* bad : {R"({"budget_usd":"1e3"})", R"({"budget_usd":"-1"})", R"({"rpm":-1})",
                          R"({"rpm":"x"})", R"({"tpm":1.5})"}) {
    EXPECT_EQ(http_request(stack.port, "POST", "/admin/v1/accounts/" + id + "/keys", bad, admin)
                  .status,
              400)
        << bad;
  }
  EXPECT_EQ(http_request(stack.port, "POST", "/admin/v1/accounts/" + id + "/keys",
                         R"({"budget_usd":"25.50","rpm":60})", admin)
                .status,
            201);
}

// A replayed credit or refund answers the first call's result and moves nothing, and the
// log says nothing moved: it used to log "credits added" for every replay.
TEST(Credits, AReplayIsNotLoggedAsMoneyMoved) {
  Stack stack;
  ASSERT_GT(stack.port, 0) << stack.gateway->log();
  const std::map<std::string, std::string> admin = {
      {"authorization", std::string("Bearer ") + kAdminKey}};
  const auto account =
      http_request(stack.port, "POST", "/admin/v1/accounts", R"({"name":"Replays"})", admin);
  ASSERT_EQ(account.status, 201) << account.body;
  simdjson::dom::parser p;
  const std::string base =
      "/admin/v1/accounts/" + std::string(p.parse(account.body)["id"].get_string().value());
  const std::string paid = R"({"amount_usd":"5","kind":"paid","idempotency_key":"c1"})";
  const std::string refund = R"({"amount_usd":"1","idempotency_key":"r1"})";
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(http_request(stack.port, "POST", base + "/credits", paid, admin).status, 200);
    ASSERT_EQ(http_request(stack.port, "POST", base + "/refunds", refund, admin).status, 200);
  }
  // A last call whose line is known: once it is in, every line before it is too.
  ASSERT_EQ(http_request(stack.port, "POST", base + "/credits",
                         R"({"amount_usd":"1","kind":"trial","idempotency_key":"t1"})", admin)
                .status,
            200);
  std::string log;
  for (int i = 0; i < 100 && log.find(R"("kind":"trial")") == std::string::npos; ++i) {
    if (i > 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    log = stack.gateway->log();
  }
  auto count = [&](std::string_view what) {
    std::size_t n = 0;
    for (std::size_t at = log.find(what); at != std::string::npos; at = log.find(what, at + 1)) {
      ++n;
    }
    return n;
  };
  EXPECT_EQ(count(R"("msg":"credits added")"), 2u) << log;
  EXPECT_EQ(count(R"("msg":"refund")"), 1u) << log;
}

TEST(Credits, AdminCreditsAreExactIdempotentAndDurable) {
  Stack stack;
  ASSERT_GT(stack.port, 0) << stack.gateway->log();
  const std::map<std::string, std::string> admin = {
      {"authorization", std::string("Bearer ") + kAdminKey}};
  auto account = http_request(stack.port, "POST", "/admin/v1/accounts", R"({"name":"Acme"})", admin);
  ASSERT_EQ(account.status, 201);
  simdjson::dom::parser p;
  const std::string id(p.parse(account.body)["id"].get_string().value());
  const std::string base = "/admin/v1/accounts/" + id;
  auto balance = [&] { return http_request(stack.port, "GET", base + "/balance", "", admin); };

  // A mistyped field is refused, never ignored (here it would leave the loosest tier).
  const auto typo = http_request(stack.port, "POST", "/admin/v1/accounts",
                                 R"({"name":"T","privacy_teir":"confidential"})", admin);
  EXPECT_EQ(typo.status, 400) << typo.body;
  EXPECT_NE(typo.body.find("unknown field 'privacy_teir'"), std::string::npos) << typo.body;
  EXPECT_EQ(http_request(stack.port, "POST", base + "/refunds",
                         R"({"amount_usd":"1","idempotency_key":"r0","reason":"x"})", admin)
                .status,
            400);
  // Account creation moves money (the trial): a retry with its idempotency key answers the
  // first account, and grants nothing twice.
  const std::string acme2 = R"({"name":"Acme 2","idempotency_key":"make-acme-2"})";
  const auto made = http_request(stack.port, "POST", "/admin/v1/accounts", acme2, admin);
  ASSERT_EQ(made.status, 201) << made.body;
  const auto remade = http_request(stack.port, "POST", "/admin/v1/accounts", acme2, admin);
  EXPECT_EQ(remade.status, 201);
  EXPECT_EQ(remade.body, made.body);
  EXPECT_EQ(http_request(stack.port, "POST", "/admin/v1/accounts",
                         R"({"name":"Acme 3","idempotency_key":"make-acme-2"})", admin)
                .status,
            409);
  EXPECT_EQ(http_request(stack.port, "POST", "/admin/v1/accounts",
                         R"({"name":"Acme 3","idempotency_key":""})", admin)
                .status,
            400);
  const std::string acme2_id(p.parse(made.body)["id"].get_string().value());
  EXPECT_NE(http_request(stack.port, "GET", "/admin/v1/accounts/" + acme2_id + "/balance", "",
                         admin)
                .body.find(R"("trial_usd":"20.00")"),
            std::string::npos);
  EXPECT_EQ(http_request(stack.port, "GET", "/admin/v1/accounts/acct_" +
                                                std::to_string(std::stoi(acme2_id.substr(5)) + 1),
                         "", admin)
                .status,
            404);  // no second account was made

  // New customers get the default $20 trial.
  EXPECT_EQ(balance().body,
            R"({"paid_usd":"0.00","trial_usd":"20.00","promo_usd":"0.00","held_usd":"0.00","available_usd":"20.00"})");

  auto first = http_request(stack.port, "POST", base + "/credits",
                            R"({"amount_usd":"12.5","kind":"paid","idempotency_key":"k1"})", admin);
  ASSERT_EQ(first.status, 200) << first.body;
  EXPECT_NE(first.body.find(R"("paid_usd":"12.50")"), std::string::npos) << first.body;
  // The same call again: the same answer, nothing moved twice.
  auto replay = http_request(stack.port, "POST", base + "/credits",
                             R"({"amount_usd":"12.5","kind":"paid","idempotency_key":"k1"})", admin);
  EXPECT_EQ(replay.status, 200);
  EXPECT_EQ(replay.body, first.body);
  // The same key for something else: 409.
  EXPECT_EQ(http_request(stack.port, "POST", base + "/credits",
                         R"({"amount_usd":"13","kind":"paid","idempotency_key":"k1"})", admin)
                .status,
            409);
  // JSON numbers are read exactly, down to one nano-dollar.
  ASSERT_EQ(http_request(stack.port, "POST", base + "/credits",
                         R"({"amount_usd":0.000000001,"kind":"paid","idempotency_key":"k2"})", admin)
                .status,
            200);
  EXPECT_NE(balance().body.find(R"("paid_usd":"12.500000001")"), std::string::npos)
      << balance().body;
  for (const char* bad : {R"({"amount_usd":"1e3","kind":"paid","idempotency_key":"b"})",
                          R"({"amount_usd":-1,"kind":"paid","idempotency_key":"b"})",
                          R"({"amount_usd":"1.0000000001","kind":"paid","idempotency_key":"b"})",
                          R"({"amount_usd":"5","kind":"gift","idempotency_key":"b"})",
                          R"({"amount_usd":"5","kind":"paid"})",
                          R"({"amount_usd":"5","kind":"promo","idempotency_key":"b"})",
                          R"({"amount_usd":"5","kind":"promo","expires_at":"tomorrow","idempotency_key":"b"})",
                          R"({"amount_usd":"5","kind":"paid","idempotency_key":"b","note":"x"})",
                          // Only promo credit expires.
                          R"({"amount_usd":"5","kind":"paid","expires_at":"2099-01-01T00:00:00Z","idempotency_key":"b"})",
                          R"({"amount_usd":"5","kind":"promo","expires_at":12,"idempotency_key":"b"})",
                          // Other JSON readers take the last of repeated members.
                          R"({"amount_usd":"1","amount_usd":"1000","kind":"paid","idempotency_key":"b"})",
                          R"({"amount_usd":"1","kind":"trial","kind":"paid","idempotency_key":"b"})"}) {
    EXPECT_EQ(http_request(stack.port, "POST", base + "/credits", bad, admin).status, 400) << bad;
  }
  const auto repeated = http_request(
      stack.port, "POST", base + "/refunds",
      R"({"amount_usd":"1","idempotency_key":"r1","idempotency_key":"r2"})", admin);
  EXPECT_EQ(repeated.status, 400);
  EXPECT_NE(repeated.body.find("field 'idempotency_key' is given more than once"),
            std::string::npos)
      << repeated.body;
  // A JSON number past what a parser can read is named as such.
  const auto bignum = http_request(stack.port, "POST", base + "/credits",
                                   R"({"amount_usd":99999999999999999999999,"kind":"paid"})",
                                   admin);
  EXPECT_EQ(bignum.status, 400);
  EXPECT_NE(bignum.body.find("body must be a JSON object: "), std::string::npos) << bignum.body;
  // Every limit is explicit: one call moves at most a billion USD...
  const auto huge = http_request(stack.port, "POST", base + "/credits",
                                 R"({"amount_usd":"1000000000.000000001","kind":"paid","idempotency_key":"h"})",
                                 admin);
  EXPECT_EQ(huge.status, 400) << huge.body;
  EXPECT_NE(huge.body.find("at most 1000000000 USD per call"), std::string::npos) << huge.body;
  // ...and the ledger refuses, rather than dies of, a sum past its range (the world
  // account carries minus every deposit): the tenth billion is one too many.
  const std::string ops = "/admin/v1/accounts/" + std::string(p.parse(
      http_request(stack.port, "POST", "/admin/v1/accounts", R"({"name":"Ops","kind":"operator"})",
                   admin).body)["id"].get_string().value());
  for (int i = 0; i < 10; ++i) {
    const auto big = http_request(
        stack.port, "POST", ops + "/credits",
        R"({"amount_usd":"1000000000","kind":"paid","idempotency_key":"big-)" +
            std::to_string(i) + R"("})",
        admin);
    EXPECT_EQ(big.status, i < 9 ? 200 : 400) << i << ": " << big.body;
    if (i == 9) {
      EXPECT_NE(big.body.find("past what the ledger can hold"), std::string::npos) << big.body;
    }
  }
  EXPECT_EQ(balance().status, 200);  // still serving
  EXPECT_EQ(http_request(stack.port, "GET", "/admin/v1/ledger/verify", "", admin).status, 200);
  ASSERT_EQ(http_request(stack.port, "POST", base + "/credits",
                         R"({"amount_usd":"2","kind":"promo","expires_at":"2099-01-01T00:00:00Z","idempotency_key":"k3"})",
                         admin)
                .status,
            200);
  EXPECT_EQ(http_request(stack.port, "POST", "/admin/v1/accounts/acct_999/credits",
                         R"({"amount_usd":"1","kind":"paid","idempotency_key":"k4"})", admin)
                .status,
            404);
  // Refunds return unused paid credit only: more than that is 402, naming what is there.
  const auto too_much = http_request(stack.port, "POST", base + "/refunds",
                                     R"({"amount_usd":"13","idempotency_key":"r1"})", admin);
  EXPECT_EQ(too_much.status, 402) << too_much.body;
  EXPECT_NE(too_much.body.find("12.500000001"), std::string::npos) << too_much.body;
  // The refusal is that key's result: after a top-up the same call is refused again (it
  // never moves money its first call did not), and other values under it are 409.
  ASSERT_EQ(http_request(stack.port, "POST", base + "/credits",
                         R"({"amount_usd":"1","kind":"paid","idempotency_key":"top-up"})", admin)
                .status,
            200);
  const auto replayed = http_request(stack.port, "POST", base + "/refunds",
                                     R"({"amount_usd":"13","idempotency_key":"r1"})", admin);
  EXPECT_EQ(replayed.status, 402) << replayed.body;
  EXPECT_EQ(replayed.body, too_much.body);
  EXPECT_EQ(http_request(stack.port, "POST", base + "/refunds",
                         R"({"amount_usd":"1","idempotency_key":"r1"})", admin)
                .status,
            409);
  const auto taken_back = http_request(stack.port, "POST", base + "/refunds",
                                       R"({"amount_usd":"1","idempotency_key":"r0"})", admin);
  ASSERT_EQ(taken_back.status, 200) << taken_back.body;
  const auto refunded = http_request(stack.port, "POST", base + "/refunds",
                                     R"({"amount_usd":"0.000000001","idempotency_key":"r2"})", admin);
  EXPECT_EQ(refunded.status, 200) << refunded.body;
  EXPECT_NE(refunded.body.find(R"("paid_usd":"12.50")"), std::string::npos) << refunded.body;
  EXPECT_EQ(http_request(stack.port, "POST", base + "/refunds",
                         R"({"amount_usd":"0.000000001","idempotency_key":"r2"})", admin)
                .body,
            refunded.body);
  // The customer sees the same through its own key.
  const std::string key = [&] {
    const auto k = http_request(stack.port, "POST", base + "/keys", "{}", admin);
    simdjson::dom::parser kp;
    return std::string(kp.parse(k.body)["key"].get_string().value());
  }();
  const auto own = http_request(stack.port, "GET", "/api/balance", "",
                                {{"authorization", "Bearer " + key}});
  EXPECT_EQ(own.status, 200);
  EXPECT_NE(own.body.find(R"("account":")" + id + "\""), std::string::npos) << own.body;
  EXPECT_NE(own.body.find(R"("paid_usd":"12.50")"), std::string::npos) << own.body;
  EXPECT_EQ(http_request(stack.port, "GET", "/api/balance").status, 401);
  const std::string before = balance().body;
  EXPECT_NE(before.find(R"("promo_usd":"2.00")"), std::string::npos) << before;
  EXPECT_NE(before.find(R"("available_usd":"34.50")"), std::string::npos) << before;

  // Everything survives a restart, the books balance, and keys still work.
  ASSERT_TRUE(stack.restart_gateway()) << stack.gateway->log();
  EXPECT_EQ(balance().body, before);
  const auto verify = http_request(stack.port, "GET", "/admin/v1/ledger/verify", "", admin);
  EXPECT_EQ(verify.status, 200);
  EXPECT_NE(verify.body.find(R"("ok":true)"), std::string::npos) << verify.body;
  EXPECT_NE(verify.body.find(R"("imbalance_usd":"0.00")"), std::string::npos) << verify.body;
  EXPECT_EQ(http_request(stack.port, "POST", "/v1/chat/completions",
                         R"({"model":"gpt-test","messages":[]})", stack.auth())
                .status,
            200);
  // The CLI reads the same store and agrees, while the gateway runs.
  Process verify_cli(bin("turnpike"), {"ledger", "verify", "--data-dir", stack.dir.path() + "/var"});
  EXPECT_EQ(verify_cli.wait_exit(std::chrono::seconds(10)), std::optional<int>(0));
  EXPECT_NE(verify_cli.log().find(R"("ok":true)"), std::string::npos) << verify_cli.log();
  // A replay after the restart still answers the first result.
  EXPECT_EQ(http_request(stack.port, "POST", base + "/credits",
                         R"({"amount_usd":"12.5","kind":"paid","idempotency_key":"k1"})", admin)
                .body,
            first.body);
}

// A stream's headers have first_byte_timeout_ms to come; a whole answer's, which come with
// its end, answer_timeout_ms.
TEST(GatewayTimeouts, UpstreamFirstByteTimeoutIs504) {
  Stack stack("upstream: { first_byte_timeout_ms: 300, answer_timeout_ms: 1500 }");
  ASSERT_GT(stack.port, 0) << stack.gateway->log();
  const auto late = http_request(stack.port, "POST", "/v1/chat/completions",
                                 R"({"model":"gpt-test","messages":[],"sim":{"latency_ms":3000}})",
                                 stack.auth());
  EXPECT_EQ(late.status, 504) << late.body;
  EXPECT_NE(late.body.find("timeout_error"), std::string::npos);
  const std::string slow = R"({"model":"gpt-test","messages":[],"sim":{"latency_ms":800})";
  EXPECT_EQ(http_request(stack.port, "POST", "/v1/chat/completions", slow + "}", stack.auth())
                .status,
            200);
  const auto stream = http_request(stack.port, "POST", "/v1/chat/completions",
                                   slow + R"(,"stream":true})", stack.auth());
  EXPECT_EQ(stream.status, 504) << stream.body;
}

TEST(GatewayUpstream, StalePooledConnectionIsRetriedTransparently) {
  Stack stack;
  ASSERT_GT(stack.port, 0);
  const std::string body = R"({"model":"gpt-test","messages":[]})";
  ASSERT_EQ(http_request(stack.port, "POST", "/v1/chat/completions", body, stack.auth()).status, 200);
  // Restart the upstream on the same port: every pooled connection is now dead.
  stack.sim.reset();
  stack.sim = std::make_unique<Process>(
      bin("turnpike-sim"), std::vector<std::string>{"--listen", "127.0.0.1:" + std::to_string(stack.sim_port),
                                                    "--api-key", "sk-provider-secret", "--threads", "2"});
  ASSERT_EQ(stack.sim->wait_listening(), stack.sim_port);
  for (int i = 0; i < 4; ++i) {
    const auto res = http_request(stack.port, "POST", "/v1/chat/completions", body, stack.auth());
    EXPECT_EQ(res.status, 200) << res.body;
  }
}

// Client disconnects mid-stream: billing_test.cc (the upstream is read on for its usage,
// or cancelled when billing.disconnect_drain_ms is 0).

// An account created with a model allowlist has it from the start, and keeps it across a
// restart: it is stored in the same write as the account.
TEST(GatewayConfig, AnAccountsAllowlistIsStoredWithIt) {
  Stack stack;
  ASSERT_GT(stack.port, 0);
  const std::map<std::string, std::string> admin = {{"authorization", std::string("Bearer ") + kAdminKey}};
  const auto created = http_request(stack.port, "POST", "/admin/v1/accounts",
                                    R"({"name":"narrow","models":["gpt-test"]})", admin);
  ASSERT_EQ(created.status, 201) << created.body;
  EXPECT_NE(created.body.find(R"("models":["gpt-test"])"), std::string::npos) << created.body;
  ASSERT_TRUE(stack.restart_gateway());
  const auto stored = http_request(stack.port, "GET", "/admin/v1/accounts/acct_2", {}, admin);
  EXPECT_NE(stored.body.find(R"("models":["gpt-test"])"), std::string::npos) << stored.body;
}

// `redis:` is accepted ahead of the limits that will use it; until then start-up says so,
// without the URL (it may carry a password).
TEST(GatewayConfig, AnUnusedRedisIsNamedAtStartUp) {
  Stack stack("redis: \"redis://:s3cret@127.0.0.1:6379\"");
  ASSERT_GT(stack.port, 0);
  const std::string log = stack.gateway->log();
  EXPECT_NE(log.find("redis is configured but not used yet"), std::string::npos) << log;
  EXPECT_EQ(log.find("s3cret"), std::string::npos) << log;
}

}  // namespace
}  // namespace tp::test
