// What a client gets when its upstream answers badly: an answer that blames the route is a
// route failure (another route is tried; on the last, the client's own error shape without
// the provider's text), garbage under 200 is not billed, and the provider's hints pass on.

#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "core/money.h"
#include "integration/harness.h"

namespace tp::test {
namespace {

// A gateway whose model `m` goes to fault_upstream.py in `mode` first (the cheaper route)
// and to turnpike-sim second; `solo` and `solo_an` (Anthropic's API) go to the faulty
// upstream only.
struct FaultStack {
  TempDir dir;
  Process upstream;
  Process sim;
  std::unique_ptr<Process> gateway;
  int port = 0;  // 0: it did not start (see log())
  std::string key;

  // `extra`: more of the gateway's config (upstream timeouts, say).
  explicit FaultStack(const std::string& mode, const std::string& extra = "")
      : upstream("/usr/bin/python3",
                 std::vector<std::string>{
                     std::string(TURNPIKE_SOURCE_DIR) + "/tests/integration/fault_upstream.py",
                     mode}),
        sim(bin("turnpike-sim"), {"--listen", "127.0.0.1:0"}) {
    const std::string up = std::to_string(upstream.wait_listening());
    const std::string good = std::to_string(sim.wait_listening());
    const std::string config = dir.write(
        "t.yaml",
        "listen: \"127.0.0.1:0\"\n" + extra +
            "providers:\n"
            "  - { name: faulty, api: openai, base_url: \"http://127.0.0.1:" +
            up +
            "/v1\" }\n"
            "  - { name: faulty_an, api: anthropic, base_url: \"http://127.0.0.1:" +
            up +
            "/v1\" }\n"
            "  - { name: good, api: openai, base_url: \"http://127.0.0.1:" +
            good +
            "/v1\" }\n"
            "models:\n"
            "  - name: m\n    routes:\n"
            "      - { provider: faulty, input_per_mtok: \"0.1\", output_per_mtok: \"0.1\" }\n"
            "      - { provider: good, input_per_mtok: \"1\", output_per_mtok: \"1\" }\n"
            "  - name: solo\n    routes: [{ provider: faulty, input_per_mtok: \"1\", "
            "output_per_mtok: \"1\" }]\n"
            "  - name: roomy\n    context_tokens: 10000000\n    routes: [{ provider: faulty, "
            "input_per_mtok: \"0.01\", output_per_mtok: \"0.01\" }]\n"
            "  - name: solo_an\n    routes: [{ provider: faulty_an, input_per_mtok: \"1\", "
            "output_per_mtok: \"1\" }]\n"
            "  - name: embed\n    kind: embeddings\n    routes: [{ provider: faulty, "
            "input_per_mtok: \"1\", output_per_mtok: \"1\" }]\n"
            "  - name: flexm\n    routes:\n"
            "      - { provider: faulty, input_per_mtok: \"2\", output_per_mtok: \"2\", "
            "flex_input_per_mtok: \"1\", flex_output_per_mtok: \"1\" }\n"
            "      - { provider: good, input_per_mtok: \"1\", output_per_mtok: \"1\" }\n");
    gateway = start_gateway(dir, config);
    port = gateway->wait_listening();
    if (port > 0) key = create_key(port);
  }
  std::string log() const { return upstream.log() + (gateway ? gateway->log() : ""); }
  // Requests the faulty upstream received.
  std::size_t faulty_requests() const {
    const std::string log = upstream.log();
    std::size_t n = 0;
    for (std::size_t at = log.find("\"request\""); at != std::string::npos;
         at = log.find("\"request\"", at + 1)) {
      ++n;
    }
    return n;
  }
  // `extra`: more members of the body, each followed by a comma.
  HttpResponse chat(const std::string& model, const std::string& extra = "") const {
    return http_request(port, "POST", "/v1/chat/completions",
                        R"({"model":")" + model + R"(",)" + extra +
                            R"("max_tokens":10,"messages":[]})",
                        {{"authorization", "Bearer " + key},
                         {"x-turnpike-route-preference", "cost"}});
  }
  // A stream request to `solo` on a raw connection, read as its test reads it (a stream
  // cut after its head has no end of body; a slow reader reads a little at a time).
  std::unique_ptr<RawConnection> open_stream() const {
    auto raw = std::make_unique<RawConnection>(port);
    const std::string body = R"({"model":"solo","stream":true,"max_tokens":300,"messages":[]})";
    EXPECT_TRUE(raw->send(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " + key +
        "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
        "\r\n\r\n" + body));
    return raw;
  }
  std::string balance() const {
    return http_request(port, "GET", "/api/balance", {}, {{"authorization", "Bearer " + key}})
        .body;
  }
};

// A whole answer must end within the answer timeout from the request, as its head must
// come: a body dripping in just within the idle timeout is not read for ever.
TEST(UpstreamFault, AWholeAnswerDrippingInIsCutAtTheAnswerTimeout) {
  const FaultStack stack("drip", "upstream: { answer_timeout_ms: 800, idle_timeout_ms: 400 }\n");
  ASSERT_GT(stack.port, 0) << stack.log();
  const auto started = std::chrono::steady_clock::now();
  const auto res = stack.chat("solo");
  EXPECT_EQ(res.status, 504) << res.body;
  EXPECT_NE(res.body.find("did not end its answer in time"), std::string::npos) << res.body;
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(4));
  // The error names the route that failed, as any other answer does.
  EXPECT_EQ(res.header("x-turnpike-provider"), "faulty");
  EXPECT_EQ(res.header("x-turnpike-fallbacks"), "0");
}

// A whole answer whose body fails after its head (cut short, or not ended in time) or is
// no answer (an HTML page, an error object under 200) has given the client nothing: the
// next route answers. On the last route it is the client's error (above, and below).
TEST(UpstreamFault, AWholeAnswerWhoseBodyFailsFallsBack) {
  for (const std::string mode : {"body_cut", "drip", "html200", "error200"}) {
    const FaultStack stack(mode, "upstream: { answer_timeout_ms: 800, idle_timeout_ms: 400 }\n");
    ASSERT_GT(stack.port, 0) << stack.log();
    const auto res = stack.chat("m");
    EXPECT_EQ(res.status, 200) << mode << ": " << res.body;
    EXPECT_EQ(res.header("x-turnpike-provider"), "good") << mode;
    EXPECT_EQ(res.header("x-turnpike-fallbacks"), "1") << mode;
    EXPECT_EQ(stack.faulty_requests(), 1u) << mode;
  }
}

// A whole answer where the client asked for a stream (a server may answer so), or where a
// flex attempt was asked for one (to see it start), falls back as any whole answer does
// when its body fails or is no answer: nothing has reached the client yet. (It ended 502.)
TEST(UpstreamFault, AWholeAnswerInPlaceOfAStreamFallsBackWhenItFails) {
  for (const std::string mode : {"body_cut", "html200", "error200"}) {
    const FaultStack stack(mode, "upstream: { answer_timeout_ms: 800, idle_timeout_ms: 400 }\n");
    ASSERT_GT(stack.port, 0) << stack.log();
    const auto stream = stack.chat("m", R"("stream":true,)");
    EXPECT_EQ(stream.status, 200) << mode << ": " << stream.body;
    EXPECT_EQ(stream.header("x-turnpike-provider"), "good") << mode;
    EXPECT_EQ(stream.header("x-turnpike-fallbacks"), "1") << mode;
    EXPECT_NE(stream.body.find("data: [DONE]"), std::string::npos) << stream.body;
    // The flex tier (only the faulty route has one) failing so leaves the standard tier to
    // answer, whole or streamed.
    for (const std::string extra : {"", R"("stream":true,)"}) {
      const auto flex = stack.chat("flexm", extra + R"("start_within":"00h-00m-05s",)");
      EXPECT_EQ(flex.status, 200) << mode << " " << extra << ": " << flex.body;
      EXPECT_EQ(flex.header("x-turnpike-provider"), "good") << mode << " " << extra;
      EXPECT_EQ(flex.header("x-turnpike-service-tier"), "standard") << mode << " " << extra;
      EXPECT_EQ(flex.header("x-turnpike-fallbacks"), "1") << mode << " " << extra;
    }
    EXPECT_EQ(stack.faulty_requests(), 3u) << mode;
  }
}

// A route that failed once the fallback deadline had passed is no fallback: the request
// ends 504 naming the deadline, having moved on nowhere (it was counted as one), whether
// the route gave no answer in time or a 500 after the deadline.
TEST(UpstreamFault, AWholeAnswerFailingPastTheDeadlineIsNoFallback) {
  const std::string limits =
      "upstream: { answer_timeout_ms: 800 }\nrouting: { fallback_deadline_ms: 300 }\n";
  for (const std::string mode : {"head_hang", "late_status:500"}) {
    const FaultStack stack(mode, limits);
    ASSERT_GT(stack.port, 0) << stack.log();
    const auto res = stack.chat("m");
    EXPECT_EQ(res.status, 504) << mode << ": " << res.body;
    EXPECT_NE(res.body.find("no further route was tried"), std::string::npos) << res.body;
    EXPECT_EQ(stack.faulty_requests(), 1u) << mode;
    const std::string routes = http_request(stack.port, "GET", "/admin/v1/routes", {},
                                            {{"authorization", std::string("Bearer ") + kAdminKey}})
                                   .body;
    EXPECT_NE(routes.find(R"("attempts":1,"served":0,"errors":1,"rate_limited":0,"fallbacks":0)"),
              std::string::npos)
        << mode << ": " << routes;
  }
}

// Streams as the SSE standard reads them, past what the common case shows: a byte order mark
// first is no part of the first event (whose usage was missed, and the request billed an
// estimate); an event ending in a bare CR is whole at once (it waited for the next byte,
// which may never come); the terminator ends the stream (what followed it in the same
// read reached the client); and an event that a read completes is held to the event limit
// as one still arriving is.
TEST(UpstreamFault, StreamsAreReadAsTheSseStandardReadsThem) {
  const FaultStack bom("sse_bom");
  ASSERT_GT(bom.port, 0) << bom.log();
  const auto anthropic = http_request(
      bom.port, "POST", "/v1/messages",
      R"({"model":"solo_an","max_tokens":10,"stream":true,"messages":[{"role":"user","content":"hi"}]})",
      {{"x-api-key", bom.key}, {"anthropic-version", "2023-06-01"}});
  ASSERT_EQ(anthropic.status, 200) << anthropic.body;
  EXPECT_NE(anthropic.body.find("event: message_stop"), std::string::npos) << anthropic.body;
  const std::string rows =
      http_request(bom.port, "GET", "/api/usage", {}, {{"authorization", "Bearer " + bom.key}})
          .body;
  EXPECT_NE(rows.find(R"("input_tokens":7,)"), std::string::npos) << rows;
  EXPECT_NE(rows.find(R"("output_tokens":3,)"), std::string::npos) << rows;

  const FaultStack after("sse_after_done");
  ASSERT_GT(after.port, 0) << after.log();
  const auto done = after.chat("solo", R"("stream":true,)");
  ASSERT_EQ(done.status, 200) << done.body;
  EXPECT_NE(done.body.find("Hi"), std::string::npos) << done.body;
  EXPECT_NE(done.body.find("data: [DONE]"), std::string::npos) << done.body;
  EXPECT_EQ(done.body.find("LEAK"), std::string::npos) << done.body;

  const FaultStack cr("sse_cr_stall", "upstream: { idle_timeout_ms: 500 }\n");
  ASSERT_GT(cr.port, 0) << cr.log();
  // A stream cut after its head ends with an error event and no end of body: read raw,
  // up to that event.
  auto cut_stream = [](const FaultStack& stack) {
    return stack.open_stream()->read_until("upstream_error", std::chrono::seconds(10));
  };
  const std::string stalled = cut_stream(cr);
  EXPECT_NE(stalled.find("HTTP/1.1 200"), std::string::npos) << stalled;
  const std::size_t hi = stalled.find(R"("content": "Hi")");
  EXPECT_NE(hi, std::string::npos) << stalled;
  EXPECT_LT(hi, stalled.find("timed out")) << stalled;

  const FaultStack big("sse_big_event");
  ASSERT_GT(big.port, 0) << big.log();
  const std::string huge = cut_stream(big);
  EXPECT_NE(huge.find("HTTP/1.1 200"), std::string::npos) << huge.substr(0, 400);
  EXPECT_LT(huge.size(), std::size_t{4096}) << huge.substr(0, 400);
  EXPECT_NE(huge.find("sent a stream event over 4194304 bytes"), std::string::npos)
      << huge.substr(0, 400);
}

// A route whose stream's first event never came, after which the fallback deadline had
// passed, is no fallback: the request did not move on (it was counted as one).
TEST(UpstreamFault, AFailureAfterTheDeadlineIsNoFallback) {
  const FaultStack stack("stream_head_hang",
                         "upstream: { first_byte_timeout_ms: 200, answer_timeout_ms: 800, "
                         "idle_timeout_ms: 400 }\nrouting: { fallback_deadline_ms: 300 }\n");
  ASSERT_GT(stack.port, 0) << stack.log();
  const auto res = stack.chat("m", R"("stream":true,)");
  EXPECT_EQ(res.status, 504) << res.body;
  EXPECT_NE(res.body.find("no further route was tried"), std::string::npos) << res.body;
  const std::string routes = http_request(stack.port, "GET", "/admin/v1/routes", {},
                                          {{"authorization", std::string("Bearer ") + kAdminKey}})
                                 .body;
  EXPECT_NE(routes.find(R"("attempts":1,"served":0,"errors":1,"rate_limited":0,"fallbacks":0)"),
            std::string::npos)
      << routes;
}

// A server may answer a body too large before it has read it, and close: the write fails,
// but the answer came, and it is the client's (413, its own fault), sent once, no mark
// against the route.
TEST(UpstreamFault, AnAnswerBeforeTheWholeBodyWasWrittenIsRelayed) {
  const FaultStack stack("early413", "routing: { probe_interval_ms: 0 }\n");
  ASSERT_GT(stack.port, 0) << stack.log();
  const auto res = http_request(
      stack.port, "POST", "/v1/chat/completions",
      R"({"model":"roomy","max_tokens":10,"messages":[{"role":"user","content":")" +
          std::string(8'000'000, 'x') + R"("}]})",
      {{"authorization", "Bearer " + stack.key}});
  EXPECT_EQ(res.status, 413) << res.body.substr(0, 300);
  EXPECT_NE(res.body.find("request too large"), std::string::npos) << res.body.substr(0, 300);
  EXPECT_EQ(stack.faulty_requests(), 1u);
}

// A stream's body often ends (its last chunk) in a write of its own after the terminator:
// it is read, and the connection serves the next stream.
TEST(UpstreamFault, AStreamWhoseBodyEndsLateLeavesItsConnectionPooled) {
  const FaultStack stack("late_end", "routing: { probe_interval_ms: 0 }\n");
  ASSERT_GT(stack.port, 0) << stack.log();
  for (int i = 0; i < 3; ++i) {
    const auto res = stack.chat("solo", R"("stream":true,)");
    EXPECT_EQ(res.status, 200) << res.body;
    EXPECT_TRUE(res.body.ends_with("data: [DONE]\n\n")) << res.body;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // the last chunk came
  }
  const std::string log = stack.upstream.log();
  std::size_t connections = 0;
  for (std::size_t at = log.find("\"connection\""); at != std::string::npos;
       at = log.find("\"connection\"", at + 1)) {
    ++connections;
  }
  EXPECT_EQ(connections, 1u) << log;
}

// The operator's provider key refused (401, 403) or its model unknown there (404), or a
// redirect (a base_url that is not the API's; none is followed): the route is at fault, not
// the client. The next route answers; on the last one the client gets 502 without the
// provider's text, which quotes the operator's key.
TEST(UpstreamFault, TheOperatorsKeyRefusedIsARouteFailure) {
  for (const std::string status : {"401", "403", "404", "301", "307", "304"}) {
    const FaultStack stack("status:" + status);
    ASSERT_GT(stack.port, 0) << stack.log();
    const auto served = stack.chat("m");
    EXPECT_EQ(served.status, 200) << status << ": " << served.body;
    EXPECT_EQ(served.header("x-turnpike-provider"), "good") << status;
    EXPECT_EQ(stack.faulty_requests(), 1u) << status;

    const auto failed = stack.chat("solo");
    EXPECT_EQ(failed.status, 502) << status << ": " << failed.body;
    EXPECT_NE(failed.body.find(R"("type":"upstream_error")"), std::string::npos) << failed.body;
    EXPECT_NE(failed.body.find("answered HTTP " + status), std::string::npos) << failed.body;
    EXPECT_EQ(failed.body.find("sk-prov"), std::string::npos) << failed.body;
    EXPECT_EQ(failed.header("retry-after"), "7") << status;
    EXPECT_EQ(failed.header("x-turnpike-provider"), "faulty") << status;
  }
}

// Anthropic's 529 (overloaded) is an upstream failure like any 5xx: 502 in the client's
// error shape (CONTRACT's status), with the provider's retry-after, which the SDKs honour.
TEST(UpstreamFault, AnthropicsOverloadedIsAnUpstreamFailure) {
  const FaultStack stack("status:529");
  ASSERT_GT(stack.port, 0) << stack.log();
  const auto res = http_request(
      stack.port, "POST", "/v1/messages",
      R"({"model":"solo_an","max_tokens":10,"messages":[{"role":"user","content":"hi"}]})",
      {{"x-api-key", stack.key}, {"anthropic-version", "2023-06-01"}});
  EXPECT_EQ(res.status, 502) << res.body;
  EXPECT_NE(res.body.find(R"("type":"api_error")"), std::string::npos) << res.body;
  EXPECT_NE(res.body.find("answered HTTP 529"), std::string::npos) << res.body;
  EXPECT_EQ(res.header("retry-after"), "7");
  EXPECT_EQ(stack.chat("solo").status, 502);
}

// A 200 that is not an answer (an HTML page, an error object) is a failed request: 502,
// and nothing charged.
TEST(UpstreamFault, GarbageUnder200IsNotBilled) {
  for (const std::string mode : {"html200", "error200"}) {
    const FaultStack stack(mode);
    ASSERT_GT(stack.port, 0) << stack.log();
    const std::string before = stack.balance();
    const auto res = stack.chat("solo");
    EXPECT_EQ(res.status, 502) << mode << ": " << res.body;
    EXPECT_NE(res.body.find("malformed"), std::string::npos) << res.body;
    EXPECT_EQ(stack.balance(), before) << mode;
    // A voided request's row is stored with the next batch, without being waited for.
    HttpResponse usage;
    for (int i = 0; i < 100 && usage.body.find(R"("status":502)") == std::string::npos; ++i) {
      if (i > 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
      usage = http_request(stack.port, "GET", "/api/usage", {},
                           {{"authorization", "Bearer " + stack.key}});
    }
    EXPECT_NE(usage.body.find(R"("status":502)"), std::string::npos) << usage.body;
    EXPECT_NE(usage.body.find(R"("cost_usd":"0.00")"), std::string::npos) << usage.body;
    // Each is a failure of the route, never a success first: after routing.breaker_failures
    // (5) in a row its circuit opens, and the next request is not sent to it.
    for (int i = 0; i < 4; ++i) EXPECT_EQ(stack.chat("solo").status, 502) << mode << " " << i;
    const auto resting = stack.chat("solo");
    EXPECT_EQ(resting.status, 503) << mode << ": " << resting.body;
    EXPECT_NE(resting.body.find("no_healthy_route"), std::string::npos) << resting.body;
    // Nothing of it went to the client as an answer: not one counts as served.
    const std::string routes = http_request(stack.port, "GET", "/admin/v1/routes", {},
                                            {{"authorization", std::string("Bearer ") + kAdminKey}})
                                   .body;
    EXPECT_NE(routes.find(R"("attempts":5,"served":0,"errors":5)"), std::string::npos)
        << mode << ": " << routes;
  }
}

// Bodies are asked for uncompressed; one compressed anyway is a broken route's: the next
// route answers, and on the last the client gets 502, not bytes it cannot read.
TEST(UpstreamFault, ACompressedAnswerIsARouteFailure) {
  const FaultStack stack("gzip");
  ASSERT_GT(stack.port, 0) << stack.log();
  const auto served = stack.chat("m");
  EXPECT_EQ(served.status, 200) << served.body;
  EXPECT_EQ(served.header("x-turnpike-provider"), "good");
  EXPECT_NE(stack.upstream.log().find(R"("accept_encoding": "identity")"), std::string::npos)
      << stack.upstream.log();
  const auto failed = stack.chat("solo");
  EXPECT_EQ(failed.status, 502) << failed.body;
  EXPECT_NE(failed.body.find("compressed"), std::string::npos) << failed.body;
  // A stream too, found at its head: it was read for a first event, which compressed bytes
  // never make, to its end (a whole generation's wait) and then misnamed.
  const FaultStack streams("gzip_stream");
  ASSERT_GT(streams.port, 0) << streams.log();
  const auto stream = streams.chat("solo", R"("stream":true,)");
  EXPECT_EQ(stream.status, 502) << stream.body;
  EXPECT_NE(stream.body.find("compressed"), std::string::npos) << stream.body;
}

// A whole answer whose usage claims far more output than the max_tokens asked for (a
// provider that ignored it, or miscounted) is delivered and charged what was held at most:
// it was charged all it claimed, past any balance, by the one response licensed to overdraw.
// Numbers past 64 bits or past a double's range are valid JSON (a tool call's argument may
// hold one): such an answer is relayed as sent and charged its usage. It was voided as
// malformed (502, nothing charged) and counted against the route.
TEST(UpstreamFault, AnAnswerWithNumbersPast64BitsIsRelayedAndCharged) {
  const FaultStack stack("bignum");
  ASSERT_GT(stack.port, 0) << stack.log();
  for (int i = 0; i < 6; ++i) {  // past routing.breaker_failures, had they been failures
    const auto res = stack.chat("solo");
    ASSERT_EQ(res.status, 200) << res.body;
    EXPECT_NE(res.body.find(R"("x_id": 1000000000000000000000000000000)"), std::string::npos)
        << res.body;
    EXPECT_NE(res.body.find(R"("x_far": -1e400)"), std::string::npos) << res.body;
    EXPECT_EQ(res.header("x-turnpike-cost-usd"), "0.000012");  // 5 + 7 tokens at 1 USD/M
    // The provider named its request id twice: the client gets it once (the last header
    // of a name counts here; it was the second one's).
    EXPECT_EQ(res.header("x-upstream-request-id"), "req_up_1");
  }
}

TEST(UpstreamFault, AnAnswerClaimingFarMoreThanMaxTokensIsChargedItsHoldAtMost) {
  const FaultStack stack("overreport");
  ASSERT_GT(stack.port, 0) << stack.log();
  const auto res = stack.chat("solo");  // max_tokens 10
  ASSERT_EQ(res.status, 200) << res.body;
  // 1,000,000 output tokens at 1 USD per million would be 1 USD.
  const Money charged = Money::parse(res.header("x-turnpike-cost-usd")).value();
  EXPECT_LT(charged, Money::parse("0.001").value()) << res.header("x-turnpike-cost-usd");
  EXPECT_NE(stack.gateway->log().find("far more output than the request's max_tokens"),
            std::string::npos);
}

// Without a max_tokens a report is still bounded: output well past the model's
// max_output_tokens (4096 here), input well past its context_tokens (128,000), is charged
// what was held at most. Either was charged in full, past any balance, by the one response
// licensed to overdraw (1,000 USD for the input claimed).
TEST(UpstreamFault, AReportPastWhatTheModelCanDoIsChargedItsHoldAtMost) {
  for (const std::string mode : {"overreport", "overreport_input"}) {
    const FaultStack stack(mode);
    ASSERT_GT(stack.port, 0) << stack.log();
    const auto res = http_request(stack.port, "POST", "/v1/chat/completions",
                                  R"({"model":"solo","messages":[]})",
                                  {{"authorization", "Bearer " + stack.key}});
    ASSERT_EQ(res.status, 200) << mode << ": " << res.body;
    // The hold: the body's bytes of input and 4096 output tokens at 1 USD per million.
    const Money charged = Money::parse(res.header("x-turnpike-cost-usd")).value();
    EXPECT_LE(charged, Money::parse("0.0042").value()) << mode;
    EXPECT_GT(charged, Money()) << mode;
    EXPECT_NE(
        stack.gateway->log().find(mode == "overreport" ? "its model's max_output_tokens) allows"
                                                       : "its model's context_tokens allows"),
        std::string::npos)
        << mode;
  }
}

// An embeddings answer is bounded by its request too: no output, and input no more than the
// body's bytes (a batch may pass the model's context). It was believed whatever it said: a
// 90-byte request could cost 1,000 USD.
TEST(UpstreamFault, AnEmbeddingsReportPastItsRequestIsChargedItsHoldAtMost) {
  const FaultStack stack("overreport_input");
  ASSERT_GT(stack.port, 0) << stack.log();
  const auto res =
      http_request(stack.port, "POST", "/v1/embeddings", R"({"model":"embed","input":"hi"})",
                   {{"authorization", "Bearer " + stack.key}});
  ASSERT_EQ(res.status, 200) << res.body;
  const Money charged = Money::parse(res.header("x-turnpike-cost-usd")).value();
  EXPECT_LE(charged, Money::parse("0.0001").value()) << res.header("x-turnpike-cost-usd");
  EXPECT_NE(stack.gateway->log().find("far more input than the embeddings request holds"),
            std::string::npos)
      << stack.gateway->log();
}

// A stream that runs past what its account holds may take the account's one overdraft, but
// never past its key's budget (which has no overdraft: it was never looked at again once
// the overdraft was granted), nor past the output the request can have (the model's
// max_output_tokens without a max_tokens: counted events were charged whatever their
// number, where a usage report saying as much was capped at the hold).
TEST(UpstreamFault, AStreamOnTheAccountsOverdraftKeepsToItsBudgetAndItsOutputBound) {
  // The hold: ~60 input and 4096 output tokens at 1 USD per million; the stream counts 5000
  // (0.005 USD), past what the account has.
  const FaultStack stack("sse_long_no_usage", "billing: { trial_usd: \"0.0043\" }\n");
  ASSERT_GT(stack.port, 0) << stack.log();
  auto charged = [](const FaultStack& stack, const std::string& key) {
    const auto res = http_request(stack.port, "POST", "/v1/chat/completions",
                                  R"({"model":"solo","stream":true,"messages":[]})",
                                  {{"authorization", "Bearer " + key}});
    const std::string rows =
        http_request(stack.port, "GET", "/api/usage", {}, {{"authorization", "Bearer " + key}})
            .body;
    const auto cost = Money::parse(string_field(rows, "cost_usd"));
    EXPECT_TRUE(cost) << res.body.substr(0, 200) << rows;
    return cost ? *cost : Money::usd(1000);
  };
  EXPECT_LE(charged(stack, create_key(stack.port)), Money::parse("0.0043").value());
  EXPECT_NE(stack.gateway->log().find("far more output than the request's max_tokens"),
            std::string::npos)
      << stack.gateway->log();
  // 4500 events are within the output bound (4096 and an eighth), past the account's
  // 0.0043 USD and past the key's budget of 0.0044: it stops at the budget.
  const FaultStack shorter("sse_long_no_usage:4500", "billing: { trial_usd: \"0.0043\" }\n");
  ASSERT_GT(shorter.port, 0) << shorter.log();
  const std::string budgeted = create_key(shorter.port, R"({"budget_usd":"0.0044"})");
  // Charged what it relayed up to the budget: the overdraft covered it past the account's
  // 0.0043 (it was charged the account's 0.0043 alone, the rest relayed for nothing).
  const Money stopped = charged(shorter, budgeted);
  EXPECT_LE(stopped, Money::parse("0.0044").value());
  EXPECT_GT(stopped, Money::parse("0.00435").value());
  EXPECT_NE(shorter.gateway->log().find("the key's budget covers no more"), std::string::npos)
      << shorter.gateway->log();
  const auto verify = http_request(shorter.port, "GET", "/admin/v1/ledger/verify", {},
                                   {{"authorization", std::string("Bearer ") + kAdminKey}});
  EXPECT_NE(verify.body.find(R"("ok":true)"), std::string::npos) << verify.body;
}

// A stream's hold is renewed while its relay waits on a client that reads slowly, not only
// after upstream reads: it lapsed there (after hold_timeout_ms), freeing money its
// stream was still spending for another request to take.
TEST(UpstreamFault, AStreamsHoldOutlastsASlowReader) {
  const FaultStack stack("sse_large:200",  // 2 MB: more than the sockets buffer
                         "upstream: { connect_timeout_ms: 100, first_byte_timeout_ms: 200, "
                         "answer_timeout_ms: 300, idle_timeout_ms: 400 }\n"
                         "routing: { fallback_deadline_ms: 250 }\n"
                         "billing: { hold_timeout_ms: 1000 }\n");
  ASSERT_GT(stack.port, 0) << stack.log();
  const auto stream = stack.open_stream();
  RawConnection& client = *stream;
  ASSERT_NE(client.read_until("\r\n\r\n", std::chrono::seconds(5)).find("200"), std::string::npos);
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));  // reads nothing
  const std::string balance = http_request(stack.port, "GET", "/api/balance", {},
                                           {{"authorization", "Bearer " + stack.key}})
                                  .body;
  EXPECT_NE(string_field(balance, "held_usd"), "0.00") << balance;
  EXPECT_NE(client.read_until("data: [DONE]", std::chrono::seconds(20)).find("data: [DONE]"),
            std::string::npos);
}

// A client that reads a large stream slowly but steadily is not cut by the write timeout:
// the kernel wakes a blocked writer only once half of what a client socket holds unsent
// has gone, which such a reader takes longer than the timeout for, and it was cut although
// it never stopped reading.
TEST(UpstreamFault, ASlowButSteadyReaderIsNotCut) {
  // The client's kernel opens its window (and so acknowledges) ~110 KiB at a time, every
  // ~2.1 s at this reader's pace; the writer was woken only after two of those (once
  // 128 KiB of the 256 KiB unsent had gone). The timeout lies between.
  const FaultStack stack("sse_large:200", "limits: { write_timeout_ms: 3200 }\n");
  ASSERT_GT(stack.port, 0) << stack.log();
  const auto stream = stack.open_stream();
  RawConnection& client = *stream;
  std::string got = client.read_some(16 * 1024, std::chrono::seconds(5));
  for (int i = 0; i < 26; ++i) {  // 16 KiB every 300 ms for 7.8 s: over two timeouts
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    got += client.read_some(16 * 1024, std::chrono::milliseconds(100));
  }
  got += client.read_until("data: [DONE]", std::chrono::seconds(20));
  EXPECT_NE(got.find("data: [DONE]"), std::string::npos) << got.size() << " bytes";
}

// A provider's error page that is not JSON keeps its status but comes in the client's own
// error shape, which its SDK can read.
TEST(UpstreamFault, AnHtmlErrorPageComesInTheClientsErrorShape) {
  const FaultStack stack("html:413");
  ASSERT_GT(stack.port, 0) << stack.log();
  const auto res = stack.chat("solo");
  EXPECT_EQ(res.status, 413) << res.body;
  EXPECT_EQ(res.header("content-type"), "application/json");
  EXPECT_NE(res.body.find(R"("type":"invalid_request_error")"), std::string::npos) << res.body;
  EXPECT_EQ(res.body.find("<html>"), std::string::npos) << res.body;
  EXPECT_NE(res.body.find("upstream 'faulty' answered HTTP 413"), std::string::npos) << res.body;
}

// A stream that fails before its first event (an error chunk first, as an overloaded
// provider sends; a close) has given the client nothing: the next route answers, and on
// the last the client gets a plain 502, charged nothing, not a 200 with an error inside.
TEST(UpstreamFault, AStreamThatFailsAtItsStartFallsBack) {
  for (const std::string mode : {"sse_error_first", "sse_close_first"}) {
    const FaultStack stack(mode);
    ASSERT_GT(stack.port, 0) << stack.log();
    const std::map<std::string, std::string> auth = {
        {"authorization", "Bearer " + stack.key}, {"x-turnpike-route-preference", "cost"}};
    const auto served = http_request(
        stack.port, "POST", "/v1/chat/completions",
        R"({"model":"m","stream":true,"max_tokens":5,"messages":[]})", auth);
    EXPECT_EQ(served.status, 200) << mode << ": " << served.body;
    EXPECT_EQ(served.header("x-turnpike-provider"), "good") << mode;
    EXPECT_EQ(served.header("x-turnpike-fallbacks"), "1") << mode;
    EXPECT_NE(served.body.find("data: [DONE]"), std::string::npos) << served.body;
    EXPECT_EQ(served.body.find("overloaded"), std::string::npos) << served.body;

    const std::string before = stack.balance();
    const auto failed = http_request(
        stack.port, "POST", "/v1/chat/completions",
        R"({"model":"solo","stream":true,"max_tokens":5,"messages":[]})", auth);
    EXPECT_EQ(failed.status, 502) << mode << ": " << failed.body;
    EXPECT_NE(failed.body.find(R"("type":"upstream_error")"), std::string::npos) << failed.body;
    EXPECT_EQ(stack.balance(), before) << mode;
  }
}

// The provider's x-should-retry is its word to the SDKs, which obey it over their rules.
TEST(UpstreamFault, TheProvidersRetryHintPassesOn) {
  const FaultStack stack("noretry");
  ASSERT_GT(stack.port, 0) << stack.log();
  const auto res = stack.chat("solo");
  EXPECT_EQ(res.status, 429) << res.body;
  EXPECT_EQ(res.header("x-should-retry"), "false");
}

}  // namespace
}  // namespace tp::test
