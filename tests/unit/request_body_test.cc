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

TEST(RequestBody, RejectsMalformedAndWrongTypes) {
  for (const char* bad : {"", "{", "[]", "\"s\"", R"({"model":1})", R"({"stream":"yes"})",
                          R"({"max_tokens":-1})", R"({"max_tokens":0})",
                          R"({"max_completion_tokens":0})", R"({"max_tokens":1.5})", R"({"privacy_tier":""})",
                          "{\"model\":\"\xff\"}"}) {
    EXPECT_FALSE(parse_request_body(bad)) << bad;
  }
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

TEST(RequestBody, EmptyObject) {
  auto b = parse_request_body("{}");
  ASSERT_TRUE(b);
  EXPECT_FALSE(b->has_model);
  EXPECT_EQ(rewrite_request_body(*b, "m"), "{}");
}

}  // namespace
}  // namespace tp::api
