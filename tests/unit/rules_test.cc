#include "router/rules.h"

#include <gtest/gtest.h>

namespace tp::router {
namespace {

TEST(Rules, GlobMatchesStarsAndQuestionMarks) {
  EXPECT_TRUE(glob_match("gpt-4*", "gpt-4o-mini"));
  EXPECT_TRUE(glob_match("gpt-4*", "gpt-4"));
  EXPECT_FALSE(glob_match("gpt-4*", "gpt-3.5"));
  EXPECT_TRUE(glob_match("*", ""));
  EXPECT_TRUE(glob_match("*mini", "gpt-4o-mini"));
  EXPECT_TRUE(glob_match("g?t-*-m*i", "gpt-4o-mini"));
  EXPECT_FALSE(glob_match("g?t", "gt"));
  EXPECT_TRUE(glob_match("a*b*c", "aXbYbZc"));
  EXPECT_FALSE(glob_match("a*b*c", "aXbYbZ"));
  EXPECT_TRUE(glob_match("exact", "exact"));
  EXPECT_FALSE(glob_match("exact", "exactly"));
  // A `*` in the pattern is a wildcard even where the text has a `*` too.
  EXPECT_TRUE(glob_match("a*", "a*b"));
  EXPECT_TRUE(glob_match("*b", "**b"));
  // `?` is one character, whatever its UTF-8 length.
  EXPECT_TRUE(glob_match("mod?le", "mod\xc3\xa8le"));
  EXPECT_TRUE(glob_match("*?", "\xe2\x82\xac"));
  EXPECT_FALSE(glob_match("??", "\xe2\x82\xac"));
  EXPECT_TRUE(glob_match("a*\xc3\xa8", "ab\xc3\xa8"));
  // Many stars against a long text that never matches stay fast (no exponential backtracking).
  EXPECT_FALSE(glob_match("*a*a*a*a*a*a*a*a*b", std::string(10'000, 'a')));
}

TEST(Rules, FirstMatchingRuleWinsAndEveryConditionMustHold) {
  std::vector<Rule> rules(3);
  rules[0].name = "batch-on-gpt";
  rules[0].model = "gpt-*";
  rules[0].key_tag = "batch";
  rules[1].name = "acct-7-confidential";
  rules[1].account = 7;
  rules[1].privacy_tier = catalog::PrivacyTier::kConfidential;
  rules[2].name = "any";
  const std::vector<std::string> batch = {"ci", "batch"};
  const std::vector<std::string> none;
  auto first = [&](std::string_view model, std::int64_t account, std::span<const std::string> tags,
                   catalog::PrivacyTier tier) {
    return first_match(rules, {model, account, tags, tier})->name;
  };
  EXPECT_EQ(first("gpt-4o", 1, batch, catalog::PrivacyTier::kCommunity), "batch-on-gpt");
  EXPECT_EQ(first("gpt-4o", 1, none, catalog::PrivacyTier::kCommunity), "any");
  EXPECT_EQ(first("claude", 1, batch, catalog::PrivacyTier::kCommunity), "any");
  EXPECT_EQ(first("claude", 7, none, catalog::PrivacyTier::kConfidential), "acct-7-confidential");
  EXPECT_EQ(first("claude", 7, none, catalog::PrivacyTier::kCloud), "any");
  rules.pop_back();
  EXPECT_EQ(first_match(rules, {"claude", 1, none, catalog::PrivacyTier::kCloud}), nullptr);
}

TEST(Rules, PinExcludeAndFallbackOrder) {
  Rule r;
  EXPECT_TRUE(admits(r, 3));
  r.exclude = {1};
  EXPECT_FALSE(admits(r, 1));
  EXPECT_TRUE(admits(r, 2));
  r.pin = {2, 4};
  EXPECT_TRUE(admits(r, 2));
  EXPECT_FALSE(admits(r, 3));
  r.fallback_order = {4, 2};
  // Candidates 0..4 (best first) of providers 9, 2, 7, 4, 2: the listed ones first, in the
  // list's order; the unlisted after them, in their own order.
  const std::vector<std::size_t> provider = {9, 2, 7, 4, 2};
  std::vector<std::size_t> order = {0, 1, 2, 3, 4};
  order_by_fallback(r, order, [&](std::size_t i) { return provider[i]; });
  EXPECT_EQ(order, (std::vector<std::size_t>{3, 1, 4, 0, 2}));
}

}  // namespace
}  // namespace tp::router
