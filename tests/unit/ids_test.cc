#include "core/ids.h"

#include <gtest/gtest.h>

namespace tp {
namespace {

TEST(NumberedId, TakesThePrefixedOrBareNumber) {
  EXPECT_EQ(parse_numbered_id("acct_12", "acct_"), 12);
  EXPECT_EQ(parse_numbered_id("12", "acct_"), 12);
  EXPECT_EQ(parse_numbered_id("key_9", "key_"), 9);
}

TEST(NumberedId, RefusesAnythingElse) {
  for (const char* bad : {"", "acct_", "acct_0", "acct_-3", "acct_12x", "acct_ 12", "key_12",
                          "acct_99999999999999999999", "+12", "acct_012", "012", "acct_00"}) {
    EXPECT_FALSE(parse_numbered_id(bad, "acct_")) << bad;
  }
}

TEST(RandomId, HasThePrefixAndLength) {
  const std::string id = random_id("req_", 24);
  EXPECT_EQ(id.size(), 28u);
  EXPECT_TRUE(id.starts_with("req_"));
  EXPECT_NE(id, random_id("req_", 24));
}

}  // namespace
}  // namespace tp
