#include "http/url.h"

#include <gtest/gtest.h>

namespace tp::http {
namespace {

TEST(Url, ParsesSchemesPortsAndPaths) {
  auto u = parse_base_url("http://127.0.0.1:9000/v1");
  ASSERT_TRUE(u);
  EXPECT_FALSE(u->tls);
  EXPECT_EQ(u->host, "127.0.0.1");
  EXPECT_EQ(u->port, "9000");
  EXPECT_EQ(u->path, "/v1");
  EXPECT_EQ(u->host_header, "127.0.0.1:9000");

  u = parse_base_url("https://api.openai.com/v1/");
  ASSERT_TRUE(u);
  EXPECT_TRUE(u->tls);
  EXPECT_EQ(u->port, "443");
  EXPECT_EQ(u->path, "/v1");
  EXPECT_EQ(u->host_header, "api.openai.com");

  u = parse_base_url("http://[::1]:8000");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->host, "::1");
  EXPECT_EQ(u->path, "");
}

TEST(Url, RejectsBadInput) {
  for (const char* bad : {"ftp://x", "127.0.0.1:9000", "http://", "http://:80/v1",
                          "http://h:0", "http://h:70000", "http://h:12a", "http://u:p@h/v1",
                          "http://h/v1?x=1", "https://hooks.example.com?token=abc",
                          "http://h#frag", "http://h:80?x", "http://h x/v1"}) {
    EXPECT_FALSE(parse_base_url(bad)) << bad;
  }
}

}  // namespace
}  // namespace tp::http
