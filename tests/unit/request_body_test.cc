#include "api/request_body.h"

#include <gtest/gtest.h>

namespace tp::api {
namespace {

TEST(RequestBody, ReadsModelStreamAndOptions) {
  auto b = parse_request_body(
      R"({"model":"m\u0031","stream":true,"max_tokens":64,"privacy_tier":"confidential","x":{"y":[1,"}"]}})");
  ASSERT_TRUE(b) << b.status().message();
  EXPECT_EQ(b->model, "m1");
  EXPECT_TRUE(b->stream);
  EXPECT_EQ(b->max_tokens, 64);
  EXPECT_EQ(b->privacy_tier, "confidential");
  const auto members = top_level_members(b->text);
  ASSERT_EQ(members.size(), 5u);
  EXPECT_EQ(members[4].key, "x");
  EXPECT_EQ(members[4].value, R"({"y":[1,"}"]})");
}

// Numbers past 64 bits or a double's range are valid JSON (a tool's schema may hold one):
// the request is read, and forwarded as sent.
TEST(RequestBody, NumbersPast64BitsAreValidJson) {
  const std::string text =
      R"({"model":"m","max_tokens":5,"messages":[],"tools":[{"type":"function","function":)"
      R"({"name":"f","parameters":{"maximum":18446744073709551616}}}],"x_num":-1E+400})";
  const auto body = parse_request_body(text);
  ASSERT_TRUE(body) << body.status().message();
  EXPECT_EQ(body->model, "m");
  EXPECT_EQ(body->max_tokens, 5);
}

TEST(RequestBody, RejectsMalformedAndWrongTypes) {
  for (const char* bad : {"", "{", "[]", "\"s\"", R"({"model":1})", R"({"stream":"yes"})",
                          R"({"max_tokens":-1})", R"({"max_tokens":0})",
                          R"({"max_completion_tokens":0})", R"({"max_tokens":1.5})", R"({"privacy_tier":""})",
                          R"({"messages":"hi"})", R"({"messages":null})", R"({"messages":{}})",
                          "{\"model\":\"\xff\"}"}) {
    EXPECT_FALSE(parse_request_body(bad)) << bad;
  }
  EXPECT_EQ(parse_request_body(R"({"messages":5})").status().message(),
            "'messages' must be an array");
  // Turnpike's options, null, are absent, as every other member read.
  const auto nulls = parse_request_body(R"({"privacy_tier":null,"start_within":null})");
  ASSERT_TRUE(nulls) << nulls.status().message();
  EXPECT_TRUE(nulls->privacy_tier.empty());
  EXPECT_TRUE(nulls->start_within.empty());
}

TEST(RequestBody, RewriteReplacesModelAndDropsOptionsKeepingTheRest) {
  const std::string text =
      R"( { "start_within" : "auto", "model":"a", "messages":[{"content":"q\"uote"}] , "n":null, "privacy_tier":"cloud" } )";
  auto b = parse_request_body(text);
  ASSERT_TRUE(b);
  EXPECT_EQ(rewrite_request_body(*b, "up\"stream"),
            R"({"model":"up\"stream","messages":[{"content":"q\"uote"}],"n":null})");
  EXPECT_EQ(rewrite_request_body(*b, "u", /*ask_for_usage=*/true),
            R"({"model":"u","messages":[{"content":"q\"uote"}],"n":null,"stream_options":{"include_usage":true}})");
}

TEST(RequestBody, AskingForUsageKeepsTheClientsOtherStreamOptions) {
  auto b = parse_request_body(
      R"({"model":"m","stream_options":{ "include_obfuscation" : false, "include_usage":false}})");
  ASSERT_TRUE(b);
  EXPECT_FALSE(b->include_usage);
  EXPECT_EQ(rewrite_request_body(*b, "m", true),
            R"({"model":"m","stream_options":{"include_obfuscation":false,"include_usage":true}})");
  auto asked = parse_request_body(R"({"stream_options":{"include_usage":true}})");
  ASSERT_TRUE(asked);
  EXPECT_TRUE(asked->include_usage);
  auto null_options = parse_request_body(R"({"stream_options":null})");
  ASSERT_TRUE(null_options);
  EXPECT_EQ(rewrite_request_body(*null_options, "m", true),
            R"({"stream_options":{"include_usage":true}})");
  EXPECT_FALSE(parse_request_body(R"({"stream_options":[]})"));
  EXPECT_FALSE(parse_request_body(R"({"stream_options":{"include_usage":1}})"));
}

TEST(RequestBody, FlexReplacesTheClientsServiceTier) {
  auto b = parse_request_body(R"({"service_tier":"auto","model":"m","start_within":"00h-00m-30s"})");
  ASSERT_TRUE(b);
  EXPECT_EQ(rewrite_request_body(*b, "u", false, "flex"), R"({"model":"u","service_tier":"flex"})");
  // A whole answer asked for as a stream: the client's `stream` gives way.
  const auto whole = parse_request_body(R"({"model":"m","stream":false,"n":2})");
  ASSERT_TRUE(whole);
  EXPECT_EQ(rewrite_request_body(*whole, "u", true, "flex", /*as_stream=*/true),
            R"({"model":"u","n":2,"stream_options":{"include_usage":true},)"
            R"("service_tier":"flex","stream":true})");
  // Without a tier to set, the client's is dropped all the same: only Turnpike sets it.
  EXPECT_EQ(b->service_tier, "auto");
  EXPECT_TRUE(b->has_options());
  EXPECT_EQ(rewrite_request_body(*b, "u"), R"({"model":"u"})");
  auto priority = parse_request_body(R"({"model":"m","service_tier":"priority"})");
  ASSERT_TRUE(priority);
  EXPECT_EQ(priority->service_tier, "priority");  // the gateway refuses it (400)
  auto null_tier = parse_request_body(R"({"model":"m","service_tier":null})");
  ASSERT_TRUE(null_tier);
  EXPECT_FALSE(null_tier->has_options());
  EXPECT_FALSE(parse_request_body(R"({"service_tier":3})"));
  EXPECT_FALSE(parse_request_body(R"({"service_tier":""})"));
}

TEST(RequestBody, TheOutputBoundCoversTheLargerLimitAndEveryChoice) {
  // Upstreams differ in which of the two they honour: the bound is the larger.
  EXPECT_EQ(parse_request_body(R"({"max_tokens":500,"max_completion_tokens":1})")->max_tokens, 500);
  EXPECT_EQ(parse_request_body(R"({"max_completion_tokens":1,"max_tokens":500})")->max_tokens, 500);
  EXPECT_EQ(parse_request_body(R"({"n":3})")->choices, 3);
  EXPECT_EQ(parse_request_body(R"({"n":null})")->choices, 1);
  EXPECT_EQ(parse_request_body("{}")->choices, 1);
  for (const char* bad : {R"({"n":0})", R"({"n":129})", R"({"n":"2"})", R"({"n":1.5})"}) {
    EXPECT_FALSE(parse_request_body(bad)) << bad;
  }
}

// What Turnpike routes and bills on must be what the upstream sees: no second "model",
// no member it reads spelled with escapes (which the rewrite would pass on unseen).
TEST(RequestBody, MembersTurnpikeReadsAreSingleAndPlain) {
  for (const char* bad : {R"({"model":"premium","model":"cheap"})",
                          R"({"mo\u0064el":"premium","model":"cheap"})",
                          R"({"mo\u0064el":"premium"})",
                          R"({"max_tokens":200000,"max_tokens":1})",
                          R"({"servic\u0065_tier":"priority","service_tier":"auto"})",
                          R"({"servic\u0065_tier":"auto"})",
                          R"({"stream_options":{"include_usage":true,"include_usage":false}})",
                          R"({"stream_options":{"include_usage":true,"include_\u0075sage":false}})",
                          R"({"stream_options":{"include_\u0075sage":true}})"}) {
    const auto r = parse_request_body(bad);
    EXPECT_FALSE(r) << bad;
  }
  // Escapes elsewhere, and repeated members Turnpike does not read, are the client's own.
  EXPECT_TRUE(parse_request_body(R"({"model":"m","messages":[{"content":"a\nb"}],"x\u0079":1})"));
  EXPECT_TRUE(parse_request_body(R"({"model":"m","user":"a","user":"b"})"));
  EXPECT_TRUE(parse_request_body(R"({"stream_options":{"include_usage":true,"x\u0079":1}})"));
}

// speed and inference_geo change a provider's price: read, and forwarded as given. Their
// standard values, and null, ask for nothing.
TEST(RequestBody, ReadsThePriceChangingOptions) {
  auto b = parse_request_body(R"({"model":"m","speed":"fast","inference_geo":"us"})");
  ASSERT_TRUE(b) << b.status().message();
  EXPECT_EQ(b->speed, "fast");
  EXPECT_EQ(b->inference_geo, "us");
  EXPECT_FALSE(b->has_options());  // not Turnpike's own: the upstream sees them
  EXPECT_EQ(rewrite_request_body(*b, "u"), R"({"model":"u","speed":"fast","inference_geo":"us"})");
  for (const char* standard : {R"({"speed":"standard","inference_geo":"global"})",
                               R"({"speed":null,"inference_geo":null})", "{}"}) {
    auto s = parse_request_body(standard);
    ASSERT_TRUE(s) << standard;
    EXPECT_EQ(s->speed, "") << standard;
    EXPECT_EQ(s->inference_geo, "") << standard;
  }
  // Each standard value belongs to its own option only.
  auto crossed = parse_request_body(R"({"speed":"global","inference_geo":"standard"})");
  ASSERT_TRUE(crossed);
  EXPECT_EQ(crossed->speed, "global");
  EXPECT_EQ(crossed->inference_geo, "standard");
  for (const char* bad : {R"({"speed":""})", R"({"speed":1})", R"({"speed":["fast"]})",
                          R"({"inference_geo":""})", R"({"inference_geo":true})"}) {
    EXPECT_FALSE(parse_request_body(bad)) << bad;
  }
}

TEST(RequestBody, AskingForAudioInAnyOfItsForms) {
  for (const char* audio :
       {R"({"modalities":["text","audio"]})", R"({"modalities":["\u0061udio"]})",
        R"({"audio":{"voice":"alloy","format":"wav"}})", R"({"audio":false})",
        R"({"messages":[{"role":"user","content":[{"type":"text","text":"hi"},)"
        R"({"type":"input_audio","input_audio":{"data":"AAAA","format":"wav"}}]}]})",
        // An earlier audio answer is billed as audio input.
        R"({"messages":[{"role":"assistant","audio":{"id":"audio_1"}}]})"}) {
    auto b = parse_request_body(audio);
    ASSERT_TRUE(b) << audio;
    EXPECT_TRUE(b->wants_audio) << audio;
  }
  for (const char* text :
       {"{}", R"({"modalities":["text"]})", R"({"modalities":null,"audio":null})",
        R"({"modalities":"audio"})",  // not a list: the upstream judges its shape
        R"({"modalities":[{"type":"audio"}]})",
        R"({"messages":[{"role":"user","content":"what is input_audio?"}]})",
        R"({"messages":[{"role":"user","content":"\"input_audio\""}]})",
        R"({"messages":[{"role":"assistant","audio":null}]})",
        // A tool's parameter may be called input_audio.
        R"({"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object",)"
        R"("properties":{"input_audio":{"type":"string"}}}}}]})"}) {
    auto b = parse_request_body(text);
    ASSERT_TRUE(b) << text;
    EXPECT_FALSE(b->wants_audio) << text;
  }
}

// An input_audio part whose type is spelled with an escape is still an input_audio part to
// the upstream, which parses the JSON: it must not reach a route without audio prices.
TEST(RequestBody, AnEscapedInputAudioPartWantsAudio) {
  auto b = parse_request_body(
      R"({"model":"m","messages":[{"role":"user","content":[)"
      R"({"type":"input\u005faudio","input\u005faudio":{"data":"AAAA","format":"wav"}}]}]})");
  ASSERT_TRUE(b) << b.status().message();
  EXPECT_TRUE(b->wants_audio);
}

// The searches the declared tools may run, for the hold: each web_search tool's max_uses,
// kWebSearchesHeld for one without, nothing for other tools.
TEST(RequestBody, WebSearchToolsBoundTheSearches) {
  auto searches = [](const char* tools) {
    const std::string body = std::string(R"({"model":"m","tools":)").append(tools).append("}");
    auto b = parse_request_body(body);
    if (!b) {
      ADD_FAILURE() << "refused: " << body;
      return std::int64_t{-1};
    }
    EXPECT_TRUE(b->has_tools) << body;
    return b->web_searches_max;
  };
  EXPECT_EQ(searches(R"([{"type":"web_search_20250305","name":"web_search","max_uses":3},)"
                     R"({"type":"web_search_20250305","name":"w2","max_uses":2}])"),
            5);
  EXPECT_EQ(searches(R"([{"type":"web_search_20250305","name":"web_search"}])"), kWebSearchesHeld);
  EXPECT_EQ(searches(R"([{"type":"web_search_20250305","max_uses":3},)"
                     R"({"type":"web_search_20250305"},)"
                     R"({"name":"get_weather","input_schema":{"type":"object"}}])"),
            3 + kWebSearchesHeld);
  EXPECT_EQ(searches(R"([{"type":"web_search_20250305","max_uses":0}])"), 0);
  // A max_uses that is no count holds the default.
  EXPECT_EQ(searches(R"([{"type":"web_search_20250305","max_uses":-1}])"), kWebSearchesHeld);
  EXPECT_EQ(searches(R"([{"type":"web_search_20250305","max_uses":"4"}])"), kWebSearchesHeld);
  // Other tools run no searches, whatever they carry.
  EXPECT_EQ(searches(R"([{"type":"function","function":{"name":"f"}},)"
                     R"({"type":"bash_20250124","name":"bash","max_uses":7},)"
                     R"({"name":"web_search","input_schema":{"type":"object"}}])"),
            0);
  // Escapes inside the tools are unescaped as the upstream reads them.
  EXPECT_EQ(searches(R"([{"type":"web\u005fsearch_20250305","max\u005fuses":4}])"), 4);
  EXPECT_EQ(searches("[]"), 0);
  EXPECT_EQ(searches("{}"), 0);  // a malformed list is the upstream's to refuse
  EXPECT_EQ(searches(R"([{"type":"web_search_20250305","max_uses":1000000000000}])"),
            1'000'000);  // bounded, so that the hold's arithmetic stays small
  auto none = parse_request_body(R"({"model":"m"})");
  ASSERT_TRUE(none);
  EXPECT_EQ(none->web_searches_max, 0);
}

// The new members Turnpike reads are single and plain like the others: a second "speed"
// could be priced as standard while the upstream serves fast.
TEST(RequestBody, PriceChangingMembersAreSingleAndPlain) {
  for (const char* bad :
       {R"({"speed":"standard","speed":"fast"})", R"({"speed":null,"speed":"fast"})",
        R"({"sp\u0065ed":"fast"})", R"({"speed":"standard","sp\u0065ed":"fast"})",
        R"({"inference_geo":"global","inference_geo":"us"})", R"({"inference_ge\u006f":"us"})",
        R"({"modalities":["text"],"modalities":["text","audio"]})",
        R"({"m\u006fdalities":["audio"]})", R"({"audio":null,"audio":{"voice":"alloy"}})",
        R"({"\u0061udio":{"voice":"alloy"}})",
        // Audio in the messages the upstream keeps, text in those Turnpike would read.
        R"({"messages":[{"role":"user","content":[{"type":"input_audio"}]}],"messages":[]})",
        R"({"m\u0065ssages":[]})"}) {
    EXPECT_FALSE(parse_request_body(bad)) << bad;
  }
}

TEST(RequestBody, EmptyObject) {
  auto b = parse_request_body("{}");
  ASSERT_TRUE(b);
  EXPECT_FALSE(b->has_model);
  EXPECT_EQ(rewrite_request_body(*b, "m"), "{}");
}

}  // namespace
}  // namespace tp::api

namespace tp::api {
namespace {

// Base64 payloads of content blocks are no text: an image counts as kImageTokens
// (kImageTokensMax at most), a document typically by its size ÷ kMediaBytesPerToken, at most
// a token a byte, as text.
TEST(RequestBody, Base64PayloadsAreCountedApartFromText) {
  const std::string image(800 * 1024, 'A');
  const std::string pdf(64 * 1000, 'B');
  const std::string body =
      R"({"model":"m","messages":[{"role":"user","content":[)"
      R"({"type":"image","source":{"type":"base64","media_type":"image/jpeg","data":")" + image +
      R"("}},{"type":"image_url","image_url":{"url":"data:image/png;base64,)" + image +
      R"("}},{"type":"document","source":{"type":"base64","media_type":"application/pdf",)"
      R"("data":")" + pdf + R"("}},{"type":"text","text":"what are these?"}]}]})";
  auto b = parse_request_body(body);
  ASSERT_TRUE(b) << b.status().message();
  EXPECT_EQ(b->media_bytes, 2 * image.size() + std::string_view("data:image/png;base64,").size() +
                                pdf.size());
  EXPECT_EQ(b->media_tokens, 2 * kImageTokens + 1000);
  EXPECT_EQ(b->media_tokens_max, 2 * kImageTokensMax + static_cast<std::int64_t>(pdf.size()));
}

TEST(RequestBody, TextIsNeverTakenForAPayload) {
  // Base64 outside a media block (a tool's input) is text to the model, and counted so.
  std::string tool_input = R"({"model":"m","messages":[{"role":"assistant","content":[)"
                           R"({"type":"tool_use","id":"t","name":"f","input":{"data":")";
  tool_input.append(480 * 1024, 'A').append(R"("}}]}]})");
  auto in_tool = parse_request_body(tool_input);
  ASSERT_TRUE(in_tool) << in_tool.status().message();
  EXPECT_EQ(in_tool->media_bytes, 0u);
  // Long, but not base64 (spaces), where a payload could be; and a plain URL.
  std::string body =
      R"({"model":"m","messages":[{"role":"user","content":[{"type":"tool_result","content":)"
      R"([{"type":"text","text":"x"}]},{"type":"image","source":{"type":"base64","data":"a)";
  body.append(5000, ' ').append(R"("}},{"type":"image_url","image_url":)")
      .append(R"({"url":"https://example.com/)")
      .append(2000, 'a')
      .append(R"("}}]}]})");
  auto b = parse_request_body(body);
  ASSERT_TRUE(b) << b.status().message();
  EXPECT_EQ(b->media_bytes, 0u);
  // A small body is not looked through at all.
  // (Appended: GCC 12 warns falsely on a literal + std::string(n, c).)
  std::string small_body =
      R"({"model":"m","messages":[{"role":"user","content":[{"type":"image","source":)"
      R"({"type":"base64","media_type":"image/png","data":")";
  small_body.append(2000, 'A').append(R"("}}]}]})");
  auto small = parse_request_body(small_body);
  ASSERT_TRUE(small);
  EXPECT_EQ(small->media_bytes, 0u);
}

}  // namespace
}  // namespace tp::api
