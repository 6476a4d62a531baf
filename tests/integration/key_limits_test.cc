// A key's own limits (rpm, tpm, budget_usd) against a running gateway with two I/O
// threads: refusals in each client's error shape with the waits its SDK reads, a rotation's
// successor sharing them, and a budget's spending kept across a restart.

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <utility>

#include "integration/harness.h"

namespace tp::test {
namespace {

constexpr const char* kChat = R"({"model":"gpt-test","max_tokens":10,"messages":[{"role":"user","content":"hi"}]})";

HttpResponse chat(const Stack& stack, const std::string& key, const std::string& body = kChat) {
  return http_request(stack.port, "POST", "/v1/chat/completions", body,
                      {{"authorization", "Bearer " + key}});
}

// Chats with `key` until one is refused (at most 10 tries); how many were served, and the
// last answer.
std::pair<int, HttpResponse> chat_until_refused(const Stack& stack, const std::string& key) {
  int served = 0;
  HttpResponse last;
  for (int i = 0; i < 10; ++i) {
    last = chat(stack, key);
    if (last.status != 200) break;
    ++served;
  }
  return {served, last};
}

// The admin listing of the account `key` belongs to.
std::string account_listing(const Stack& stack, const std::string& key) {
  const std::string account = string_field(
      http_request(stack.port, "GET", "/api/balance", {}, {{"authorization", "Bearer " + key}})
          .body,
      "account");
  return http_request(stack.port, "GET", "/admin/v1/accounts/" + account, {},
                      {{"authorization", std::string("Bearer ") + kAdminKey}})
      .body;
}

TEST(KeyLimits, RequestsPerMinuteAreLimitedOnBothSurfaces) {
  Stack stack;
  ASSERT_GT(stack.port, 0) << stack.gateway->log();
  const std::string key = create_key(stack.port, R"({"rpm":2})");
  ASSERT_FALSE(key.empty());
  EXPECT_EQ(chat(stack, key).status, 200);
  EXPECT_EQ(chat(stack, key).status, 200);
  const auto refused = chat(stack, key);
  EXPECT_EQ(refused.status, 429) << refused.body;
  EXPECT_NE(refused.body.find(R"("code":"rate_limit_exceeded")"), std::string::npos)
      << refused.body;
  EXPECT_NE(refused.body.find("2 requests per minute"), std::string::npos) << refused.body;
  // One request comes back every 30 s: both SDKs read these.
  const int after = std::stoi(refused.header("retry-after"));
  EXPECT_GE(after, 1);
  EXPECT_LE(after, 30);
  EXPECT_GT(std::stoll(refused.header("retry-after-ms")), 0);
  const auto anthropic = http_request(
      stack.port, "POST", "/v1/messages",
      R"({"model":"claude-test","max_tokens":10,"messages":[{"role":"user","content":"hi"}]})",
      {{"x-api-key", key}, {"anthropic-version", "2023-06-01"}});
  EXPECT_EQ(anthropic.status, 429) << anthropic.body;
  EXPECT_NE(anthropic.body.find(R"("type":"rate_limit_error")"), std::string::npos)
      << anthropic.body;
  // Another key of the same account is not limited by this one.
  EXPECT_EQ(chat(stack, stack.key).status, 200);
}

TEST(KeyLimits, TokensPerMinuteCountWhatRequestsUse) {
  Stack stack;
  ASSERT_GT(stack.port, 0) << stack.gateway->log();
  const std::string key = create_key(stack.port, R"({"tpm":60})");
  ASSERT_FALSE(key.empty());
  // More than a minute's allowance at once never passes: no point in retrying.
  const auto never = chat(stack, key,
                          R"({"model":"gpt-test","max_tokens":100,"messages":[]})");
  EXPECT_EQ(never.status, 429) << never.body;
  EXPECT_EQ(never.header("x-should-retry"), "false");
  EXPECT_EQ(never.header("retry-after"), "60");  // CONTRACT: every 429 has one
  // The sim answers 10 output tokens and counts a quarter of the prompt as input: a few
  // requests use the minute's 60 tokens, and the next waits.
  const auto [served, last] = chat_until_refused(stack, key);
  EXPECT_GE(served, 2);
  EXPECT_LE(served, 5);
  EXPECT_EQ(last.status, 429) << last.body;
  EXPECT_NE(last.body.find("60 tokens per minute"), std::string::npos) << last.body;
  EXPECT_NE(last.header("retry-after"), "");
}

TEST(KeyLimits, ABudgetIsNeverPassedAndOutlivesARestart) {
  Stack stack;
  ASSERT_GT(stack.port, 0) << stack.gateway->log();
  const std::string key = create_key(stack.port, R"({"budget_usd":"0.00002"})");
  ASSERT_FALSE(key.empty());
  const auto [served, last] = chat_until_refused(stack, key);
  EXPECT_GE(served, 1);
  EXPECT_EQ(last.status, 402) << last.body;
  EXPECT_NE(last.body.find(R"("code":"budget_exceeded")"), std::string::npos) << last.body;
  EXPECT_NE(last.body.find("0.00002 USD"), std::string::npos) << last.body;
  // What it spent is the sum of its rows, within the budget (every hold was).
  const auto usage =
      http_request(stack.port, "GET", "/api/usage", {}, {{"authorization", "Bearer " + key}});
  std::int64_t nanos = 0;
  for (std::size_t at = usage.body.find(R"("cost_usd":")"); at != std::string::npos;
       at = usage.body.find(R"("cost_usd":")", at + 1)) {
    const std::string cost = string_field(usage.body, "cost_usd", at);
    nanos += std::llround(std::stod(cost) * 1e9);
  }
  EXPECT_GT(nanos, 0);
  EXPECT_LE(nanos, 20'000);

  // The spending is the usage log's: a restart keeps it, and the key stays refused.
  ASSERT_TRUE(stack.restart_gateway());
  EXPECT_EQ(chat(stack, key).status, 402);
  const std::string listed = account_listing(stack, key);
  const std::string spent = string_field(listed, "budget_spent_usd");
  ASSERT_FALSE(spent.empty()) << listed;
  EXPECT_EQ(std::llround(std::stod(spent) * 1e9), nanos) << listed;
}

// An answer that costs more than its hold (the provider counted far more input than the
// gateway could see) is not delivered past the key's budget, however many run at once:
// the budget has no overdraft, though the account's balance would cover it.
TEST(KeyLimits, AnAnswerPastTheBudgetIsNotDelivered) {
  Stack stack;
  ASSERT_GT(stack.port, 0) << stack.gateway->log();
  const std::string key = create_key(stack.port, R"({"budget_usd":"0.01"})");
  ASSERT_FALSE(key.empty());
  // 100,000 input tokens at 0.15 USD per million: 0.015 USD each, 1.5 times the budget.
  const std::string dear =
      R"({"model":"gpt-test","max_tokens":5,"messages":[],"sim":{"input_tokens":100000}})";
  const auto refused = chat(stack, key, dear);
  EXPECT_EQ(refused.status, 402) << refused.body;
  EXPECT_NE(refused.body.find(R"("code":"budget_exceeded")"), std::string::npos)
      << refused.body;
  EXPECT_NE(refused.body.find("key's budget"), std::string::npos) << refused.body;
  const auto stream = chat(stack, key,
                           R"({"model":"gpt-test","max_tokens":5,"stream":true,"messages":[],)"
                           R"("sim":{"input_tokens":100000}})");
  EXPECT_EQ(stream.status, 0) << stream.body;  // cut without an end: not complete
  // The log says what stopped it: the key's budget, not the account's balance.
  EXPECT_NE(stack.gateway->log().find("stream stopped: the key's budget covers no more"),
            std::string::npos)
      << stack.gateway->log();
  const auto rows =
      http_request(stack.port, "GET", "/api/usage", {}, {{"authorization", "Bearer " + key}});
  const std::size_t first = rows.body.find(R"("status":402)");
  ASSERT_NE(first, std::string::npos) << rows.body;
  EXPECT_NE(rows.body.find(R"("status":402)", first + 1), std::string::npos) << rows.body;
  const std::string listed = account_listing(stack, key);
  const std::string spent = string_field(listed, "budget_spent_usd");
  ASSERT_FALSE(spent.empty()) << listed;
  EXPECT_LE(std::stod(spent), 0.01) << listed;
  // A cheap request still fits.
  EXPECT_EQ(chat(stack, key).status, 200);
}

// An answer refused for its cost (not delivered, charged nothing) still used its tokens
// upstream: they count against the key's tpm, as a stopped stream's do. (Its estimate was
// given back whole, so such requests passed the tpm without limit.)
TEST(KeyLimits, AnAnswerRefusedForItsCostCountsItsTokens) {
  Stack stack;
  ASSERT_GT(stack.port, 0) << stack.gateway->log();
  const std::string key = create_key(stack.port, R"({"tpm":5000,"budget_usd":"0.0001"})");
  ASSERT_FALSE(key.empty());
  // 10,000 input tokens at 0.15 USD per million: 0.0015 USD, past the budget.
  const std::string dear =
      R"({"model":"gpt-test","max_tokens":5,"messages":[],"sim":{"input_tokens":10000}})";
  EXPECT_EQ(chat(stack, key, dear).status, 402);
  // The minute's 5000 tokens are spent (and more): the next request waits.
  const auto next = chat(stack, key);
  EXPECT_EQ(next.status, 429) << next.body;
  EXPECT_NE(next.body.find("5000 tokens per minute"), std::string::npos) << next.body;
}

// A stream whose reported input passes its hold asks the budget for more as it runs; the
// account's headroom is no wider than the budget's, so a stream stopped at the budget is
// charged within it.
TEST(KeyLimits, AStreamStoppedAtTheBudgetIsChargedWithinIt) {
  Stack stack;
  ASSERT_GT(stack.port, 0) << stack.gateway->log();
  const std::string key = create_key(stack.port, R"({"budget_usd":"0.001"})");
  ASSERT_FALSE(key.empty());
  // 300 input tokens at 3 USD per million and 10 output at 15: 0.00105 USD in all.
  const auto res = http_request(
      stack.port, "POST", "/v1/messages",
      R"({"model":"claude-test","max_tokens":10,"stream":true,)"
      R"("messages":[{"role":"user","content":"hi"}],"sim":{"input_tokens":300}})",
      {{"x-api-key", key}, {"anthropic-version", "2023-06-01"}});
  EXPECT_EQ(res.status, 0) << res.body;  // stopped: the stream never ends
  const std::string listed = account_listing(stack, key);
  const std::string spent = string_field(listed, "budget_spent_usd");
  ASSERT_FALSE(spent.empty()) << listed;
  EXPECT_GT(std::stod(spent), 0.0) << listed;
  EXPECT_LE(std::llround(std::stod(spent) * 1e9), 1'000'000) << listed;
}

// A rotation line keeps its spending whole across a restart, even when a successor was
// revoked and the key rotated again (the line is stored, not inferred from replaced_by).
TEST(KeyLimits, ALinesSpendingSurvivesARotationRedoneAndARestart) {
  Stack stack;
  ASSERT_GT(stack.port, 0) << stack.gateway->log();
  const std::map<std::string, std::string> admin = {
      {"authorization", std::string("Bearer ") + kAdminKey}};
  const std::string first = create_key(stack.port, R"({"budget_usd":"10"})");
  ASSERT_FALSE(first.empty());
  const std::string account = string_field(
      http_request(stack.port, "GET", "/api/balance", {}, {{"authorization", "Bearer " + first}})
          .body,
      "account");
  auto spent = [&] {
    const auto listed = http_request(stack.port, "GET", "/admin/v1/accounts/" + account, {}, admin);
    std::string last;  // the newest key's: each key lists the whole line's spending
    for (std::size_t at = listed.body.find("budget_spent_usd"); at != std::string::npos;
         at = listed.body.find("budget_spent_usd", at + 1)) {
      last = string_field(listed.body, "budget_spent_usd", at - 1);
    }
    return last;
  };
  const auto shown = http_request(stack.port, "GET", "/admin/v1/accounts/" + account, {}, admin);
  const std::string first_id = string_field(shown.body, "id", shown.body.find(R"("keys")"));
  EXPECT_EQ(chat(stack, first).status, 200);
  const auto second = http_request(stack.port, "POST", "/admin/v1/keys/" + first_id + "/rotate",
                                   R"({"grace_seconds":600})", admin);
  ASSERT_EQ(second.status, 200) << second.body;
  EXPECT_EQ(chat(stack, string_field(second.body, "key")).status, 200);
  ASSERT_EQ(http_request(stack.port, "DELETE", "/admin/v1/keys/" + string_field(second.body, "id"),
                         {}, admin)
                .status,
            204);
  const auto third = http_request(stack.port, "POST", "/admin/v1/keys/" + first_id + "/rotate",
                                  R"({"grace_seconds":600})", admin);
  ASSERT_EQ(third.status, 200) << third.body;
  EXPECT_EQ(chat(stack, string_field(third.body, "key")).status, 200);
  const std::string before = spent();
  ASSERT_FALSE(before.empty());
  ASSERT_TRUE(stack.restart_gateway());
  EXPECT_EQ(spent(), before);
}

// A rotation's successor is the same holder: the grace window does not double its rate.
TEST(KeyLimits, ARotatedKeySharesItsPredecessorsLimits) {
  Stack stack;
  ASSERT_GT(stack.port, 0) << stack.gateway->log();
  const std::string old_key = create_key(stack.port, R"({"rpm":1})");
  ASSERT_FALSE(old_key.empty());
  EXPECT_EQ(chat(stack, old_key).status, 200);
  const auto balance = http_request(stack.port, "GET", "/api/balance", {},
                                    {{"authorization", "Bearer " + old_key}});
  const std::string account = string_field(balance.body, "account");
  const auto keys = http_request(stack.port, "GET", "/admin/v1/accounts/" + account, {},
                                 {{"authorization", std::string("Bearer ") + kAdminKey}});
  const std::string key_id = string_field(keys.body, "id", keys.body.find(R"("keys")"));
  const auto rotated =
      http_request(stack.port, "POST", "/admin/v1/keys/" + key_id + "/rotate",
                   R"({"grace_seconds":60})",
                   {{"authorization", std::string("Bearer ") + kAdminKey}});
  ASSERT_EQ(rotated.status, 200) << rotated.body;
  const std::string new_key = string_field(rotated.body, "key");
  EXPECT_EQ(chat(stack, new_key).status, 429);
  EXPECT_EQ(chat(stack, old_key).status, 429);
  const auto listed = http_request(stack.port, "GET", "/admin/v1/accounts/" + account, {},
                                   {{"authorization", std::string("Bearer ") + kAdminKey}});
  EXPECT_EQ(listed.body.find(R"("rpm":null)"), std::string::npos) << listed.body;
}

}  // namespace
}  // namespace tp::test
