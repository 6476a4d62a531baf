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
                          R"({"max_tokens":-1})", R"({"max_tokens":1.5})", R"({"privacy_tier":""})",
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
  EXPECT_EQ(rewrite_request_body(*b, "u", R"("stream_options":{"include_usage":true})"),
            R"({"model":"u","messages":[{"content":"q\"uote"}],"n":null,"stream_options":{"include_usage":true}})");
}

TEST(RequestBody, EmptyObject) {
  auto b = parse_request_body("{}");
  ASSERT_TRUE(b);
  EXPECT_FALSE(b->has_model);
  EXPECT_EQ(rewrite_request_body(*b, "m"), "{}");
}

}  // namespace
}  // namespace tp::api
