// What request billing reads from streams and queries: StreamMeter, the usage query and
// page, RFC 3339 times and query strings.
#include <gtest/gtest.h>
#include <simdjson.h>

#include "api/stream_meter.h"
#include "api/usage_api.h"
#include "core/rfc3339.h"
#include "http/query.h"
#include "http/sse.h"

namespace tp::api {
namespace {

using Verdict = StreamMeter::Verdict;

TEST(StreamMeter, OpenAIDropsTheUsageChunkItAskedForAndHoldsDone) {
  StreamMeter m(Surface::kOpenAI, /*drop_usage_chunk=*/true);
  EXPECT_EQ(m.on_event("", R"({"choices":[{"delta":{"role":"assistant","content":""}}],"usage":null})"),
            Verdict::kForward);
  EXPECT_EQ(m.on_event("", R"({"choices":[{"delta":{"content":"Hi"}}],"usage":null})"),
            Verdict::kForward);
  EXPECT_EQ(m.on_event("", R"({"choices":[{"delta":{"content":" \"usage\": {"}}],"usage":null})"),
            Verdict::kForward);  // text that looks like usage is text
  EXPECT_EQ(m.content_events(), 2);
  EXPECT_FALSE(m.reported());
  EXPECT_EQ(m.on_event("", R"({"choices":[],"usage":{"prompt_tokens":10,"completion_tokens":7,)"
                           R"("prompt_tokens_details":{"cached_tokens":4}}})"),
            Verdict::kDrop);
  EXPECT_TRUE(m.reported());
  EXPECT_EQ(m.on_event("", "[DONE]"), Verdict::kFinal);
  const meter::Usage u = m.usage(999, 999);
  EXPECT_EQ(u.input_tokens, 6);
  EXPECT_EQ(u.cached_tokens, 4);
  EXPECT_EQ(u.output_tokens, 7);
}

// Some upstreams put usage on the chunk that carries finish_reason (or on every chunk):
// only the usage-only chunk Turnpike asked for is dropped, never one with choices.
TEST(StreamMeter, OpenAIKeepsChunksWithChoicesThatCarryUsage) {
  StreamMeter m(Surface::kOpenAI, /*drop_usage_chunk=*/true);
  EXPECT_EQ(m.on_event("", R"({"choices":[{"delta":{"role":"assistant"}}],"usage":{"prompt_tokens":5,"completion_tokens":0}})"),
            Verdict::kForward);
  EXPECT_EQ(m.on_event("", R"({"choices":[{"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":3}})"),
            Verdict::kForward);
  EXPECT_FALSE(m.reported());  // a count beside choices (with n > 1 others may go on)
  EXPECT_TRUE(m.finished());
  EXPECT_EQ(m.usage(0, 0).output_tokens, 3);
  EXPECT_EQ(m.on_event("", R"({"choices": [ ],"usage":{"prompt_tokens":5,"completion_tokens":3}})"),
            Verdict::kDrop);
  // The usage-only chunk in the shapes some OpenAI-compatible servers send: dropped too.
  EXPECT_EQ(m.on_event("", R"({"id":"x","usage":{"prompt_tokens":5,"completion_tokens":3}})"),
            Verdict::kDrop);
  EXPECT_EQ(m.on_event("", R"({"usage":{"prompt_tokens":5,"completion_tokens":3},"choices":null})"),
            Verdict::kDrop);
}

// A stream that closes without its terminator was whole when the upstream said its answer
// ended; without that (and without final usage) it was cut.
TEST(StreamMeter, AFinishReasonOrStopReasonSaysTheAnswerEnded) {
  StreamMeter m(Surface::kOpenAI, true);
  m.on_event("", R"({"choices":[{"delta":{"content":"a"},"finish_reason":null}]})");
  EXPECT_FALSE(m.finished());
  m.on_event("", R"({"choices":[{"delta":{},"finish_reason":"stop"}]})");
  EXPECT_TRUE(m.finished());
  StreamMeter a(Surface::kAnthropic, false);
  a.on_event("message_delta", R"({"type":"message_delta","delta":{"stop_reason":null}})");
  EXPECT_FALSE(a.finished());
  a.on_event("message_delta", R"({"type":"message_delta","delta":{"stop_reason":"end_turn"}})");
  EXPECT_TRUE(a.finished());
}

// vLLM with continuous_usage_stats reports usage on every chunk: a running count, so a
// stream cut after some of them was not reported whole (and is billed its count so far).
TEST(StreamMeter, UsageOnAChunkThatGoesOnIsARunningCount) {
  StreamMeter m(Surface::kOpenAI, true);
  m.on_event("", R"({"choices":[{"delta":{"content":"a"}}],"usage":{"prompt_tokens":9,"completion_tokens":1}})");
  m.on_event("", R"({"choices":[{"delta":{"content":"b"}}],"usage":{"prompt_tokens":9,"completion_tokens":2}})");
  EXPECT_FALSE(m.reported());
  EXPECT_EQ(m.usage_reports(), 2);
  const meter::Usage so_far = m.usage(999, 1);
  EXPECT_EQ(so_far.input_tokens, 9);  // reported, not the estimate
  EXPECT_EQ(so_far.output_tokens, 2);
  EXPECT_EQ(m.usage(999, 5).output_tokens, 5);  // relayed more than counted
  m.on_event("", R"({"choices":[{"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":3}})");
  EXPECT_FALSE(m.reported());  // n > 1 would let other choices go on
  EXPECT_EQ(m.usage(999, 2).output_tokens, 3);
  m.on_event("", R"({"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":3}})");
  EXPECT_TRUE(m.reported());
  EXPECT_EQ(m.usage(999, 5).output_tokens, 3);  // the final count is exact
}

TEST(StreamMeter, AUsageChunkTheAnswerWentOnAfterIsNotFinal) {
  StreamMeter m(Surface::kOpenAI, true);
  m.on_event("", R"({"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":1}})");
  EXPECT_TRUE(m.reported());
  for (int i = 0; i < 20; ++i) m.on_event("", R"({"choices":[{"delta":{"content":"x"}}]})");
  EXPECT_FALSE(m.reported());
  EXPECT_EQ(m.usage(999, 20).output_tokens, 20);  // what was relayed, not the early 1
  EXPECT_EQ(m.usage(999, 20).input_tokens, 9);
}

TEST(StreamMeter, TheUsageAskedForOnTheClientsBehalfIsTakenOutOfEachChunk) {
  auto without = [](std::string_view event) {
    std::string out;
    http::SseEvents events(event);
    http::SseEvents::Event e;
    if (!events.next(e)) return std::string(event);
    append_without_usage(out, e.raw, e.data);
    return out;
  };
  EXPECT_EQ(without("data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\":null}\n\n"),
            "data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n");
  EXPECT_EQ(without("data: {\"choices\":[],\"usage\": null, \"obfuscation\":\"x\"}\n\n"),
            "data: {\"choices\":[], \"obfuscation\":\"x\"}\n\n");
  EXPECT_EQ(without("data: {\"usage\":null,\"choices\":[]}\n\n"), "data: {\"choices\":[]}\n\n");
  EXPECT_EQ(without("data: {\"choices\":[{}],\"usage\":{\"completion_tokens\":2,\"prompt_tokens_details\":{\"cached_tokens\":0}}}\n\n"),
            "data: {\"choices\":[{}]}\n\n");
  // A brace inside a string of the usage counts for nothing; a usage nested in another
  // member is that member's, and the top-level one goes; space before the colon is JSON.
  EXPECT_EQ(without("data: {\"choices\":[],\"usage\":{\"note\":\"}x\",\"n\":1}}\n\n"),
            "data: {\"choices\":[]}\n\n");
  EXPECT_EQ(without("data: {\"x_groq\":{\"id\":\"r\",\"usage\":{\"a\":1}},\"usage\":null}\n\n"),
            "data: {\"x_groq\":{\"id\":\"r\",\"usage\":{\"a\":1}}}\n\n");
  EXPECT_EQ(without("data: {\"choices\":[] , \"usage\" : null }\n\n"), "data: {\"choices\":[] }\n\n");
  // Lines before the data line (a comment, an id) may hold braces of their own.
  EXPECT_EQ(without(": {k}\nid: {7}\ndata: {\"choices\":[],\"usage\":null}\n\n"),
            ": {k}\nid: {7}\ndata: {\"choices\":[]}\n\n");
  // Not JSON as expected: left as it is.
  for (const char* odd : {"data: {\"choices\":[],\"usage\":{\"a\":\"}\n\n",
                          "data: {\"choices\":\"usage\",\"usage\"\n\n"}) {
    EXPECT_EQ(without(odd), odd);
  }
  // A usage named in content is text, escaped: left alone; so is an event without usage.
  for (const char* kept : {"data: {\"choices\":[{\"delta\":{\"content\":\"\\\"usage\\\":null\"}}]}\n\n",
                           "data: [DONE]\n\n", "data: {\"usage\":null}\n\n"}) {
    EXPECT_EQ(without(kept), kept);
  }
}

// A chunk spread over several data: lines (SSE reads them joined) loses its usage too, and
// goes out as one data: line; its other fields stay. A multi-line chunk without a
// top-level usage is left as it came.
TEST(StreamMeter, AUsageIsTakenOutOfAChunkSpreadOverSeveralLines) {
  auto without = [](std::string_view event) {
    std::string out;
    http::SseEvents events(event);
    http::SseEvents::Event e;
    EXPECT_TRUE(events.next(e));
    append_without_usage(out, e.raw, e.data);
    return out;
  };
  EXPECT_EQ(without("data: {\"id\":\"c\",\ndata: \"choices\":[{\"delta\":{\"content\":\"a\"}}],\n"
                    "data: \"usage\":{\"prompt_tokens\":10,\"completion_tokens\":1}}\n\n"),
            "data: {\"id\":\"c\", \"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n");
  EXPECT_EQ(without("id: 7\r\ndata: {\"choices\":[],\r\ndata: \"usage\":null}\r\n\r\n"),
            "id: 7\ndata: {\"choices\":[]}\n\n");
  for (const char* kept :
       {"data: {\"choices\":[],\ndata: \"x\":{\"usage\":1}}\n\n",
        "data: {\"choices\":\ndata: [{\"delta\":{\"content\":\"usage\"}}]}\n\n"}) {
    EXPECT_EQ(without(kept), kept);
  }
}

TEST(StreamMeter, OpenAIKeepsTheUsageChunkTheClientAskedFor) {
  StreamMeter m(Surface::kOpenAI, /*drop_usage_chunk=*/false);
  EXPECT_EQ(m.on_event("", R"({"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}})"),
            Verdict::kForward);
  EXPECT_TRUE(m.reported());
}

TEST(StreamMeter, WithoutReportedUsageBillsTheEstimateAndWhatWasRelayed) {
  StreamMeter m(Surface::kOpenAI, true);
  m.on_event("", R"({"choices":[{"delta":{"content":"a"}}]})");
  m.on_event("", R"({"choices":[{"delta":{"tool_calls":[{"function":{"arguments":"{\"x"}}]}}]})");
  EXPECT_EQ(m.content_events(), 2);
  // Reasoning streamed beside the content (vLLM and DeepSeek, Ollama) and a refusal are
  // output the client got too; an empty or null one is not.
  m.on_event("", R"({"choices":[{"delta":{"content":null,"reasoning_content":"hm"}}]})");
  m.on_event("", R"({"choices":[{"delta":{"reasoning":"so"}}]})");
  m.on_event("", R"({"choices":[{"delta":{"refusal":"no"}}]})");
  m.on_event("", R"({"choices":[{"delta":{"content":"","reasoning_content":null}}]})");
  EXPECT_EQ(m.content_events(), 5);
  // Audio output: its transcript and its data.
  m.on_event("", R"({"choices":[{"delta":{"audio":{"id":"a1","transcript":"hel"}}}]})");
  m.on_event("", R"({"choices":[{"delta":{"audio":{"data":"UklGR"}}}]})");
  m.on_event("", R"({"choices":[{"delta":{"audio":{"id":"a1","expires_at":1}}}]})");
  EXPECT_EQ(m.content_events(), 7);
  const meter::Usage u = m.usage(/*input_estimate=*/50, /*output_relayed=*/1);
  EXPECT_EQ(u.input_tokens, 50);
  EXPECT_EQ(u.output_tokens, 1);
}

TEST(StreamMeter, AnthropicFoldsMessageStartAndCumulativeDeltas) {
  StreamMeter m(Surface::kAnthropic, false);
  EXPECT_EQ(m.on_event("message_start",
                       R"({"type":"message_start","message":{"usage":{"input_tokens":12,)"
                       R"("cache_read_input_tokens":3,"output_tokens":1}}})"),
            Verdict::kForward);
  EXPECT_EQ(m.on_event("content_block_delta", R"({"delta":{"text":"x"}})"), Verdict::kForward);
  EXPECT_EQ(m.on_event("content_block_delta", R"({"delta":{"text":"y"}})"), Verdict::kForward);
  EXPECT_FALSE(m.reported());
  // Cut off here: input from message_start, output from what was relayed.
  EXPECT_EQ(m.usage(0, 2).input_tokens, 12);
  EXPECT_EQ(m.usage(0, 2).output_tokens, 2);
  EXPECT_EQ(
      m.on_event("message_delta", R"({"type":"message_delta","delta":{"stop_reason":"end_turn"},)"
                                  R"("usage":{"output_tokens":5}})"),
      Verdict::kForward);
  EXPECT_TRUE(m.reported());
  EXPECT_EQ(m.on_event("message_stop", R"({"type":"message_stop"})"), Verdict::kFinal);
  const meter::Usage u = m.usage(0, 0);
  EXPECT_EQ(u.input_tokens, 12);
  EXPECT_EQ(u.cached_tokens, 3);
  EXPECT_EQ(u.output_tokens, 5);
}

// The final usage is the message_delta that ends the answer (its stop_reason). One before
// that, or one the answer went on after, is a running count: a stream cut (or a client that
// left) is billed at least the content it relayed, and the drain waits for the real end.
TEST(StreamMeter, AnAnthropicDeltaIsFinalOnlyWhenItEndsTheAnswer) {
  StreamMeter m(Surface::kAnthropic, false);
  (void)m.on_event("message_start",
                   R"({"message":{"usage":{"input_tokens":40,"output_tokens":1}}})");
  (void)m.on_event("message_delta",
                   R"({"delta":{"stop_reason":null},"usage":{"output_tokens":2}})");
  EXPECT_FALSE(m.reported());
  for (int i = 0; i < 50; ++i) (void)m.on_event("content_block_delta", R"({"delta":{"text":"x"}})");
  EXPECT_FALSE(m.reported());
  EXPECT_EQ(m.usage(0, 50).output_tokens, 50);
  (void)m.on_event("message_delta",
                   R"({"delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":60}})");
  EXPECT_TRUE(m.reported());
  EXPECT_EQ(m.usage(0, 50).output_tokens, 60);
  // An upstream that goes on after saying it ended: its count runs again.
  (void)m.on_event("content_block_delta", R"({"delta":{"text":"y"}})");
  EXPECT_FALSE(m.reported());
  EXPECT_EQ(m.usage(0, 70).output_tokens, 70);
  // An ending delta without a count of its own leaves the earlier one a running count.
  StreamMeter n(Surface::kAnthropic, false);
  (void)n.on_event("message_start",
                   R"({"message":{"usage":{"input_tokens":40,"output_tokens":1}}})");
  (void)n.on_event("message_delta",
                   R"({"delta":{"stop_reason":null},"usage":{"output_tokens":2}})");
  for (int i = 0; i < 50; ++i) (void)n.on_event("content_block_delta", R"({"delta":{"text":"x"}})");
  (void)n.on_event("message_delta", R"({"delta":{"stop_reason":"end_turn"}})");
  EXPECT_FALSE(n.reported());
  EXPECT_TRUE(n.finished());
  EXPECT_EQ(n.usage(0, 50).output_tokens, 50);
}

TEST(Rfc3339, ParsesZuluOffsetsAndFractionsAndRejectsTheRest) {
  EXPECT_EQ(parse_rfc3339("1970-01-01T00:00:00Z"), 0);
  EXPECT_EQ(parse_rfc3339("2026-11-23T19:04:50.123Z"), 1795460690123);
  EXPECT_EQ(parse_rfc3339("2026-11-23T20:04:50+01:00"), 1795460690000);
  EXPECT_EQ(parse_rfc3339("2026-11-23t19:04:50.5z"), 1795460690500);
  EXPECT_EQ(parse_rfc3339("2024-02-29T00:00:00Z"), 1709164800000);
  // Finer than a millisecond rounds up (a bound between two stored times means the next);
  // zeros past the millisecond change nothing.
  EXPECT_EQ(parse_rfc3339("1970-01-01T00:00:00.0005Z"), 1);
  EXPECT_EQ(parse_rfc3339("1970-01-01T00:00:00.123000Z"), 123);
  // A leap second is the next minute's first.
  EXPECT_EQ(parse_rfc3339("2016-12-31T23:59:60Z"), parse_rfc3339("2017-01-01T00:00:00Z"));
  for (const char* bad : {"", "2026-11-23", "2026-11-23T19:04:50", "2026-13-01T00:00:00Z",
                          "2025-02-29T00:00:00Z", "2026-11-23T19:04:50.Z",
                          "2026-11-23T19:04:50Zjunk", "2026-11-23 19:04:50Z"}) {
    EXPECT_FALSE(parse_rfc3339(bad)) << bad;
  }
  EXPECT_EQ(format_rfc3339(1795460690123), "2026-11-23T19:04:50Z");
  EXPECT_EQ(format_rfc3339(1795460690123, true), "2026-11-23T19:04:50.123Z");
  EXPECT_EQ(parse_rfc3339(format_rfc3339(1795460690123, true)), 1795460690123);
}

TEST(Rfc3339, ComparesTimesToTheirLastDigit) {
  const auto order = [](const char* a, const char* b) { return compare_rfc3339(a, b); };
  EXPECT_EQ(order("2026-11-30T04:54:24.0005Z", "2026-11-30T04:54:24.0009Z"),
            std::strong_ordering::less);  // both round to .001
  EXPECT_EQ(order("2026-11-30T04:54:24.00051Z", "2026-11-30T04:54:24.0005Z"),
            std::strong_ordering::greater);
  EXPECT_EQ(order("2026-11-30T04:54:24.0005Z", "2026-11-30T04:54:24.00049999Z"),
            std::strong_ordering::greater);  // "5" > "49" as fractions, not as lengths
  EXPECT_EQ(order("2026-11-30T04:54:24.000500Z", "2026-11-30T05:54:24.0005+01:00"),
            std::strong_ordering::equal);  // trailing zeros and offsets change nothing
  EXPECT_EQ(order("2026-11-30T04:54:24.001Z", "2026-11-30T04:54:24.0009999Z"),
            std::strong_ordering::greater);
  EXPECT_EQ(order("1969-12-31T23:59:59.9999Z", "1970-01-01T00:00:00Z"), std::strong_ordering::less);
  EXPECT_FALSE(order("2026-11-30T04:54:24Z", "yesterday"));
  EXPECT_FALSE(order("", "2026-11-30T04:54:24Z"));
}

TEST(Query, DecodesPercentAndPlus) {
  auto q = http::parse_query("/api/usage?from=2026-11-23T00%3A00%3A00%2B01%3A00&limit=5&&x");
  ASSERT_TRUE(q);
  ASSERT_EQ(q->size(), 3u);
  EXPECT_EQ((*q)[0].second, "2026-11-23T00:00:00+01:00");
  EXPECT_EQ((*q)[1].first, "limit");
  EXPECT_EQ((*q)[2].first, "x");
  EXPECT_EQ(http::parse_query("/p?a=b+c")->front().second, "b c");
  EXPECT_FALSE(http::parse_query("/p?a=%4"));
  EXPECT_FALSE(http::parse_query("/p?a=%zz"));
  EXPECT_TRUE(http::parse_query("/p")->empty());
}

TEST(UsageQuery, ValidatesEveryParameter) {
  auto ok = parse_usage_query({{"from", "2026-01-01T00:00:00Z"}, {"limit", "1000"},
                               {"cursor", "u_42"}},
                              7);
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->account, 7);
  EXPECT_EQ(ok->limit, 1000u);
  EXPECT_EQ(ok->after_id, 42);
  EXPECT_EQ(parse_usage_query({}, 7)->limit, kUsagePageRowsDefault);
  for (const http::QueryParams& bad :
       std::vector<http::QueryParams>{{{"limit", "0"}}, {{"limit", "1001"}}, {{"limit", "x"}},
                                      {{"cursor", "42"}}, {{"from", "yesterday"}},
                                      {{"from", ""}}, {{"limit", ""}}, {{"cursor", ""}},
                                      {{"from", "2026-01-02T00:00:00Z"}, {"to", "2026-01-01T00:00:00Z"}},
                                      {{"colour", "blue"}},
                                      {{"limit", "5"}, {"limit", "6"}}}) {  // given twice
    auto r = parse_usage_query(bad, 7);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.status().kind(), ErrorKind::kInvalidRequest);
  }
  auto other = parse_usage_query({{"account", "acct_8"}}, 7);
  ASSERT_FALSE(other);
  EXPECT_EQ(other.status().kind(), ErrorKind::kForbidden);
  EXPECT_EQ(parse_usage_query({{"account", "acct_8"}}, std::nullopt)->account, 8);
  const auto twice = parse_usage_query({{"account", "acct_8"}, {"account", "acct_9"}}, std::nullopt);
  ASSERT_FALSE(twice);
  EXPECT_NE(twice.status().message().find("'account' is given more than once"), std::string::npos);
  // A repeat is named before either value is judged.
  EXPECT_EQ(parse_usage_query({{"limit", "abc"}, {"limit", "2"}}, 7).status().message(),
            "query parameter 'limit' is given more than once");
  // A name that is not UTF-8 is said to be so, not shown as ''.
  EXPECT_EQ(parse_usage_query({{"\xff", "1"}}, 7).status().message(),
            "unknown query parameter (a name that is not UTF-8); expected from, to, limit, cursor");
  EXPECT_FALSE(parse_usage_query({}, std::nullopt)->account);
}

// Either bound alone may be any time: the epoch, or before it.
TEST(UsageQuery, ABoundAloneIsNeverOutOfOrder) {
  for (const char* to : {"1970-01-01T00:00:00Z", "1969-12-31T23:59:59Z", "0000-01-01T00:00:00Z"}) {
    const auto q = parse_usage_query({{"to", to}}, 7);
    ASSERT_TRUE(q) << to << ": " << q.status().message();
    EXPECT_EQ(q->to_ms, parse_rfc3339(to));
    EXPECT_LT(q->from_ms, q->to_ms);  // rows before the epoch are not cut off either
  }
  EXPECT_TRUE(parse_usage_query({{"from", "9999-12-31T23:59:59.999Z"}}, 7));
}

// Bounds are compared as sent: two within one millisecond round to the same one, an empty
// range and no error, while bounds out of order or equal stay 400 however they are written.
TEST(UsageQuery, BoundsWithinOneMillisecondAreAnEmptyRange) {
  const auto within = parse_usage_query(
      {{"from", "2026-11-30T04:54:24.0005Z"}, {"to", "2026-11-30T04:54:24.0009Z"}}, 7);
  ASSERT_TRUE(within) << within.status().message();
  EXPECT_EQ(within->from_ms, within->to_ms);
  for (const auto& [from, to] : std::vector<std::pair<const char*, const char*>>{
           {"2026-11-30T04:54:24.0009Z", "2026-11-30T04:54:24.0005Z"},
           {"2026-11-30T04:54:24.0005Z", "2026-11-30T04:54:24.000500Z"},
           {"2026-11-30T05:54:24.0005+01:00", "2026-11-30T04:54:24.0005Z"},
           {"2026-11-30T04:54:24.001Z", "2026-11-30T04:54:24.001Z"}}) {
    const auto q = parse_usage_query({{"from", from}, {"to", to}}, 7);
    ASSERT_FALSE(q) << from << " " << to;
    EXPECT_EQ(q.status().message(), "'from' must be before 'to'");
  }
}

TEST(UsagePage, ShowsLimitRowsAndACursorOnlyWhenMoreExist) {
  std::vector<store::UsageRecord> rows(3);
  for (int i = 0; i < 3; ++i) {
    rows[i].id = 10 + i;
    rows[i].request_id = "req_" + std::to_string(i);
    rows[i].input_tokens = 5;
    rows[i].cached_tokens = 2;
    rows[i].cost = Money::from_nanos(1500);
  }
  simdjson::dom::parser parser;
  const std::string two = usage_page_json({rows, std::nullopt}, 2);
  auto doc = parser.parse(two).value();
  EXPECT_EQ(doc["data"].get_array().size(), 2u);
  EXPECT_EQ(std::string_view(doc["next_cursor"].get_string().value()), "u_11");
  EXPECT_EQ(doc["data"].at(0)["input_tokens"].get_int64().value(), 7);
  EXPECT_EQ(std::string_view(doc["data"].at(0)["cost_usd"].get_string().value()), "0.0000015");
  EXPECT_TRUE(doc["data"].at(0)["node"].is_null());
  const std::string all = usage_page_json({rows, std::nullopt}, 3);
  EXPECT_TRUE(parser.parse(all).value()["next_cursor"].is_null());
  // A scan that stopped short of the log's end goes on where it stopped, however few rows
  // it found.
  const std::string scanned = usage_page_json({{}, 5000}, 3);
  auto short_page = parser.parse(scanned).value();
  EXPECT_EQ(short_page["data"].get_array().size(), 0u);
  EXPECT_EQ(std::string_view(short_page["next_cursor"].get_string().value()), "u_5000");
}

}  // namespace
}  // namespace tp::api

#include "api/maintenance.h"

namespace tp::api {
namespace {

TEST(Maintenance, ReconcilesNightlyAtTheConfiguredMinuteOrEveryInterval) {
  ops::Billing b;  // 03:00 UTC
  const std::int64_t midnight = 1795392000000;  // 2026-11-23T00:00:00Z
  EXPECT_EQ(Maintenance::next_reconciliation(b, midnight), midnight + 3 * 3'600'000);
  EXPECT_EQ(Maintenance::next_reconciliation(b, midnight + 3 * 3'600'000),
            midnight + 27 * 3'600'000);  // exactly at 03:00: the next day's
  b.reconcile_every_ms = 500;
  EXPECT_EQ(Maintenance::next_reconciliation(b, midnight + 7), midnight + 507);
}

}  // namespace
}  // namespace tp::api

#include "api/notifier.h"

namespace tp::api {
namespace {

TEST(LowBalanceNotice, SaysFellToZeroAndBelowTheOthers) {
  ledger::LowBalanceNotice notice{3, Money::usd(1), Money::parse("0.98").value(), 0};
  EXPECT_NE(notice_json(notice).find("acct_3 fell below 1.00 USD (now 0.98 USD)"),
            std::string::npos)
      << notice_json(notice);
  notice.threshold = Money();
  notice.balance = Money();
  EXPECT_NE(notice_json(notice).find("acct_3 fell to 0.00 USD (now 0.00 USD)"),
            std::string::npos)
      << notice_json(notice);
}

TEST(UsageQuery, AnUnknownParameterIsNamedWithTheOnesThatExist) {
  EXPECT_NE(parse_usage_query({{"colour", "blue"}}, 7).status().message().find(
                "expected from, to, limit, cursor"),
            std::string::npos);
  EXPECT_EQ(parse_usage_query({{"colour", "blue"}}, 7).status().message().find("account"),
            std::string::npos);  // a customer key may not pass it
  EXPECT_NE(parse_usage_query({{"colour", "blue"}}, std::nullopt).status().message().find(
                "cursor, account"),
            std::string::npos);
}

}  // namespace
}  // namespace tp::api
