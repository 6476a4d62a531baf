#include "api/whole_answer.h"

#include <gtest/gtest.h>

namespace tp::api {
namespace {

TEST(WholeAnswer, ContentChunksMakeOneMessageWithItsUsage) {
  WholeAnswer whole;
  for (const char* chunk :
       {R"({"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-x","service_tier":"flex","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null,"obfuscation":"abc"})",
        R"({"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-x","choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}],"usage":null,"obfuscation":"de"})",
        R"({"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-x","choices":[{"index":0,"delta":{"content":"lo \"you\""},"finish_reason":null}]})"}) {
    ASSERT_TRUE(whole.add(chunk)) << chunk;
  }
  ASSERT_TRUE(whole.add(
      R"({"id":"chatcmpl-1","created":1700000000,"model":"gpt-x","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]})"));
  ASSERT_TRUE(whole.add(
      R"({"id":"chatcmpl-1","created":1700000000,"model":"gpt-x","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8,"prompt_tokens_details":{"cached_tokens":0}}})"));
  EXPECT_EQ(whole.build(),
            R"({"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"gpt-x",)"
            R"("choices":[{"index":0,"message":{"role":"assistant","content":"Hello \"you\"",)"
            R"("refusal":null},"logprobs":null,"finish_reason":"stop"}],)"
            R"("usage":{"prompt_tokens":5,"completion_tokens":3,"total_tokens":8,)"
            R"("prompt_tokens_details":{"cached_tokens":0}},"service_tier":"flex",)"
            R"("system_fingerprint":"fp_1"})");
}

// Valid JSON may hold a number past 64 bits or a double's range: the answer keeps it as
// sent (it failed the chunk, and with it the flex attempt), as it keeps every number's own
// text. What is not one JSON object still fails.
TEST(WholeAnswer, NumbersStayAsSentWhateverTheirSize) {
  WholeAnswer whole;
  ASSERT_TRUE(whole.add(
      R"({"id":"c","created":1700000000,"choices":[{"index":0,"delta":{"role":"assistant",)"
      R"("content":"x","x_big":123456789012345678901234567890},"logprobs":{"content":)"
      R"([{"token":"x","logprob":-0.5e-3 }]},"finish_reason":null}]})"));
  ASSERT_TRUE(whole.add(R"({"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],)"
                        R"("usage":{"prompt_tokens":5,"completion_tokens":1,"x_far":-1e400}})"));
  EXPECT_EQ(whole.build(),
            R"({"id":"c","object":"chat.completion","created":1700000000,"choices":[{"index":0,)"
            R"("message":{"role":"assistant","content":"x","refusal":null,)"
            R"("x_big":123456789012345678901234567890},"logprobs":{"content":[{"token":"x",)"
            R"("logprob":-0.5e-3}]},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,)"
            R"("completion_tokens":1,"x_far":-1e400}})");
  for (const char* bad : {R"({"id":"c"} x)", "[1]", R"({"id":"c",})", R"({"choices":[1]})",
                          R"({"choices":[{"index":"0"}]})", R"({"choices":[{"index":1e30}]})"}) {
    EXPECT_FALSE(WholeAnswer().add(bad)) << bad;
  }
}

TEST(WholeAnswer, ToolCallsMergeByIndexAndLoseIt) {
  WholeAnswer whole;
  for (const char* chunk : {
           R"({"id":"c","choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"get_weather","arguments":""}}]},"finish_reason":null}]})",
           R"({"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]},"finish_reason":null}]})",
           R"({"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_b","type":"function","function":{"name":"get_time","arguments":"{}"}}]},"finish_reason":null}]})",
           R"({"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"Paris\"}"}}]},"finish_reason":null}]})",
           R"({"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]})"}) {
    ASSERT_TRUE(whole.add(chunk)) << chunk;
  }
  EXPECT_EQ(whole.build(),
            R"({"id":"c","object":"chat.completion","choices":[{"index":0,"message":)"
            R"({"role":"assistant","content":null,"refusal":null,"tool_calls":[)"
            R"({"id":"call_a","type":"function","function":{"name":"get_weather",)"
            R"("arguments":"{\"city\":\"Paris\"}"}},)"
            R"({"id":"call_b","type":"function","function":{"name":"get_time","arguments":"{}"}}]},)"
            R"("logprobs":null,"finish_reason":"tool_calls"}]})");
}

TEST(WholeAnswer, ChoicesInterleaveByIndex) {
  WholeAnswer whole(2);
  ASSERT_TRUE(whole.add(R"({"choices":[{"index":1,"delta":{"content":"b"},"finish_reason":null}]})"));
  ASSERT_TRUE(whole.add(R"({"choices":[{"index":0,"delta":{"content":"a"},"finish_reason":"stop"}]})"));
  ASSERT_TRUE(whole.add(
      R"({"choices":[{"index":1,"delta":{"content":"c"},"logprobs":{"content":[{"token":"c","logprob":-0.5}]},"finish_reason":"length"}]})"));
  const std::string built = whole.build();
  EXPECT_NE(built.find(R"({"index":0,"message":{"role":"assistant","content":"a","refusal":null},"logprobs":null,"finish_reason":"stop"})"),
            std::string::npos)
      << built;
  EXPECT_NE(built.find(R"({"index":1,"message":{"role":"assistant","content":"bc","refusal":null},"logprobs":{"content":[{"token":"c","logprob":-0.5}]},"finish_reason":"length"})"),
            std::string::npos)
      << built;
}

TEST(WholeAnswer, LogprobsAppendAndTheLastUsageCounts) {
  WholeAnswer whole;
  ASSERT_TRUE(whole.add(
      R"({"choices":[{"index":0,"delta":{"content":"a"},"logprobs":{"content":[{"token":"a","logprob":-1}],"refusal":null}}],"usage":{"completion_tokens":1}})"));
  ASSERT_TRUE(whole.add(
      R"({"choices":[{"index":0,"delta":{"content":"b"},"logprobs":{"content":[{"token":"b","logprob":-2}]},"finish_reason":"stop"}],"usage":{"completion_tokens":2}})"));
  const std::string built = whole.build();
  EXPECT_NE(built.find(R"("logprobs":{"content":[{"token":"a","logprob":-1},{"token":"b","logprob":-2}],"refusal":null})"),
            std::string::npos)
      << built;
  EXPECT_NE(built.find(R"("usage":{"completion_tokens":2})"), std::string::npos) << built;
}

TEST(WholeAnswer, AMalformedChunkOrAChoiceNotAskedForFailsTheStream) {
  for (const char* bad : {"[1]", "not json", ""}) {
    WholeAnswer whole;
    EXPECT_EQ(whole.add(bad).kind(), ErrorKind::kUpstreamFailed) << bad;
  }
  WholeAnswer whole(2);
  EXPECT_FALSE(whole.add(R"({"choices":[{"index":"0","delta":{}}]})"));
  EXPECT_FALSE(whole.add(R"({"choices":[{"index":2,"delta":{}}]})"));  // n is 2: 0 and 1
  EXPECT_FALSE(whole.add(R"({"choices":[{"index":-1,"delta":{}}]})"));
  EXPECT_TRUE(whole.add(R"({"choices":[{"index":1,"delta":{}}]})"));
  EXPECT_TRUE(whole.add(R"({"error":null,"choices":[]})"));
}

// Some servers repeat a tool's name in every delta: it is not doubled. Pieces of a name
// still join.
TEST(WholeAnswer, ANameGivenAgainWholeIsNotDoubled) {
  WholeAnswer whole;
  for (const char* chunk : {
           R"({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"name":"lookup","arguments":"{"}}]}}]})",
           R"({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"name":"lookup","arguments":"}"}}]}}]})",
           R"({"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"name":"get_","arguments":""}}]}}]})",
           R"({"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"name":"time"}}]}}]})"}) {
    ASSERT_TRUE(whole.add(chunk)) << chunk;
  }
  const std::string built = whole.build();
  EXPECT_NE(built.find(R"({"function":{"name":"lookup","arguments":"{}"}})"), std::string::npos)
      << built;
  EXPECT_NE(built.find(R"({"function":{"name":"get_time","arguments":""}})"), std::string::npos)
      << built;
}

}  // namespace
}  // namespace tp::api
