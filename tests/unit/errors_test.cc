#include "api/errors.h"

#include <gtest/gtest.h>

namespace tp::api {
namespace {

TEST(Errors, OpenAIShape) {
  EXPECT_EQ(error_body(Surface::kOpenAI, 404, "model 'x' does not exist", "model_not_found"),
            R"({"error":{"message":"model 'x' does not exist","type":"not_found_error","param":null,"code":"model_not_found"}})");
  EXPECT_EQ(error_body(Surface::kOpenAI, 413, "too big"),
            R"({"error":{"message":"too big","type":"invalid_request_error","param":null,"code":"request_too_large"}})");
}

TEST(Errors, AnthropicShape) {
  EXPECT_EQ(error_body(Surface::kAnthropic, 429, "slow down"),
            R"({"type":"error","error":{"type":"rate_limit_error","message":"slow down"}})");
  EXPECT_EQ(error_body(Surface::kAnthropic, 503, "busy"),
            R"({"type":"error","error":{"type":"overloaded_error","message":"busy"}})");
}

TEST(Errors, StatusForEveryKind) {
  EXPECT_EQ(http_status(ErrorKind::kInvalidRequest), 400u);
  EXPECT_EQ(http_status(ErrorKind::kUnauthenticated), 401u);
  EXPECT_EQ(http_status(ErrorKind::kPaymentRequired), 402u);
  EXPECT_EQ(http_status(ErrorKind::kForbidden), 403u);
  EXPECT_EQ(http_status(ErrorKind::kNotFound), 404u);
  EXPECT_EQ(http_status(ErrorKind::kPayloadTooLarge), 413u);
  EXPECT_EQ(http_status(ErrorKind::kRateLimited), 429u);
  EXPECT_EQ(http_status(ErrorKind::kUpstreamFailed), 502u);
  EXPECT_EQ(http_status(ErrorKind::kUnavailable), 503u);
  EXPECT_EQ(http_status(ErrorKind::kUpstreamTimeout), 504u);
}

}  // namespace
}  // namespace tp::api
