// Routing by composite score across three upstreams of different prices and latencies.
#include <gtest/gtest.h>

#include <csignal>
#include <fstream>
#include <functional>
#include <iterator>
#include <sstream>
#include <thread>

#include "core/money.h"
#include "integration/harness.h"

namespace tp::test {
namespace {

using namespace std::chrono_literals;

// How many requests a turnpike-sim has received.
int received(int sim_port) {
  const std::string body = http_request(sim_port, "GET", "/sim/requests").body;
  const std::size_t at = body.find("\"count\":");
  return at == std::string::npos ? -1 : std::stoi(body.substr(at + 8));
}

// Where each row of a GET /api/usage answer begins.
std::vector<std::size_t> usage_rows(const std::string& usage) {
  std::vector<std::size_t> rows;
  for (std::size_t at = usage.find("\"request_id\""); at != std::string::npos;
       at = usage.find("\"request_id\"", at + 1)) {
    rows.push_back(at);
  }
  return rows;
}

struct ThreeUpstreams {
  TempDir dir;
  std::vector<std::unique_ptr<Process>> sims;
  std::vector<int> ports;
  std::unique_ptr<Process> gateway;
  int port = 0;
  std::string key;

  explicit ThreeUpstreams(const std::string& routing = "") {
    // cheap: slow and cheapest; fast: quick and dearest; mid: in between.
    for (const char* latency : {"80", "0", "40"}) {
      sims.push_back(std::make_unique<Process>(
          bin("turnpike-sim"), std::vector<std::string>{"--listen", "127.0.0.1:0", "--latency-ms",
                                                        latency}));
      ports.push_back(sims.back()->wait_listening());
    }
    // A fourth that answers every request with 500, and a fifth that does so after 300 ms.
    sims.push_back(std::make_unique<Process>(
        bin("turnpike-sim"),
        std::vector<std::string>{"--listen", "127.0.0.1:0", "--error-rate", "1"}));
    ports.push_back(sims.back()->wait_listening());
    sims.push_back(std::make_unique<Process>(
        bin("turnpike-sim"), std::vector<std::string>{"--listen", "127.0.0.1:0", "--error-rate",
                                                      "1", "--latency-ms", "300"}));
    ports.push_back(sims.back()->wait_listening());
    std::ostringstream y;
    y << "listen: \"127.0.0.1:0\"\n" << routing << "\nproviders:\n";
    const char* names[] = {"cheap", "fast", "mid"};
    const char* tiers[] = {"community", "cloud", "confidential"};
    for (int i = 0; i < 3; ++i) {
      y << "  - { name: " << names[i] << ", api: openai, privacy_tier: " << tiers[i]
        << ", base_url: \"http://127.0.0.1:" << ports[i] << "/v1\" }\n";
    }
    y << "  - { name: erring, api: openai, base_url: \"http://127.0.0.1:" << ports[3] << "/v1\" }\n"
      << "  - { name: dead, api: openai, base_url: \"http://127.0.0.1:1/v1\" }\n"
      << "  - { name: slowfail, api: openai, base_url: \"http://127.0.0.1:" << ports[4] << "/v1\" }\n"
      << "  - { name: anthro, api: anthropic, base_url: \"http://127.0.0.1:" << ports[1] << "/v1\" }\n";
    y << "models:\n  - name: multi\n    quality: 0.8\n    routes:\n"
      << "      - { provider: cheap, input_per_mtok: \"0.10\", output_per_mtok: \"0.40\", "
         "ttfb_ms: 80, tokens_per_second: 1000 }\n"
      << "      - { provider: fast, input_per_mtok: \"1.00\", output_per_mtok: \"4.00\", "
         "ttfb_ms: 1, tokens_per_second: 1000 }\n"
      << "      - { provider: mid, input_per_mtok: \"0.30\", output_per_mtok: \"1.20\", "
         "ttfb_ms: 40, tokens_per_second: 1000 }\n"
      << "  - name: measured\n    routes:\n"
      << "      - { provider: cheap, input_per_mtok: \"1\", output_per_mtok: \"1\", ttfb_ms: 1, "
         "tokens_per_second: 1000 }\n"
      << "      - { provider: fast, input_per_mtok: \"1\", output_per_mtok: \"1\", ttfb_ms: 5, "
         "tokens_per_second: 1000 }\n"
      << "  - name: resilient\n    routes:\n"
      << "      - { provider: dead, input_per_mtok: \"0.01\", output_per_mtok: \"0.01\" }\n"
      << "      - { provider: erring, input_per_mtok: \"0.02\", output_per_mtok: \"0.02\" }\n"
      << "      - { provider: fast, input_per_mtok: \"0.30\", output_per_mtok: \"0.30\" }\n"
      << "  - name: tiny\n    context_tokens: 10\n    routes:\n"
      << "      - { provider: fast, input_per_mtok: \"1\", output_per_mtok: \"1\" }\n"
      << "  - name: patient\n    routes:\n"
      << "      - { provider: slowfail, input_per_mtok: \"0.01\", output_per_mtok: \"0.01\" }\n"
      << "      - { provider: fast, input_per_mtok: \"1\", output_per_mtok: \"1\" }\n"
      << "  - name: wary\n    routes:\n"
      << "      - { provider: slowfail, input_per_mtok: \"0.01\", output_per_mtok: \"0.01\" }\n"
      << "      - { provider: erring, input_per_mtok: \"0.02\", output_per_mtok: \"0.02\" }\n"
      << "      - { provider: fast, input_per_mtok: \"1\", output_per_mtok: \"1\" }\n"
      << "  - name: lonely\n    routes:\n"
      << "      - { provider: erring, input_per_mtok: \"1\", output_per_mtok: \"1\" }\n"
      << "  - name: open-only\n    routes:\n"
      << "      - { provider: cheap, input_per_mtok: \"0.10\", output_per_mtok: \"0.40\" }\n"
      // The best of all, but only the Anthropic API serves it.
      << "  - name: sonnet\n    quality: 0.99\n    routes:\n"
      << "      - { provider: anthro, input_per_mtok: \"0.01\", output_per_mtok: \"0.01\" }\n"
      // The best and cheapest of all, but it answers embeddings only.
      << "  - name: embedder\n    kind: embeddings\n    quality: 0.95\n    routes:\n"
      << "      - { provider: cheap, input_per_mtok: \"0.01\", output_per_mtok: \"0\" }\n";
    const std::string config = dir.write("turnpike.yaml", y.str());
    gateway = start_gateway(dir, config);
    port = gateway->wait_listening();
    if (port > 0) key = create_key(port);
  }

  // Whether GET /admin/v1/routes has `provider` up (the probes' mark) on `model`'s route.
  bool provider_up(const std::string& model, const std::string& provider) const {
    const auto routes = http_request(port, "GET", "/admin/v1/routes", {},
                                     {{"authorization", std::string("Bearer ") + kAdminKey}});
    return route_entry(routes.body, model, provider).find(R"("provider_up":true)") !=
           std::string::npos;
  }

  HttpResponse chat(const std::string& preference, const std::string& tier_header = "",
                    const std::string& body_extra = "", const std::string& model = "multi") {
    std::map<std::string, std::string> headers = {{"authorization", "Bearer " + key}};
    if (!preference.empty()) headers["x-turnpike-route-preference"] = preference;
    if (!tier_header.empty()) headers["x-turnpike-privacy-tier"] = tier_header;
    return http_request(port, "POST", "/v1/chat/completions",
                        R"({"model":")" + model + R"(","max_tokens":50,)" + body_extra +
                            R"("messages":[{"role":"user","content":"hi"}]})",
                        headers);
  }
};

TEST(Router, CheapestWinsUnderCostPreferenceAndFastestUnderLatency) {
  ThreeUpstreams up;
  ASSERT_GT(up.port, 0) << up.gateway->log();
  for (int i = 0; i < 5; ++i) {
    const auto res = up.chat("cost");
    ASSERT_EQ(res.status, 200) << res.body;
    EXPECT_EQ(res.header("x-turnpike-provider"), "cheap");
    EXPECT_TRUE(res.header("x-turnpike-route").starts_with("cheap/multi; score="))
        << res.header("x-turnpike-route");
  }
  EXPECT_EQ(received(up.ports[0]), 5);  // asserted on the upstreams, not only on headers
  for (int i = 0; i < 5; ++i) {
    const auto res = up.chat("latency");
    ASSERT_EQ(res.status, 200) << res.body;
    EXPECT_EQ(res.header("x-turnpike-provider"), "fast");
  }
  EXPECT_EQ(received(up.ports[1]), 5);
  EXPECT_EQ(received(up.ports[2]), 0);
  EXPECT_EQ(up.chat("fastest").status, 400);
}

TEST(Router, AConfidentialRequestNeverLeavesConfidentialProviders) {
  ThreeUpstreams up;
  ASSERT_GT(up.port, 0) << up.gateway->log();
  // Cost would pick the community route; the tier rules it out, and cloud too.
  for (int i = 0; i < 4; ++i) {
    const auto res = i % 2 == 0 ? up.chat("cost", "confidential")
                                : up.chat("cost", "", R"("privacy_tier":"confidential",)");
    ASSERT_EQ(res.status, 200) << res.body;
    EXPECT_EQ(res.header("x-turnpike-provider"), "mid");
  }
  // cloud admits confidential and cloud providers, never community.
  const auto cloud = up.chat("cost", "cloud");
  ASSERT_EQ(cloud.status, 200);
  EXPECT_EQ(cloud.header("x-turnpike-provider"), "mid");  // the cheaper of the two
  EXPECT_EQ(up.chat("latency", "cloud").header("x-turnpike-provider"), "fast");
  // The tighter of body and header wins: a header cannot loosen the body.
  EXPECT_EQ(up.chat("latency", "community", R"("privacy_tier":"confidential",)")
                .header("x-turnpike-provider"),
            "mid");
  // No route at the tier: 403 naming it, never a silent downgrade.
  const auto refused = up.chat("", "cloud", "", "open-only");
  EXPECT_EQ(refused.status, 403);
  EXPECT_NE(refused.body.find("privacy_tier_not_met"), std::string::npos) << refused.body;
  EXPECT_NE(refused.body.find("'cloud'"), std::string::npos) << refused.body;
  // The tier header comes once: of two, the stricter must never be the one dropped, so
  // neither is taken. An empty one is refused like any bad value.
  RawConnection twice(up.port);
  const std::string chat = R"({"model":"multi","messages":[]})";
  ASSERT_TRUE(twice.send("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                         up.key + "\r\nx-turnpike-privacy-tier: community\r\n"
                         "X-Turnpike-Privacy-Tier: confidential\r\nContent-Type: application/json"
                         "\r\nContent-Length: " + std::to_string(chat.size()) + "\r\n\r\n" + chat));
  const std::string answer = twice.read_until("}}", 5s);
  EXPECT_TRUE(answer.starts_with("HTTP/1.1 400")) << answer;
  EXPECT_NE(answer.find("x-turnpike-privacy-tier appears more than once"), std::string::npos)
      << answer;
  for (const char* header : {"x-turnpike-privacy-tier", "x-turnpike-route-preference",
                             "x-turnpike-start-within"}) {
    const auto empty =
        http_request(up.port, "POST", "/v1/chat/completions", chat,
                     {{"authorization", "Bearer " + up.key}, {header, ""}});
    EXPECT_EQ(empty.status, 400) << header << ": " << empty.body;
  }
  // On the upstreams themselves: the community one saw nothing at all.
  EXPECT_EQ(received(up.ports[0]), 0);
  EXPECT_EQ(received(up.ports[1]), 1);
  EXPECT_EQ(received(up.ports[2]), 6);
}

TEST(Router, MeasuredLatencyReplacesTheConfiguredGuess) {
  ThreeUpstreams up;
  ASSERT_GT(up.port, 0) << up.gateway->log();
  // The config claims `cheap` answers in 1 ms; it takes 80. One stream teaches the router.
  const std::string stream = R"("stream":true,)";
  const auto first = up.chat("latency", "", stream, "measured");
  ASSERT_EQ(first.status, 200);
  EXPECT_EQ(first.header("x-turnpike-provider"), "cheap");
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(up.chat("latency", "", stream, "measured").header("x-turnpike-provider"), "fast");
  }
}

TEST(Router, FallsBackPastARefusedConnectionAndA500) {
  ThreeUpstreams up;
  ASSERT_GT(up.port, 0) << up.gateway->log();
  // By cost: dead (refuses connections), then erring (500), then fast, which serves.
  for (const std::string extra : {"", R"("stream":true,)"}) {
    const auto res = up.chat("cost", "", extra, "resilient");
    ASSERT_EQ(res.status, 200) << res.body;
    EXPECT_EQ(res.header("x-turnpike-provider"), "fast");
    EXPECT_EQ(res.header("x-turnpike-fallbacks"), "2");
    EXPECT_TRUE(res.header("x-turnpike-route").starts_with("fast/resilient"));
    // Each failed attempt's warning names the request, so an operator can tie it to one.
    const std::string log = up.gateway->log();
    for (const std::string msg : {"upstream failed", "upstream refused; falling back"}) {
      EXPECT_NE(log.find(R"("msg":")" + msg + R"(","request_id":")" + res.header("x-request-id")),
                std::string::npos)
          << msg << "\n"
          << log;
    }
  }
  EXPECT_EQ(received(up.ports[3]), 2);  // erring was tried each time
  EXPECT_EQ(received(up.ports[1]), 2);
  // Usage and cost belong to the route that served.
  const auto usage = http_request(up.port, "GET", "/api/usage", {},
                                  {{"authorization", "Bearer " + up.key}});
  ASSERT_EQ(usage.status, 200);
  EXPECT_EQ(usage.body.find("\"provider\":\"dead\""), std::string::npos) << usage.body;
  EXPECT_NE(usage.body.find("\"provider\":\"fast\""), std::string::npos) << usage.body;
  // A route that serves at once reports no fallback.
  EXPECT_EQ(up.chat("cost").header("x-turnpike-fallbacks"), "0");
}

TEST(Router, FallsBackWhenAnUpstreamIsKilledMidRun) {
  ThreeUpstreams up("routing: { probe_interval_ms: 0 }");
  ASSERT_GT(up.port, 0) << up.gateway->log();
  // A pooled connection to `cheap` exists after this request.
  for (const std::string extra : {"", R"("stream":true,)"}) {
    ASSERT_EQ(up.chat("cost", "", extra).header("x-turnpike-provider"), "cheap");
  }
  up.sims[0].reset();  // killed between requests; nothing has probed it since
  for (const std::string extra : {"", R"("stream":true,)"}) {
    const auto res = up.chat("cost", "", extra);
    ASSERT_EQ(res.status, 200) << res.body;
    EXPECT_EQ(res.header("x-turnpike-provider"), "mid");
    EXPECT_EQ(res.header("x-turnpike-fallbacks"), "1");
  }
  // The client saw one response each; usage belongs to the route that served.
  const auto usage = http_request(up.port, "GET", "/api/usage", {},
                                  {{"authorization", "Bearer " + up.key}});
  EXPECT_EQ(usage_rows(usage.body).size(), 4u) << usage.body;
  EXPECT_EQ(usage.body.find(R"("provider":"cheap","node":null,"input_tokens":0)"),
            std::string::npos);
}

TEST(Router, ExplainShowsEveryCandidateAndMatchesTheRealPick) {
  ThreeUpstreams up;
  ASSERT_GT(up.port, 0) << up.gateway->log();
  const std::string body =
      R"({"model":"multi","max_tokens":50,"privacy_tier":"cloud","messages":[{"role":"user","content":"hi"}]})";
  for (const std::string preference : {"cost", "latency", "quality"}) {
    const std::map<std::string, std::string> headers = {
        {"authorization", "Bearer " + up.key}, {"x-turnpike-route-preference", preference}};
    const auto explained = http_request(up.port, "POST", "/v1/route/explain", body, headers);
    ASSERT_EQ(explained.status, 200) << explained.body;
    const auto real = http_request(up.port, "POST", "/v1/chat/completions", body, headers);
    ASSERT_EQ(real.status, 200) << real.body;
    const std::string pick =
        R"("pick":{"model":"multi","provider":")" + real.header("x-turnpike-provider") + "\"";
    EXPECT_NE(explained.body.find(pick), std::string::npos)
        << preference << ": " << explained.body;
    // Every route is listed with its verdict; the community one is excluded by the tier.
    EXPECT_NE(explained.body.find(
                  R"("verdict":"excluded: provider tier 'community' is looser than the required 'cloud'")"),
              std::string::npos)
        << explained.body;
    EXPECT_NE(explained.body.find(R"("terms":{"quality":)"), std::string::npos);
    EXPECT_NE(explained.body.find(R"("privacy_tier_from":"request")"), std::string::npos)
        << explained.body;
  }
  // Without a tier in the request or a policy, the configured default applies and says so.
  const auto by_default = http_request(up.port, "POST", "/v1/route/explain",
                                       R"({"model":"multi"})",
                                       {{"authorization", "Bearer " + up.key}});
  ASSERT_EQ(by_default.status, 200) << by_default.body;
  EXPECT_NE(by_default.body.find(R"("privacy_tier_from":"default")"), std::string::npos)
      << by_default.body;
  // Nothing went upstream for the explanations: only the three real requests did.
  EXPECT_EQ(received(up.ports[0]) + received(up.ports[1]) + received(up.ports[2]), 3);
  EXPECT_EQ(http_request(up.port, "POST", "/v1/route/explain", R"({"model":"nope"})",
                         {{"authorization", "Bearer " + up.key}})
                .status,
            404);
  EXPECT_EQ(http_request(up.port, "POST", "/v1/route/explain", R"({"model":"multi"})").status,
            401);
}

// Whatever the real request would be refused for, explain is refused for too, with the same
// status and code: it never shows a pick for a request that could not be served.
TEST(Router, ExplainRefusesWhatTheRealRequestRefuses) {
  ThreeUpstreams up("routing: { auto_quality_floor: 0.9 }");
  ASSERT_GT(up.port, 0) << up.gateway->log();
  const std::string narrow = create_key(up.port, R"({"models":["measured"]})");
  const std::string messages = R"("messages":[{"role":"user","content":"hi"}])";
  const std::string long_messages =
      R"("messages":[{"role":"user","content":")" + std::string(200, 'x') + R"("}])";
  struct Case {
    std::string key;
    std::string body;
    int status;
    std::string code;
  };
  const std::vector<Case> cases = {
      {up.key, "{" + messages + "}", 400, ""},                                  // no model
      {up.key, R"({"model":"tiny",)" + long_messages + "}", 400, "context_length_exceeded"},
      {narrow, R"({"model":"multi",)" + messages + "}", 403, "model_not_allowed"},
      {up.key, R"({"model":"auto",)" + messages + "}", 403, "no_model_available"},
      {up.key, R"({"model":"nope",)" + messages + "}", 404, "model_not_found"},
      {up.key, R"({"model":"embedder",)" + messages + "}", 400, "model_not_supported"},
  };
  for (const Case& c : cases) {
    const std::map<std::string, std::string> auth = {{"authorization", "Bearer " + c.key}};
    const auto real = http_request(up.port, "POST", "/v1/chat/completions", c.body, auth);
    const auto explained = http_request(up.port, "POST", "/v1/route/explain", c.body, auth);
    EXPECT_EQ(real.status, c.status) << c.body << ": " << real.body;
    EXPECT_EQ(explained.status, c.status) << c.body << ": " << explained.body;
    EXPECT_EQ(explained.body, real.body) << c.body;  // the same error, word for word
    if (!c.code.empty()) {
      EXPECT_NE(explained.body.find("\"code\":\"" + c.code + "\""), std::string::npos)
          << explained.body;
    }
  }
  // The key may use `measured`: explained and served alike.
  const std::map<std::string, std::string> auth = {{"authorization", "Bearer " + narrow}};
  const std::string body = R"({"model":"measured",)" + messages + "}";
  EXPECT_EQ(http_request(up.port, "POST", "/v1/route/explain", body, auth).status, 200);
  EXPECT_EQ(http_request(up.port, "POST", "/v1/chat/completions", body, auth).status, 200);
}

TEST(Router, BreakerOpensAfterRepeatedFailuresAndProbesAfterTheCooldown) {
  ThreeUpstreams up("routing: { breaker_failures: 3, breaker_cooldown_ms: 400 }");
  ASSERT_GT(up.port, 0) << up.gateway->log();
  // `resilient` by cost: dead, erring, fast. Three failures open dead's and erring's
  // breakers; from then on fast serves at once.
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(up.chat("cost", "", "", "resilient").header("x-turnpike-fallbacks"), "2");
  }
  const int erring_before = received(up.ports[3]);
  EXPECT_EQ(erring_before, 3);
  for (int i = 0; i < 3; ++i) {
    const auto res = up.chat("cost", "", "", "resilient");
    ASSERT_EQ(res.status, 200);
    EXPECT_EQ(res.header("x-turnpike-fallbacks"), "0");
    EXPECT_EQ(res.header("x-turnpike-provider"), "fast");
  }
  EXPECT_EQ(received(up.ports[3]), erring_before);  // left alone while open
  // Explain says why.
  const auto explained = http_request(up.port, "POST", "/v1/route/explain",
                                      R"({"model":"resilient"})",
                                      {{"authorization", "Bearer " + up.key}});
  EXPECT_NE(explained.body.find("circuit open after 3 failures in a row"), std::string::npos)
      << explained.body;
  // After the cooldown both are probed again, fail again, and reopen.
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(up.chat("cost", "", "", "resilient").header("x-turnpike-fallbacks"), "2");
  EXPECT_EQ(received(up.ports[3]), erring_before + 1);
  EXPECT_EQ(up.chat("cost", "", "", "resilient").header("x-turnpike-fallbacks"), "0");
  const std::string log = up.gateway->log();
  EXPECT_NE(log.find("route circuit reopened: its probe failed"), std::string::npos) << log;
}

TEST(Router, AnOpenBreakerClosesWhenTheRouteAnswersAgain) {
  ThreeUpstreams up(
      "routing: { probe_interval_ms: 0, breaker_failures: 2, breaker_cooldown_ms: 300 }");
  ASSERT_GT(up.port, 0) << up.gateway->log();
  const int cheap_port = up.ports[0];
  up.sims[0].reset();
  for (int i = 0; i < 2; ++i) {
    const auto res = up.chat("cost");
    ASSERT_EQ(res.status, 200) << res.body;
    EXPECT_EQ(res.header("x-turnpike-fallbacks"), "1");  // cheap refused, mid served
  }
  EXPECT_EQ(up.chat("cost").header("x-turnpike-fallbacks"), "0");  // cheap rests
  up.sims[0] = std::make_unique<Process>(
      bin("turnpike-sim"),
      std::vector<std::string>{"--listen", "127.0.0.1:" + std::to_string(cheap_port)});
  ASSERT_EQ(up.sims[0]->wait_listening(), cheap_port);
  std::this_thread::sleep_for(400ms);  // past the cooldown: the next request probes cheap
  const auto back = up.chat("cost");
  ASSERT_EQ(back.status, 200) << back.body;
  EXPECT_EQ(back.header("x-turnpike-provider"), "cheap");
  EXPECT_EQ(up.chat("cost").header("x-turnpike-provider"), "cheap");  // closed, not half-open
  const std::string log = up.gateway->log();
  EXPECT_NE(log.find("route circuit opened"), std::string::npos) << log;
  EXPECT_NE(log.find("route circuit closed"), std::string::npos) << log;
}

// A route whose circuit opens while a request waits on an earlier one is skipped when the
// request falls back, as a new request would skip it.
TEST(Router, AFallbackSkipsARouteWhoseCircuitOpenedMeanwhile) {
  ThreeUpstreams up(
      "routing:\n  breaker_failures: 1\n  breaker_cooldown_ms: 60000\n  rules:\n"
      "    - { name: no-slow, match: { key_tag: hurried }, exclude: [slowfail] }");
  ASSERT_GT(up.port, 0) << up.gateway->log();
  const std::string hurried = create_key(up.port, R"({"tags":["hurried"]})");
  // `wary` by cost: slowfail (a 500 after 300 ms), erring, fast.
  HttpResponse waited;
  std::thread waiting([&] { waited = up.chat("cost", "", "", "wary"); });
  std::this_thread::sleep_for(100ms);
  // Meanwhile a key whose requests skip slowfail goes to wary's erring route first: it
  // fails, and that route's circuit opens.
  const auto other = http_request(up.port, "POST", "/v1/chat/completions",
                                  R"({"model":"wary","messages":[]})",
                                  {{"authorization", "Bearer " + hurried},
                                   {"x-turnpike-route-preference", "cost"}});
  ASSERT_EQ(other.status, 200) << other.body;
  EXPECT_EQ(other.header("x-turnpike-fallbacks"), "1");
  waiting.join();
  ASSERT_EQ(waited.status, 200) << waited.body;
  EXPECT_EQ(waited.header("x-turnpike-provider"), "fast");
  EXPECT_EQ(waited.header("x-turnpike-fallbacks"), "1");  // slowfail failed; erring skipped
  EXPECT_EQ(received(up.ports[3]), 1) << up.gateway->log();  // the other request's only
}

// When every route after a refusing one would be skipped, the refusal is the answer (502),
// not lost with nothing in its place.
TEST(Router, ARefusalStandsWhenEveryRouteAfterItWouldBeSkipped) {
  ThreeUpstreams up("routing: { probe_interval_ms: 100, probe_failures: 1 }");
  ASSERT_GT(up.port, 0) << up.gateway->log();
  // `wary` by cost: slowfail (a 500 after 300 ms), erring (500), then fast, whose server
  // goes away while slowfail is still thinking: the probes mark it down before its turn.
  HttpResponse answered;
  std::thread asking([&] { answered = up.chat("cost", "", "", "wary"); });
  std::this_thread::sleep_for(30ms);
  up.sims[1].reset();
  asking.join();
  EXPECT_EQ(answered.status, 502) << answered.body << up.gateway->log();
  EXPECT_NE(answered.body.find("answered HTTP 500"), std::string::npos) << answered.body;
  EXPECT_EQ(http_request(up.port, "GET", "/healthz").status, 200);  // still serving
}

TEST(Router, AModelWhoseOnlyRouteRestsIs503) {
  ThreeUpstreams up("routing: { breaker_failures: 2, breaker_cooldown_ms: 60000 }");
  ASSERT_GT(up.port, 0) << up.gateway->log();
  const std::string body = R"({"model":"lonely","messages":[]})";
  const std::map<std::string, std::string> auth = {{"authorization", "Bearer " + up.key}};
  EXPECT_EQ(http_request(up.port, "POST", "/v1/chat/completions", body, auth).status, 502);
  EXPECT_EQ(http_request(up.port, "POST", "/v1/chat/completions", body, auth).status, 502);
  const auto resting = http_request(up.port, "POST", "/v1/chat/completions", body, auth);
  EXPECT_EQ(resting.status, 503);
  EXPECT_NE(resting.body.find("no_healthy_route"), std::string::npos) << resting.body;
  // Retry-After: when the circuit lets a probe through, about a minute from now.
  const std::string header = resting.header("retry-after");
  const int retry_after = header.empty() ? 0 : std::stoi(header);
  EXPECT_GE(retry_after, 55) << header;
  EXPECT_LE(retry_after, 60);
}

TEST(Router, ARequestLongerThanTheModelsContextIs400) {
  ThreeUpstreams up;
  ASSERT_GT(up.port, 0) << up.gateway->log();
  const std::map<std::string, std::string> auth = {{"authorization", "Bearer " + up.key}};
  EXPECT_EQ(http_request(up.port, "POST", "/v1/chat/completions", R"({"model":"tiny"})", auth)
                .status,
            200);
  const std::string long_body =
      R"({"model":"tiny","messages":[{"role":"user","content":")" + std::string(200, 'x') +
      R"("}]})";
  const auto refused = http_request(up.port, "POST", "/v1/chat/completions", long_body, auth);
  EXPECT_EQ(refused.status, 400);
  EXPECT_NE(refused.body.find("context_length_exceeded"), std::string::npos) << refused.body;
  EXPECT_NE(refused.body.find("takes at most 10"), std::string::npos) << refused.body;
  EXPECT_EQ(received(up.ports[1]), 1);  // only the short one went upstream
}

// Without max_tokens, "auto" compares models at one output: each model's own bound would
// make one with a small max_output_tokens look cheap whatever its prices.
TEST(Router, AutoComparesModelsAtOneOutput) {
  Process sim(bin("turnpike-sim"), std::vector<std::string>{"--listen", "127.0.0.1:0"});
  const int sim_port = sim.wait_listening();
  std::ostringstream y;
  y << "listen: \"127.0.0.1:0\"\nproviders:\n"
    << "  - { name: p, base_url: \"http://127.0.0.1:" << sim_port << "/v1\" }\n"
    << "models:\n"
    << "  - name: big-cheap\n    quality: 0.7\n    max_output_tokens: 16384\n    routes:\n"
    << "      - { provider: p, input_per_mtok: \"1\", output_per_mtok: \"1\" }\n"
    << "  - name: small-dear\n    quality: 0.7\n    max_output_tokens: 1000\n    routes:\n"
    << "      - { provider: p, input_per_mtok: \"10\", output_per_mtok: \"10\" }\n";
  const TestGateway gw(y.str());
  ASSERT_GT(gw.port, 0) << gw.log();
  const int port = gw.port;
  const auto headers = gw.auth({{"x-turnpike-route-preference", "cost"}});
  for (const std::string body : {R"({"model":"auto","messages":[]})",
                                 R"({"model":"auto","max_tokens":100,"messages":[]})"}) {
    const auto res = http_request(port, "POST", "/v1/chat/completions", body, headers);
    ASSERT_EQ(res.status, 200) << res.body;
    EXPECT_EQ(res.header("x-turnpike-model"), "big-cheap") << body;
    const auto explained = http_request(port, "POST", "/v1/route/explain", body, headers);
    EXPECT_NE(explained.body.find(R"("pick":{"model":"big-cheap")"), std::string::npos)
        << explained.body;
  }
}

// ... and that output is the smallest among the models left with a route: one the request may
// not use (here a community provider's, for a confidential request) cut every candidate's
// output to its own small bound, and so changed which model was cheapest.
TEST(Router, AutoScoresAtTheOutputOfTheModelsItMayUse) {
  Process sim(bin("turnpike-sim"), std::vector<std::string>{"--listen", "127.0.0.1:0"});
  const int sim_port = sim.wait_listening();
  const std::string url = "http://127.0.0.1:" + std::to_string(sim_port) + "/v1";
  std::ostringstream y;
  y << "listen: \"127.0.0.1:0\"\nproviders:\n"
    << "  - { name: vault, base_url: \"" << url << "\", privacy_tier: confidential }\n"
    << "  - { name: open, base_url: \"" << url << "\", privacy_tier: community }\n"
    << "models:\n"
    << "  - name: dear-in\n    quality: 0.8\n    routes:\n"
    << "      - { provider: vault, input_per_mtok: \"100\", output_per_mtok: \"1\" }\n"
    << "  - name: dear-out\n    quality: 0.8\n    routes:\n"
    << "      - { provider: vault, input_per_mtok: \"0.1\", output_per_mtok: \"3\" }\n"
    << "  - name: tiny\n    quality: 0.8\n    max_output_tokens: 50\n    routes:\n"
    << "      - { provider: open, input_per_mtok: \"1\", output_per_mtok: \"1\" }\n";
  const TestGateway gw(y.str());
  ASSERT_GT(gw.port, 0) << gw.log();
  const auto headers = gw.auth({{"x-turnpike-route-preference", "cost"}});
  // At 4096 output tokens (the confidential models' bound) dear-in is the cheaper; at 50
  // (tiny's) dear-out would be.
  const std::string body =
      R"({"model":"auto","privacy_tier":"confidential","messages":[{"role":"user","content":"hi"}]})";
  const auto res = http_request(gw.port, "POST", "/v1/chat/completions", body, headers);
  ASSERT_EQ(res.status, 200) << res.body;
  EXPECT_EQ(res.header("x-turnpike-model"), "dear-in");
  const auto explained = http_request(gw.port, "POST", "/v1/route/explain", body, headers);
  EXPECT_NE(explained.body.find(R"("output_tokens":4096)"), std::string::npos) << explained.body;
  EXPECT_NE(explained.body.find(R"("pick":{"model":"dear-in")"), std::string::npos)
      << explained.body;
}

// The time to first byte that model `m`'s one route learned from one whole answer of 16
// tokens, from a turnpike-sim started with `sim_args`, the route seeded with `seeds`
// (`ttfb_ms: …, tokens_per_second: …`); -1 when explain says it was not measured.
double ttfb_after_a_whole_answer(const std::vector<std::string>& sim_args,
                                 const std::string& seeds) {
  std::vector<std::string> args = {"--listen", "127.0.0.1:0"};
  args.insert(args.end(), sim_args.begin(), sim_args.end());
  Process sim(bin("turnpike-sim"), args);
  const int sim_port = sim.wait_listening();
  std::ostringstream y;
  y << "listen: \"127.0.0.1:0\"\nproviders:\n"
    << "  - { name: p, base_url: \"http://127.0.0.1:" << sim_port << "/v1\" }\n"
    << "models:\n  - name: m\n    routes:\n"
    << "      - { provider: p, input_per_mtok: \"1\", output_per_mtok: \"1\", " << seeds << " }\n";
  const TestGateway gw(y.str());
  EXPECT_GT(gw.port, 0) << gw.log();
  const auto headers = gw.auth();
  const std::string body = R"({"model":"m","max_tokens":16,"messages":[]})";
  EXPECT_EQ(http_request(gw.port, "POST", "/v1/chat/completions", body, headers).status, 200);
  const auto explained = http_request(gw.port, "POST", "/v1/route/explain", body, headers);
  const std::size_t at = explained.body.find(R"("ttfb_ms":)");
  if (explained.body.find(R"("measured":true)") == std::string::npos || at == std::string::npos) {
    ADD_FAILURE() << "not measured: " << explained.body;
    return -1;
  }
  return std::stod(explained.body.substr(at + 10));
}

// A whole answer's head comes with its end; its time to first byte is still learned, as
// the whole less its output at the route's speed: a slow route does not keep a fast seed.
TEST(Router, WholeAnswersTeachTheRouteItsTimeToFirstByte) {
  // 300 ms and more, less 16 tokens at 1000 a second.
  EXPECT_GE(
      ttfb_after_a_whole_answer({"--latency-ms", "300"}, "ttfb_ms: 1, tokens_per_second: 1000"),
      250);
}

// ...and a whole answer quicker than its output at the route's speed teaches 0, not nothing:
// a route once slow, or seeded slow, is not kept at that estimate however fast it answers.
TEST(Router, AWholeAnswerQuickerThanItsOutputTeachesATimeToFirstByteOfZero) {
  // Well under a second, less 16 tokens at 10 a second: nothing is left.
  EXPECT_EQ(ttfb_after_a_whole_answer({}, "ttfb_ms: 1000, tokens_per_second: 10"), 0);
}

// A stream the upstream breaks after its head counts against the route's health, as a
// failure before the head does: a provider that accepts and then cuts every stream is not
// healthy.
TEST(Router, AStreamBrokenAfterItsHeadIsARouteFailure) {
  Process sim(bin("turnpike-sim"), std::vector<std::string>{"--listen", "127.0.0.1:0"});
  const int sim_port = sim.wait_listening();
  std::ostringstream y;
  y << "listen: \"127.0.0.1:0\"\nproviders:\n"
    << "  - { name: p, base_url: \"http://127.0.0.1:" << sim_port << "/v1\" }\n"
    << "models:\n  - name: m\n    routes:\n"
    << "      - { provider: p, input_per_mtok: \"1\", output_per_mtok: \"1\" }\n";
  const TestGateway gw(y.str());
  ASSERT_GT(gw.port, 0) << gw.log();
  const int port = gw.port;
  const auto headers = gw.auth();
  for (const std::string sim_knob : {R"("drop_after_chunks":2)", R"("end_after_chunks":2)"}) {
    // The head went out before the break; the body is cut (no complete answer).
    const auto res = http_request(
        port, "POST", "/v1/chat/completions",
        R"({"model":"m","stream":true,"messages":[],"sim":{)" + sim_knob + "}}", headers);
    EXPECT_EQ(res.body.find("[DONE]"), std::string::npos) << res.body;
  }
  ASSERT_EQ(http_request(port, "POST", "/v1/chat/completions",
                         R"({"model":"m","stream":true,"messages":[]})", headers)
                .status,
            200);
  const auto routes = http_request(port, "GET", "/admin/v1/routes", {},
                                   {{"authorization", std::string("Bearer ") + kAdminKey}});
  EXPECT_NE(route_entry(routes.body, "m", "p").find(R"("errors":2)"), std::string::npos)
      << routes.body;
}

TEST(Router, AutoChoosesAmongEveryModelTheKeyMayUse) {
  ThreeUpstreams up("routing: { auto_quality_floor: 0.7 }");
  ASSERT_GT(up.port, 0) << up.gateway->log();
  // Only `multi` (quality 0.8) reaches the floor of 0.7; the others (0.5) are left out.
  const std::string body =
      R"({"model":"auto","max_tokens":20,"messages":[{"role":"user","content":"hi"}]})";
  const std::map<std::string, std::string> cost = {{"authorization", "Bearer " + up.key},
                                                   {"x-turnpike-route-preference", "cost"}};
  const auto explained = http_request(up.port, "POST", "/v1/route/explain", body, cost);
  ASSERT_EQ(explained.status, 200) << explained.body;
  EXPECT_EQ(explained.body.find(R"("model":"open-only")"), std::string::npos) << explained.body;
  EXPECT_EQ(explained.body.find(R"("model":"resilient")"), std::string::npos);
  EXPECT_EQ(explained.body.find(R"("model":"embedder")"), std::string::npos);  // not a chat model
  EXPECT_EQ(explained.body.find(R"("model":"sonnet")"), std::string::npos);  // not on this API
  EXPECT_NE(explained.body.find(R"("model":"multi")"), std::string::npos);
  const auto res = http_request(up.port, "POST", "/v1/chat/completions", body, cost);
  ASSERT_EQ(res.status, 200) << res.body;
  // Usage is logged under the model that served, never "auto".
  const auto usage = http_request(up.port, "GET", "/api/usage", {},
                                  {{"authorization", "Bearer " + up.key}});
  EXPECT_EQ(usage.body.find(R"("model":"auto")"), std::string::npos) << usage.body;
  EXPECT_NE(usage.body.find(R"("model":")"), std::string::npos) << usage.body;
  // A key limited to one model gets that one from "auto".
  const std::string limited = create_key(up.port, R"({"models":["multi"]})");
  const auto only = http_request(up.port, "POST", "/v1/chat/completions", body,
                                 {{"authorization", "Bearer " + limited},
                                  {"x-turnpike-route-preference", "cost"}});
  ASSERT_EQ(only.status, 200) << only.body;
  EXPECT_TRUE(only.header("x-turnpike-route").find("/multi;") != std::string::npos)
      << only.header("x-turnpike-route");
  EXPECT_EQ(only.header("x-turnpike-model"), "multi");
  // Even with one model to choose from, explain names the model "auto" chose.
  const auto explained_one =
      http_request(up.port, "POST", "/v1/route/explain", body,
                   {{"authorization", "Bearer " + limited}, {"x-turnpike-route-preference", "cost"}});
  ASSERT_EQ(explained_one.status, 200) << explained_one.body;
  EXPECT_NE(explained_one.body.find(R"({"model":"multi","provider")"), std::string::npos)
      << explained_one.body;
  // Embeddings with "auto" choose among the embeddings models alone.
  const auto embedded = http_request(up.port, "POST", "/v1/embeddings",
                                     R"({"model":"auto","input":"hello"})", cost);
  ASSERT_EQ(embedded.status, 200) << embedded.body;
  EXPECT_TRUE(embedded.header("x-turnpike-route").starts_with("cheap/embedder"))
      << embedded.header("x-turnpike-route");
  // Refused, the answer names the model the client asked for: "auto".
  const auto strict = http_request(up.port, "POST", "/v1/embeddings",
                                   R"({"model":"auto","input":"hello"})",
                                   {{"authorization", "Bearer " + up.key},
                                    {"x-turnpike-privacy-tier", "confidential"}});
  EXPECT_EQ(strict.status, 403) << strict.body;
  EXPECT_NE(strict.body.find("no route for model 'auto'"), std::string::npos) << strict.body;
}

TEST(Router, FallbackStopsAtItsDeadline) {
  // By cost, `patient` tries slowfail first: a 500 after 300 ms.
  ThreeUpstreams in_time;
  ASSERT_GT(in_time.port, 0) << in_time.gateway->log();
  const auto served = in_time.chat("cost", "", "", "patient");
  ASSERT_EQ(served.status, 200) << served.body;
  EXPECT_EQ(served.header("x-turnpike-fallbacks"), "1");

  ThreeUpstreams hurried("routing: { fallback_deadline_ms: 200 }");
  ASSERT_GT(hurried.port, 0) << hurried.gateway->log();
  const auto late = hurried.chat("cost", "", "", "patient");
  EXPECT_EQ(late.status, 504) << late.body;
  // What failed, then why nothing else was tried.
  EXPECT_NE(late.body.find("upstream 'slowfail' answered HTTP 500; no further route was tried: "
                           "routing.fallback_deadline_ms (200 ms) had passed"),
            std::string::npos)
      << late.body;
  EXPECT_EQ(received(hurried.ports[1]), 0);  // the second route was never tried
}

// When no route serves, the error says how each one tried failed, not only the last, and
// counts the fallbacks as a served answer's header does.
TEST(Router, WhenEveryRouteFailsTheErrorNamesEachAttempt) {
  Process erring(bin("turnpike-sim"),
                 std::vector<std::string>{"--listen", "127.0.0.1:0", "--error-rate", "1"});
  const int erring_port = erring.wait_listening();
  std::ostringstream y;
  y << "listen: \"127.0.0.1:0\"\nproviders:\n"
    << "  - { name: dead1, base_url: \"http://127.0.0.1:1/v1\" }\n"
    << "  - { name: dead2, base_url: \"http://127.0.0.1:2/v1\" }\n"
    << "  - { name: erring, base_url: \"http://127.0.0.1:" << erring_port << "/v1\" }\n"
    << "models:\n"
    << "  - name: gone\n    routes:\n"
    << "      - { provider: dead1, input_per_mtok: \"0.01\", output_per_mtok: \"0.01\" }\n"
    << "      - { provider: dead2, input_per_mtok: \"0.02\", output_per_mtok: \"0.02\" }\n"
    << "  - name: broken\n    routes:\n"
    << "      - { provider: dead1, input_per_mtok: \"0.01\", output_per_mtok: \"0.01\" }\n"
    << "      - { provider: erring, input_per_mtok: \"0.02\", output_per_mtok: \"0.02\" }\n";
  const TestGateway gw(y.str());
  ASSERT_GT(gw.port, 0) << gw.log();
  const int port = gw.port;
  const auto headers = gw.auth({{"x-turnpike-route-preference", "cost"}});
  // Both refuse the connection: no answer stands.
  const auto gone = http_request(port, "POST", "/v1/chat/completions",
                                 R"({"model":"gone","messages":[]})", headers);
  EXPECT_EQ(gone.status, 502) << gone.body;
  EXPECT_NE(gone.body.find("2 routes tried, none served: upstream 'dead1' connect"),
            std::string::npos)
      << gone.body;
  EXPECT_NE(gone.body.find("; upstream 'dead2' connect"), std::string::npos) << gone.body;
  EXPECT_EQ(gone.header("x-turnpike-fallbacks"), "1");
  // The last answers 500: its answer stands, after the first's failure.
  const auto broken = http_request(port, "POST", "/v1/chat/completions",
                                   R"({"model":"broken","messages":[]})", headers);
  EXPECT_EQ(broken.status, 502) << broken.body;
  EXPECT_NE(broken.body.find("2 routes tried, none served: upstream 'dead1' connect"),
            std::string::npos)
      << broken.body;
  EXPECT_NE(broken.body.find("; upstream 'erring' answered HTTP 500"), std::string::npos)
      << broken.body;
  EXPECT_EQ(broken.header("x-turnpike-fallbacks"), "1");
}

// A model that reasons before it answers may send nothing for a long while after its head:
// the first event may take as long as a whole answer may (answer_timeout_ms), not only the
// idle timeout between events.
TEST(Router, AStreamsFirstEventMayComeAfterTheIdleTimeout) {
  Process sim(bin("turnpike-sim"), std::vector<std::string>{"--listen", "127.0.0.1:0"});
  const int sim_port = sim.wait_listening();
  std::ostringstream y;
  y << "listen: \"127.0.0.1:0\"\n"
    << "upstream: { idle_timeout_ms: 300, answer_timeout_ms: 2000 }\nproviders:\n"
    << "  - { name: p, base_url: \"http://127.0.0.1:" << sim_port << "/v1\" }\n"
    << "models:\n  - name: m\n    routes:\n"
    << "      - { provider: p, input_per_mtok: \"1\", output_per_mtok: \"1\" }\n";
  const TestGateway gw(y.str());
  ASSERT_GT(gw.port, 0) << gw.log();
  // Silent for 800 ms after its head: past the idle timeout, within the answer timeout.
  const auto thought = http_request(
      gw.port, "POST", "/v1/chat/completions",
      R"({"model":"m","stream":true,"messages":[],"sim":{"ttft_ms":800,"output_tokens":3}})",
      gw.auth());
  EXPECT_EQ(thought.status, 200) << thought.body;
  EXPECT_TRUE(thought.body.ends_with("data: [DONE]\n\n")) << thought.body;
  // Past the answer timeout, it is cut as a whole answer would be.
  const auto stalled = http_request(
      gw.port, "POST", "/v1/chat/completions",
      R"({"model":"m","stream":true,"messages":[],"sim":{"ttft_ms":3000,"output_tokens":3}})",
      gw.auth());
  EXPECT_EQ(stalled.status, 502) << stalled.body;
  EXPECT_NE(stalled.body.find("failed its stream before the first event"), std::string::npos)
      << stalled.body;
}

// The deadline bounds the fallback: an attempt starts before it, and a stream's attempt
// gets only the time left for its head, not the upstream's full first-byte timeout. A whole
// answer's attempt, whose head comes with its end, has its whole answer timeout once
// connected.
TEST(Router, AFallbackAttemptEndsAtTheDeadline) {
  Process erring(bin("turnpike-sim"),
                 std::vector<std::string>{"--listen", "127.0.0.1:0", "--error-rate", "1"});
  Process slow(bin("turnpike-sim"),
               std::vector<std::string>{"--listen", "127.0.0.1:0", "--latency-ms", "3000"});
  Process patient(bin("turnpike-sim"),
                  std::vector<std::string>{"--listen", "127.0.0.1:0", "--latency-ms", "700"});
  const int erring_port = erring.wait_listening();
  const int slow_port = slow.wait_listening();
  const int patient_port = patient.wait_listening();
  // The deadline cuts the wait for a stream's head, whichever of it and the route's own
  // timeouts is shorter than the other (a connect timeout below the deadline included).
  for (const std::string upstream : {"", "upstream: { connect_timeout_ms: 100 }\n"}) {
    TempDir dir;
    std::ostringstream y;
    y << "listen: \"127.0.0.1:0\"\nrouting: { fallback_deadline_ms: 300 }\n" << upstream
      << "providers:\n"
      << "  - { name: erring, api: openai, base_url: \"http://127.0.0.1:" << erring_port
      << "/v1\" }\n"
      << "  - { name: slow, api: openai, base_url: \"http://127.0.0.1:" << slow_port << "/v1\" }\n"
      << "  - { name: patient, api: openai, base_url: \"http://127.0.0.1:" << patient_port
      << "/v1\" }\n"
      << "models:\n  - name: m\n    routes:\n"
      << "      - { provider: erring, input_per_mtok: \"0.01\", output_per_mtok: \"0.01\" }\n"
      << "      - { provider: slow, input_per_mtok: \"1\", output_per_mtok: \"1\" }\n"
      << "  - name: w\n    routes:\n"
      << "      - { provider: erring, input_per_mtok: \"0.01\", output_per_mtok: \"0.01\" }\n"
      << "      - { provider: patient, input_per_mtok: \"1\", output_per_mtok: \"1\" }\n";
    Process gateway(bin("turnpike"),
                    std::vector<std::string>{"serve", "--config", dir.write("t.yaml", y.str()),
                                             "--threads", "1", "--data-dir", dir.path() + "/var"},
                    std::map<std::string, std::string>{{"TURNPIKE_ADMIN_KEY", kAdminKey}});
    const int port = gateway.wait_listening();
    ASSERT_GT(port, 0) << gateway.log();
    const std::string key = create_key(port);
    const std::map<std::string, std::string> headers = {
        {"authorization", "Bearer " + key}, {"x-turnpike-route-preference", "cost"}};
    const int slow_before = received(slow_port);
    // erring answers 500 at once; slow would start its stream after 3 s, past the 300 ms
    // deadline.
    const std::string stream = R"({"model":"m","max_tokens":20,"stream":true,"messages":[]})";
    for (int i = 0; i < 2; ++i) {
      const auto res = http_request(port, "POST", "/v1/chat/completions", stream, headers);
      EXPECT_EQ(res.status, 504) << upstream << res.body;
      EXPECT_NE(res.body.find("fallback_deadline_ms"), std::string::npos) << res.body;
    }
    EXPECT_EQ(received(slow_port), slow_before + 2);  // it was tried, and cut off
    // The usage rows name the route that failed last.
    const auto usage =
        http_request(port, "GET", "/api/usage", {}, {{"authorization", "Bearer " + key}});
    EXPECT_NE(usage.body.find(R"("provider":"slow")"), std::string::npos) << usage.body;
    EXPECT_NE(usage.body.find(R"("status":504)"), std::string::npos) << usage.body;
    // Being cut off by the deadline is no mark against the slow route's health.
    const auto routes = http_request(port, "GET", "/admin/v1/routes", {},
                                     {{"authorization", std::string("Bearer ") + kAdminKey}});
    const std::string slow_entry = route_entry(routes.body, "m", "slow");
    EXPECT_NE(slow_entry.find(R"("errors":0)"), std::string::npos) << upstream << routes.body;

    // A whole answer that ends 700 ms after the first attempt began, past the deadline.
    const auto whole = http_request(port, "POST", "/v1/chat/completions",
                                    R"({"model":"w","max_tokens":20,"messages":[]})", headers);
    EXPECT_EQ(whole.status, 200) << upstream << whole.body;
    EXPECT_EQ(whole.header("x-turnpike-fallbacks"), "1");
  }
}

TEST(Router, RouteStatsCountAttemptsFailuresFallbacksAndLatency) {
  ThreeUpstreams up("routing: { breaker_failures: 2, breaker_cooldown_ms: 60000 }");
  ASSERT_GT(up.port, 0) << up.gateway->log();
  // `resilient` by cost: dead refuses, erring answers 500, fast serves. Twice, the second a
  // stream; after that both failing routes rest and fast serves alone.
  for (const std::string extra : {"", R"("stream":true,)", ""}) {
    ASSERT_EQ(up.chat("cost", "", extra, "resilient").status, 200);
  }
  const std::map<std::string, std::string> admin = {{"authorization", std::string("Bearer ") + kAdminKey}};
  const auto res = http_request(up.port, "GET", "/admin/v1/routes", {}, admin);
  ASSERT_EQ(res.status, 200) << res.body;
  EXPECT_NE(res.body.find(R"("threads":1)"), std::string::npos) << res.body;
  const std::string dead = route_entry(res.body, "resilient", "dead");
  EXPECT_NE(dead.find(R"("attempts":2,"served":0,"errors":2,"rate_limited":0,"fallbacks":2)"),
            std::string::npos)
      << dead;
  EXPECT_NE(dead.find(R"("latency_ms":null)"), std::string::npos) << dead;
  const std::string fast = route_entry(res.body, "resilient", "fast");
  EXPECT_NE(fast.find(R"("attempts":3,"served":3,"errors":0,"rate_limited":0,"fallbacks":0)"),
            std::string::npos)
      << fast;
  EXPECT_NE(fast.find(R"("latency_ms":{"p50":)"), std::string::npos) << fast;
  EXPECT_NE(fast.find(R"("ttfb_ms":{"p50":)"), std::string::npos) << fast;  // from the stream
  EXPECT_NE(fast.find(R"("tokens_per_second":)"), std::string::npos) << fast;
  // Both failing routes have their circuits open now.
  const std::size_t dead_at = res.body.find(R"("provider":"dead")");
  EXPECT_NE(res.body.find(R"("circuit_open_on_threads":1)", dead_at), std::string::npos)
      << res.body;
  // The same counts in Prometheus' text format, open to scrapers (no customer data).
  const auto metrics = http_request(up.port, "GET", "/metrics");
  ASSERT_EQ(metrics.status, 200);
  EXPECT_TRUE(metrics.header("content-type").starts_with("text/plain")) << metrics.header("content-type");
  EXPECT_NE(metrics.body.find(
                R"(turnpike_route_attempts_total{model="resilient",provider="fast",upstream_model="resilient"} 3)"),
            std::string::npos)
      << metrics.body;
  EXPECT_NE(metrics.body.find(
                R"(turnpike_route_errors_total{model="resilient",provider="dead",upstream_model="resilient"} 2)"),
            std::string::npos);
  EXPECT_NE(metrics.body.find(
                R"(turnpike_route_latency_seconds_count{model="resilient",provider="fast",upstream_model="resilient"} 3)"),
            std::string::npos);
  EXPECT_NE(metrics.body.find("# TYPE turnpike_route_latency_seconds histogram"), std::string::npos);
  // The histogram has its sum too, in seconds.
  const std::string sum_key =
      R"(turnpike_route_latency_seconds_sum{model="resilient",provider="fast",upstream_model="resilient"} )";
  const std::size_t sum_at = metrics.body.find(sum_key);
  ASSERT_NE(sum_at, std::string::npos) << metrics.body;
  EXPECT_GT(std::stod(metrics.body.substr(sum_at + sum_key.size())), 0.0);
  EXPECT_NE(metrics.body.find(R"(turnpike_provider_up{provider="fast"} 1)"), std::string::npos);
  EXPECT_NE(metrics.body.find("turnpike_billing_frozen 0"), std::string::npos);
  // The store writer's group commits: every settled request was a piece of one.
  const auto counter = [&](const std::string& name) -> long {
    const std::size_t at = metrics.body.find("\n" + name + " ");
    return at == std::string::npos ? -1 : std::stol(metrics.body.substr(at + name.size() + 2));
  };
  EXPECT_GE(counter("turnpike_store_pieces_total"), 3) << metrics.body;
  EXPECT_GE(counter("turnpike_store_commits_total"), 1) << metrics.body;
  EXPECT_LE(counter("turnpike_store_commits_total"), counter("turnpike_store_pieces_total"));
  // The log holds at least those commits' pages; none of the checkpoints is due yet.
  EXPECT_GT(counter("turnpike_store_log_pages"), 0) << metrics.body;
  EXPECT_NE(metrics.body.find("turnpike_store_checkpoints_total{by=\"background\"} 0"),
            std::string::npos);
  EXPECT_NE(metrics.body.find("turnpike_store_checkpoints_total{by=\"writer\"} 0"),
            std::string::npos);
  EXPECT_EQ(counter("turnpike_store_writer_checkpoint_pages_total"), 0);
  EXPECT_EQ(counter("turnpike_store_log_restarts_total"), 0);
  // Unrequested routes are listed, with nothing seen.
  EXPECT_NE(route_entry(res.body, "lonely", "erring").find(R"("attempts":0)"), std::string::npos);
  // Admin only.
  EXPECT_EQ(http_request(up.port, "GET", "/admin/v1/routes", {},
                         {{"authorization", "Bearer " + up.key}})
                .status,
            401);
  // A stream refused with an error head measures no time to first byte: quick errors would
  // make a failing route look fast.
  const auto refused = http_request(up.port, "POST", "/v1/chat/completions",
                                    R"({"model":"lonely","stream":true,"messages":[]})",
                                    {{"authorization", "Bearer " + up.key}});
  EXPECT_EQ(refused.status, 502) << refused.body;
  const auto after = http_request(up.port, "GET", "/admin/v1/routes", {},
                                  {{"authorization", std::string("Bearer ") + kAdminKey}});
  const std::string erring = route_entry(after.body, "lonely", "erring");
  EXPECT_NE(erring.find(R"("attempts":1)"), std::string::npos) << erring;
  EXPECT_NE(erring.find(R"("ttfb_ms":null)"), std::string::npos) << erring;
}

TEST(Router, BackgroundProbesSkipADownProviderAndBringItBack) {
  ThreeUpstreams up("routing: { probe_interval_ms: 100, probe_failures: 2 }");
  ASSERT_GT(up.port, 0) << up.gateway->log();
  auto wait_for = [&](const std::function<bool()>& done) {
    for (int i = 0; i < 100 && !done(); ++i) std::this_thread::sleep_for(50ms);
    return done();
  };
  auto cheap_up = [&] { return up.provider_up("multi", "cheap"); };
  EXPECT_EQ(up.chat("cost").header("x-turnpike-provider"), "cheap");
  // Kill `cheap`: the probes mark it down before any request has to fail on it.
  const int cheap_port = up.ports[0];
  up.sims[0].reset();
  ASSERT_TRUE(wait_for([&] { return !cheap_up(); })) << up.gateway->log();
  const auto res = up.chat("cost");
  ASSERT_EQ(res.status, 200) << res.body;
  EXPECT_EQ(res.header("x-turnpike-provider"), "mid");
  EXPECT_EQ(res.header("x-turnpike-fallbacks"), "0");  // skipped, not tried
  const auto explained = http_request(up.port, "POST", "/v1/route/explain",
                                      R"({"model":"multi"})",
                                      {{"authorization", "Bearer " + up.key}});
  EXPECT_NE(explained.body.find("provider 'cheap' failed its last"), std::string::npos)
      << explained.body;
  // A model that only `cheap` serves rests until the next probe (at least a second).
  const auto resting = up.chat("", "", "", "open-only");
  EXPECT_EQ(resting.status, 503) << resting.body;
  EXPECT_NE(resting.body.find(R"("code":"no_healthy_route")"), std::string::npos) << resting.body;
  EXPECT_EQ(resting.header("retry-after"), "1");
  // Bring it back on the same port: the next probe that answers lets it serve again.
  up.sims[0] = std::make_unique<Process>(
      bin("turnpike-sim"),
      std::vector<std::string>{"--listen", "127.0.0.1:" + std::to_string(cheap_port)});
  ASSERT_EQ(up.sims[0]->wait_listening(), cheap_port);
  ASSERT_TRUE(wait_for(cheap_up)) << up.gateway->log();
  EXPECT_EQ(up.chat("cost").header("x-turnpike-provider"), "cheap");
  const std::string log = up.gateway->log();
  EXPECT_NE(log.find("provider down"), std::string::npos) << log;
  EXPECT_NE(log.find("provider up"), std::string::npos) << log;
}

TEST(Router, SighupReloadsTheCatalogWhileRequestsInFlightFinishOnTheOldOne) {
  TempDir dir;
  Process slow(bin("turnpike-sim"), {"--listen", "127.0.0.1:0", "--tokens-per-second", "20"});
  Process other(bin("turnpike-sim"), {"--listen", "127.0.0.1:0"});
  const int slow_port = slow.wait_listening();
  const int other_port = other.wait_listening();
  auto config = [&](const std::string& models) {
    return "listen: \"127.0.0.1:0\"\nproviders:\n"
           "  - { name: slow, base_url: \"http://127.0.0.1:" + std::to_string(slow_port) +
           "/v1\" }\n  - { name: other, base_url: \"http://127.0.0.1:" +
           std::to_string(other_port) + "/v1\" }\nmodels:\n" + models;
  };
  const std::string path = dir.write(
      "turnpike.yaml",
      config("  - { name: multi, routes: [{ provider: slow, input_per_mtok: \"1\", "
             "output_per_mtok: \"1\" }] }\n"));
  Process gateway(bin("turnpike"),
                  {"serve", "--config", path, "--threads", "2", "--data-dir", dir.path() + "/var"},
                  {{"TURNPIKE_ADMIN_KEY", kAdminKey}});
  const int port = gateway.wait_listening();
  ASSERT_GT(port, 0) << gateway.log();
  const std::string key = create_key(port);
  const std::map<std::string, std::string> auth = {{"authorization", "Bearer " + key}};
  auto wait_for_log = [&](const std::string& text, std::size_t times) {
    for (int i = 0; i < 200; ++i) {
      std::size_t n = 0;
      const std::string log = gateway.log();
      for (std::size_t at = log.find(text); at != std::string::npos; at = log.find(text, at + 1)) {
        ++n;
      }
      if (n >= times) return true;
      std::this_thread::sleep_for(25ms);
    }
    return false;
  };

  // A stream of 20 tokens at 20 per second runs across the reload.
  HttpResponse in_flight;
  std::thread streaming([&] {
    in_flight = http_request(port, "POST", "/v1/chat/completions",
                             R"({"model":"multi","max_tokens":20,"stream":true,"messages":[]})",
                             auth);
  });
  std::this_thread::sleep_for(300ms);
  dir.write("turnpike.yaml",
            config("  - { name: multi, routes: [{ provider: other, input_per_mtok: \"1\", "
                   "output_per_mtok: \"1\" }] }\n"
                   "  - { name: fresh, routes: [{ provider: other, input_per_mtok: \"1\", "
                   "output_per_mtok: \"1\" }] }\n"));
  gateway.signal(SIGHUP);
  ASSERT_TRUE(wait_for_log("config reloaded", 1)) << gateway.log();
  // New requests see the new catalog at once, on every thread.
  for (int i = 0; i < 4; ++i) {
    const auto res = http_request(port, "POST", "/v1/chat/completions",
                                  R"({"model":"multi","max_tokens":5,"messages":[]})", auth);
    ASSERT_EQ(res.status, 200) << res.body;
    EXPECT_EQ(res.header("x-turnpike-provider"), "other");
  }
  EXPECT_NE(http_request(port, "GET", "/v1/models", {}, auth).body.find(R"("id":"fresh")"),
            std::string::npos);
  streaming.join();
  // The stream that started before finished whole on the old route.
  ASSERT_EQ(in_flight.status, 200) << in_flight.body;
  EXPECT_EQ(in_flight.header("x-turnpike-provider"), "slow");
  EXPECT_NE(in_flight.body.find("data: [DONE]"), std::string::npos) << in_flight.body;

  // A broken config is refused; the running one stays.
  dir.write("turnpike.yaml",
            config("  - { name: multi, routes: [{ provider: nobody, input_per_mtok: \"1\", "
                   "output_per_mtok: \"1\" }] }\n"));
  gateway.signal(SIGHUP);
  ASSERT_TRUE(wait_for_log("config reload failed", 1)) << gateway.log();
  EXPECT_NE(gateway.log().find("no provider named 'nobody'"), std::string::npos);
  EXPECT_EQ(http_request(port, "POST", "/v1/chat/completions",
                         R"({"model":"fresh","max_tokens":5,"messages":[]})", auth)
                .status,
            200);
  // Both requests' usage rows are there, each with the provider that served it.
  const auto usage = http_request(port, "GET", "/api/usage", {}, auth);
  EXPECT_NE(usage.body.find(R"("provider":"slow")"), std::string::npos) << usage.body;
  const auto verify = http_request(port, "GET", "/admin/v1/ledger/verify", {},
                                   {{"authorization", std::string("Bearer ") + kAdminKey}});
  EXPECT_NE(verify.body.find(R"("ok":true)"), std::string::npos) << verify.body;
}

// Rewrites ThreeUpstreams' config with each `from` replaced by its `to`, then reloads it,
// waiting for the log to say `outcome` once more.
void reload_with(ThreeUpstreams& up,
                 const std::vector<std::pair<std::string, std::string>>& changes,
                 const std::string& outcome = "config reloaded") {
  const std::string path = up.dir.path() + "/turnpike.yaml";
  std::ifstream in(path);
  std::string config((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  for (const auto& [from, to] : changes) {
    const std::size_t at = config.find(from);
    ASSERT_NE(at, std::string::npos) << from;
    config.replace(at, from.size(), to);
  }
  up.dir.write("turnpike.yaml", config);
  const auto reloads = [&] {
    std::size_t n = 0;
    const std::string log = up.gateway->log();
    for (std::size_t at = log.find(outcome); at != std::string::npos;
         at = log.find(outcome, at + 1)) {
      ++n;
    }
    return n;
  };
  const std::size_t before = reloads();
  up.gateway->signal(SIGHUP);
  for (int i = 0; i < 200 && reloads() == before; ++i) std::this_thread::sleep_for(10ms);
  ASSERT_GT(reloads(), before) << up.gateway->log();
}

// A rule naming an account the store does not hold applies to nobody (a mistyped id fails
// open): start-up and each reload say so, and a reload says which changed settings wait
// for a restart.
TEST(Router, ARuleForAnAccountTheStoreDoesNotHoldIsWarnedOf) {
  ThreeUpstreams up(
      "routing: { rules: [ { name: ghost, match: { account: acct_999 }, exclude: [cheap] } ] }");
  ASSERT_GT(up.port, 0) << up.gateway->log();
  const auto count = [&](const std::string& text) {
    const std::string log = up.gateway->log();
    std::size_t n = 0;
    for (std::size_t at = log.find(text); at != std::string::npos; at = log.find(text, at + 1)) {
      ++n;
    }
    return n;
  };
  const std::string unknown = "which does not exist: it applies to no request until";
  EXPECT_EQ(count("routing rule 'ghost' matches account acct_999, " + unknown), 1u)
      << up.gateway->log();
  // The key's account exists: a rule naming it is not warned of.
  reload_with(up, {{"acct_999", "acct_1"},
                   {"listen: \"127.0.0.1:0\"",
                    "listen: \"127.0.0.1:0\"\nthreads: 3\n"
                    "limits: { body_bytes_max: 2048 }"}});
  EXPECT_EQ(count(unknown), 1u) << up.gateway->log();
  // (The log line follows the reloaded one.)
  for (int i = 0; i < 100 && count("keep their start-up values until a restart") == 0; ++i) {
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_EQ(count(R"("settings":"threads, limits")"), 1u) << up.gateway->log();
  reload_with(up, {{"acct_1", "acct_998"}});
  for (int i = 0; i < 100 && count(unknown) < 2; ++i) std::this_thread::sleep_for(20ms);
  EXPECT_EQ(count("routing rule 'ghost' matches account acct_998, " + unknown), 1u)
      << up.gateway->log();
}

// A reload keeps what each I/O thread learnt of an upstream that stays the same (its
// circuit, latency averages and statistics), whatever else changed; a route to an upstream
// that moved starts afresh.
TEST(Router, AReloadKeepsWhatItKnewOfTheSameUpstreams) {
  ThreeUpstreams up(
      "routing: { probe_interval_ms: 0, breaker_failures: 2, breaker_cooldown_ms: 60000 }");
  ASSERT_GT(up.port, 0) << up.gateway->log();
  // `resilient` by cost: dead refuses, erring answers 500, fast serves. Twice: both failing
  // routes' circuits open.
  for (int i = 0; i < 2; ++i) {
    const auto res = up.chat("cost", "", "", "resilient");
    ASSERT_EQ(res.status, 200) << res.body;
    EXPECT_EQ(res.header("x-turnpike-fallbacks"), "2");
  }
  // fast's price changes; dead moves to another address, another upstream.
  ASSERT_NO_FATAL_FAILURE(reload_with(up, {{R"(provider: fast, input_per_mtok: "0.30")",
                                            R"(provider: fast, input_per_mtok: "0.31")"},
                                           {"http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1"}}));
  // erring still rests: the next request tries the moved dead, then fast.
  const int erring_before = received(up.ports[3]);
  const auto res = up.chat("cost", "", "", "resilient");
  ASSERT_EQ(res.status, 200) << res.body;
  EXPECT_EQ(res.header("x-turnpike-provider"), "fast");
  EXPECT_EQ(res.header("x-turnpike-fallbacks"), "1");
  EXPECT_EQ(received(up.ports[3]), erring_before);
  const auto routes = http_request(up.port, "GET", "/admin/v1/routes", {},
                                   {{"authorization", std::string("Bearer ") + kAdminKey}});
  const std::string erring = route_entry(routes.body, "resilient", "erring");
  EXPECT_NE(erring.find(R"("attempts":2,"served":0,"errors":2)"), std::string::npos) << erring;
  EXPECT_NE(erring.find(R"("circuit_open_on_threads":1)"), std::string::npos) << erring;
  const std::string fast = route_entry(routes.body, "resilient", "fast");
  EXPECT_NE(fast.find(R"("attempts":3,"served":3)"), std::string::npos) << fast;
  const std::string dead = route_entry(routes.body, "resilient", "dead");
  EXPECT_NE(dead.find(R"("attempts":1,"served":0,"errors":1)"), std::string::npos) << dead;
  EXPECT_NE(dead.find(R"("circuit_open_on_threads":0)"), std::string::npos) << dead;
}

// A reload refuses what check-config and a restart refuse, though the setting that fails
// (here the store) would keep its start-up value: the next restart must not find a file
// that stops it.
TEST(Router, AReloadRefusesAFileARestartWouldRefuse) {
  ThreeUpstreams up("store: \"postgres://u@127.0.0.1/db\"\nrouting: { probe_interval_ms: 0 }");
  // That store stops a start: the gateway starts on the file without it, then reloads it.
  EXPECT_EQ(up.port, 0);
  ThreeUpstreams running("routing: { probe_interval_ms: 0 }");
  ASSERT_GT(running.port, 0) << running.gateway->log();
  ASSERT_NO_FATAL_FAILURE(
      reload_with(running, {{"listen:", "store: \"postgres://u@127.0.0.1/db\"\nlisten:"}},
                  "config reload failed"));
  const std::string log = running.gateway->log();
  EXPECT_NE(log.find("only the embedded sqlite"), std::string::npos) << log;
  EXPECT_EQ(log.find("config reloaded"), std::string::npos) << log;
}

// A provider the probes marked down stays down across a reload that keeps it as it was,
// until a probe answers: it is not tried again meanwhile.
TEST(Router, AReloadKeepsTheProbesMarks) {
  ThreeUpstreams up("routing: { probe_interval_ms: 100, probe_failures: 2 }");
  ASSERT_GT(up.port, 0) << up.gateway->log();
  auto cheap_up = [&] { return up.provider_up("multi", "cheap"); };
  up.sims[0].reset();
  for (int i = 0; i < 100 && cheap_up(); ++i) std::this_thread::sleep_for(50ms);
  ASSERT_FALSE(cheap_up()) << up.gateway->log();
  ASSERT_NO_FATAL_FAILURE(reload_with(up, {{R"(provider: mid, input_per_mtok: "0.30")",
                                            R"(provider: mid, input_per_mtok: "0.31")"}}));
  EXPECT_FALSE(cheap_up());
  const auto res = up.chat("cost");
  ASSERT_EQ(res.status, 200) << res.body;
  EXPECT_EQ(res.header("x-turnpike-provider"), "mid");
  EXPECT_EQ(res.header("x-turnpike-fallbacks"), "0");  // skipped, not tried
}

// The hold timeout is reloaded with the upstream waits it must outlast: a request waiting
// within the new first-byte timeout keeps its hold (none lapses), where the old, shorter
// hold timeout would have let it lapse while the request waited for its headers.
TEST(Router, SighupReloadsTheHoldTimeoutWithTheUpstreamWaits) {
  TempDir dir;
  Process slow(bin("turnpike-sim"), {"--listen", "127.0.0.1:0", "--latency-ms", "2500"});
  const int slow_port = slow.wait_listening();
  auto config = [&](int first_byte_ms, int hold_ms) {
    return "listen: \"127.0.0.1:0\"\nrouting: { fallback_deadline_ms: 100 }\n"
           "upstream: { connect_timeout_ms: 100, idle_timeout_ms: 400, first_byte_timeout_ms: " +
           std::to_string(first_byte_ms) + ", answer_timeout_ms: " +
           std::to_string(first_byte_ms) + " }\nbilling: { hold_timeout_ms: " +
           std::to_string(hold_ms) + " }\nproviders:\n  - { name: slow, base_url: "
           "\"http://127.0.0.1:" + std::to_string(slow_port) + "/v1\" }\nmodels:\n"
           "  - { name: m, routes: [{ provider: slow, input_per_mtok: \"1\", "
           "output_per_mtok: \"1\" }] }\n";
  };
  const std::string path = dir.write("turnpike.yaml", config(500, 1000));
  Process gateway(bin("turnpike"),
                  {"serve", "--config", path, "--threads", "1", "--data-dir", dir.path() + "/var"},
                  {{"TURNPIKE_ADMIN_KEY", kAdminKey}});
  const int port = gateway.wait_listening();
  ASSERT_GT(port, 0) << gateway.log();
  const std::string key = create_key(port);
  dir.write("turnpike.yaml", config(5000, 12000));
  gateway.signal(SIGHUP);
  for (int i = 0; i < 200 && gateway.log().find("config reloaded") == std::string::npos; ++i) {
    std::this_thread::sleep_for(25ms);
  }
  ASSERT_NE(gateway.log().find("config reloaded"), std::string::npos) << gateway.log();
  const auto res = http_request(port, "POST", "/v1/chat/completions",
                                R"({"model":"m","max_tokens":5,"messages":[]})",
                                {{"authorization", "Bearer " + key}});
  ASSERT_EQ(res.status, 200) << res.body;
  EXPECT_EQ(gateway.log().find("credit expired"), std::string::npos) << gateway.log();
}

TEST(Router, ReadyzSaysNotReadyWhenEveryProviderIsDown) {
  TempDir dir;
  auto sim = std::make_unique<Process>(bin("turnpike-sim"),
                                       std::vector<std::string>{"--listen", "127.0.0.1:0"});
  const int sim_port = sim->wait_listening();
  const std::string path = dir.write(
      "turnpike.yaml", "listen: \"127.0.0.1:0\"\nrouting: { probe_interval_ms: 100 }\n"
                       "providers:\n  - { name: only, base_url: \"http://127.0.0.1:" +
                           std::to_string(sim_port) +
                           "/v1\" }\nmodels:\n  - { name: m, routes: [{ provider: only, "
                           "input_per_mtok: \"1\", output_per_mtok: \"1\" }] }\n");
  Process gateway(bin("turnpike"), {"serve", "--config", path, "--data-dir", dir.path() + "/var"},
                  {{"TURNPIKE_ADMIN_KEY", kAdminKey}});
  const int port = gateway.wait_listening();
  ASSERT_GT(port, 0) << gateway.log();
  EXPECT_EQ(http_request(port, "GET", "/readyz").status, 200);
  sim.reset();
  int status = 0;
  for (int i = 0; i < 100 && status != 503; ++i) {
    std::this_thread::sleep_for(50ms);
    status = http_request(port, "GET", "/readyz").status;
  }
  EXPECT_EQ(status, 503);
  EXPECT_NE(http_request(port, "GET", "/readyz").body.find("every provider is marked down"),
            std::string::npos);
  EXPECT_EQ(http_request(port, "GET", "/healthz").status, 200);  // alive all the same
}

// Four sims whose flex tiers behave differently: `prompt` starts flex at once, `late`
// makes flex wait 3 s before its first byte, `busy` refuses every flex request with 429,
// `none` has no flex tier for the model (400).
// Each route's flex prices are half its standard ones.
struct FlexUpstreams {
  TempDir dir;
  std::vector<std::unique_ptr<Process>> sims;
  std::vector<int> ports;
  std::unique_ptr<Process> gateway;
  int port = 0;
  std::string key;

  FlexUpstreams() {
    const std::vector<std::vector<std::string>> knobs = {
        {"--flex-ttft-ms", "0", "--flex-429-rate", "0"},
        {"--flex-ttft-ms", "3000", "--flex-429-rate", "0"},
        {"--flex-ttft-ms", "0", "--flex-429-rate", "1"},
        {"--flex-unavailable", "1"}};
    for (const auto& k : knobs) {
      std::vector<std::string> args = {"--listen", "127.0.0.1:0"};
      args.insert(args.end(), k.begin(), k.end());
      sims.push_back(std::make_unique<Process>(bin("turnpike-sim"), args));
      ports.push_back(sims.back()->wait_listening());
    }
    std::ostringstream y;
    y << "listen: \"127.0.0.1:0\"\nproviders:\n";
    const char* names[] = {"prompt", "late", "busy", "none"};
    for (int i = 0; i < 4; ++i) {
      y << "  - { name: " << names[i] << ", api: openai, base_url: \"http://127.0.0.1:"
        << ports[i] << "/v1\" }\n";
    }
    y << "models:\n";
    for (const char* name : names) {
      y << "  - name: " << name << "-model\n    routes:\n"
        << "      - { provider: " << name << ", input_per_mtok: \"2\", output_per_mtok: \"4\", "
        << "flex_input_per_mtok: \"1\", flex_output_per_mtok: \"2\" }\n";
    }
    const std::string config = dir.write("turnpike.yaml", y.str());
    gateway = start_gateway(dir, config);
    port = gateway->wait_listening();
    if (port > 0) key = create_key(port);
  }

  HttpResponse chat(const std::string& model, const std::string& start_within,
                    const std::string& body_extra = "") {
    std::map<std::string, std::string> headers = {{"authorization", "Bearer " + key}};
    if (!start_within.empty()) headers["x-turnpike-start-within"] = start_within;
    return http_request(port, "POST", "/v1/chat/completions",
                        R"({"model":")" + model + R"(","max_tokens":20,)" + body_extra +
                            R"("messages":[{"role":"user","content":"hi"}]})",
                        headers);
  }

  // The bodies the sim at `index` received, as its /sim/requests shows them.
  std::string received_bodies(int index) const {
    return http_request(ports[index], "GET", "/sim/requests").body;
  }

  std::string usage() const {
    return http_request(port, "GET", "/api/usage", {}, {{"authorization", "Bearer " + key}}).body;
  }
};

TEST(Router, AccountAndKeyPoliciesSetTheTierAndWeightsARequestMayOnlyTighten) {
  ThreeUpstreams up;
  ASSERT_GT(up.port, 0) << up.gateway->log();
  const std::map<std::string, std::string> admin = {
      {"authorization", std::string("Bearer ") + kAdminKey}};
  const auto account = http_request(up.port, "POST", "/admin/v1/accounts",
                                    R"({"name":"careful","privacy_tier":"confidential"})", admin);
  ASSERT_EQ(account.status, 201) << account.body;
  EXPECT_NE(account.body.find(R"("privacy_tier":"confidential","routing_weights":null)"),
            std::string::npos)
      << account.body;
  const std::string id = string_field(account.body, "id");
  const auto made = http_request(up.port, "POST", "/admin/v1/accounts/" + id + "/keys", "{}", admin);
  ASSERT_EQ(made.status, 201) << made.body;
  up.key = string_field(made.body, "key");
  // Cost would pick the community route; the account allows confidential providers only,
  // whatever the request asks.
  EXPECT_EQ(up.chat("cost").header("x-turnpike-provider"), "mid");
  EXPECT_EQ(up.chat("cost", "community", R"("privacy_tier":"community",)")
                .header("x-turnpike-provider"),
            "mid");
  const auto refused = up.chat("", "", "", "open-only");
  EXPECT_EQ(refused.status, 403);
  EXPECT_NE(refused.body.find("routing policy of this key or its account"), std::string::npos)
      << refused.body;
  EXPECT_EQ(received(up.ports[0]), 0);  // the community upstream never saw a request

  // The account's weights rule without a preference header: all on latency picks `fast`.
  const auto patched = http_request(
      up.port, "PATCH", "/admin/v1/accounts/" + id,
      R"({"privacy_tier":"community","routing_weights":{"quality":0,"cost":0,"latency":1}})",
      admin);
  ASSERT_EQ(patched.status, 200) << patched.body;
  EXPECT_NE(patched.body.find(R"("routing_weights":{"quality":0,"cost":0,"latency":1})"),
            std::string::npos)
      << patched.body;
  EXPECT_EQ(up.chat("").header("x-turnpike-provider"), "fast");
  const auto explained =
      http_request(up.port, "POST", "/v1/route/explain", R"({"model":"multi"})",
                   {{"authorization", "Bearer " + up.key}});
  EXPECT_NE(explained.body.find(R"("weights_from":"account")"), std::string::npos)
      << explained.body;
  // A key's own weights win over the account's; a preference header over both.
  const auto cheap_key = http_request(up.port, "POST", "/admin/v1/accounts/" + id + "/keys",
                                      R"({"routing_weights":{"quality":0,"cost":1,"latency":0},)"
                                      R"("tags":["batch"]})",
                                      admin);
  ASSERT_EQ(cheap_key.status, 201) << cheap_key.body;
  up.key = string_field(cheap_key.body, "key");
  EXPECT_EQ(up.chat("").header("x-turnpike-provider"), "cheap");
  EXPECT_EQ(up.chat("latency").header("x-turnpike-provider"), "fast");
  const auto shown = http_request(up.port, "GET", "/admin/v1/accounts/" + id, {}, admin);
  EXPECT_NE(shown.body.find(R"("tags":["batch"])"), std::string::npos) << shown.body;

  // Every bad policy is 400 naming the field; unknown accounts 404.
  for (const std::string bad :
       {R"({"privacy_tier":"secret"})", R"({"routing_weights":{"quality":2,"cost":0,"latency":0}})",
        R"({"routing_weights":{"quality":0,"cost":0,"latency":0}})",
        R"({"routing_weights":{"cost":1}})", R"({"plan":"gold"})", "[]"}) {
    const auto res = http_request(up.port, "PATCH", "/admin/v1/accounts/" + id, bad, admin);
    EXPECT_EQ(res.status, 400) << bad << ": " << res.body;
  }
  EXPECT_EQ(http_request(up.port, "POST", "/admin/v1/accounts/" + id + "/keys",
                         R"({"tags":["no spaces"]})", admin)
                .status,
            400);
  // An account allowlist binds every key of the account, "auto" included.
  const auto allowlisted = http_request(up.port, "PATCH", "/admin/v1/accounts/" + id,
                                        R"({"models":["measured"]})", admin);
  ASSERT_EQ(allowlisted.status, 200) << allowlisted.body;
  EXPECT_NE(allowlisted.body.find(R"("models":["measured"])"), std::string::npos);
  const auto barred = up.chat("");
  EXPECT_EQ(barred.status, 403) << barred.body;
  EXPECT_NE(barred.body.find("model_not_allowed"), std::string::npos) << barred.body;
  EXPECT_EQ(up.chat("", "", "", "measured").status, 200);
  EXPECT_TRUE(up.chat("", "", "", "auto").header("x-turnpike-route").find("/measured;") !=
              std::string::npos);
  EXPECT_EQ(http_request(up.port, "PATCH", "/admin/v1/accounts/" + id, R"({"models":null})",
                         admin)
                .status,
            200);
  EXPECT_EQ(up.chat("").status, 200);
  EXPECT_EQ(http_request(up.port, "PATCH", "/admin/v1/accounts/" + id, R"({"models":["a,b"]})",
                         admin)
                .status,
            400);
  // PATCHes of different fields at once both take effect: each applies to the account as it
  // is when the store runs it, not as it was when the request arrived.
  std::vector<std::thread> patchers;
  for (int i = 0; i < 8; ++i) {
    patchers.emplace_back([&, i] {
      const std::string body = i % 2 == 0 ? R"({"privacy_tier":"cloud"})"
                                          : R"({"models":["multi","measured"]})";
      EXPECT_EQ(http_request(up.port, "PATCH", "/admin/v1/accounts/" + id, body, admin).status,
                200);
    });
  }
  for (auto& t : patchers) t.join();
  const auto both = http_request(up.port, "GET", "/admin/v1/accounts/" + id, {}, admin);
  EXPECT_NE(both.body.find(R"("privacy_tier":"cloud")"), std::string::npos) << both.body;
  EXPECT_NE(both.body.find(R"("models":["multi","measured"])"), std::string::npos) << both.body;
  EXPECT_EQ(http_request(up.port, "PATCH", "/admin/v1/accounts/acct_999",
                         R"({"privacy_tier":"cloud"})", admin)
                .status,
            404);
}

TEST(Router, RoutingRulesPinExcludeReweighAndReorder) {
  ThreeUpstreams up(R"(routing:
  rules:
    - name: batch-off-community
      match: { key_tag: batch }
      exclude: [cheap]
    - name: multi-by-speed
      match: { model: "mul*" }
      weights: { quality: 0, cost: 0, latency: 1 }
    - name: measured-order
      match: { model: measured }
      fallback_order: [fast, cheap]
    - name: pinned
      match: { model: open-only }
      pin: [fast]
)");
  ASSERT_GT(up.port, 0) << up.gateway->log();
  // The rule's weights replace the config's; a preference header still wins for its request.
  EXPECT_EQ(up.chat("").header("x-turnpike-provider"), "fast");
  EXPECT_EQ(up.chat("cost").header("x-turnpike-provider"), "cheap");
  // fallback_order beats the score: `measured` costs the same on both, cost would tie-break
  // to the first listed; the rule puts fast first.
  EXPECT_EQ(up.chat("cost", "", "", "measured").header("x-turnpike-provider"), "fast");
  // A rule that leaves nothing is a 403 naming the rule.
  const auto pinned = up.chat("", "", "", "open-only");
  EXPECT_EQ(pinned.status, 403);
  EXPECT_NE(pinned.body.find("excluded_by_routing_rule"), std::string::npos) << pinned.body;
  EXPECT_NE(pinned.body.find("'pinned'"), std::string::npos) << pinned.body;
  // The first matching rule applies: a batch key loses `cheap` (and keeps the config's
  // weights, since the speed rule does not apply to it).
  const std::string batch = create_key(up.port, R"({"tags":["batch"]})");
  ASSERT_FALSE(batch.empty());
  const std::map<std::string, std::string> cost = {{"authorization", "Bearer " + batch},
                                                   {"x-turnpike-route-preference", "cost"}};
  const std::string body = R"({"model":"multi","max_tokens":50,"messages":[]})";
  const auto res = http_request(up.port, "POST", "/v1/chat/completions", body, cost);
  ASSERT_EQ(res.status, 200) << res.body;
  EXPECT_EQ(res.header("x-turnpike-provider"), "mid");
  const auto explained = http_request(up.port, "POST", "/v1/route/explain", body, cost);
  EXPECT_NE(explained.body.find(R"("rule":"batch-off-community")"), std::string::npos)
      << explained.body;
  EXPECT_NE(explained.body.find(
                R"("verdict":"excluded: routing rule 'batch-off-community' excludes provider 'cheap'")"),
            std::string::npos)
      << explained.body;
  EXPECT_NE(explained.body.find(R"("pick":{"model":"multi","provider":"mid")"), std::string::npos)
      << explained.body;
  EXPECT_EQ(received(up.ports[0]), 1);  // cheap: only the one request with a cost header
}

// "auto" cannot get around a model's rule: the pins and excludes of the rule each candidate
// model matches under its own name hold for its routes, as if the request had named it.
TEST(Router, AutoKeepsEachModelsOwnRuleExclusions) {
  ThreeUpstreams up(R"(routing:
  rules:
    - name: multi-off-community
      match: { model: multi }
      exclude: [cheap]
    - name: open-only-pinned
      match: { model: "open-*" }
      pin: [fast]
)");
  ASSERT_GT(up.port, 0) << up.gateway->log();
  // By name: multi never goes to cheap, open-only has nowhere to go.
  EXPECT_EQ(up.chat("cost").header("x-turnpike-provider"), "mid");
  const auto refused = up.chat("cost", "", "", "open-only");
  EXPECT_EQ(refused.status, 403);
  // The tier played no part: not named.
  EXPECT_NE(refused.body.find("routing rule 'open-only-pinned' leaves no route for model "
                              "'open-only'\""),
            std::string::npos)
      << refused.body;
  // Explain says the same, with no pick.
  const auto unserved =
      http_request(up.port, "POST", "/v1/route/explain",
                   R"({"model":"open-only","max_tokens":50,"messages":[]})",
                   {{"authorization", "Bearer " + up.key}});
  EXPECT_NE(unserved.body.find(R"("pick":null,"refusal":{"status":403,)"
                                R"("code":"excluded_by_routing_rule","message":"routing rule )"
                                R"('open-only-pinned' leaves no route for model 'open-only'"})"),
            std::string::npos)
      << unserved.body;
  // Through auto, at the cost preference that would otherwise pick cheap's multi route
  // (with a key kept to these three models: the fixture's others fail on purpose).
  up.key = create_key(up.port, R"({"models":["multi","open-only","measured"]})");
  for (int i = 0; i < 3; ++i) {
    const auto res = up.chat("cost", "", "", "auto");
    ASSERT_EQ(res.status, 200) << res.body;
    const std::string route = res.header("x-turnpike-route");
    EXPECT_FALSE(route.starts_with("cheap/multi")) << route;
    EXPECT_FALSE(route.starts_with("cheap/open-only")) << route;
  }
  const std::map<std::string, std::string> cost = {{"authorization", "Bearer " + up.key},
                                                   {"x-turnpike-route-preference", "cost"}};
  const auto explained = http_request(up.port, "POST", "/v1/route/explain",
                                      R"({"model":"auto","max_tokens":50,"messages":[]})", cost);
  ASSERT_EQ(explained.status, 200) << explained.body;
  EXPECT_NE(explained.body.find(
                R"("model":"multi","provider":"cheap","upstream_model":"multi","privacy_tier":"community","verdict":"excluded: routing rule 'multi-off-community' excludes provider 'cheap'")"),
            std::string::npos)
      << explained.body;
  EXPECT_NE(explained.body.find(
                R"("verdict":"excluded: routing rule 'open-only-pinned' does not pin provider 'cheap'")"),
            std::string::npos)
      << explained.body;
  // `measured` has no rule: its cheap route stays a candidate.
  EXPECT_NE(explained.body.find(
                R"("model":"measured","provider":"cheap","upstream_model":"measured","privacy_tier":"community","verdict":"candidate")"),
            std::string::npos)
      << explained.body;
}

TEST(Router, FlexThatStartsInTimeServesAtFlexPricesAndRecordsTheStandardPrice) {
  FlexUpstreams up;
  ASSERT_GT(up.port, 0) << up.gateway->log();
  for (const std::string extra : {"", R"("stream":true,)"}) {
    const auto res = up.chat("prompt-model", "00h-00m-05s", extra);
    ASSERT_EQ(res.status, 200) << res.body;
    EXPECT_EQ(res.header("x-turnpike-service-tier"), "flex");
    EXPECT_EQ(res.header("x-turnpike-fallbacks"), "0");
  }
  // The upstream was asked for its flex tier and never saw Turnpike's option.
  const std::string bodies = up.received_bodies(0);
  EXPECT_NE(bodies.find(R"("count":2)"), std::string::npos) << bodies;
  EXPECT_NE(bodies.find(R"("service_tier":"flex")"), std::string::npos) << bodies;
  EXPECT_EQ(bodies.find("start_within"), std::string::npos) << bodies;
  // Charged at flex prices (half the standard ones here), the standard price beside it.
  const std::string usage = up.usage();
  for (const std::size_t at : usage_rows(usage)) {
    EXPECT_EQ(string_field(usage, "service_tier", at), "flex") << usage;
    const Money cost = Money::parse(string_field(usage, "cost_usd", at)).value();
    const Money standard = Money::parse(string_field(usage, "standard_cost_usd", at)).value();
    EXPECT_GT(cost, Money());
    EXPECT_EQ(standard, cost + cost) << usage;
  }
  // Without start_within (or with a standard value) nothing asks for flex.
  for (const std::string start : {"", "auto", "default", "priority"}) {
    const auto res = up.chat("prompt-model", start);
    ASSERT_EQ(res.status, 200) << res.body;
    EXPECT_EQ(res.header("x-turnpike-service-tier"), "");
  }
  EXPECT_NE(up.received_bodies(0).find(R"("count":6)"), std::string::npos);
  const std::string later = up.usage();
  EXPECT_NE(later.find(R"("service_tier":"standard")"), std::string::npos) << later;
}

// A flex attempt the provider says it served at another tier ("default") is billed and
// recorded at standard prices: charged flex, the customer paid less than the operator and
// the row claimed a saving never made.
TEST(Router, AFlexAttemptServedAtTheDefaultTierIsBilledAsStandard) {
  FlexUpstreams up;
  ASSERT_GT(up.port, 0) << up.gateway->log();
  for (const std::string extra : {"", R"("stream":true,)"}) {
    const auto res =
        up.chat("prompt-model", "00h-00m-05s", R"("sim":{"flex_served_default":1},)" + extra);
    ASSERT_EQ(res.status, 200) << res.body;
    // A whole answer's head goes after the report; a stream's went before it.
    if (extra.empty()) {
      EXPECT_EQ(res.header("x-turnpike-service-tier"), "standard");
    }
  }
  const std::string usage = up.usage();
  ASSERT_EQ(usage_rows(usage).size(), 2u) << usage;
  for (const std::size_t at : usage_rows(usage)) {
    EXPECT_EQ(string_field(usage, "service_tier", at), "standard") << usage;
    EXPECT_EQ(string_field(usage, "standard_cost_usd", at), string_field(usage, "cost_usd", at))
        << usage;
  }
  EXPECT_NE(up.gateway->log().find("upstream served a flex attempt at another tier"),
            std::string::npos);
}

// A whole answer's flex attempt goes upstream as a stream, so that its start is seen: an
// answer that takes longer than start_within to finish is still served by flex, whole.
TEST(Router, FlexServesAWholeAnswerThatStartsInTimeAndEndsLater) {
  FlexUpstreams up;
  ASSERT_GT(up.port, 0) << up.gateway->log();
  // 20 tokens at 10 a second: 2 s, past the 1 s window, starting at once.
  const auto res =
      up.chat("prompt-model", "00h-00m-01s", R"("sim":{"output_tokens":20,"tokens_per_second":10},)");
  ASSERT_EQ(res.status, 200) << res.body;
  EXPECT_EQ(res.header("x-turnpike-service-tier"), "flex");
  EXPECT_EQ(res.header("x-turnpike-fallbacks"), "0");
  EXPECT_EQ(res.header("content-type"), "application/json");
  EXPECT_FALSE(res.header("x-turnpike-cost-usd").empty());
  EXPECT_TRUE(res.body.starts_with(R"({"id":"chatcmpl-)")) << res.body;
  EXPECT_NE(res.body.find(R"("object":"chat.completion","created":)"), std::string::npos)
      << res.body;
  EXPECT_NE(res.body.find(R"("finish_reason":"stop")"), std::string::npos) << res.body;
  EXPECT_NE(res.body.find(R"("completion_tokens":20)"), std::string::npos) << res.body;
  EXPECT_EQ(res.body.find("chat.completion.chunk"), std::string::npos) << res.body;
  const std::string bodies = up.received_bodies(0);
  EXPECT_NE(bodies.find(R"("stream":true)"), std::string::npos) << bodies;
  EXPECT_NE(bodies.find(R"("include_usage":true)"), std::string::npos) << bodies;
  // Charged at flex prices for the 20 tokens it reported.
  const std::string usage = up.usage();
  ASSERT_EQ(usage_rows(usage).size(), 1u) << usage;
  EXPECT_EQ(string_field(usage, "service_tier", usage_rows(usage)[0]), "flex") << usage;
  EXPECT_NE(usage.find(R"("output_tokens":20)"), std::string::npos) << usage;

  // A flex stream cut after its start gave the client nothing yet: the standard tier serves.
  const auto cut =
      up.chat("prompt-model", "00h-00m-05s", R"("sim":{"drop_after_chunks":3},)");
  ASSERT_EQ(cut.status, 200) << cut.body;
  EXPECT_EQ(cut.header("x-turnpike-service-tier"), "standard");
  EXPECT_EQ(cut.header("x-turnpike-fallbacks"), "1");
  EXPECT_NE(cut.body.find(R"("object":"chat.completion")"), std::string::npos) << cut.body;
}

// A rule's fallback order is the operator's: the flex attempt goes to the first route in
// it that has a flex tier, not to the best flex score.
TEST(Router, TheFlexAttemptFollowsARulesFallbackOrder) {
  std::vector<std::unique_ptr<Process>> sims;
  std::vector<int> ports;
  for (int i = 0; i < 2; ++i) {
    sims.push_back(std::make_unique<Process>(
        bin("turnpike-sim"), std::vector<std::string>{"--listen", "127.0.0.1:0", "--flex-ttft-ms",
                                                      "0", "--flex-429-rate", "0"}));
    ports.push_back(sims.back()->wait_listening());
  }
  for (const bool ordered : {false, true}) {
    std::ostringstream y;
    y << "listen: \"127.0.0.1:0\"\nproviders:\n"
      << "  - { name: cheap, base_url: \"http://127.0.0.1:" << ports[0] << "/v1\" }\n"
      << "  - { name: dear, base_url: \"http://127.0.0.1:" << ports[1] << "/v1\" }\n"
      << "models:\n  - name: flexy\n    routes:\n"
      << "      - { provider: cheap, input_per_mtok: \"1\", output_per_mtok: \"1\", "
         "flex_input_per_mtok: \"0.1\", flex_output_per_mtok: \"0.1\" }\n"
      << "      - { provider: dear, input_per_mtok: \"1\", output_per_mtok: \"1\", "
         "flex_input_per_mtok: \"0.5\", flex_output_per_mtok: \"0.5\" }\n";
    if (ordered) {
      y << "routing:\n  rules:\n    - { match: { model: flexy }, fallback_order: [dear, cheap] }\n";
    }
    const TestGateway gw(y.str());
    ASSERT_GT(gw.port, 0) << gw.log();
    const int port = gw.port;
    const auto headers = gw.auth(
        {{"x-turnpike-start-within", "00h-00m-05s"}, {"x-turnpike-route-preference", "cost"}});
    const std::string body = R"({"model":"flexy","max_tokens":5,"messages":[]})";
    const auto res = http_request(port, "POST", "/v1/chat/completions", body, headers);
    ASSERT_EQ(res.status, 200) << res.body;
    EXPECT_EQ(res.header("x-turnpike-service-tier"), "flex");
    EXPECT_EQ(res.header("x-turnpike-provider"), ordered ? "dear" : "cheap");
    const auto explained = http_request(port, "POST", "/v1/route/explain", body, headers);
    EXPECT_NE(explained.body.find(std::string(R"("flex_pick":{"model":"flexy","provider":")") +
                                  (ordered ? "dear" : "cheap")),
              std::string::npos)
        << explained.body;
  }
}

// The tier an upstream serves on sets its price, so only Turnpike chooses it: a client's
// `service_tier` that would change the price is refused, a neutral one is dropped.
TEST(Router, AClientsOwnServiceTierNeverReachesTheUpstream) {
  FlexUpstreams up;
  ASSERT_GT(up.port, 0) << up.gateway->log();
  for (const std::string tier : {"flex", "priority", "scale"}) {
    const auto res = up.chat("prompt-model", "", R"("service_tier":")" + tier + "\",");
    EXPECT_EQ(res.status, 400) << res.body;
    // Priority goes only to a route that prices it (none here); flex is the race's.
    EXPECT_NE(res.body.find(tier == "priority" ? "priority_multiplier" : "start_within"),
              std::string::npos)
        << res.body;
    EXPECT_NE(res.body.find("invalid_request_error"), std::string::npos) << res.body;
  }
  EXPECT_NE(up.received_bodies(0).find(R"("count":0)"), std::string::npos);
  for (const std::string tier : {"auto", "default"}) {
    const auto res = up.chat("prompt-model", "", R"("service_tier":")" + tier + "\",");
    ASSERT_EQ(res.status, 200) << res.body;
    EXPECT_EQ(res.header("x-turnpike-service-tier"), "");
  }
  // With the flex race, the upstream sees Turnpike's tier once, never the client's.
  const auto raced = up.chat("prompt-model", "00h-00m-05s", R"("service_tier":"default",)");
  ASSERT_EQ(raced.status, 200) << raced.body;
  EXPECT_EQ(raced.header("x-turnpike-service-tier"), "flex");
  const std::string bodies = up.received_bodies(0);
  EXPECT_NE(bodies.find(R"("count":3)"), std::string::npos) << bodies;
  EXPECT_EQ(bodies.find(R"("service_tier":"auto")"), std::string::npos) << bodies;
  EXPECT_EQ(bodies.find(R"("service_tier":"default")"), std::string::npos) << bodies;
  const std::string usage = up.usage();
  EXPECT_NE(usage.find(R"("service_tier":"standard")"), std::string::npos) << usage;
}

TEST(Router, FlexThatIsLateOrRefusedFallsBackToTheStandardTier) {
  FlexUpstreams up;
  ASSERT_GT(up.port, 0) << up.gateway->log();
  // late: flex would take 3 s to its first byte; the request allows 1 s.
  for (const std::string extra : {"", R"("stream":true,)"}) {
    const auto res = up.chat("late-model", "00h-00m-01s", extra);
    ASSERT_EQ(res.status, 200) << res.body;
    EXPECT_EQ(res.header("x-turnpike-service-tier"), "standard");
    EXPECT_EQ(res.header("x-turnpike-fallbacks"), "1");
  }
  // Each request reached the sim twice: flex first, then standard.
  const std::string late = up.received_bodies(1);
  EXPECT_NE(late.find(R"("count":4)"), std::string::npos) << late;
  // busy: flex answers 429 at once.
  const auto busy = up.chat("busy-model", "00h-00m-30s");
  ASSERT_EQ(busy.status, 200) << busy.body;
  EXPECT_EQ(busy.header("x-turnpike-service-tier"), "standard");
  EXPECT_NE(up.received_bodies(2).find(R"("count":2)"), std::string::npos);
  // none: flex answers 400 (no flex tier for this model): still the standard tier serves.
  const auto none = up.chat("none-model", "00h-00m-30s");
  ASSERT_EQ(none.status, 200) << none.body;
  EXPECT_EQ(none.header("x-turnpike-service-tier"), "standard");
  EXPECT_EQ(none.header("x-turnpike-fallbacks"), "1");
  // Billed at standard prices, and the standard price is the charge.
  const std::string usage = up.usage();
  EXPECT_EQ(usage.find(R"("service_tier":"flex")"), std::string::npos) << usage;
  for (const std::size_t at : usage_rows(usage)) {
    EXPECT_EQ(string_field(usage, "cost_usd", at), string_field(usage, "standard_cost_usd", at));
  }
  const auto routes = http_request(up.port, "GET", "/admin/v1/routes", {},
                                  {{"authorization", std::string("Bearer ") + kAdminKey}});
  const std::string late_route = route_entry(routes.body, "late-model", "late");
  EXPECT_NE(late_route.find(R"("attempts":4,"served":2,"errors":0,"rate_limited":0,"fallbacks":2,)"
                            R"("flex":{"offered":true,"attempts":2,"served":0})"),
            std::string::npos)
      << late_route;
  EXPECT_NE(route_entry(routes.body, "busy-model", "busy").find(R"("rate_limited":1)"),
            std::string::npos);
  // A flex tier that is late is not unhealthy: the breaker never opened.
  EXPECT_EQ(up.gateway->log().find("route circuit opened"), std::string::npos);
}

// The first standard attempt after a flex one is a fallback: a route whose provider the
// probes found down during the flex wait is skipped, not tried and marked failing.
TEST(Router, AfterAFlexWaitARouteFoundDownMeanwhileIsSkipped) {
  TempDir dir;
  Process slow(bin("turnpike-sim"),
               std::vector<std::string>{"--listen", "127.0.0.1:0", "--flex-ttft-ms", "3000",
                                        "--flex-429-rate", "0"});
  auto gone = std::make_unique<Process>(
      bin("turnpike-sim"), std::vector<std::string>{"--listen", "127.0.0.1:0"});
  const int slow_port = slow.wait_listening();
  const int gone_port = gone->wait_listening();
  ASSERT_GT(slow_port, 0);
  ASSERT_GT(gone_port, 0);
  const std::string config = dir.write(
      "turnpike.yaml",
      "listen: \"127.0.0.1:0\"\nrouting: { probe_interval_ms: 100, probe_failures: 1 }\n"
      "providers:\n"
      "  - { name: slow, api: openai, base_url: \"http://127.0.0.1:" + std::to_string(slow_port) +
      "/v1\" }\n"
      "  - { name: gone, api: openai, base_url: \"http://127.0.0.1:" + std::to_string(gone_port) +
      "/v1\" }\n"
      "models:\n  - name: m\n    routes:\n"
      "      - { provider: slow, input_per_mtok: \"2\", output_per_mtok: \"4\", "
      "flex_input_per_mtok: \"0.01\", flex_output_per_mtok: \"0.01\" }\n"
      "      - { provider: gone, input_per_mtok: \"0.1\", output_per_mtok: \"0.1\" }\n");
  Process gateway(bin("turnpike"),
                  {"serve", "--config", config, "--threads", "1", "--data-dir", dir.path() + "/var"},
                  {{"TURNPIKE_ADMIN_KEY", kAdminKey}});
  const int port = gateway.wait_listening();
  ASSERT_GT(port, 0) << gateway.log();
  const std::string key = create_key(port);
  HttpResponse answered;
  std::thread asking([&] {
    answered = http_request(port, "POST", "/v1/chat/completions",
                            R"({"model":"m","max_tokens":5,"messages":[]})",
                            {{"authorization", "Bearer " + key},
                             {"x-turnpike-route-preference", "cost"},
                             {"x-turnpike-start-within", "00h-00m-01s"}});
  });
  std::this_thread::sleep_for(200ms);
  gone.reset();  // the cheapest standard route's server goes away during the flex wait
  asking.join();
  ASSERT_EQ(answered.status, 200) << answered.body << gateway.log();
  EXPECT_EQ(answered.header("x-turnpike-provider"), "slow");
  EXPECT_EQ(answered.header("x-turnpike-fallbacks"), "1");  // flex; `gone` skipped
  const auto routes = http_request(port, "GET", "/admin/v1/routes", {},
                                   {{"authorization", std::string("Bearer ") + kAdminKey}});
  EXPECT_NE(route_entry(routes.body, "m", "gone").find(R"("attempts":0,)"), std::string::npos)
      << routes.body;
}

TEST(Router, StartWithinIsValidatedAndExplainNamesTheFlexPick) {
  FlexUpstreams up;
  ASSERT_GT(up.port, 0) << up.gateway->log();
  for (const std::string bad : {"30s", "00h-00m-60s", "00h-61m-00s", "00h-00m-00s", "02h-00m-00s",
                                "soon", "00h-00m-3xs"}) {
    const auto res = up.chat("prompt-model", bad);
    EXPECT_EQ(res.status, 400) << bad << ": " << res.body;
    EXPECT_NE(res.body.find("start_within"), std::string::npos) << res.body;
  }
  // In the body it works the same, and wins over the header.
  const auto in_body = up.chat("prompt-model", "soon", R"("start_within":"00h-00m-05s",)");
  EXPECT_EQ(in_body.status, 400);  // the header is still checked
  const auto body_only = up.chat("prompt-model", "", R"("start_within":"00h-00m-05s",)");
  ASSERT_EQ(body_only.status, 200) << body_only.body;
  EXPECT_EQ(body_only.header("x-turnpike-service-tier"), "flex");
  // Embeddings have no flex tier: they go to standard routing whatever they ask.
  const auto embedded = http_request(
      up.port, "POST", "/v1/embeddings",
      R"({"model":"prompt-model","input":"hi","start_within":"00h-00m-05s"})",
      {{"authorization", "Bearer " + up.key}});
  ASSERT_EQ(embedded.status, 200) << embedded.body;
  EXPECT_EQ(embedded.header("x-turnpike-service-tier"), "standard");
  const std::string bodies = up.received_bodies(0);
  EXPECT_EQ(bodies.rfind(R"("service_tier":"flex")"), bodies.find(R"("service_tier":"flex")"))
      << bodies;  // only the one chat request above asked for flex

  const auto explained = http_request(
      up.port, "POST", "/v1/route/explain",
      R"({"model":"prompt-model","start_within":"00h-00m-05s","messages":[]})",
      {{"authorization", "Bearer " + up.key}});
  ASSERT_EQ(explained.status, 200) << explained.body;
  EXPECT_NE(explained.body.find(R"("start_within_ms":5000)"), std::string::npos)
      << explained.body;
  EXPECT_NE(explained.body.find(R"("flex_pick":{"model":"prompt-model","provider":"prompt")"),
            std::string::npos)
      << explained.body;
  EXPECT_NE(explained.body.find(R"("flex_cost_usd":")"), std::string::npos) << explained.body;
}

}  // namespace
}  // namespace tp::test
