#include "meter/usage.h"

#include <gtest/gtest.h>

namespace tp::meter {
namespace {

TEST(Usage, OpenAIBodyAndChunks) {
  auto u = openai_usage(
      R"({"id":"x","usage":{"prompt_tokens":100,"completion_tokens":7,"total_tokens":107,)"
      R"("prompt_tokens_details":{"cached_tokens":40}}})");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->input_tokens, 60);
  EXPECT_EQ(u->cached_tokens, 40);
  EXPECT_EQ(u->output_tokens, 7);
  // Stream chunks carry "usage": null until the final one.
  EXPECT_FALSE(openai_usage(R"({"choices":[{"delta":{"content":"hi"}}],"usage":null})"));
  EXPECT_FALSE(openai_usage(R"({"choices":[]})"));
  EXPECT_FALSE(openai_usage("not json"));
  // Embeddings: prompt tokens only.
  u = openai_usage(R"({"data":[],"usage":{"prompt_tokens":5,"total_tokens":5}})");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->input_tokens, 5);
  EXPECT_EQ(u->output_tokens, 0);
  // Without a completion count the total says the output; without either, nothing is
  // reported (the caller bills its estimate, never a free answer).
  u = openai_usage(R"({"usage":{"prompt_tokens":12,"total_tokens":512}})");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->output_tokens, 500);
  EXPECT_FALSE(openai_usage(R"({"usage":{"prompt_tokens":12}})"));
  // More cached than prompt tokens: never a negative input.
  u = openai_usage(R"({"usage":{"prompt_tokens":3,"completion_tokens":4,"prompt_tokens_details":{"cached_tokens":9}}})");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->input_tokens, 0);
  EXPECT_EQ(u->cached_tokens, 3);
  EXPECT_EQ(u->output_tokens, 4);
  // Integral numbers written as decimals are counts.
  u = openai_usage(R"({"usage":{"prompt_tokens":10.0,"completion_tokens":2e1}})");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->input_tokens, 10);
  EXPECT_EQ(u->output_tokens, 20);
}

// A usage object that does not report counts reports nothing: the gateway bills its
// estimate then, never a free answer.
// An embeddings answer may report its prompt count alone: it has no output. A chat answer
// that does reports nothing (it would be free).
TEST(Usage, AnEmbeddingsAnswerMayReportThePromptAlone) {
  const std::string body = R"({"object":"list","data":[],"usage":{"prompt_tokens":7}})";
  const auto embedded = openai_usage(body, /*embeddings=*/true);
  ASSERT_TRUE(embedded);
  EXPECT_EQ(embedded->input_tokens, 7);
  EXPECT_EQ(embedded->output_tokens, 0);
  EXPECT_FALSE(openai_usage(body));
}

TEST(Usage, MalformedCountsReportNothing) {
  for (const char* body : {R"({"usage":{}})",
                           R"({"usage":{"prompt_tokens":"1000","completion_tokens":"2000"}})",
                           R"({"usage":{"prompt_tokens":3,"completion_tokens":-4}})",
                           R"({"usage":{"prompt_tokens":3,"completion_tokens":1.5}})",
                           R"({"usage":{"prompt_tokens":null,"completion_tokens":4}})",
                           R"({"usage":{"completion_tokens":4}})"}) {
    EXPECT_FALSE(openai_usage(body)) << body;
  }
  for (const char* body : {R"({"usage":{}})", R"({"usage":{"input_tokens":"5","output_tokens":2}})",
                           R"({"usage":{"input_tokens":5}})"}) {
    EXPECT_FALSE(anthropic_usage(body)) << body;
  }
  AnthropicStreamUsage s;
  s.on_event("message_start",
             R"({"type":"message_start","message":{"usage":{"input_tokens":"8","output_tokens":1}}})");
  EXPECT_FALSE(s.seen());
  s.on_event("message_delta", R"({"type":"message_delta","usage":{"output_tokens":"9"}})");
  EXPECT_FALSE(s.final());
  // A well-formed output with the input still unknown is not final: the input would be
  // billed as nothing.
  s.on_event("message_delta", R"({"type":"message_delta","usage":{"output_tokens":9}})");
  EXPECT_FALSE(s.final());
  EXPECT_EQ(s.usage().output_tokens, 9);
  s.on_event("message_delta",
             R"({"type":"message_delta","usage":{"input_tokens":8,"output_tokens":10}})");
  EXPECT_TRUE(s.final());
  EXPECT_EQ(s.usage().input_tokens, 8);
  // message_start needs only its input count.
  AnthropicStreamUsage t;
  t.on_event("message_start", R"({"type":"message_start","message":{"usage":{"input_tokens":500}}})");
  EXPECT_TRUE(t.seen());
  t.on_event("message_delta", R"({"type":"message_delta","usage":{"output_tokens":10}})");
  EXPECT_TRUE(t.final());
  EXPECT_EQ(t.usage().input_tokens, 500);
}

// A member past 64 bits (valid JSON, which simdjson alone refuses) beside the usage does not
// hide it: the report was ignored and the request billed its count of events.
TEST(Usage, ANumberPast64BitsBesideTheUsageDoesNotHideIt) {
  const auto u = openai_usage(
      R"({"choices":[],"usage":{"prompt_tokens":11,"completion_tokens":5000,"total_tokens":5011},)"
      R"("x_future":123456789012345678901234567890})");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->output_tokens, 5000);
  AnthropicStreamUsage s;
  s.on_event(
      "message_start",
      R"({"type":"message_start","message":{"usage":{"input_tokens":3,"output_tokens":1}}})");
  s.on_event("message_delta", R"({"type":"message_delta","delta":{"stop_reason":"end_turn",)"
                              R"("x_future":1e400},"usage":{"output_tokens":5000}})");
  EXPECT_EQ(s.usage().output_tokens, 5000);
  EXPECT_EQ(s.usage().input_tokens, 3);
}

TEST(Usage, AnthropicBodyAndStream) {
  auto u = anthropic_usage(
      R"({"type":"message","usage":{"input_tokens":10,"cache_creation_input_tokens":2,)"
      R"("cache_read_input_tokens":30,"output_tokens":5}})");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->input_tokens, 10);
  EXPECT_EQ(u->cache_write_tokens, 2);  // no split given: 5-minute writes
  EXPECT_EQ(u->uncached_input(), 12);
  EXPECT_EQ(u->cached_tokens, 30);
  EXPECT_EQ(u->output_tokens, 5);
  // Writes split by how long they are kept, each at its price.
  auto split = anthropic_usage(
      R"({"usage":{"input_tokens":5,"cache_creation_input_tokens":42203,)"
      R"("cache_creation":{"ephemeral_5m_input_tokens":3,"ephemeral_1h_input_tokens":42200},)"
      R"("cache_read_input_tokens":0,"output_tokens":21}})");
  ASSERT_TRUE(split);
  EXPECT_EQ(split->cache_write_tokens, 3);
  EXPECT_EQ(split->cache_write_1h_tokens, 42200);

  AnthropicStreamUsage s;
  EXPECT_FALSE(s.seen());
  s.on_event("message_start",
             R"({"type":"message_start","message":{"usage":{"input_tokens":8,"cache_read_input_tokens":4,"output_tokens":1}}})");
  s.on_event("content_block_delta", R"({"type":"content_block_delta"})");
  s.on_event("message_delta", R"({"type":"message_delta","usage":{"output_tokens":3}})");
  s.on_event("message_delta", R"({"type":"message_delta","usage":{"output_tokens":9}})");
  ASSERT_TRUE(s.seen());
  EXPECT_EQ(s.usage().input_tokens, 8);
  EXPECT_EQ(s.usage().cached_tokens, 4);
  EXPECT_EQ(s.usage().output_tokens, 9);  // cumulative, not summed

  // A delta that reports some input counts keeps the others (as the SDK does): the cache
  // counts of message_start are not wiped by a delta without them.
  AnthropicStreamUsage partial;
  partial.on_event("message_start",
                   R"({"type":"message_start","message":{"usage":{"input_tokens":5,)"
                   R"("cache_creation_input_tokens":40000,"cache_read_input_tokens":1000,)"
                   R"("output_tokens":1}}})");
  partial.on_event("message_delta",
                   R"({"type":"message_delta","usage":{"input_tokens":7,)"
                   R"("cache_creation_input_tokens":null,"output_tokens":300}})");
  ASSERT_TRUE(partial.final());
  EXPECT_EQ(partial.usage().input_tokens, 7);
  EXPECT_EQ(partial.usage().cache_write_tokens, 40000);
  EXPECT_EQ(partial.usage().cached_tokens, 1000);
  EXPECT_EQ(partial.usage().output_tokens, 300);

  // The split of the writes comes with message_start; a delta repeating only their total
  // keeps it (1-hour writes stay at their price).
  AnthropicStreamUsage kept;
  kept.on_event("message_start",
                 R"({"type":"message_start","message":{"usage":{"input_tokens":5,)"
                 R"("cache_creation_input_tokens":900,"cache_creation":)"
                 R"({"ephemeral_5m_input_tokens":100,"ephemeral_1h_input_tokens":800},)"
                 R"("output_tokens":1}}})");
  kept.on_event("message_delta",
                R"({"type":"message_delta","usage":{"input_tokens":5,)"
                R"("cache_creation_input_tokens":900,"output_tokens":40}})");
  EXPECT_EQ(kept.usage().cache_write_tokens, 100);
  EXPECT_EQ(kept.usage().cache_write_1h_tokens, 800);
}

// Cache counts are priced apart (writes dearer than input): a malformed one makes the usage
// report nothing (the estimate is billed), as a malformed audio or search count does; it
// was taken as none, and the writes went free. A split without its total counts as its
// sum; a split with a malformed member does not add up (all writes 5-minute ones).
TEST(Usage, AnthropicCacheCountsAreReadAsStrictlyAsTheOthers) {
  for (const char* bad :
       {R"({"usage":{"input_tokens":100,"cache_read_input_tokens":200,"output_tokens":50,)"
        R"("cache_creation_input_tokens":"300"}})",
        R"({"usage":{"input_tokens":100,"cache_creation_input_tokens":300.5,"output_tokens":50}})",
        R"({"usage":{"input_tokens":100,"cache_read_input_tokens":-200,"output_tokens":50}})",
        R"({"usage":{"input_tokens":100,"output_tokens":50,"cache_creation":)"
        R"({"ephemeral_5m_input_tokens":-1,"ephemeral_1h_input_tokens":200}}})"}) {
    EXPECT_FALSE(anthropic_usage(bad)) << bad;
  }
  const auto split_alone =
      anthropic_usage(R"({"usage":{"input_tokens":100,"output_tokens":50,"cache_creation":)"
                      R"({"ephemeral_5m_input_tokens":100,"ephemeral_1h_input_tokens":200}}})");
  ASSERT_TRUE(split_alone);
  EXPECT_EQ(split_alone->cache_write_tokens, 100);
  EXPECT_EQ(split_alone->cache_write_1h_tokens, 200);
  const auto odd_split = anthropic_usage(
      R"({"usage":{"input_tokens":100,"output_tokens":50,"cache_creation_input_tokens":300,)"
      R"("cache_creation":{"ephemeral_5m_input_tokens":-100,"ephemeral_1h_input_tokens":300}}})");
  ASSERT_TRUE(odd_split);
  EXPECT_EQ(odd_split->cache_write_tokens, 300);
  EXPECT_EQ(odd_split->cache_write_1h_tokens, 0);
}

// A usage object naming a member twice is read one way by the gateway (the first copy) and
// another by the client's SDK (the last): it reports nothing, and the estimate is billed.
TEST(Usage, AMemberGivenTwiceMakesTheUsageMalformed) {
  EXPECT_FALSE(openai_usage(
      R"({"usage":{"prompt_tokens":10,"completion_tokens":1,"completion_tokens":90}})", false));
  EXPECT_FALSE(
      openai_usage(R"({"usage":{"prompt_tokens":10,"completion_tokens":1,"prompt_tokens_details":)"
                   R"({"cached_tokens":0,"cached_tokens":9}}})",
                   false));
  EXPECT_FALSE(
      anthropic_usage(R"({"usage":{"input_tokens":10,"output_tokens":5,"input_tokens":5000}})"));
  AnthropicStreamUsage s;
  s.on_event("message_start",
             R"({"message":{"usage":{"input_tokens":8,"input_tokens":800,"output_tokens":1}}})");
  EXPECT_FALSE(s.seen());
  EXPECT_TRUE(openai_usage(R"({"usage":{"prompt_tokens":10,"completion_tokens":1}})", false));
  // One with more members than any provider sends is malformed too: its check stays cheap
  // (a usage object of 150,000 members held an I/O thread for 13 s).
  std::string wide = R"({"usage":{"prompt_tokens":10,"completion_tokens":1)";
  for (std::size_t i = 0; i < kUsageMembersMax; ++i) wide += ",\"k" + std::to_string(i) + "\":0";
  EXPECT_FALSE(openai_usage(wide + "}}", false));
}

// OpenAI's audio tokens are part of its prompt and completion counts: audio_input_tokens is
// the part of the uncached input that is audio, audio_output_tokens the part of the output.
TEST(Usage, OpenAIAudioTokensArePartOfInputAndOutput) {
  auto u =
      openai_usage(R"({"usage":{"prompt_tokens":100,"completion_tokens":50,"total_tokens":150,)"
                   R"("prompt_tokens_details":{"cached_tokens":40,"audio_tokens":30},)"
                   R"("completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":20}}})");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->input_tokens, 60);  // audio stays inside the plain input, not beside it
  EXPECT_EQ(u->cached_tokens, 40);
  EXPECT_EQ(u->audio_input_tokens, 30);
  EXPECT_EQ(u->output_tokens, 50);
  EXPECT_EQ(u->audio_output_tokens, 20);

  // Cached audio is not told apart: the audio count is capped at the uncached input.
  u = openai_usage(R"({"usage":{"prompt_tokens":100,"completion_tokens":5,)"
                   R"("prompt_tokens_details":{"cached_tokens":80,"audio_tokens":50}}})");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->input_tokens, 20);
  EXPECT_EQ(u->audio_input_tokens, 20);
  EXPECT_EQ(u->audio_output_tokens, 0);  // no completion details: no audio output

  // More audio output than output: capped at the output, whether it was reported or
  // derived from the total.
  u = openai_usage(R"({"usage":{"prompt_tokens":10,"completion_tokens":7,)"
                   R"("completion_tokens_details":{"audio_tokens":9}}})");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->output_tokens, 7);
  EXPECT_EQ(u->audio_output_tokens, 7);
  u = openai_usage(R"({"usage":{"prompt_tokens":10,"total_tokens":14,)"
                   R"("completion_tokens_details":{"audio_tokens":9}}})");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->output_tokens, 4);
  EXPECT_EQ(u->audio_output_tokens, 4);

  // Details that are null, or a null audio count, report no audio.
  u = openai_usage(
      R"({"usage":{"prompt_tokens":10,"completion_tokens":7,"prompt_tokens_details":null,)"
      R"("completion_tokens_details":{"audio_tokens":null}}})");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->input_tokens, 10);
  EXPECT_EQ(u->audio_input_tokens, 0);
  EXPECT_EQ(u->audio_output_tokens, 0);
  // An audio count that is not a count makes the usage report nothing (the estimate is
  // billed): it must not make audio cost the text price.
  for (const char* body :
       {R"({"usage":{"prompt_tokens":10,"completion_tokens":7,)"
        R"("completion_tokens_details":{"audio_tokens":"3"}}})",
        R"({"usage":{"prompt_tokens":10,"completion_tokens":7,)"
        R"("prompt_tokens_details":{"audio_tokens":-2}}})"}) {
    EXPECT_FALSE(openai_usage(body)) << body;
  }
}

TEST(Usage, AnthropicWebSearchesFromServerToolUse) {
  auto u = anthropic_usage(R"({"usage":{"input_tokens":10,"output_tokens":5,)"
                           R"("server_tool_use":{"web_search_requests":3}}})");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->web_searches, 3);
  EXPECT_EQ(u->input_tokens, 10);
  EXPECT_EQ(u->output_tokens, 5);
  for (const char* body :
       {R"({"usage":{"input_tokens":10,"output_tokens":5}})",
        R"({"usage":{"input_tokens":10,"output_tokens":5,"server_tool_use":null}})",
        R"({"usage":{"input_tokens":10,"output_tokens":5,"server_tool_use":{}}})",
        R"({"usage":{"input_tokens":10,"output_tokens":5,)"
        R"("server_tool_use":{"web_search_requests":null}}})"}) {
    u = anthropic_usage(body);
    ASSERT_TRUE(u) << body;
    EXPECT_EQ(u->web_searches, 0) << body;
  }
  // A search count that is not a count: the usage reports nothing, never free searches.
  EXPECT_FALSE(anthropic_usage(R"({"usage":{"input_tokens":10,"output_tokens":5,)"
                               R"("server_tool_use":{"web_search_requests":"3"}}})"));

  // In a stream the count comes with message_delta, cumulative: the latest replaces the
  // earlier one (never summed), and a delta without it keeps it. message_start's 0 does
  // not stick.
  AnthropicStreamUsage s;
  s.on_event("message_start",
             R"({"type":"message_start","message":{"usage":{"input_tokens":8,"output_tokens":1,)"
             R"("server_tool_use":{"web_search_requests":0}}}})");
  EXPECT_EQ(s.usage().web_searches, 0);
  s.on_event("message_delta", R"({"type":"message_delta","usage":{"output_tokens":30,)"
                              R"("server_tool_use":{"web_search_requests":2}}})");
  ASSERT_TRUE(s.final());
  EXPECT_EQ(s.usage().web_searches, 2);
  s.on_event("message_delta", R"({"type":"message_delta","usage":{"output_tokens":60,)"
                              R"("server_tool_use":{"web_search_requests":3}}})");
  EXPECT_EQ(s.usage().web_searches, 3);
  s.on_event("message_delta", R"({"type":"message_delta","usage":{"output_tokens":90}})");
  EXPECT_EQ(s.usage().web_searches, 3);
  EXPECT_EQ(s.usage().output_tokens, 90);
}

// Audio tokens at the audio prices and the rest of the input and output at the text prices;
// each web search at web_search_per_1k / 1000.
TEST(Usage, AudioAndWebSearchesPricedAtTheirOwnPrices) {
  catalog::Prices prices;
  prices.input = PricePerMtok::parse("1").value();
  prices.audio_input = PricePerMtok::parse("4").value();
  prices.output = PricePerMtok::parse("2").value();
  prices.audio_output = PricePerMtok::parse("8").value();
  prices.web_search_per_1k = PricePerMtok::parse("10").value();
  // Three searches at 10 USD per 1000: 0.03 USD exactly.
  EXPECT_EQ(price(Usage{.web_searches = 3}, prices).nanos(), 30'000'000);
  // 600 text in (600'000) + 400 audio in (1'600'000) + 70 text out (140'000) + 30 audio out
  // (240'000) + 3 searches (30'000'000) = 32'580'000 nano-USD.
  const Usage u{.input_tokens = 1000,
                .output_tokens = 100,
                .audio_input_tokens = 400,
                .audio_output_tokens = 30,
                .web_searches = 3};
  EXPECT_EQ(price(u, prices).nanos(), 32'580'000);
  // Audio prices that equal the text prices (a route without its own) charge as text.
  prices.audio_input = prices.input;
  prices.audio_output = prices.output;
  prices.web_search_per_1k = PricePerMtok();
  EXPECT_EQ(price(u, prices).nanos(), 1000 * 1000 + 100 * 2000);
}

// Every part is summed before the one rounding up: five parts of a fraction of a nano-USD
// each cost 3 nano-USD, not 5.
TEST(Usage, AudioAndSearchPartsAreRoundedUpOnce) {
  catalog::Prices prices;
  prices.input = PricePerMtok::parse("0.0003").value();                 // 0.3 nano-USD a token
  prices.audio_input = PricePerMtok::parse("0.0007").value();           // 0.7
  prices.output = PricePerMtok::parse("0.0002").value();                // 0.2
  prices.audio_output = PricePerMtok::parse("0.0008").value();          // 0.8
  prices.web_search_per_1k = PricePerMtok::parse("0.0000005").value();  // 0.5 a search
  const Usage u{.input_tokens = 2,
                .output_tokens = 2,
                .audio_input_tokens = 1,
                .audio_output_tokens = 1,
                .web_searches = 1};
  EXPECT_EQ(price(u, prices).nanos(), 3);  // 2.5 rounded up
  EXPECT_EQ(price(Usage{.web_searches = 1}, prices).nanos(), 1);
}

TEST(Usage, PricedAtTheRoute) {
  catalog::Route route;
  route.prices.input = PricePerMtok::parse("3").value();
  route.prices.cached_input = PricePerMtok::parse("0.3").value();
  route.prices.output = PricePerMtok::parse("15").value();
  // 1000 in ($0.003) + 1000 cached ($0.0003) + 100 out ($0.0015) = $0.0048.
  EXPECT_EQ(price(Usage{1000, 1000, 100}, route.prices).to_string(), "0.0048");
  // Cache writes at their own prices: 1000 for 5 minutes at 3.75 ($0.00375), 1000 for an
  // hour at 6 ($0.006).
  route.prices.cache_write = PricePerMtok::parse("3.75").value();
  route.prices.cache_write_1h = PricePerMtok::parse("6").value();
  EXPECT_EQ(price(Usage{1000, 1000, 100, 1000, 1000}, route.prices).to_string(), "0.01455");
}

}  // namespace
}  // namespace tp::meter

namespace tp::meter {
namespace {

TEST(Usage, AbsurdCountsAreClampedNotOverflowed) {
  auto u = openai_usage(
      R"({"usage":{"prompt_tokens":9223372036854775807,"completion_tokens":9223372036854775807}})");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->input_tokens, kTokensMax);
  EXPECT_EQ(u->output_tokens, kTokensMax);
  auto a = anthropic_usage(
      R"({"usage":{"input_tokens":9223372036854775807,"cache_creation_input_tokens":9223372036854775807,"output_tokens":1}})");
  ASSERT_TRUE(a);
  EXPECT_EQ(a->input_tokens, kTokensMax);
  EXPECT_EQ(a->cache_write_tokens, kTokensMax);
}

}  // namespace
}  // namespace tp::meter
