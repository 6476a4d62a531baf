// Request billing end to end: holds, settlement, the usage log, 402, concurrency, client
// disconnects and kill -9, against real turnpike and turnpike-sim processes.
#include <gtest/gtest.h>
#include <signal.h>
#include <simdjson.h>

#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "core/money.h"
#include "core/rfc3339.h"
#include "integration/harness.h"
#include "store/sqlite.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

namespace tp::test {
namespace {

using namespace std::chrono_literals;

const std::map<std::string, std::string> kAdmin = {
    {"authorization", std::string("Bearer ") + kAdminKey}};

// The test catalog's prices (harness.cc).
const PricePerMtok kGptIn = PricePerMtok::parse("0.15").value();
const PricePerMtok kGptOut = PricePerMtok::parse("0.60").value();
const PricePerMtok kClaudeIn = PricePerMtok::parse("3").value();
const PricePerMtok kClaudeOut = PricePerMtok::parse("15").value();

std::string field(simdjson::dom::element e, const char* key) {
  std::string_view v;
  return e[key].get_string().get(v) ? std::string() : std::string(v);
}

struct UsageRow {
  std::string request_id;
  std::int64_t input = 0, cached = 0, output = 0, status = 0;
  Money cost;
  std::string model;
};

// Every row of the usage log, page by page (admin: all accounts, or `account`).
std::vector<UsageRow> usage_log(int port, const std::map<std::string, std::string>& auth,
                                const std::string& extra = "") {
  std::vector<UsageRow> rows;
  std::string cursor;
  for (int page = 0; page < 1000; ++page) {
    const auto res = http_request(port, "GET",
                                  "/api/usage?limit=7" + extra +
                                      (cursor.empty() ? "" : "&cursor=" + cursor),
                                  {}, auth);
    EXPECT_EQ(res.status, 200) << res.body;
    if (res.status != 200) break;
    simdjson::dom::parser parser;
    auto doc = parser.parse(res.body).value();
    const simdjson::dom::array data = doc["data"].get_array().value();
    for (auto r : data) {
      UsageRow row;
      row.request_id = field(r, "request_id");
      row.input = r["input_tokens"].get_int64().value();
      row.cached = r["cached_tokens"].get_int64().value();
      row.output = r["output_tokens"].get_int64().value();
      row.status = r["status"].get_int64().value();
      row.cost = Money::parse(field(r, "cost_usd")).value();
      row.model = field(r, "model");
      rows.push_back(row);
    }
    if (doc["next_cursor"].is_null()) break;
    cursor = std::string(doc["next_cursor"].get_string().value());
  }
  return rows;
}

Money expected_cost(const UsageRow& r) {
  const bool claude = r.model == "claude-test";
  return cost_of(r.input - r.cached, claude ? kClaudeIn : kGptIn, r.cached,
                 claude ? kClaudeIn : kGptIn, r.output, claude ? kClaudeOut : kGptOut);
}

Money available(int port, const std::string& key) {
  const auto res = http_request(port, "GET", "/api/balance", {}, {{"authorization", "Bearer " + key}});
  simdjson::dom::parser parser;
  return Money::parse(field(parser.parse(res.body).value(), "available_usd")).value();
}

// An account with `paid` credit and no trial, and a key for it.
std::string funded_key(int port, const std::string& paid) {
  const auto account = http_request(port, "POST", "/admin/v1/accounts", R"({"name":"b"})", kAdmin);
  simdjson::dom::parser parser;
  const std::string id = field(parser.parse(account.body).value(), "id");
  if (!paid.empty()) {
    const auto credit = http_request(
        port, "POST", "/admin/v1/accounts/" + id + "/credits",
        R"({"amount_usd":")" + paid + R"(","kind":"paid","idempotency_key":"fund-)" + id + R"("})",
        kAdmin);
    EXPECT_EQ(credit.status, 200) << credit.body;
  }
  const auto key = http_request(port, "POST", "/admin/v1/accounts/" + id + "/keys", "{}", kAdmin);
  return field(parser.parse(key.body).value(), "key");
}

std::map<std::string, std::string> bearer(const std::string& key) {
  return {{"authorization", "Bearer " + key}};
}

bool ledger_verifies(const Stack& stack) {
  Process verify(bin("turnpike"), {"ledger", "verify", "--data-dir", stack.dir.path() + "/var"});
  return verify.wait_exit(30s) == std::optional<int>(0);
}

TEST(Billing, NonStreamChargesTheFormulaAndLogsOneRow) {
  Stack stack;
  ASSERT_GT(stack.port, 0);
  const Money before = available(stack.port, stack.key);
  const auto res = http_request(
      stack.port, "POST", "/v1/chat/completions",
      R"({"model":"gpt-test","messages":[{"role":"user","content":"price me"}],"sim":{"output_tokens":9,"cached_tokens":3}})",
      stack.auth());
  ASSERT_EQ(res.status, 200) << res.body;
  const auto rows = usage_log(stack.port, stack.auth());
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].request_id, res.header("x-request-id"));
  EXPECT_EQ(rows[0].output, 9);
  EXPECT_EQ(rows[0].cached, 3);
  EXPECT_EQ(rows[0].status, 200);
  EXPECT_EQ(rows[0].cost, expected_cost(rows[0]));
  EXPECT_EQ(res.header("x-turnpike-cost-usd"), rows[0].cost.to_string());
  EXPECT_EQ(available(stack.port, stack.key), before - rows[0].cost);
  const auto verify = http_request(stack.port, "GET", "/admin/v1/ledger/verify", {}, kAdmin);
  EXPECT_NE(verify.body.find("\"ok\":true"), std::string::npos) << verify.body;
}

TEST(Billing, OpenAIStreamUsageChunkIsAskedForAndHiddenUnlessTheClientAsked) {
  Stack stack;
  ASSERT_GT(stack.port, 0);
  const auto hidden = http_request(
      stack.port, "POST", "/v1/chat/completions",
      R"({"model":"gpt-test","stream":true,"messages":[],"sim":{"output_tokens":4}})", stack.auth());
  ASSERT_EQ(hidden.status, 200);
  // Neither the usage chunk nor the null usage asking for it puts in every chunk.
  EXPECT_EQ(hidden.body.find("\"usage\""), std::string::npos) << hidden.body;
  EXPECT_NE(hidden.body.find("\"finish_reason\":\"stop\"}]}\n"), std::string::npos)
      << hidden.body;
  EXPECT_TRUE(hidden.body.ends_with("data: [DONE]\n\n"));
  // Running counts on every chunk (vLLM's continuous usage) are taken out too.
  const auto running = http_request(
      stack.port, "POST", "/v1/chat/completions",
      R"({"model":"gpt-test","stream":true,"messages":[],"sim":{"output_tokens":4,"continuous_usage":1}})",
      stack.auth());
  ASSERT_EQ(running.status, 200);
  EXPECT_EQ(running.body.find("\"usage\""), std::string::npos) << running.body;
  const auto shown = http_request(
      stack.port, "POST", "/v1/chat/completions",
      R"({"model":"gpt-test","stream":true,"stream_options":{"include_usage":true},"messages":[],"sim":{"output_tokens":4}})",
      stack.auth());
  ASSERT_EQ(shown.status, 200);
  EXPECT_NE(shown.body.find("\"usage\":{"), std::string::npos);
  EXPECT_NE(shown.body.find("\"usage\":null"), std::string::npos);  // the client's, as sent
  const auto rows = usage_log(stack.port, stack.auth());
  ASSERT_EQ(rows.size(), 3u);
  for (const auto& r : rows) {
    EXPECT_EQ(r.output, 4);
    EXPECT_EQ(r.cost, expected_cost(r));
  }
}

TEST(Billing, AnthropicStreamIsBilledFromMessageDelta) {
  Stack stack;
  ASSERT_GT(stack.port, 0);
  const auto res = http_request(
      stack.port, "POST", "/v1/messages",
      R"({"model":"claude-test","max_tokens":50,"stream":true,"messages":[{"role":"user","content":"hi"}],"sim":{"output_tokens":6}})",
      {{"x-api-key", stack.key}});
  ASSERT_EQ(res.status, 200);
  EXPECT_NE(res.body.find("event: message_stop"), std::string::npos);
  const auto rows = usage_log(stack.port, stack.auth());
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].output, 6);
  EXPECT_GT(rows[0].input, 0);
  EXPECT_EQ(rows[0].cost, expected_cost(rows[0]));
}

TEST(Billing, ShortBalanceIs402SayingWhatIsAvailableAndNeeded) {
  Stack stack("billing: { trial_usd: \"0\" }");
  ASSERT_GT(stack.port, 0);
  const std::string key = funded_key(stack.port, "0.0002");
  // Worst case: 1000 output tokens at $0.60/M = $0.0006 > $0.0002.
  const auto refused = http_request(stack.port, "POST", "/v1/chat/completions",
                                    R"({"model":"gpt-test","messages":[]})", bearer(key));
  EXPECT_EQ(refused.status, 402);
  EXPECT_NE(refused.body.find("0.0002 USD available"), std::string::npos) << refused.body;
  EXPECT_NE(refused.body.find("needed"), std::string::npos);
  // Declaring tools adds the provider's tool-use prompt to the worst case (1000 tokens at
  // $0.15/M = $0.00015): $0.000069 fits, $0.000219 does not.
  const auto with_tools =
      http_request(stack.port, "POST", "/v1/chat/completions",
                   R"({"model":"gpt-test","max_tokens":100,"tools":[],"messages":[]})",
                   bearer(key));
  EXPECT_EQ(with_tools.status, 402) << with_tools.body;
  const auto fits = http_request(stack.port, "POST", "/v1/chat/completions",
                                 R"({"model":"gpt-test","max_tokens":100,"messages":[]})",
                                 bearer(key));
  EXPECT_EQ(fits.status, 200) << fits.body;
  // A customer sees only its own log; naming another account is refused.
  EXPECT_EQ(usage_log(stack.port, bearer(key)).size(), 1u);
  EXPECT_EQ(http_request(stack.port, "GET", "/api/usage?account=acct_1", {}, bearer(key)).status,
            403);
  EXPECT_EQ(http_request(stack.port, "GET", "/api/usage?limit=5000", {}, bearer(key)).status, 400);
}

// The Messages API has no `n`: a body that carries one is held for one answer (a hold for
// 128 answers would refuse an account that can pay for the one it gets).
TEST(Billing, MessagesHoldForOneAnswerWhateverNSays) {
  Stack stack("billing: { trial_usd: \"0\" }");
  ASSERT_GT(stack.port, 0) << stack.gateway->log();
  const std::string key = funded_key(stack.port, "0.01");  // 64 tokens out: under 0.001
  const auto res = http_request(
      stack.port, "POST", "/v1/messages",
      R"({"model":"claude-test","max_tokens":64,"n":128,"messages":[{"role":"user","content":"hi"}]})",
      {{"x-api-key", key}, {"anthropic-version", "2023-06-01"}});
  EXPECT_EQ(res.status, 200) << res.body;
}

TEST(Billing, ConcurrentRequestsNeverSpendPastTheBalance) {
  Stack stack("billing: { trial_usd: \"0\" }", {"--threads", "2"});
  ASSERT_GT(stack.port, 0);
  const Money start = Money::parse("0.03").value();
  const std::string key = funded_key(stack.port, "0.03");
  // Each hold is ~$0.0076 (500 output tokens at $15/M plus input); each answer costs less.
  const std::string body =
      R"({"model":"claude-test","max_tokens":500,"messages":[{"role":"user","content":"go"}],"sim":{"output_tokens":40,"latency_ms":20}})";
  std::atomic<int> ok{0}, refused{0}, other{0};
  std::vector<std::thread> clients;
  for (int i = 0; i < 200; ++i) {
    clients.emplace_back([&] {
      const auto res = http_request(stack.port, "POST", "/v1/messages", body, {{"x-api-key", key}});
      (res.status == 200 ? ok : res.status == 402 ? refused : other)++;
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(other.load(), 0) << stack.gateway->log().substr(0, 3000);
  EXPECT_GT(ok.load(), 0);
  EXPECT_GT(refused.load(), 0);
  const auto rows = usage_log(stack.port, kAdmin, "&account=acct_2");
  std::set<std::string> ids;
  Money settled;
  for (const auto& r : rows) {
    EXPECT_TRUE(ids.insert(r.request_id).second) << "settled twice: " << r.request_id;
    EXPECT_EQ(r.cost, expected_cost(r));
    settled += r.cost;
  }
  EXPECT_EQ(static_cast<int>(rows.size()), ok.load());
  // Every answer fit its hold, so nothing was overdrawn at all.
  EXPECT_LE(settled, start);
  EXPECT_EQ(available(stack.port, key), start - settled);
  const auto verify = http_request(stack.port, "GET", "/admin/v1/ledger/verify", {}, kAdmin);
  EXPECT_NE(verify.body.find("\"ok\":true"), std::string::npos) << verify.body;
}

// A hold covers min(max_tokens, the catalog's max_output_tokens). An upstream that writes
// more (a catalog below the model's real limit) runs its responses past their holds; however
// many run at once, the account goes below zero by one response's shortfall at most. The
// others stop (streams, with an error event) or are not delivered (whole answers), and none
// of them is charged past what it held.
TEST(Billing, ResponsesPastTheirHoldsOverdrawByOneShortfallAtMost) {
  for (const bool stream : {true, false}) {
    SCOPED_TRACE(stream ? "stream" : "whole");
    Stack stack("billing: { trial_usd: \"0\" }", {"--threads", "2"});
    ASSERT_GT(stack.port, 0);
    const Money start = Money::parse("0.002").value();
    const std::string key = funded_key(stack.port, "0.002");
    // gpt-test's max_output_tokens is 1000: each hold is ~0.00063 USD, so three fit; each
    // answer is 3000 tokens (0.0018 USD), after every request has taken its hold.
    const std::string body =
        std::string(R"({"model":"gpt-test","max_tokens":5000,"stream":)") +
        (stream ? "true" : "false") +
        R"(,"messages":[{"role":"user","content":"go"}],"sim":{"output_tokens":3000,"tokens_per_second":20000,"latency_ms":400}})";
    const Money hold = cost_of(static_cast<std::int64_t>(body.size()), kGptIn, 0, kGptIn, 1000, kGptOut);
    std::atomic<int> whole_402{0};
    std::vector<std::thread> clients;
    for (int i = 0; i < 20; ++i) {
      clients.emplace_back([&] {
        const auto res = http_request(stack.port, "POST", "/v1/chat/completions", body, bearer(key));
        if (res.status == 402 && res.body.find("not delivered") != std::string::npos) whole_402++;
      });
    }
    for (auto& t : clients) t.join();
    std::this_thread::sleep_for(300ms);  // the rows of voided requests are written after them
    const auto rows = usage_log(stack.port, kAdmin, "&account=acct_2");
    Money settled;
    Money full;  // a whole answer's cost
    int complete = 0, stopped = 0;
    for (const auto& r : rows) {
      EXPECT_EQ(r.cost, expected_cost(r));
      settled += r.cost;
      if (r.status == 200) {
        ++complete;
        full = r.cost;
        EXPECT_EQ(r.output, 3000);
      }
      if (r.status == 402 && r.cost > Money()) {
        ++stopped;
        EXPECT_LE(r.cost, start - hold - hold);  // the other two holds stayed whole
      }
    }
    EXPECT_EQ(complete, 1) << stack.gateway->log().substr(0, 3000);
    if (stream) {
      EXPECT_GE(stopped, 1);
    } else {
      EXPECT_GE(whole_402.load(), 1);
    }
    // Below zero by the one complete answer's shortfall over its hold, at most.
    EXPECT_GE(available(stack.port, key), -(full - hold));
    EXPECT_EQ(available(stack.port, key), start - settled);
    EXPECT_TRUE(ledger_verifies(stack));
  }
}

// The same bound when what runs past the hold is reported rather than counted: an input
// far above the body's size (as an image counts), or content events of many tokens each,
// whose cost only the final usage shows. The streams that cannot be covered stop before
// the event that reports it, and are charged what they hold at most.
TEST(Billing, ReportedUsagePastTheHoldOverdrawsByOneShortfallAtMost) {
  struct Case {
    const char* name;
    const char* path;
    std::string body;
    std::int64_t output_held;  // what the hold assumed: min(max_tokens, max_output_tokens)
    PricePerMtok in, out;
    const char* fund;
  };
  // (latency_ms: the upstream answers only once every request has taken its hold, so the
  // six run at once even on a loaded machine.)
  const std::vector<Case> cases = {
      {"anthropic input", "/v1/messages",
       R"({"model":"claude-test","max_tokens":20,"stream":true,"messages":[{"role":"user","content":"look"}],"sim":{"input_tokens":100000,"output_tokens":20,"latency_ms":400}})",
       20, kClaudeIn, kClaudeOut, "0.003"},
      {"anthropic deltas", "/v1/messages",
       R"({"model":"claude-test","max_tokens":8000,"stream":true,"messages":[{"role":"user","content":"go"}],"sim":{"output_tokens":6000,"tokens_per_chunk":10,"latency_ms":400}})",
       4096, kClaudeIn, kClaudeOut, "0.2"},
      {"openai chunks", "/v1/chat/completions",
       R"({"model":"gpt-test","max_tokens":5000,"stream":true,"messages":[{"role":"user","content":"go"}],"sim":{"output_tokens":3000,"tokens_per_chunk":10,"latency_ms":400}})",
       1000, kGptIn, kGptOut, "0.002"}};
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    Stack stack("billing: { trial_usd: \"0\" }", {"--threads", "2"});
    ASSERT_GT(stack.port, 0);
    const std::string key = funded_key(stack.port, c.fund);
    const Money hold = cost_of(static_cast<std::int64_t>(c.body.size()), c.in, 0, c.in,
                               c.output_held, c.out);
    std::vector<std::thread> clients;
    for (int i = 0; i < 6; ++i) {
      clients.emplace_back([&] {
        (void)http_request(stack.port, "POST", c.path, c.body,
                           {{"authorization", "Bearer " + key}, {"x-api-key", key}});
      });
    }
    for (auto& t : clients) t.join();
    std::this_thread::sleep_for(300ms);
    const auto rows = usage_log(stack.port, kAdmin, "&account=acct_2");
    Money settled, full;
    int complete = 0, stopped = 0;
    for (const auto& r : rows) {
      settled += r.cost;
      if (r.status == 200) {
        ++complete;
        full = r.cost;
        EXPECT_EQ(r.cost, expected_cost(r));
      }
      if (r.status == 402) ++stopped;
    }
    EXPECT_GE(complete, 1) << stack.gateway->log().substr(0, 3000);
    EXPECT_GE(stopped, 1);
    const Money left = available(stack.port, key);
    EXPECT_GE(left, -(full - hold)) << "overdrawn past one response's shortfall";
    EXPECT_EQ(left, Money::parse(c.fund).value() - settled);
    EXPECT_TRUE(ledger_verifies(stack));
  }
}

// A POST of `body` to `path` with the stack's key, as raw bytes.
std::string post_request(const Stack& stack, const std::string& path, const std::string& body) {
  return "POST " + path + " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + stack.key +
         "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}

// Sends a stream request and leaves after the first content arrives.
void leave_mid_stream(const Stack& stack, const std::string& body) {
  RawConnection c(stack.port);
  ASSERT_TRUE(c.send(post_request(stack, "/v1/chat/completions", body)));
  ASSERT_NE(c.read_until("content", 3s).find("content"), std::string::npos);
}

std::vector<UsageRow> wait_for_rows(const Stack& stack, std::size_t n, std::chrono::seconds timeout) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  std::vector<UsageRow> rows;
  while (std::chrono::steady_clock::now() < until) {
    rows = usage_log(stack.port, stack.auth());
    if (rows.size() >= n) break;
    std::this_thread::sleep_for(50ms);
  }
  return rows;
}

TEST(Billing, ClientLeavingMidStreamIsBilledTheUpstreamsFinalUsage) {
  Stack stack;
  ASSERT_GT(stack.port, 0);
  leave_mid_stream(stack,
                   R"({"model":"gpt-test","stream":true,"messages":[],"sim":{"output_tokens":30,"tokens_per_second":30}})");
  // Turnpike reads on (bounded) until the upstream reports usage: all 30 tokens.
  const auto rows = wait_for_rows(stack, 1, 10s);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].status, 499);
  EXPECT_EQ(rows[0].output, 30);
  EXPECT_EQ(rows[0].cost, expected_cost(rows[0]));
  EXPECT_EQ(http_request(stack.sim_port, "GET", "/sim/requests").body.find("\"cancelled\":1"),
            std::string::npos);
}

TEST(Billing, ClientLeavingWithoutDrainBillsWhatWasRelayedAndCancelsUpstream) {
  Stack stack("billing: { disconnect_drain_ms: 0 }");
  ASSERT_GT(stack.port, 0);
  leave_mid_stream(stack,
                   R"({"model":"gpt-test","stream":true,"messages":[],"sim":{"output_tokens":200,"tokens_per_second":20}})");
  const auto rows = wait_for_rows(stack, 1, 10s);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].status, 499);
  EXPECT_GE(rows[0].output, 1);
  EXPECT_LT(rows[0].output, 200);
  EXPECT_EQ(rows[0].cost, expected_cost(rows[0]));
  bool cancelled = false;
  for (int i = 0; i < 60 && !cancelled; ++i) {
    std::this_thread::sleep_for(50ms);
    cancelled = http_request(stack.sim_port, "GET", "/sim/requests").body.find("\"cancelled\":1") !=
                std::string::npos;
  }
  EXPECT_TRUE(cancelled);
}

TEST(Billing, ASilentUpstreamCannotHoldTheDrainPastItsDeadline) {
  // The upstream goes silent after 3 tokens and would stay so for 10 minutes; the client
  // leaves after the first. The drain ends at its deadline, not at the upstream's idle
  // timeout (60 s), and bills what was relayed.
  Stack stack("billing: { disconnect_drain_ms: 300 }");
  ASSERT_GT(stack.port, 0);
  leave_mid_stream(stack,
                   R"({"model":"gpt-test","stream":true,"messages":[],"sim":{"output_tokens":50,"tokens_per_second":50,"stall_after_chunks":3}})");
  const auto rows = wait_for_rows(stack, 1, 10s);
  ASSERT_EQ(rows.size(), 1u) << stack.gateway->log();
  EXPECT_EQ(rows[0].status, 499);
  EXPECT_GE(rows[0].output, 1);
  EXPECT_LE(rows[0].output, 3);
  EXPECT_EQ(rows[0].cost, expected_cost(rows[0]));
}

// An upstream that reports a running usage on every chunk (vLLM's continuous_usage_stats)
// and ends its body short of the answer's end: a running count is not the final usage, so
// the client is told the stream was cut, and the row says 502.
TEST(Billing, ARunningUsageCountDoesNotMakeACutStreamWhole) {
  Stack stack;
  ASSERT_GT(stack.port, 0);
  const std::string body =
      R"({"model":"gpt-test","stream":true,"messages":[],"sim":{"output_tokens":20,"end_after_chunks":5,"continuous_usage":1}})";
  RawConnection c(stack.port);
  ASSERT_TRUE(c.send(post_request(stack, "/v1/chat/completions", body)));
  const std::string got = c.read_until("before its end", 5s);
  EXPECT_NE(got.find("ended the stream before its end"), std::string::npos) << got;
  EXPECT_EQ(got.find("data: [DONE]"), std::string::npos) << got;
  const auto rows = wait_for_rows(stack, 1, 10s);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].status, 502);
  EXPECT_EQ(rows[0].output, 5);
  EXPECT_EQ(rows[0].cost, expected_cost(rows[0]));
}

// Sends `body` to `path` and closes the connection after `after`, before any answer.
// `more` goes after the request (a pipelined one, a stray CRLF), unread by the gateway.
void leave_before_the_answer(const Stack& stack, const std::string& path, const std::string& body,
                             std::chrono::milliseconds after, const std::string& more = {}) {
  RawConnection c(stack.port);
  ASSERT_TRUE(c.send(post_request(stack, path, body)));
  if (!more.empty()) {
    std::this_thread::sleep_for(50ms);
    ASSERT_TRUE(c.send(more));
  }
  std::this_thread::sleep_for(after);
}

// A client that leaves while the upstream is silent is seen to go by the watch on its
// connection, not only by a failed write: the drain holds from then on, and the row says 499.
TEST(Billing, AClientLeavingWhileTheUpstreamIsSilentIsSeenToGo) {
  Stack stack("billing: { disconnect_drain_ms: 300 }");
  ASSERT_GT(stack.port, 0);
  // The upstream goes silent after its first token, which the client reads before it
  // leaves: nothing is written after that, so only the watch can tell.
  const auto left_at = std::chrono::steady_clock::now();
  leave_mid_stream(stack,
                   R"({"model":"gpt-test","stream":true,"messages":[],"sim":{"output_tokens":50,"tokens_per_second":50,"stall_after_chunks":1}})");
  const auto rows = wait_for_rows(stack, 1, 10s);
  ASSERT_EQ(rows.size(), 1u) << stack.gateway->log();
  EXPECT_LT(std::chrono::steady_clock::now() - left_at, 5s);  // not the idle timeout's 60 s
  EXPECT_EQ(rows[0].status, 499);
  EXPECT_EQ(rows[0].output, 1);
  EXPECT_EQ(rows[0].cost, expected_cost(rows[0]));
  // The access log says so too, beside the 200 of the stream's head.
  const std::string log = stack.gateway->log();
  EXPECT_NE(log.find(R"("status":200,"finished":false,"client_gone":true)"), std::string::npos)
      << log;
}

// Events that come after the client left are not billed as relayed: the watch's news is
// taken before a piece is metered and written, not only at the next read.
TEST(Billing, EventsThatCameAfterTheClientLeftAreNotBilledAsRelayed) {
  Stack stack("billing: { disconnect_drain_ms: 300 }");
  ASSERT_GT(stack.port, 0);
  // A token every 250 ms, silent after the third: the client reads the first and leaves.
  RawConnection c(stack.port);
  ASSERT_TRUE(c.send(post_request(
      stack, "/v1/chat/completions",
      R"({"model":"gpt-test","stream":true,"messages":[],"sim":{"output_tokens":50,"tokens_per_second":4,"stall_after_chunks":3}})")));
  const std::string got = c.read_until(R"("delta":{"content":")", 3s);
  std::size_t events = 0;
  for (std::size_t at = got.find(R"("delta":{"content":")"); at != std::string::npos;
       at = got.find(R"("delta":{"content":")", at + 1)) {
    ++events;
  }
  ASSERT_GE(events, 1u) << got;
  c.close();
  const auto rows = wait_for_rows(stack, 1, 10s);
  ASSERT_EQ(rows.size(), 1u) << stack.gateway->log();
  EXPECT_EQ(rows[0].status, 499);
  EXPECT_EQ(rows[0].output, static_cast<std::int64_t>(events));
  EXPECT_EQ(rows[0].cost, expected_cost(rows[0]));
}

// A write that had to wait for a slow reader arms the connection's write deadline; once
// the write is done the deadline must not fire later and, cancelling the socket, end the
// watch on the client: a client that leaves during a later silence is still seen to go.
TEST(Billing, ASlowReaderIsStillWatchedAfterItsWritesCaughtUp) {
  Stack stack("limits: { write_timeout_ms: 300 }\nbilling: { disconnect_drain_ms: 300 }");
  ASSERT_GT(stack.port, 0);
  const std::string body =
      R"({"model":"gpt-test","stream":true,"messages":[],"sim":{"output_tokens":100000,"stall_after_chunks":90000}})";
  RawConnection c(stack.port);
  ASSERT_TRUE(c.send(post_request(stack, "/v1/chat/completions", body)));
  std::this_thread::sleep_for(150ms);  // not reading: the socket's buffers fill
  // Then reads everything up to the silence, and past the write timeout in it.
  EXPECT_GT(c.discard_until_quiet(1500ms, 30s), std::size_t{4} << 20);
  c.close();
  const auto left_at = std::chrono::steady_clock::now();
  const auto rows = wait_for_rows(stack, 1, 10s);
  ASSERT_EQ(rows.size(), 1u) << stack.gateway->log().substr(0, 2000);
  EXPECT_LT(std::chrono::steady_clock::now() - left_at, 5s);
  EXPECT_EQ(rows[0].status, 499);
  EXPECT_EQ(rows[0].output, 90000);  // every token up to the silence reached the client
}

// A whole answer whose client left before it came: billed when it comes within the drain
// (the upstream did the work), with status 499 rather than the 200 nobody got.
TEST(Billing, AWholeAnswerWhoseClientLeftIsLogged499) {
  Stack stack;
  ASSERT_GT(stack.port, 0);
  leave_before_the_answer(
      stack, "/v1/chat/completions",
      R"({"model":"gpt-test","messages":[],"sim":{"latency_ms":800,"output_tokens":7}})", 300ms);
  const auto rows = wait_for_rows(stack, 1, 10s);
  ASSERT_EQ(rows.size(), 1u) << stack.gateway->log();
  EXPECT_EQ(rows[0].status, 499);
  EXPECT_EQ(rows[0].output, 7);
  EXPECT_EQ(rows[0].cost, expected_cost(rows[0]));
  EXPECT_TRUE(ledger_verifies(stack));
}

// A client that half-closes after its request counts as gone, as with nginx: its answer,
// billed when it comes within the drain (499), is not sent, so no client holds an answer
// whose row says it got none.
TEST(Billing, AHalfClosedClientGetsNoAnswerItsRowDenies) {
  Stack stack;
  ASSERT_GT(stack.port, 0);
  const std::string body =
      R"({"model":"gpt-test","messages":[],"sim":{"latency_ms":400,"output_tokens":7}})";
  RawConnection c(stack.port);
  ASSERT_TRUE(c.send(post_request(stack, "/v1/chat/completions", body)));
  c.shutdown_write();
  EXPECT_EQ(c.read_until("HTTP/1.1", 5s), "");
  const auto rows = wait_for_rows(stack, 1, 10s);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].status, 499);
  EXPECT_EQ(rows[0].output, 7);
  EXPECT_EQ(rows[0].cost, expected_cost(rows[0]));
}

// With no drain, a client leaving before the answer ends the wait for it at once: voided,
// status 499, and no other route is tried for nobody.
TEST(Billing, WithoutADrainAWholeAnswerIsNotAwaitedForAClientThatLeft) {
  Stack stack("billing: { disconnect_drain_ms: 0 }");
  ASSERT_GT(stack.port, 0);
  const auto left_at = std::chrono::steady_clock::now();
  leave_before_the_answer(
      stack, "/v1/chat/completions",
      R"({"model":"gpt-test","messages":[],"sim":{"latency_ms":3000,"output_tokens":7}})", 300ms);
  const auto rows = wait_for_rows(stack, 1, 10s);
  ASSERT_EQ(rows.size(), 1u) << stack.gateway->log();
  EXPECT_LT(std::chrono::steady_clock::now() - left_at, 2500ms);  // before the upstream answered
  EXPECT_EQ(rows[0].status, 499);
  EXPECT_EQ(rows[0].cost, Money());
  const auto balance = http_request(stack.port, "GET", "/api/balance", {}, stack.auth());
  EXPECT_NE(balance.body.find("\"held_usd\":\"0.00\""), std::string::npos) << balance.body;
}

// A client that sent more after its request (a stray CRLF here; a pipelined request alike)
// keeps its socket readable, so readiness cannot tell when it leaves: its connection's TCP
// state does.
TEST(Billing, AClientThatSentMoreIsStillSeenToGo) {
  Stack stack("billing: { disconnect_drain_ms: 0 }");
  ASSERT_GT(stack.port, 0);
  const auto left_at = std::chrono::steady_clock::now();
  leave_before_the_answer(
      stack, "/v1/chat/completions",
      R"({"model":"gpt-test","messages":[],"sim":{"latency_ms":3000,"output_tokens":7}})", 300ms,
      "\r\n");
  const auto rows = wait_for_rows(stack, 1, 10s);
  ASSERT_EQ(rows.size(), 1u) << stack.gateway->log();
  EXPECT_LT(std::chrono::steady_clock::now() - left_at, 2500ms);  // before the upstream answered
  EXPECT_EQ(rows[0].status, 499);
  EXPECT_EQ(rows[0].cost, Money());
}

TEST(Billing, KillDashNineUnderLoadSettlesEveryCompletedRequestExactlyOnce) {
  Stack stack({}, {"--threads", "2"});
  ASSERT_GT(stack.port, 0);
  std::mutex mu;
  std::vector<std::string> completed;  // request ids whose response arrived whole
  std::atomic<bool> stop{false};
  std::vector<std::thread> clients;
  for (int i = 0; i < 8; ++i) {
    clients.emplace_back([&, i] {
      const bool stream = i % 2 == 0;
      const std::string path = i % 4 < 2 ? "/v1/chat/completions" : "/v1/messages";
      const std::string model = path == "/v1/messages" ? "claude-test" : "gpt-test";
      const std::string body =
          R"({"model":")" + model + R"(","max_tokens":64,"stream":)" + (stream ? "true" : "false") +
          R"(,"messages":[{"role":"user","content":"load"}],"sim":{"output_tokens":12,"tokens_per_second":400}})";
      while (!stop) {
        const auto res = http_request(stack.port, "POST", path, body,
                                      {{"authorization", "Bearer " + stack.key}}, 5s);
        const bool whole =
            res.status == 200 &&
            (!stream || res.body.ends_with("data: [DONE]\n\n") ||
             res.body.find("event: message_stop") != std::string::npos);
        if (whole) {
          std::lock_guard lock(mu);
          completed.push_back(res.header("x-request-id"));
        }
      }
    });
  }
  std::this_thread::sleep_for(1500ms);
  ASSERT_TRUE(stack.restart_gateway(SIGKILL));
  stop = true;
  for (auto& t : clients) t.join();
  ASSERT_GT(completed.size(), 20u);

  std::map<std::string, int> seen;
  Money settled;
  for (const auto& r : usage_log(stack.port, kAdmin)) {
    ++seen[r.request_id];
    if (r.status == 200) {
      EXPECT_EQ(r.cost, expected_cost(r)) << r.request_id;
    }
    settled += r.cost;
  }
  for (const auto& id : completed) {
    EXPECT_EQ(seen[id], 1) << "request " << id << " completed but is logged " << seen[id] << " times";
  }
  for (const auto& [id, n] : seen) EXPECT_EQ(n, 1) << id;
  // Holds of the requests cut off are gone; what the account lost is what the log says.
  const auto balance = http_request(stack.port, "GET", "/api/balance", {}, stack.auth());
  EXPECT_NE(balance.body.find("\"held_usd\":\"0.00\""), std::string::npos) << balance.body;
  EXPECT_EQ(available(stack.port, stack.key), Money::usd(20) - settled);
  stack.gateway->signal(SIGTERM);
  ASSERT_EQ(stack.gateway->wait_exit(10s), std::optional<int>(0));
  EXPECT_TRUE(ledger_verifies(stack));
}

// An answer that bills nothing (an upstream's error, a refusal it relayed) is still the
// request's last word: its row at no cost commits before the answer goes out, so a kill
// right after cannot lose it. It went with whatever batch came next.
TEST(Billing, AnUnpaidAnswersRowOutlastsAKillRightAfterIt) {
  Stack stack;
  ASSERT_GT(stack.port, 0);
  std::vector<std::pair<std::string, int>> answered;  // request id, status
  for (int i = 0; i < 8; ++i) {
    const bool relayed = i % 2 == 1;  // a 4xx is relayed, a 5xx is a 502
    const auto res = http_request(
        stack.port, "POST", "/v1/chat/completions",
        std::string(
            R"({"model":"gpt-test","max_tokens":8,"messages":[],"sim":{"error_rate":1,"error_status":)") +
            (relayed ? "429" : "500") + "}}",
        stack.auth());
    ASSERT_EQ(res.status, relayed ? 429 : 502) << res.body;
    answered.emplace_back(res.header("x-request-id"), res.status);
    ASSERT_TRUE(stack.restart_gateway(SIGKILL)) << stack.gateway->log();
  }
  std::map<std::string, int> logged;
  for (const auto& r : usage_log(stack.port, kAdmin)) logged[r.request_id] = r.status;
  for (const auto& [id, status] : answered) {
    ASSERT_TRUE(logged.contains(id)) << "request " << id << " (" << status << ") has no row";
    EXPECT_EQ(logged[id], status) << id;
  }
  EXPECT_TRUE(ledger_verifies(stack));
}

// Edits a stored transfer behind the gateway's back: the books no longer reconcile.
// Runs `sql` on the stack's store through a connection of its own (to damage or repair it).
void edit_store(const Stack& stack, const std::string& sql) {
  auto db = store::open_sqlite(stack.dir.path() + "/var/turnpike.db");
  ASSERT_TRUE(db);
  ASSERT_TRUE((*db)->exec(sql)) << sql;
}

// Makes every insert into `table` fail, as a store in trouble would, until let_inserts.
void fail_inserts(const Stack& stack, const std::string& table) {
  edit_store(stack, "CREATE TRIGGER no_" + table + " BEFORE INSERT ON " + table +
                        " BEGIN SELECT RAISE(ABORT, 'disk trouble'); END");
}

void let_inserts(const Stack& stack, const std::string& table) {
  edit_store(stack, "DROP TRIGGER no_" + table);
}

// Makes the store refuse usage rows (until let_inserts), then sends a request whose
// settlement it refuses: the client gets 503.
void fail_a_settlement(const Stack& stack) {
  fail_inserts(stack, "usage_log");
  EXPECT_EQ(http_request(stack.port, "POST", "/v1/chat/completions",
                         R"({"model":"gpt-test","messages":[]})", stack.auth())
                .status,
            503);
}

void tamper(const Stack& stack, std::int64_t delta_nanos) {
  edit_store(stack, "UPDATE transfers SET amount_nanos = amount_nanos + " +
                        std::to_string(delta_nanos) + " WHERE id = 1");
}

TEST(Billing, FailedReconciliationFreezesBillingUntilAnAdminClearsIt) {
  Stack stack("billing: { reconcile_every_ms: 100 }");
  ASSERT_GT(stack.port, 0);
  const std::string chat = R"({"model":"gpt-test","messages":[]})";
  ASSERT_EQ(http_request(stack.port, "POST", "/v1/chat/completions", chat, stack.auth()).status, 200);
  tamper(stack, 1);
  HttpResponse frozen;
  for (int i = 0; i < 100; ++i) {
    frozen = http_request(stack.port, "POST", "/v1/chat/completions", chat, stack.auth());
    if (frozen.status == 503) break;
    std::this_thread::sleep_for(20ms);
  }
  ASSERT_EQ(frozen.status, 503) << frozen.body;
  EXPECT_NE(frozen.body.find("billing_frozen"), std::string::npos) << frozen.body;
  EXPECT_NE(frozen.body.find("reconciliation failed"), std::string::npos) << frozen.body;
  const auto verify = http_request(stack.port, "GET", "/admin/v1/ledger/verify", {}, kAdmin);
  EXPECT_EQ(verify.status, 500);
  EXPECT_NE(verify.body.find("\"ok\":false"), std::string::npos) << verify.body;
  EXPECT_NE(verify.body.find("\"frozen\":true"), std::string::npos);
  // Not ready for new traffic, while still alive.
  const auto ready = http_request(stack.port, "GET", "/readyz");
  EXPECT_EQ(ready.status, 503);
  EXPECT_NE(ready.body.find(R"("status":"not_ready")"), std::string::npos) << ready.body;
  EXPECT_NE(ready.body.find("billing is frozen: reconciliation failed"), std::string::npos)
      << ready.body;

  EXPECT_EQ(http_request(stack.port, "GET", "/healthz").status, 200);
  // Unbillable calls still work; the freeze survives a restart.
  EXPECT_EQ(http_request(stack.port, "GET", "/api/balance", {}, stack.auth()).status, 200);
  EXPECT_EQ(http_request(stack.port, "POST", "/admin/v1/ledger/unfreeze", "{}", kAdmin).status, 400);
  tamper(stack, -1);  // the investigation repairs the row
  ASSERT_TRUE(stack.restart_gateway());
  EXPECT_EQ(http_request(stack.port, "POST", "/v1/chat/completions", chat, stack.auth()).status, 503);
  const auto cleared = http_request(stack.port, "POST", "/admin/v1/ledger/unfreeze",
                                    R"({"note":"row 1 edited by hand; restored"})", kAdmin);
  EXPECT_EQ(cleared.status, 200) << cleared.body;
  EXPECT_EQ(http_request(stack.port, "POST", "/v1/chat/completions", chat, stack.auth()).status, 200);
  EXPECT_EQ(http_request(stack.port, "GET", "/readyz").body, R"({"status":"ok"})");
  EXPECT_EQ(http_request(stack.port, "POST", "/admin/v1/ledger/unfreeze",
                         R"({"note":"again"})", kAdmin).status,
            409);
  const std::string log = stack.gateway->log();
  EXPECT_NE(log.find("billing freeze cleared"), std::string::npos);
}

// A freeze's detail (which account's request, its amounts; the store's internals) is for
// the admin: a customer's 503 and /readyz (no key at all) name the kind of freeze only.
TEST(Billing, AFreezesDetailIsForTheAdminOnly) {
  Stack stack;
  ASSERT_GT(stack.port, 0);
  const std::string chat = R"({"model":"gpt-test","messages":[]})";
  ASSERT_EQ(http_request(stack.port, "POST", "/v1/chat/completions", chat, stack.auth()).status,
            200);
  edit_store(stack, "UPDATE usage_log SET cost_nanos = cost_nanos + 1 WHERE id = 1");
  const auto verify = http_request(stack.port, "GET", "/admin/v1/ledger/verify", {}, kAdmin);
  EXPECT_NE(verify.body.find("of acct_1 cost"), std::string::npos) << verify.body;
  const auto frozen = http_request(stack.port, "POST", "/v1/chat/completions", chat, stack.auth());
  EXPECT_EQ(frozen.status, 503) << frozen.body;
  const auto ready = http_request(stack.port, "GET", "/readyz");
  EXPECT_EQ(ready.status, 503) << ready.body;
  for (const std::string& body : {frozen.body, ready.body}) {
    EXPECT_NE(body.find("billing is frozen: reconciliation failed (admin)"), std::string::npos)
        << body;
    EXPECT_EQ(body.find("acct_"), std::string::npos) << body;
    EXPECT_EQ(body.find(" USD"), std::string::npos) << body;
  }
}

// A gateway (one I/O thread, a key) whose model `m` goes to sse_upstream.py in `mode`
// (with a flex tier, and upstream waits of `idle_ms` between body reads).
struct CloserStack {
  TempDir dir;
  Process upstream;
  std::unique_ptr<Process> gateway;
  int port = 0;  // 0: it did not start (see log())
  std::string key;

  explicit CloserStack(const std::string& mode, int idle_ms = 60'000)
      : upstream("/usr/bin/python3",
                 std::vector<std::string>{
                     std::string(TURNPIKE_SOURCE_DIR) + "/tests/integration/sse_upstream.py",
                     mode}) {
    const int up = upstream.wait_listening();
    if (up <= 0) return;
    const std::string config = dir.write(
        "t.yaml", "listen: \"127.0.0.1:0\"\nupstream: { idle_timeout_ms: " +
                      std::to_string(idle_ms) +
                      " }\nproviders:\n  - { name: closer, api: openai, "
                      "base_url: \"http://127.0.0.1:" + std::to_string(up) + "/v1\" }\n"
                      "models:\n  - name: m\n    routes: [{ provider: closer, input_per_mtok: "
                      "\"1\", output_per_mtok: \"1\", flex_input_per_mtok: \"0.5\", "
                      "flex_output_per_mtok: \"0.5\" }]\n");
    gateway = start_gateway(dir, config);
    port = gateway->wait_listening();
    if (port > 0) key = create_key(port);
  }
  std::string log() const { return upstream.log() + (gateway ? gateway->log() : ""); }
  // A chat-completion stream for model m; `extra`: more members, each followed by a comma.
  HttpResponse stream(const std::string& extra = "") const {
    return http_request(port, "POST", "/v1/chat/completions",
                        R"({"model":"m","stream":true,)" + extra + R"("messages":[]})",
                        bearer(key));
  }
};

// A whole answer's flex attempt, streamed upstream and built: a usage chunk that more
// content follows is a running count (the rest is billed as relayed, not free), and an
// answer that ended is served though its terminator never comes.
TEST(Billing, AGatheredFlexAnswerIsBilledWhatCameAndServedOnceItEnded) {
  const std::string flex_body = R"({"model":"m","start_within":"00h-00m-05s","messages":[]})";
  {
    const CloserStack early("early_usage");
    ASSERT_GT(early.port, 0) << early.log();
    const auto res =
        http_request(early.port, "POST", "/v1/chat/completions", flex_body, bearer(early.key));
    ASSERT_EQ(res.status, 200) << res.body;
    EXPECT_EQ(res.header("x-turnpike-service-tier"), "flex");
    EXPECT_NE(res.body.find(R"("content":"Hello there x x)"), std::string::npos) << res.body;
    const auto rows = usage_log(early.port, bearer(early.key));
    ASSERT_EQ(rows.size(), 1u);
    EXPECT_EQ(rows[0].output, 22);  // two words and twenty more, not the early 1
  }
  const CloserStack hanging("finish_then_hang", /*idle_ms=*/500);
  ASSERT_GT(hanging.port, 0) << hanging.log();
  const auto res =
      http_request(hanging.port, "POST", "/v1/chat/completions", flex_body, bearer(hanging.key));
  ASSERT_EQ(res.status, 200) << res.body;
  EXPECT_EQ(res.header("x-turnpike-service-tier"), "flex");
  EXPECT_EQ(res.header("x-turnpike-fallbacks"), "0");
  EXPECT_NE(res.body.find(R"("completion_tokens":2)"), std::string::npos) << res.body;
}

// An upstream that closes a stream without `data: [DONE]`: after its final usage, or after
// a finish_reason, the stream was whole and ends normally; without either it was cut
// short, and the client must not take it for complete (an error event, no end of the
// chunked body, status 502 in the log).
TEST(Billing, AStreamEndedWithoutItsTerminatorIsWholeOnlyWhenItSaidItEnded) {
  for (const std::string mode : {"usage", "finish", "cut"}) {
    const CloserStack closer(mode);
    ASSERT_GT(closer.port, 0) << closer.log();
    const int port = closer.port;
    const std::string& key = closer.key;
    const auto res = closer.stream();
    const auto usage = http_request(port, "GET", "/api/usage", {}, bearer(key));
    if (mode != "cut") {
      EXPECT_EQ(res.status, 200) << mode << ": " << res.body;
      EXPECT_NE(res.body.find(" there"), std::string::npos) << res.body;
      EXPECT_NE(usage.body.find(R"("output_tokens":2)"), std::string::npos) << usage.body;
      EXPECT_NE(usage.body.find(R"("status":200)"), std::string::npos) << usage.body;
    } else {
      EXPECT_EQ(res.status, 0) << res.body;  // the chunked body never ended
      EXPECT_NE(usage.body.find(R"("status":502)"), std::string::npos) << usage.body;
      EXPECT_NE(usage.body.find(R"("output_tokens":2)"), std::string::npos) << usage.body;
    }
  }
}

// A gateway in front of one sim (started with `sim_args`) with the models in `models_yaml`
// (providers `oa`, openai, and `an`, anthropic, both on the sim) and `extra_yaml`.
struct OneSim {
  TempDir dir;
  std::unique_ptr<Process> sim;
  std::unique_ptr<Process> gateway;
  int port = 0;

  OneSim(const std::string& models_yaml, const std::string& extra_yaml,
         std::vector<std::string> sim_args = {}) {
    sim_args.insert(sim_args.begin(), {"--listen", "127.0.0.1:0"});
    sim = std::make_unique<Process>(bin("turnpike-sim"), sim_args);
    const std::string up = std::to_string(sim->wait_listening());
    const std::string config = dir.write(
        "t.yaml", "listen: \"127.0.0.1:0\"\n" + extra_yaml +
                      "\nproviders:\n  - { name: oa, api: openai, base_url: \"http://127.0.0.1:" +
                      up + "/v1\" }\n  - { name: an, api: anthropic, base_url: "
                      "\"http://127.0.0.1:" + up + "/v1\" }\nmodels:\n" + models_yaml);
    gateway = start_gateway(dir, config);
    port = gateway->wait_listening();
  }
};

// Server-side searches are held for as the request declares them (a web_search tool's
// max_uses, else 10), and a provider's count is believed only as far as the request allows
// (max_uses, else 100; none without the tool): past it, the answer is charged what was
// held at most. A count was believed whatever it said: one response reporting a million
// searches took 10,000 USD from an account holding 1.
TEST(Billing, ServerSideSearchesAreHeldForAndBelievedOnlyAsFarAsTheRequestAllows) {
  OneSim up("  - name: free\n    routes: [{ provider: an, input_per_mtok: \"0\", "
            "output_per_mtok: \"0\" }]\n",
            "billing: { trial_usd: \"0\" }");
  ASSERT_GT(up.port, 0) << up.gateway->log();
  const std::string key = funded_key(up.port, "1");
  const std::map<std::string, std::string> auth = {{"x-api-key", key},
                                                   {"anthropic-version", "2023-06-01"}};
  auto ask = [&](const std::string& tools, int searches, bool stream) {
    return http_request(
        up.port, "POST", "/v1/messages",
        R"({"model":"free","max_tokens":5,"messages":[{"role":"user","content":"hi"}],)" + tools +
            R"("stream":)" + (stream ? "true" : "false") + R"(,"sim":{"web_search_requests":)" +
            std::to_string(searches) + "}}",
        auth);
  };
  const std::string unbounded = R"("tools":[{"type":"web_search_20250305","name":"web_search"}],)";
  const std::string two =
      R"("tools":[{"type":"web_search_20250305","name":"web_search","max_uses":2}],)";
  const Money two_searches = Money::parse("0.02").value();  // at 10 USD per 1000
  for (const bool stream : {false, true}) {
    // Without the tool, the route is free and holds nothing: a count is not believed.
    const Money start = available(up.port, key);
    auto res = ask("", 1'000'000, stream);
    EXPECT_EQ(res.status, 200) << res.body;
    EXPECT_EQ(available(up.port, key), start) << stream;
    // Past max_uses: charged the hold at most.
    res = ask(two, 1'000'000, stream);
    EXPECT_EQ(res.status, 200) << res.body;
    EXPECT_GE(available(up.port, key), start - two_searches) << stream;
    // Within it: charged.
    const Money before = available(up.port, key);
    res = ask(two, 2, stream);
    EXPECT_EQ(res.status, 200) << res.body;
    EXPECT_EQ(available(up.port, key), before - two_searches) << stream;
  }
  // Without max_uses, ten searches are held (0.10 USD), and up to 100 believed: 50 cost
  // 0.50 USD, past the hold, and the account covers them.
  const Money before = available(up.port, key);
  EXPECT_EQ(ask(unbounded, 50, false).status, 200);
  EXPECT_EQ(available(up.port, key), before - Money::parse("0.50").value());
  EXPECT_EQ(ask(unbounded, 1000, false).status, 200);  // past 100: the hold at most
  EXPECT_GE(available(up.port, key), before - Money::parse("0.60").value());
  const auto verify = http_request(up.port, "GET", "/admin/v1/ledger/verify", {}, kAdmin);
  EXPECT_NE(verify.body.find(R"("ok":true)"), std::string::npos) << verify.body;
  EXPECT_NE(up.gateway->log().find("more web searches than the request allows"), std::string::npos);
}

// A stream's running cost counts the search its request is by itself (OpenAI's
// web_search_options): its tokens could use the part of the hold set aside for the search
// fee, and the fee then overdrew the account at settlement without the account's one
// overdraft, once for every such stream at once.
TEST(Billing, AStreamsRunningCostCountsItsSearch) {
  OneSim up(
      "  - name: srch\n    routes: [{ provider: oa, input_per_mtok: \"3\", "
      "output_per_mtok: \"15\", web_search_per_1k: \"25\" }]\n",
      "billing: { trial_usd: \"0\" }");
  ASSERT_GT(up.port, 0) << up.gateway->log();
  // Each holds ~0.0255 USD (its body's bytes and 10 output tokens, and one search) and
  // costs 0.04915 (8000 input tokens reported at the end, 10 output, the search).
  const std::string key = funded_key(up.port, "0.06");
  const std::string body =
      R"({"model":"srch","stream":true,"max_tokens":10,"web_search_options":{},"messages":[],)"
      R"("sim":{"input_tokens":8000,"output_tokens":10,"tokens_per_second":20}})";
  std::vector<std::thread> streams;
  for (int i = 0; i < 2; ++i) {
    streams.emplace_back(
        [&] { http_request(up.port, "POST", "/v1/chat/completions", body, bearer(key)); });
  }
  for (std::thread& t : streams) t.join();
  // One of them may overdraw the account by its shortfall (0.06 − 0.04915 − what the other
  // was charged, its hold at most); both overdrew it before (0.06 − 2 × 0.04915).
  EXPECT_GE(available(up.port, key), Money::parse("-0.02").value());
  const auto verify = http_request(up.port, "GET", "/admin/v1/ledger/verify", {}, kAdmin);
  EXPECT_NE(verify.body.find(R"("ok":true)"), std::string::npos) << verify.body;
}

// An answer without usage is billed an estimate, and charged what was held at most: the
// hold is not extended for a guess. An embeddings answer has no output, estimated or not.
TEST(Billing, AnAnswerWithoutUsageIsChargedItsHoldAtMost) {
  OneSim up("  - name: dear\n    routes: [{ provider: oa, input_per_mtok: \"1\", "
            "output_per_mtok: \"1000\" }]\n"
            "  - name: vec\n    kind: embeddings\n    routes: [{ provider: oa, "
            "input_per_mtok: \"1\", output_per_mtok: \"1000\" }]\n",
            "billing: { trial_usd: \"0\" }",
            {"--omit-usage", "1", "--output-tokens", "500", "--embedding-dims", "1000"});
  ASSERT_GT(up.port, 0) << up.gateway->log();
  const std::string key = funded_key(up.port, "5");
  const auto res = http_request(
      up.port, "POST", "/v1/chat/completions",
      R"({"model":"dear","max_tokens":5,"messages":[{"role":"user","content":"hi"}]})", bearer(key));
  ASSERT_EQ(res.status, 200) << res.body;
  // The hold: about 5 output tokens at 1000 USD per million, plus the input; the answer's
  // ~600 estimated output tokens would cost ~0.6 USD.
  const Money cost = Money::parse(res.header("x-turnpike-cost-usd")).value();
  EXPECT_GT(cost, Money());
  EXPECT_LT(cost, Money::parse("0.01").value()) << cost.to_string();
  const auto vec = http_request(up.port, "POST", "/v1/embeddings",
                                R"({"model":"vec","input":"hello world"})", bearer(key));
  ASSERT_EQ(vec.status, 200) << vec.body;
  const auto usage = http_request(up.port, "GET", "/api/usage", {}, bearer(key));
  EXPECT_NE(usage.body.find(R"("model":"vec")"), std::string::npos) << usage.body;
  EXPECT_NE(usage.body.find(R"("output_tokens":0,)"), std::string::npos) << usage.body;
}

// A hold does not lapse while its settlement waits for the store: the charge is posted
// from it, never taken as an unlicensed overdraft.
TEST(Billing, AHoldDoesNotLapseWhileItsSettlementWaitsForTheStore) {
  // Trial credit only: a charge taken without its hold would overdraw paid.
  Stack stack("billing: { trial_usd: \"0.01\", hold_timeout_ms: 1500 }\n"
              "upstream: { connect_timeout_ms: 200, first_byte_timeout_ms: 500, "
              "answer_timeout_ms: 500, idle_timeout_ms: 500 }\n"
              "routing: { fallback_deadline_ms: 500 }");
  ASSERT_GT(stack.port, 0) << stack.gateway->log();
  const std::string key = funded_key(stack.port, "");
  auto db = store::open_sqlite(stack.dir.path() + "/var/turnpike.db");
  ASSERT_TRUE(db);
  ASSERT_TRUE((*db)->exec("BEGIN IMMEDIATE"));  // the writer waits (busy timeout 5 s)
  std::thread asking([&] {
    EXPECT_EQ(http_request(stack.port, "POST", "/v1/chat/completions",
                           R"({"model":"gpt-test","max_tokens":5,"messages":[]})", bearer(key))
                  .status,
              200);
  });
  std::this_thread::sleep_for(3500ms);  // past the hold timeout and the expiry sweep
  // Still reserved: lapsed, it would be free for another request to take.
  const auto stalled = http_request(stack.port, "GET", "/api/balance", {}, bearer(key));
  EXPECT_EQ(stalled.body.find(R"("held_usd":"0.00")"), std::string::npos) << stalled.body;
  ASSERT_TRUE((*db)->exec("COMMIT"));
  asking.join();
  const auto balance = http_request(stack.port, "GET", "/api/balance", {}, bearer(key));
  EXPECT_EQ(balance.body.find(R"("paid_usd":"-)"), std::string::npos) << balance.body;
  EXPECT_TRUE(ledger_verifies(stack));
}

// An error where a stream's first event belongs fails the attempt (the next route could
// answer; here none is left), however the upstream's bytes were split: in pieces that each
// hold no whole event. It was relayed as the answer when its first piece held no whole
// event.
TEST(Billing, AnErrorAsTheFirstEventFailsTheAttemptHoweverItIsSplit) {
  const CloserStack closer("error_first_split");
  ASSERT_GT(closer.port, 0) << closer.log();
  const auto res = closer.stream();
  EXPECT_EQ(res.status, 502) << res.body;
  EXPECT_NE(res.body.find("sent an error event where its stream's first event belongs"),
            std::string::npos)
      << res.body;
  const auto rows = usage_log(closer.port, bearer(closer.key));
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].status, 502);
  EXPECT_EQ(rows[0].cost, Money());
}

// A provider that ignores the max_tokens asked for has its stream cut well past it (a margin
// for events that are no tokens), charged what the hold holds at most: the client does not
// pay for all it sends. A limit it keeps to, or none asked for, changes nothing.
TEST(Billing, AStreamFarPastTheMaxTokensAskedForIsCut) {
  const CloserStack closer("long");
  ASSERT_GT(closer.port, 0) << closer.log();
  const auto cut = closer.stream(R"("max_tokens":5,)");
  EXPECT_EQ(cut.status, 0) << cut.body;  // the chunked body never ended
  const auto within = closer.stream(R"("max_tokens":1000,)");
  EXPECT_EQ(within.status, 200) << within.body;
  EXPECT_NE(within.body.find("data: [DONE]"), std::string::npos);
  const auto unbounded = closer.stream();
  EXPECT_EQ(unbounded.status, 200) << unbounded.body;
  const auto rows = usage_log(closer.port, bearer(closer.key));
  ASSERT_EQ(rows.size(), 3u);
  // In order: the cut one, billed what came before the cut; a limit kept to; none.
  EXPECT_EQ(rows[0].status, 502);
  EXPECT_LE(rows[0].output, 5 + 64 + 1);
  EXPECT_EQ(rows[1].status, 200);
  EXPECT_EQ(rows[1].output, 302);
  EXPECT_EQ(rows[2].status, 200);
  EXPECT_NE(closer.gateway->log().find("upstream stream broke after its head"), std::string::npos);
}

// A stream whose final usage claims far more output than its model's max_output_tokens
// (none asked for) ends as sent, charged what was held at most: its hold was extended to the
// whole claim, by the one response licensed to overdraw.
TEST(Billing, AStreamReportPastWhatTheModelCanDoIsChargedItsHoldAtMost) {
  const CloserStack closer("overreport");
  ASSERT_GT(closer.port, 0) << closer.log();
  const auto res = closer.stream();
  EXPECT_EQ(res.status, 200) << res.body;
  EXPECT_NE(res.body.find("data: [DONE]"), std::string::npos) << res.body;
  const auto rows = usage_log(closer.port, bearer(closer.key));
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].output, 1'000'000);  // the row shows what was reported
  // The hold: the body's bytes of input and 4096 output tokens at 1 USD per million.
  EXPECT_LE(rows[0].cost, Money::parse("0.0042").value());
  EXPECT_NE(closer.gateway->log().find("its model's max_output_tokens) allows"), std::string::npos);
}

// Keep-alives before a stream's first event go to the client at once, its head with them: a
// model that works a while before its first event keeps every hop between alive.
TEST(Billing, KeepAlivesBeforeTheFirstEventGoOutAtOnce) {
  const CloserStack closer("ping_then_slow");
  ASSERT_GT(closer.port, 0) << closer.log();
  RawConnection c(closer.port);
  const std::string body = R"({"model":"m","stream":true,"messages":[]})";
  ASSERT_TRUE(c.send("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                     closer.key + "\r\nContent-Type: application/json\r\nContent-Length: " +
                     std::to_string(body.size()) + "\r\n\r\n" + body));
  const std::string early = c.read_until(": keep-alive", 1000ms);
  EXPECT_NE(early.find("HTTP/1.1 200"), std::string::npos) << early;
  EXPECT_NE(early.find(": keep-alive"), std::string::npos) << early;
  const std::string rest = c.read_until(" there", 5s);
  EXPECT_NE(rest.find(" there"), std::string::npos) << rest;
}

// What a stream's end says, read as a client and the usage log see it: every choice of
// n > 1 must finish; an error chunk inside a stream that ends well still makes its row a
// failure; one the upstream closes after is ended as the upstream ended it, its words with
// no error of Turnpike's after them; a media type in any case is a stream; a data field
// over several lines is one.
TEST(Billing, AStreamsEndIsReadForEveryChoiceErrorAndShape) {
  struct Case {
    std::string mode;
    std::string body;
    int client_status;  // 0: the chunked body never ended (the harness keeps no body then)
    std::string row;    // in the usage row
    std::string seen;   // in what the client got
    std::string unseen;
  };
  const std::string two = R"({"model":"m","stream":true,"n":2,"messages":[]})";
  const std::string one = R"({"model":"m","stream":true,"messages":[]})";
  for (const Case& c : std::vector<Case>{
           {"one_of_two", two, 0, R"("status":502)", "", ""},
           {"two_of_two", two, 200, R"("status":200)", " you", ""},
           {"error", one, 200, R"("status":502)", "generation failed", ""},
           {"error_then_close", one, 200, R"("status":502)", "generation failed", "before its end"},
           {"mixed_case", one, 200, R"("input_tokens":4,)", " there", "prompt_tokens"},
           {"split_usage", one, 200, R"("input_tokens":4,)", " there", "prompt_tokens"}}) {
    const CloserStack closer(c.mode);
    ASSERT_GT(closer.port, 0) << closer.log();
    const int port = closer.port;
    const std::string& key = closer.key;
    const auto res = http_request(port, "POST", "/v1/chat/completions", c.body, bearer(key));
    const auto usage = http_request(port, "GET", "/api/usage", {}, bearer(key));
    EXPECT_EQ(res.status, c.client_status) << c.mode << ": " << res.body;
    EXPECT_NE(usage.body.find(c.row), std::string::npos) << c.mode << ": " << usage.body;
    if (!c.seen.empty()) {
      EXPECT_NE(res.body.find(c.seen), std::string::npos) << c.mode << ": " << res.body;
    }
    if (!c.unseen.empty()) {
      EXPECT_EQ(res.body.find(c.unseen), std::string::npos) << c.mode << ": " << res.body;
    }
    if (c.mode == "mixed_case") {  // relayed as a stream, not as one whole answer
      EXPECT_EQ(res.headers.count("content-length"), 0u) << c.mode;
    }
  }
}

// Books can balance (every transfer is debit = credit) and still be wrong. `ledger verify`
// and the reconciliation at start check what balancing cannot show: floors, and each
// request's charges against its usage row.
TEST(Billing, VerifyFindsBooksThatBalanceButAreWrong) {
  Stack stack;
  ASSERT_GT(stack.port, 0);
  const std::string chat = R"({"model":"gpt-test","messages":[]})";
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(http_request(stack.port, "POST", "/v1/chat/completions", chat, stack.auth()).status,
              200);
  }
  ASSERT_TRUE(stack.stop_gateway());
  auto verify = [&] {
    Process p(bin("turnpike"), {"ledger", "verify", "--data-dir", stack.dir.path() + "/var"});
    const std::optional<int> code = p.wait_exit(30s);
    return std::pair{code, p.log()};
  };
  auto edit = [&](const std::string& sql) { edit_store(stack, sql); };
  const auto [clean, clean_out] = verify();
  EXPECT_EQ(clean, std::optional<int>(0)) << clean_out;
  EXPECT_NE(clean_out.find(R"("problems":[])"), std::string::npos) << clean_out;

  // A usage row that says more than was charged.
  edit("UPDATE usage_log SET cost_nanos = cost_nanos + 7 WHERE id = 2");
  const auto [raised, raised_out] = verify();
  EXPECT_EQ(raised, std::optional<int>(1)) << raised_out;
  EXPECT_NE(raised_out.find("in the usage log, its charges"), std::string::npos) << raised_out;
  edit("UPDATE usage_log SET cost_nanos = cost_nanos - 7 WHERE id = 2");
  EXPECT_EQ(verify().first, std::optional<int>(0));

  // A charge whose usage row is gone.
  edit("CREATE TABLE kept AS SELECT * FROM usage_log WHERE id = 3; DELETE FROM usage_log WHERE id = 3");
  const auto [orphan, orphan_out] = verify();
  EXPECT_EQ(orphan, std::optional<int>(1)) << orphan_out;
  EXPECT_NE(orphan_out.find("for a request with no usage row"), std::string::npos) << orphan_out;
  edit("INSERT INTO usage_log SELECT * FROM kept; DROP TABLE kept");
  EXPECT_EQ(verify().first, std::optional<int>(0));

  // A transfer gone from the middle of the journal: it cannot be replayed at all, which
  // is a finding (exit 1), not a failure to look (exit 2).
  edit(
      "CREATE TABLE kept AS SELECT * FROM transfers WHERE id = 2; DELETE FROM transfers WHERE id = "
      "2");
  const auto [gap, gap_out] = verify();
  EXPECT_EQ(gap, std::optional<int>(1)) << gap_out;
  EXPECT_NE(gap_out.find(R"("ok":false)"), std::string::npos) << gap_out;
  EXPECT_NE(gap_out.find("reading the stored ledger failed: stored transfer 3 does not follow"),
            std::string::npos)
      << gap_out;
  edit("INSERT INTO transfers SELECT * FROM kept; DROP TABLE kept");
  EXPECT_EQ(verify().first, std::optional<int>(0));

  // The trial deposit shrunk to a nano-dollar: the trial book went below zero.
  edit("UPDATE transfers SET amount_nanos = 1 WHERE id = (SELECT t.id FROM transfers t JOIN "
       "ledger_accounts a ON a.id = t.credit WHERE t.kind = 0 AND a.name LIKE '%:trial' LIMIT 1)");
  const auto [floor, floor_out] = verify();
  EXPECT_EQ(floor, std::optional<int>(1)) << floor_out;
  EXPECT_NE(floor_out.find(":trial stands at -"), std::string::npos) << floor_out;
  EXPECT_NE(floor_out.find("below its floor of 0.00 USD"), std::string::npos) << floor_out;

  // The gateway's own reconciliation at start finds it too, and freezes billing.
  ASSERT_TRUE(stack.start_gateway());
  const auto frozen = http_request(stack.port, "POST", "/v1/chat/completions", chat, stack.auth());
  EXPECT_EQ(frozen.status, 503) << frozen.body;
  const auto verified = http_request(stack.port, "GET", "/admin/v1/ledger/verify", {}, kAdmin);
  EXPECT_EQ(verified.status, 500) << verified.body;
  EXPECT_NE(verified.body.find("below its floor"), std::string::npos) << verified.body;
}

// A settlement the store fails to commit freezes billing, and the freeze is recorded, so a
// restart does not lift it; the charge that stands keeps its usage row.
TEST(Billing, AFailedSettlementFreezesBillingAcrossARestart) {
  Stack stack;
  ASSERT_GT(stack.port, 0);
  const std::string chat = R"({"model":"gpt-test","messages":[]})";
  ASSERT_EQ(http_request(stack.port, "POST", "/v1/chat/completions", chat, stack.auth()).status,
            200);
  fail_inserts(stack, "usage_log");
  const auto failed = http_request(stack.port, "POST", "/v1/chat/completions", chat, stack.auth());
  EXPECT_EQ(failed.status, 503) << failed.body;
  EXPECT_NE(failed.body.find("the store failed"), std::string::npos) << failed.body;
  let_inserts(stack, "usage_log");
  const auto frozen = http_request(stack.port, "POST", "/v1/chat/completions", chat, stack.auth());
  EXPECT_EQ(frozen.status, 503) << frozen.body;
  EXPECT_NE(frozen.body.find("billing_frozen"), std::string::npos) << frozen.body;
  // The next batch that commits (any store write) records the freeze, with the failed
  // batch's row and charge.
  ASSERT_EQ(http_request(stack.port, "POST", "/admin/v1/accounts", R"({"name":"poke"})", kAdmin)
                .status,
            201);
  ASSERT_TRUE(stack.restart_gateway());
  const auto after = http_request(stack.port, "POST", "/v1/chat/completions", chat, stack.auth());
  EXPECT_EQ(after.status, 503) << after.body;
  EXPECT_NE(after.body.find("the store failed to record a settlement"), std::string::npos)
      << after.body;
  // The client of the failed settlement got 503, not the answer: its charge was taken back
  // and its row says so, at no cost. The books hold together.
  const auto rows = usage_log(stack.port, kAdmin);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[1].status, 503);
  EXPECT_EQ(rows[1].cost, Money());
  const auto balance = http_request(stack.port, "GET", "/api/balance", {}, stack.auth());
  simdjson::dom::parser parser;
  EXPECT_EQ(Money::parse(field(parser.parse(balance.body).value(), "available_usd")).value(),
            Money::parse("20").value() - rows[0].cost)
      << balance.body;
  ASSERT_TRUE(stack.stop_gateway());
  EXPECT_TRUE(ledger_verifies(stack));
}

// An admin who lifts a freeze a failed store set before any batch recorded it lifts it for
// good: the freeze is recorded and cleared in the unfreeze's own batch, and a restart does
// not bring it back.
TEST(Billing, AFreezeLiftedBeforeItWasRecordedStaysLifted) {
  Stack stack;
  ASSERT_GT(stack.port, 0);
  const std::string chat = R"({"model":"gpt-test","messages":[]})";
  fail_inserts(stack, "usage_log");
  EXPECT_EQ(http_request(stack.port, "POST", "/v1/chat/completions", chat, stack.auth()).status,
            503);
  let_inserts(stack, "usage_log");
  const auto lifted = http_request(stack.port, "POST", "/admin/v1/ledger/unfreeze",
                                   R"({"note":"the disk was full; it is not any more"})", kAdmin);
  ASSERT_EQ(lifted.status, 200) << lifted.body;
  ASSERT_TRUE(stack.restart_gateway());
  const auto after = http_request(stack.port, "POST", "/v1/chat/completions", chat, stack.auth());
  EXPECT_EQ(after.status, 200) << after.body;
  EXPECT_EQ(http_request(stack.port, "GET", "/readyz").status, 200);
}

// A credit whose store commit failed has moved the money in memory all the same (the next
// commit stores it): a retry with its idempotency key must get the first answer, never a
// second credit.
TEST(Billing, ACreditRetriedAfterAFailedCommitIsAppliedOnce) {
  Stack stack("billing: { trial_usd: \"0\" }");
  ASSERT_GT(stack.port, 0);
  const auto account = http_request(stack.port, "POST", "/admin/v1/accounts", R"({"name":"r"})", kAdmin);
  ASSERT_EQ(account.status, 201) << account.body;
  const std::string credit = R"({"amount_usd":"5","kind":"paid","idempotency_key":"once"})";
  const std::string path = "/admin/v1/accounts/acct_2/credits";
  fail_inserts(stack, "idempotency");
  const auto failed = http_request(stack.port, "POST", path, credit, kAdmin);
  EXPECT_EQ(failed.status, 503) << failed.body;
  EXPECT_NE(failed.body.find("retry with the same idempotency_key"), std::string::npos)
      << failed.body;
  let_inserts(stack, "idempotency");
  const auto retried = http_request(stack.port, "POST", path, credit, kAdmin);
  ASSERT_EQ(retried.status, 200) << retried.body;
  EXPECT_NE(retried.body.find(R"("paid_usd":"5.00")"), std::string::npos) << retried.body;
  const auto again = http_request(stack.port, "POST", path, credit, kAdmin);
  EXPECT_EQ(again.body, retried.body);
  const auto other = http_request(stack.port, "POST", path,
                                  R"({"amount_usd":"6","kind":"paid","idempotency_key":"once"})", kAdmin);
  EXPECT_EQ(other.status, 409) << other.body;
  // Stored once: after a restart, the same balance and the same answer.
  ASSERT_TRUE(stack.restart_gateway());
  const auto stored = http_request(stack.port, "POST", path, credit, kAdmin);
  EXPECT_EQ(stored.body, retried.body);
  const auto balance = http_request(stack.port, "GET", "/admin/v1/accounts/acct_2/balance", {}, kAdmin);
  EXPECT_NE(balance.body.find(R"("paid_usd":"5.00")"), std::string::npos) << balance.body;
  ASSERT_TRUE(stack.stop_gateway());
  EXPECT_TRUE(ledger_verifies(stack));
}

// A key made in memory whose commit failed is live and stored with the next commit, but
// its secret is not handed out by a call that failed: the answer says so (503), and the
// key is listed, and stays listed across a restart, for an admin to revoke.
TEST(Billing, AKeyWhoseCommitFailedSaysItWasMade) {
  Stack stack;
  ASSERT_GT(stack.port, 0);
  // The piece's own insert of the new key passes; the batch's second write of it (the
  // directory's, before the commit) fails, and with it the commit.
  edit_store(stack,
             "CREATE TRIGGER no_second_write BEFORE INSERT ON api_keys WHEN EXISTS (SELECT 1 "
             "FROM api_keys WHERE id = NEW.id) BEGIN SELECT RAISE(ABORT, 'disk trouble'); END");
  const auto failed =
      http_request(stack.port, "POST", "/admin/v1/accounts/acct_1/keys", "{}", kAdmin);
  EXPECT_EQ(failed.status, 503) << failed.body;
  EXPECT_NE(failed.body.find("the key has been made"), std::string::npos) << failed.body;
  EXPECT_EQ(failed.body.find("tp_sk_"), std::string::npos) << failed.body;  // no secret
  edit_store(stack, "DROP TRIGGER no_second_write");
  // The next commit stores it (this key's creation is one).
  ASSERT_EQ(http_request(stack.port, "POST", "/admin/v1/accounts/acct_1/keys", "{}", kAdmin)
                .status,
            201);
  ASSERT_TRUE(stack.restart_gateway());
  const auto listed = http_request(stack.port, "GET", "/admin/v1/accounts/acct_1", {}, kAdmin);
  EXPECT_NE(listed.body.find(R"("id":"key_2")"), std::string::npos) << listed.body;
  EXPECT_NE(listed.body.find(R"("id":"key_3")"), std::string::npos) << listed.body;
}

// The same for a rotation: it took effect (the old key's grace runs, its successor works),
// but the successor's secret is not shown; the next commit stores both ends of it.
TEST(Billing, AKeyRotationWhoseCommitFailedSaysItTookEffect) {
  Stack stack;
  ASSERT_GT(stack.port, 0);
  // The rotation's own writes pass (the old key's end, the successor's insert); the batch's
  // second write of the successor fails, and with it the commit.
  edit_store(stack,
             "CREATE TRIGGER no_second_write BEFORE INSERT ON api_keys WHEN NEW.id = 2 AND EXISTS "
             "(SELECT 1 FROM api_keys WHERE id = 2) BEGIN SELECT RAISE(ABORT, 'disk trouble'); "
             "END");
  const auto failed = http_request(stack.port, "POST", "/admin/v1/keys/key_1/rotate",
                                   R"({"grace_seconds":3600})", kAdmin);
  EXPECT_EQ(failed.status, 503) << failed.body;
  EXPECT_NE(failed.body.find("the rotation has taken effect"), std::string::npos) << failed.body;
  EXPECT_EQ(failed.body.find("tp_sk_"), std::string::npos) << failed.body;  // no secret
  // The old key still works through its grace.
  EXPECT_EQ(http_request(stack.port, "GET", "/api/balance", {}, stack.auth()).status, 200);
  edit_store(stack, "DROP TRIGGER no_second_write");
  // Rotated once: the successor is named, and it is the one to rotate for a secret.
  const auto again = http_request(stack.port, "POST", "/admin/v1/keys/key_1/rotate",
                                  R"({"grace_seconds":0})", kAdmin);
  EXPECT_EQ(again.status, 409) << again.body;
  EXPECT_NE(again.body.find("key_2"), std::string::npos) << again.body;
  const auto successor = http_request(stack.port, "POST", "/admin/v1/keys/key_2/rotate",
                                      R"({"grace_seconds":0})", kAdmin);
  ASSERT_EQ(successor.status, 200) << successor.body;
  ASSERT_TRUE(stack.restart_gateway());
  const auto listed = http_request(stack.port, "GET", "/admin/v1/accounts/acct_1", {}, kAdmin);
  EXPECT_NE(listed.body.find(R"("replaced_by":"key_2")"), std::string::npos) << listed.body;
  EXPECT_NE(listed.body.find(R"("replaced_by":"key_3")"), std::string::npos) << listed.body;
  EXPECT_EQ(http_request(stack.port, "GET", "/api/balance", {}, stack.auth()).status, 200);
  EXPECT_TRUE(ledger_verifies(stack));
}

// The same for account creation, which deposits the trial credit: the retry answers the
// first account, which the next commit stores with its credit, once.
TEST(Billing, AnAccountCreationRetriedAfterAFailedCommitCreatesOneAccount) {
  Stack stack;
  ASSERT_GT(stack.port, 0);
  const std::string create = R"({"name":"retry","idempotency_key":"new-1"})";
  fail_inserts(stack, "idempotency");
  const auto failed = http_request(stack.port, "POST", "/admin/v1/accounts", create, kAdmin);
  EXPECT_EQ(failed.status, 503) << failed.body;
  EXPECT_NE(failed.body.find("it has taken effect"), std::string::npos) << failed.body;
  let_inserts(stack, "idempotency");
  const auto retried = http_request(stack.port, "POST", "/admin/v1/accounts", create, kAdmin);
  ASSERT_EQ(retried.status, 201) << retried.body;
  EXPECT_NE(retried.body.find(R"("id":"acct_2")"), std::string::npos) << retried.body;
  ASSERT_TRUE(stack.restart_gateway());
  const auto stored = http_request(stack.port, "GET", "/admin/v1/accounts/acct_2", {}, kAdmin);
  EXPECT_NE(stored.body.find(R"("name":"retry")"), std::string::npos) << stored.body;
  EXPECT_EQ(http_request(stack.port, "GET", "/admin/v1/accounts/acct_3", {}, kAdmin).status, 404);
  const auto balance = http_request(stack.port, "GET", "/admin/v1/accounts/acct_2/balance", {}, kAdmin);
  EXPECT_NE(balance.body.find(R"("trial_usd":"20.00")"), std::string::npos) << balance.body;
  ASSERT_TRUE(stack.stop_gateway());
  EXPECT_TRUE(ledger_verifies(stack));
}

// A request whose hold went back (its upstream failed) still gets its row when the store
// fails to commit it at first.
TEST(Billing, AVoidedRequestsRowSurvivesAFailedCommit) {
  Stack stack;
  ASSERT_GT(stack.port, 0);
  fail_inserts(stack, "usage_log");
  const auto dead = http_request(stack.port, "POST", "/v1/chat/completions",
                                 R"({"model":"dead-model","messages":[]})", stack.auth());
  EXPECT_EQ(dead.status, 502) << dead.body;
  let_inserts(stack, "usage_log");
  // The next batch that commits (any store write) stores it.
  ASSERT_EQ(http_request(stack.port, "POST", "/admin/v1/accounts", R"({"name":"poke"})", kAdmin)
                .status,
            201);
  const auto rows = usage_log(stack.port, stack.auth());
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].status, 502);
  EXPECT_EQ(rows[0].model, "dead-model");
  EXPECT_EQ(rows[0].cost, Money());
  ASSERT_TRUE(stack.stop_gateway());
  EXPECT_TRUE(ledger_verifies(stack));
}

// How many times `text` occurs in the gateway's log.
std::size_t log_count(const Stack& stack, const std::string& text) {
  const std::string log = stack.gateway->log();
  std::size_t n = 0;
  for (auto at = log.find(text); at != std::string::npos; at = log.find(text, at + 1)) ++n;
  return n;
}

// The first column of the first row `sql` reads from the stack's store (-1: none), through
// a connection of the test's own.
std::int64_t store_value(const Stack& stack, const std::string& sql) {
  auto db = store::open_sqlite(stack.dir.path() + "/var/turnpike.db");
  if (!db) return -1;
  auto row = (*db)->prepare(sql);
  if (!row) return -1;
  auto step = row->step();
  return step && *step == store::Statement::Step::kRow ? row->column_int(0) : -1;
}

// The admin API lists accounts in pages by id, as OpenAI's lists page: `limit` of them
// after `after`, with `has_more`; a bad parameter is 400.
TEST(Billing, AccountsAreListedInPages) {
  Stack stack;  // acct_1
  ASSERT_GT(stack.port, 0) << stack.gateway->log();
  for (const char* name : {"b", "c"}) {
    ASSERT_EQ(http_request(stack.port, "POST", "/admin/v1/accounts",
                           std::string(R"({"name":")") + name + R"("})", kAdmin)
                  .status,
              201);
  }
  const auto first = http_request(stack.port, "GET", "/admin/v1/accounts?limit=2", {}, kAdmin);
  ASSERT_EQ(first.status, 200) << first.body;
  EXPECT_NE(first.body.find(R"("object":"list","data":[{"id":"acct_1")"), std::string::npos)
      << first.body;
  EXPECT_NE(first.body.find(R"("first_id":"acct_1","last_id":"acct_2","has_more":true})"),
            std::string::npos)
      << first.body;
  EXPECT_EQ(first.body.find(R"("id":"acct_3")"), std::string::npos) << first.body;
  const auto rest = http_request(stack.port, "GET", "/admin/v1/accounts?after=acct_2", {}, kAdmin);
  EXPECT_NE(rest.body.find(R"("data":[{"id":"acct_3","name":"c")"), std::string::npos) << rest.body;
  EXPECT_NE(rest.body.find(R"("first_id":"acct_3","last_id":"acct_3","has_more":false})"),
            std::string::npos)
      << rest.body;
  const auto none = http_request(stack.port, "GET", "/admin/v1/accounts?after=acct_9", {}, kAdmin);
  EXPECT_EQ(none.body,
            R"({"object":"list","data":[],"first_id":null,"last_id":null,"has_more":false})");
  for (const std::string query :
       {"limit=0", "limit=1001", "limit=x", "after=key_1", "limit=1&limit=2", "page=2"}) {
    const auto bad = http_request(stack.port, "GET", "/admin/v1/accounts?" + query, {}, kAdmin);
    EXPECT_EQ(bad.status, 400) << query << ": " << bad.body;
    EXPECT_NE(bad.body.find(R"("type":"invalid_request_error")"), std::string::npos) << bad.body;
  }
  EXPECT_EQ(http_request(stack.port, "GET", "/admin/v1/accounts", {}, bearer(stack.key)).status,
            401);
}

// The admin key on a customer's own call is told what it is (it has no account), not that
// it is unknown.
TEST(Billing, TheAdminKeyAsksForItsBalanceWhereAnAccountsIsKept) {
  Stack stack;
  ASSERT_GT(stack.port, 0) << stack.gateway->log();
  const auto res = http_request(stack.port, "GET", "/api/balance", {}, kAdmin);
  EXPECT_EQ(res.status, 400) << res.body;
  EXPECT_NE(res.body.find("the admin key has no balance of its own"), std::string::npos)
      << res.body;
  EXPECT_EQ(http_request(stack.port, "GET", "/api/balance", {}, stack.auth()).status, 200);
}

// An amount is read as JSON reads it: a key or a string value written with escapes names the
// same field and amount (both were refused as no amount at all), and a number in exponent
// form is the same exact amount.
TEST(Billing, AnAmountWrittenWithEscapesIsTheSameAmount) {
  Stack stack("billing: { trial_usd: \"0\" }");
  ASSERT_GT(stack.port, 0) << stack.gateway->log();
  const std::string path = "/admin/v1/accounts/acct_1/credits";
  for (const std::string body : {R"({"amount\u005fusd":2,"kind":"paid","idempotency_key":"a"})",
                                 R"({"amount_usd":"\u0032","kind":"paid","idempotency_key":"b"})",
                                 R"({"amount\u005fusd":"1.5","kind":"paid","idempotency_key":"c"})",
                                 R"({"amount_usd":5E-1,"kind":"paid","idempotency_key":"d"})"}) {
    const auto res = http_request(stack.port, "POST", path, body, kAdmin);
    EXPECT_EQ(res.status, 200) << body << ": " << res.body;
  }
  const auto balance =
      http_request(stack.port, "GET", "/admin/v1/accounts/acct_1/balance", {}, kAdmin);
  EXPECT_NE(balance.body.find(R"("paid_usd":"6.00")"), std::string::npos) << balance.body;
}

// An account whose trial credit cannot be deposited (the ledger's range spent: about 9.2
// billion USD deposited in all) is not made: the refusal used to leave it in memory, stored
// with the next batch, and a retry under the same idempotency key made another.
TEST(Billing, AnAccountWhoseTrialCannotBeDepositedIsNotMade) {
  Stack stack;  // acct_1, with its 20 USD of trial credit
  ASSERT_GT(stack.port, 0) << stack.gateway->log();
  for (int i = 0; i < 10; ++i) {
    const std::string amount = i < 9 ? "1000000000" : "223372010";  // under 20 USD left
    const auto credited =
        http_request(stack.port, "POST", "/admin/v1/accounts/acct_1/credits",
                     R"({"amount_usd":")" + amount + R"(","kind":"paid","idempotency_key":"big)" +
                         std::to_string(i) + R"("})",
                     kAdmin);
    ASSERT_EQ(credited.status, 200) << credited.body;
  }
  for (int attempt = 0; attempt < 2; ++attempt) {
    const auto refused = http_request(stack.port, "POST", "/admin/v1/accounts",
                                      R"({"name":"victim","idempotency_key":"V1"})", kAdmin);
    EXPECT_EQ(refused.status, 400) << refused.body;
    EXPECT_NE(refused.body.find("past what the ledger can hold"), std::string::npos)
        << refused.body;
  }
  std::this_thread::sleep_for(100ms);  // a batch after the refusals
  EXPECT_EQ(http_request(stack.port, "GET", "/admin/v1/accounts/acct_2", {}, kAdmin).status, 404);
  EXPECT_EQ(store_value(stack, "SELECT COUNT(*) FROM accounts"), 1);
  EXPECT_TRUE(ledger_verifies(stack));
}

// A usage row's hold is its account's alone, across restarts too: a hold that moved no money
// (a voided request's) left no transfer, and the next start numbered its holds after the
// last transfer's, giving the voided request's id again.
TEST(Billing, HoldIdsAreNotUsedAgainAfterARestart) {
  Stack stack("billing: { trial_usd: \"0\" }");
  ASSERT_GT(stack.port, 0) << stack.gateway->log();
  const std::string key = funded_key(stack.port, "1");
  auto ask = [&](const std::string& model) {
    return http_request(stack.port, "POST", "/v1/chat/completions",
                        R"({"model":")" + model + R"(","max_tokens":5,"messages":[]})", bearer(key))
        .status;
  };
  EXPECT_EQ(ask("gpt-test"), 200);    // a charge: its transfer names its hold
  EXPECT_EQ(ask("dead-model"), 502);  // voided: its row alone names its hold
  ASSERT_TRUE(stack.restart_gateway());
  EXPECT_EQ(ask("gpt-test"), 200);
  EXPECT_EQ(ask("dead-model"), 502);
  std::this_thread::sleep_for(300ms);  // a voided request's row is written after it
  EXPECT_EQ(store_value(stack, "SELECT COUNT(*) FROM usage_log WHERE account_id = 2"), 4);
  EXPECT_EQ(store_value(stack, "SELECT COUNT(DISTINCT hold) FROM usage_log WHERE account_id = 2"),
            4);
}

// Waits (20 s at most) until the gateway logged `count` failed commits.
void await_failed_commits(const Stack& stack, std::size_t count) {
  for (int i = 0; i < 200 && log_count(stack, "store commit failed") < count; ++i) {
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_GE(log_count(stack, "store commit failed"), count) << stack.gateway->log();
}

// After a restart: billing is still frozen for the failed settlement, whose request has
// its row (503, at no cost), and the books hold together.
void expect_frozen_with_the_failed_row(Stack& stack) {
  const std::string chat = R"({"model":"gpt-test","messages":[]})";
  const auto after = http_request(stack.port, "POST", "/v1/chat/completions", chat, stack.auth());
  EXPECT_EQ(after.status, 503) << after.body;
  EXPECT_NE(after.body.find("the store failed to record a settlement"), std::string::npos)
      << after.body;
  const auto rows = usage_log(stack.port, kAdmin);
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].status, 503);
  EXPECT_EQ(rows[0].cost, Money());
  ASSERT_TRUE(stack.stop_gateway());
  EXPECT_TRUE(ledger_verifies(stack));
}

// Another process holds the store's write lock: the settlement's batch fails after the
// busy timeout, and so does the batch meant to record the freeze. Once the lock is free,
// with no request or admin call to write anything, the maintenance thread's retry stores
// the freeze, the failed request's row and its reversal, so that even a crash then keeps
// billing frozen.
TEST(Billing, WhatAFailedCommitLeftIsStoredOnceTheStoreTakesWritesAgain) {
  Stack stack;
  ASSERT_GT(stack.port, 0);
  auto db = store::open_sqlite(stack.dir.path() + "/var/turnpike.db");
  ASSERT_TRUE(db);
  ASSERT_TRUE((*db)->exec("BEGIN IMMEDIATE"));  // each batch waits 5 s (busy timeout), fails
  const auto failed = http_request(stack.port, "POST", "/v1/chat/completions",
                                   R"({"model":"gpt-test","messages":[]})", stack.auth(), 30s);
  EXPECT_EQ(failed.status, 503) << failed.body;
  await_failed_commits(stack, 2);  // the settlement's batch, then the freeze record's
  ASSERT_TRUE((*db)->exec("COMMIT"));
  const std::string recorded = "SELECT COUNT(*) FROM billing_freezes WHERE cleared_ms IS NULL";
  for (int i = 0; i < 150 && store_value(stack, recorded) != 1; ++i) {
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_EQ(store_value(stack, recorded), 1) << stack.gateway->log();
  ASSERT_TRUE(stack.restart_gateway(SIGKILL));
  expect_frozen_with_the_failed_row(stack);
}

// A stop stores what a failed commit left in memory: the store refuses the settlement and
// every batch after it until just after SIGTERM, and the stop's last batch records the
// freeze, the row and the reversal before the process exits.
TEST(Billing, AStopStoresWhatAFailedCommitLeftInMemory) {
  Stack stack;
  ASSERT_GT(stack.port, 0);
  fail_a_settlement(stack);
  await_failed_commits(stack, 2);  // the settlement's batch, then the freeze record's
  stack.gateway->signal(SIGTERM);
  let_inserts(stack, "usage_log");
  ASSERT_EQ(stack.gateway->wait_exit(30s), std::optional<int>(0)) << stack.gateway->log();
  ASSERT_TRUE(stack.start_gateway());
  expect_frozen_with_the_failed_row(stack);
}

// A stop whose last batches the store refuses as well says, at error, what it loses.
TEST(Billing, AStopThatCannotStoreWhatWaitsSaysSo) {
  Stack stack;
  ASSERT_GT(stack.port, 0);
  fail_a_settlement(stack);
  stack.gateway->signal(SIGTERM);
  ASSERT_EQ(stack.gateway->wait_exit(30s), std::optional<int>(0)) << stack.gateway->log();
  EXPECT_EQ(log_count(stack, R"("level":"error","msg":"stopping with billing records the store )"
                             R"(did not take; they are lost")"),
            1u)
      << stack.gateway->log();
}

TEST(Billing, ALongStreamKeepsItsHoldUntilItIsSettled) {
  Stack stack(
      "billing: { hold_timeout_ms: 2000 }\nupstream: { connect_timeout_ms: 200, "
      "first_byte_timeout_ms: 500, answer_timeout_ms: 500, idle_timeout_ms: 900 }\n"
      "routing: { fallback_deadline_ms: 200 }");
  ASSERT_GT(stack.port, 0);
  const Money before = available(stack.port, stack.key);
  HttpResponse res;
  std::thread client([&] {
    res = http_request(stack.port, "POST", "/v1/chat/completions",
                       R"({"model":"gpt-test","stream":true,"messages":[],"sim":{"output_tokens":100,"tokens_per_second":20}})",
                       stack.auth());
  });
  // Past a hold timeout and the once-a-second sweep: the stream (5 s) is still running, so
  // its hold was renewed rather than lapsed.
  std::this_thread::sleep_for(3500ms);
  const auto mid = http_request(stack.port, "GET", "/api/balance", {}, stack.auth());
  EXPECT_EQ(mid.body.find("\"held_usd\":\"0.00\""), std::string::npos) << mid.body;
  client.join();
  ASSERT_EQ(res.status, 200);
  const auto rows = usage_log(stack.port, stack.auth());
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0].output, 100);
  EXPECT_EQ(available(stack.port, stack.key), before - rows[0].cost);
  const auto after = http_request(stack.port, "GET", "/api/balance", {}, stack.auth());
  EXPECT_NE(after.body.find("\"held_usd\":\"0.00\""), std::string::npos) << after.body;
  const auto verify = http_request(stack.port, "GET", "/admin/v1/ledger/verify", {}, kAdmin);
  EXPECT_NE(verify.body.find("\"ok\":true"), std::string::npos) << verify.body;
}

// A webhook receiver: answers each POST with the next status of `statuses` (then 200),
// `answer_delay` after it read the request, and keeps the bodies. A status 0 answers 200
// with a body it never finishes: a byte every 200 ms.
class WebhookReceiver {
 public:
  explicit WebhookReceiver(std::vector<int> statuses,
                           std::chrono::milliseconds answer_delay = std::chrono::milliseconds(0))
      : statuses_(std::move(statuses)), answer_delay_(answer_delay) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    ::listen(fd_, 16);
    socklen_t len = sizeof addr;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~WebhookReceiver() {
    ::shutdown(fd_, SHUT_RDWR);
    ::close(fd_);
    thread_.join();
    stop_ = true;
    for (std::thread& t : tricklers_) t.join();
  }
  int port() const { return port_; }
  std::vector<std::string> bodies() {
    std::lock_guard lock(mu_);
    return bodies_;
  }

 private:
  void serve() {
    for (;;) {
      const int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) return;
      std::string in;
      char buf[4096];
      for (;;) {  // one request per connection is enough: the answer closes it
        const auto head_end = in.find("\r\n\r\n");
        if (head_end != std::string::npos) {
          const auto at = in.find("Content-Length: ");
          const std::size_t length = at == std::string::npos ? 0 : std::stoul(in.substr(at + 16));
          if (in.size() >= head_end + 4 + length) {
            std::lock_guard lock(mu_);
            bodies_.push_back(in.substr(head_end + 4, length));
            break;
          }
        }
        const ssize_t n = ::read(c, buf, sizeof buf);
        if (n <= 0) break;
        in.append(buf, static_cast<std::size_t>(n));
      }
      std::this_thread::sleep_for(answer_delay_);
      int status = 200;
      {
        std::lock_guard lock(mu_);
        if (next_ < statuses_.size()) status = statuses_[next_++];
      }
      if (status == -1) {  // took it, and closed without a word
        ::close(c);
        continue;
      }
      if (status == 0) {
        tricklers_.emplace_back([this, c] {
          const std::string head = "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n";
          bool open = ::send(c, head.data(), head.size(), MSG_NOSIGNAL) > 0;
          while (open && !stop_) {
            std::this_thread::sleep_for(std::chrono::milliseconds(200));
            open = ::send(c, "x", 1, MSG_NOSIGNAL) == 1;  // until the gateway gives up
          }
          ::close(c);
        });
        continue;
      }
      const std::string answer = "HTTP/1.1 " + std::to_string(status) +
                                 " X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
      // (The gateway may have gone meanwhile: no SIGPIPE.)
      (void)::send(c, answer.data(), answer.size(), MSG_NOSIGNAL);
      ::close(c);
    }
  }
  int fd_ = -1;
  int port_ = 0;
  std::vector<int> statuses_;
  std::chrono::milliseconds answer_delay_;
  std::size_t next_ = 0;
  std::mutex mu_;
  std::vector<std::string> bodies_;
  std::atomic<bool> stop_{false};
  std::vector<std::thread> tricklers_;  // answers never finished (serve's thread only)
  std::thread thread_;
};

// Billing config that posts low-balance notices at `thresholds` to `hook`.
std::string notice_config(const WebhookReceiver& hook, const std::string& thresholds,
                          int retry_ms) {
  return "billing: { trial_usd: \"0\", low_balance_usd: [" + thresholds +
         "], low_balance_webhook: \"http://127.0.0.1:" + std::to_string(hook.port()) +
         "/hooks/team\", low_balance_retry_ms: " + std::to_string(retry_ms) + " }";
}

// A request that costs about a thousandth of a dollar on claude-test.
constexpr const char* kNoticeRequest =
    R"({"model":"claude-test","max_tokens":60,"messages":[{"role":"user","content":"x"}],"sim":{"output_tokens":40}})";

// kNoticeRequest with `key`; its status.
int notice_request(const Stack& stack, const std::string& key) {
  return http_request(stack.port, "POST", "/v1/messages", kNoticeRequest, {{"x-api-key", key}})
      .status;
}

TEST(Billing, LowBalanceNoticeIsRecordedAndPostedWithRetries) {
  WebhookReceiver hook({500});
  Stack stack(notice_config(hook, R"("0.0015", "0")", 50));
  ASSERT_GT(stack.port, 0);
  const std::string key = funded_key(stack.port, "0.002");
  ASSERT_EQ(notice_request(stack, key), 200);
  ASSERT_EQ(notice_request(stack, key), 200);
  std::vector<std::string> bodies;
  for (int i = 0; i < 100 && bodies.size() < 2; ++i) {
    std::this_thread::sleep_for(50ms);
    bodies = hook.bodies();
  }
  // One notice (0.0015 crossed once; still above 0): refused once with 500, then delivered.
  ASSERT_EQ(bodies.size(), 2u);
  EXPECT_EQ(bodies[0], bodies[1]);
  simdjson::dom::parser parser;
  auto doc = parser.parse(bodies[1]).value();
  EXPECT_EQ(field(doc, "event"), "low_balance");
  EXPECT_EQ(field(doc, "account"), "acct_2");
  EXPECT_EQ(field(doc, "threshold_usd"), "0.0015");
  EXPECT_NE(field(doc, "text").find("fell below 0.0015 USD"), std::string::npos);
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(hook.bodies().size(), 2u);
  auto db = store::open_sqlite(stack.dir.path() + "/var/turnpike.db");
  ASSERT_TRUE(db);
  auto row = (*db)->prepare(
      "SELECT account_id, attempts, delivered_ms IS NOT NULL FROM low_balance_notices");
  ASSERT_TRUE(row);
  ASSERT_EQ(row->step().value(), store::Statement::Step::kRow);
  EXPECT_EQ(row->column_int(0), 2);
  EXPECT_EQ(row->column_int(1), 2);
  EXPECT_EQ(row->column_int(2), 1);
  EXPECT_EQ(row->step().value(), store::Statement::Step::kDone);
}

// Each attempt posts a notice once: a receiver that takes it and closes without a word had
// it posted twice per attempt (the upstream client's resend of a request closed on at once).
TEST(Billing, EachWebhookAttemptPostsTheNoticeOnce) {
  WebhookReceiver hook({-1, 200});
  Stack stack(notice_config(hook, R"("0.0015")", 50));
  ASSERT_GT(stack.port, 0);
  const std::string key = funded_key(stack.port, "0.002");
  ASSERT_EQ(notice_request(stack, key), 200);
  auto delivered = [&] {
    return stack.gateway->log().find("low-balance notice delivered") != std::string::npos;
  };
  for (int i = 0; i < 100 && !delivered(); ++i) std::this_thread::sleep_for(50ms);
  ASSERT_TRUE(delivered()) << stack.gateway->log();
  EXPECT_EQ(hook.bodies().size(), 2u);
  // The outcome is stored by the store writer's next batch, after the line is logged.
  std::int64_t attempts = 0;
  for (int i = 0; i < 100 && attempts != 2; ++i) {
    if (i > 0) std::this_thread::sleep_for(20ms);
    attempts = store_value(stack, "SELECT attempts FROM low_balance_notices");
  }
  EXPECT_EQ(attempts, 2);
  const std::string metrics = http_request(stack.port, "GET", "/metrics").body;
  EXPECT_NE(metrics.find(R"(turnpike_low_balance_notices_total{outcome="delivered"} 1)"),
            std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find(R"(turnpike_low_balance_notices_total{outcome="failed"} 0)"),
            std::string::npos);
}

// Notices a stop left undelivered beyond what the queue holds (1000) are said to be left for
// the next start; they were counted as sent again, and no word said otherwise.
TEST(Billing, NoticesPastTheQueueAfterARestartAreSaidToBeLeft) {
  WebhookReceiver hook({}, 1000ms);  // the first delivery holds the queue while it fills
  Stack stack(notice_config(hook, R"("0.0015")", 50));
  ASSERT_GT(stack.port, 0);
  ASSERT_TRUE(stack.stop_gateway());
  const std::string now = std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(
                                             std::chrono::system_clock::now().time_since_epoch())
                                             .count());
  edit_store(stack,
             "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1010) "
             "INSERT INTO low_balance_notices (account_id, threshold_nanos, balance_nanos, at_ms) "
             "SELECT 1, 1500000, 1000000, " +
                 now + " FROM n");
  ASSERT_TRUE(stack.start_gateway());
  auto logged = [&] {
    return stack.gateway->log().find("notices left for the next start") != std::string::npos;
  };
  for (int i = 0; i < 100 && !logged(); ++i) std::this_thread::sleep_for(50ms);
  // The count after a line's text (-1: no such line).
  auto count_after = [&](const std::string& text) -> long {
    const std::string log = stack.gateway->log();
    const std::size_t at = log.find(text + R"(","count":)");
    return at == std::string::npos ? -1 : std::stol(log.substr(at + text.size() + 10));
  };
  const long queued = count_after("low-balance notices delivered again after a restart");
  const long left = count_after("notices left for the next start");
  // (The delivery thread may take the first off the queue while the rest go in.)
  EXPECT_GE(queued, 1000) << stack.gateway->log().substr(0, 2000);
  EXPECT_GE(left, 5);
  EXPECT_EQ(queued + left, 1010);
  const std::string metrics = http_request(stack.port, "GET", "/metrics").body;
  EXPECT_NE(metrics.find(R"(turnpike_low_balance_notices_total{outcome="dropped"} )" +
                         std::to_string(left) + "\n"),
            std::string::npos)
      << metrics;
}

// A receiver that answers 200 but trickles its body, never finishing it (each byte well
// within the read timeout), holds the one delivery thread for 20 s at most: then the
// attempt ends, and the notice counts as delivered (the receiver took it).
TEST(Billing, AWebhookThatNeverFinishesItsAnswerHoldsTheNotifierTwentySecondsAtMost) {
  WebhookReceiver hook({0});
  Stack stack(notice_config(hook, R"("0.0015")", 50));
  ASSERT_GT(stack.port, 0);
  const std::string key = funded_key(stack.port, "0.002");
  ASSERT_EQ(notice_request(stack, key), 200);
  const auto sent = std::chrono::steady_clock::now();
  auto delivered = [&] {
    return stack.gateway->log().find("low-balance notice delivered") != std::string::npos;
  };
  for (int i = 0; i < 400 && !delivered(); ++i) std::this_thread::sleep_for(100ms);  // 40 s
  ASSERT_TRUE(delivered()) << stack.gateway->log();
  // Not at once: the attempt read the answer until its time was up (the whole body would
  // take hours).
  EXPECT_GE(std::chrono::steady_clock::now() - sent, 18s);
  EXPECT_EQ(hook.bodies().size(), 1u);
}

TEST(Billing, ANoticeLeftUndeliveredByACrashIsDeliveredAfterTheRestart) {
  // The first attempt fails and the next would wait an hour: the gateway is killed before.
  WebhookReceiver hook({500});
  Stack stack(notice_config(hook, R"("0.0015")", 3'600'000));
  ASSERT_GT(stack.port, 0);
  const std::string key = funded_key(stack.port, "0.002");
  ASSERT_EQ(notice_request(stack, key), 200);
  for (int i = 0; i < 100 && hook.bodies().empty(); ++i) std::this_thread::sleep_for(20ms);
  ASSERT_EQ(hook.bodies().size(), 1u);  // refused with 500; the retry is an hour away
  ASSERT_TRUE(stack.restart_gateway(SIGKILL)) << stack.gateway->log();
  std::vector<std::string> bodies;
  for (int i = 0; i < 100 && bodies.size() < 2; ++i) {
    std::this_thread::sleep_for(50ms);
    bodies = hook.bodies();
  }
  ASSERT_EQ(bodies.size(), 2u) << stack.gateway->log();
  EXPECT_EQ(bodies[0], bodies[1]);  // the same notice, not a new one
  auto db = store::open_sqlite(stack.dir.path() + "/var/turnpike.db");
  ASSERT_TRUE(db);
  auto row = (*db)->prepare("SELECT COUNT(*), SUM(delivered_ms IS NOT NULL) FROM low_balance_notices");
  ASSERT_TRUE(row);
  for (int i = 0; i < 50; ++i) {  // the delivery's row is written just after the POST
    ASSERT_EQ(row->step().value(), store::Statement::Step::kRow);
    if (row->column_int(1) == 1) break;
    row->reset();
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_EQ(row->column_int(0), 1);
  EXPECT_EQ(row->column_int(1), 1);
}

// A notice is stored with the settlement that raised it: a kill right after the response
// cannot keep the charge and lose the notice (which, after a restart, nothing would raise
// again: the balance is below the threshold already).
TEST(Billing, ANoticeIsStoredWithTheChargeThatRaisedIt) {
  WebhookReceiver hook({});
  Stack stack(notice_config(hook, R"("0.0015")", 50));
  ASSERT_GT(stack.port, 0);
  const std::string key = funded_key(stack.port, "0.002");
  ASSERT_EQ(notice_request(stack, key), 200);
  ASSERT_TRUE(stack.restart_gateway(SIGKILL)) << stack.gateway->log();
  for (int i = 0; i < 100 && hook.bodies().empty(); ++i) std::this_thread::sleep_for(20ms);
  ASSERT_GE(hook.bodies().size(), 1u) << stack.gateway->log();
  simdjson::dom::parser parser;
  EXPECT_EQ(field(parser.parse(hook.bodies().back()).value(), "threshold_usd"), "0.0015");
  auto db = store::open_sqlite(stack.dir.path() + "/var/turnpike.db");
  ASSERT_TRUE(db);
  auto row = (*db)->prepare("SELECT COUNT(*) FROM low_balance_notices");
  ASSERT_TRUE(row);
  ASSERT_EQ(row->step().value(), store::Statement::Step::kRow);
  EXPECT_EQ(row->column_int(0), 1);
}

// A crossing that a reversal undid (the settlement's commit failed) announces nothing; the
// next real one does, once.
TEST(Billing, ANoticeOfAReversedChargeIsNotSent) {
  WebhookReceiver hook({});
  Stack stack(notice_config(hook, R"("0.0015")", 50));
  ASSERT_GT(stack.port, 0);
  const std::string key = funded_key(stack.port, "0.002");
  fail_inserts(stack, "usage_log");
  EXPECT_EQ(notice_request(stack, key), 503);
  let_inserts(stack, "usage_log");
  ASSERT_EQ(http_request(stack.port, "POST", "/admin/v1/accounts", R"({"name":"poke"})", kAdmin)
                .status,
            201);
  ASSERT_EQ(http_request(stack.port, "POST", "/admin/v1/ledger/unfreeze", R"({"note":"disk"})", kAdmin)
                .status,
            200);
  std::this_thread::sleep_for(300ms);
  EXPECT_TRUE(hook.bodies().empty()) << hook.bodies().front();
  ASSERT_EQ(notice_request(stack, key), 200);
  for (int i = 0; i < 100 && hook.bodies().empty(); ++i) std::this_thread::sleep_for(20ms);
  std::this_thread::sleep_for(200ms);
  EXPECT_EQ(hook.bodies().size(), 1u);
}

// SIGTERM while a delivery attempt is in flight (the receiver answers 1.5 s after it read
// the notice): the stop lets the attempt end and records that it was delivered, so the
// restart does not send the notice again.
TEST(Billing, AStopLetsTheDeliveryInFlightEndAndRecordsIt) {
  WebhookReceiver hook({}, 1500ms);
  Stack stack(notice_config(hook, R"("0.0015")", 50));
  ASSERT_GT(stack.port, 0);
  const std::string key = funded_key(stack.port, "0.002");
  ASSERT_EQ(notice_request(stack, key), 200);
  for (int i = 0; i < 250 && hook.bodies().empty(); ++i) std::this_thread::sleep_for(20ms);
  ASSERT_EQ(hook.bodies().size(), 1u);  // read; the answer is on its way
  ASSERT_TRUE(stack.restart_gateway()) << stack.gateway->log();
  EXPECT_EQ(store_value(stack,
                        "SELECT COUNT(*) FROM low_balance_notices WHERE attempts = 1 AND "
                        "delivered_ms IS NOT NULL"),
            1);
  std::this_thread::sleep_for(4s);  // a second delivery would have been read by now
  EXPECT_EQ(hook.bodies().size(), 1u);
}

// A promo lot that expires while the gateway is down raises its low-balance notice at the
// next start, as it would have expiring while the gateway ran; its expiry is stamped at
// the lot's time.
TEST(Billing, APromoLotThatExpiredWhileTheGatewayWasDownRaisesItsNotice) {
  WebhookReceiver hook({});
  Stack stack(notice_config(hook, R"("0.001")", 50));
  ASSERT_GT(stack.port, 0);
  const auto account =
      http_request(stack.port, "POST", "/admin/v1/accounts", R"({"name":"p"})", kAdmin);
  simdjson::dom::parser parser;
  const std::string id = field(parser.parse(account.body).value(), "id");
  const auto now_ms = [] {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  };
  const std::int64_t expires_ms = (now_ms() / 1000 + 4) * 1000;  // whole seconds
  const auto credit =
      http_request(stack.port, "POST", "/admin/v1/accounts/" + id + "/credits",
                   R"({"amount_usd":"0.002","kind":"promo","expires_at":")" +
                       format_rfc3339(expires_ms) + R"(","idempotency_key":"promo-1"})",
                   kAdmin);
  ASSERT_EQ(credit.status, 200) << credit.body;
  ASSERT_TRUE(stack.stop_gateway());
  // Else the running gateway swept the lot, which says nothing of a start.
  ASSERT_LT(now_ms(), expires_ms) << "the stop took too long for this test";
  while (now_ms() <= expires_ms + 200) std::this_thread::sleep_for(50ms);
  ASSERT_TRUE(stack.start_gateway());
  for (int i = 0; i < 250 && hook.bodies().empty(); ++i) std::this_thread::sleep_for(20ms);
  ASSERT_EQ(hook.bodies().size(), 1u) << stack.gateway->log();
  auto doc = parser.parse(hook.bodies()[0]).value();
  EXPECT_EQ(field(doc, "account"), id);
  EXPECT_EQ(field(doc, "threshold_usd"), "0.001");
  ASSERT_TRUE(stack.stop_gateway());
  EXPECT_EQ(store_value(stack, "SELECT at_ms FROM transfers ORDER BY id DESC LIMIT 1"), expires_ms);
  EXPECT_TRUE(ledger_verifies(stack));
}

}  // namespace
}  // namespace tp::test
