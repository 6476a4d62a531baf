#include "core/money.h"

#include <gtest/gtest.h>

#include <limits>
#include <random>

namespace tp {
namespace {

std::int64_t nanos(std::string_view text) {
  auto m = Money::parse(text);
  EXPECT_TRUE(m) << text;
  return m ? m->nanos() : 0;
}

TEST(Money, ParsesExactly) {
  EXPECT_EQ(nanos("0"), 0);
  EXPECT_EQ(nanos("-0"), 0);
  EXPECT_EQ(nanos("12"), 12'000'000'000);
  EXPECT_EQ(nanos("0.15"), 150'000'000);
  EXPECT_EQ(nanos("0.000000001"), 1);
  EXPECT_EQ(nanos("-0.000000001"), -1);
  EXPECT_EQ(nanos("20.000000000"), 20'000'000'000);
  EXPECT_EQ(nanos("007.5"), 7'500'000'000);
  EXPECT_EQ(nanos("9223372036.854775807"), std::numeric_limits<std::int64_t>::max());
  EXPECT_EQ(nanos("-9223372036.854775808"), std::numeric_limits<std::int64_t>::min());
}

TEST(Money, RejectsEverythingElse) {
  for (const char* bad : {"", "-", ".5", "5.", "+5", " 5", "5 ", "1e3", "1.0000000001", "0x10",
                          "--1", "1.2.3", "1,5", "9223372036.854775808",
                          "-9223372036.854775809", "99999999999999999999", "NaN", "inf"}) {
    EXPECT_FALSE(Money::parse(bad)) << bad;
  }
}

// A JSON number in exponent form is the same exact amount; a decimal string is not one.
TEST(Money, ParsesJsonNumbersInExponentFormExactly) {
  const std::vector<std::pair<const char*, std::int64_t>> cases = {{"1e-9", 1},
                                                                   {"1E-9", 1},
                                                                   {"1.5e2", 150'000'000'000},
                                                                   {"1.0e2", 100'000'000'000},
                                                                   {"5E-1", 500'000'000},
                                                                   {"12.5e-1", 1'250'000'000},
                                                                   {"1e+0", 1'000'000'000},
                                                                   {"-2e-9", -2},
                                                                   {"0e99", 0},
                                                                   {"0.000000001", 1},
                                                                   {"100", 100'000'000'000}};
  for (const auto& [text, nanos] : cases) {
    const auto m = Money::parse_json_number(text);
    ASSERT_TRUE(m) << text << ": " << m.status().message();
    EXPECT_EQ(m->nanos(), nanos) << text;
  }
  for (const char* bad :
       {"1e-10", "1.5e-9", "1e10", "1e400", "1e-400", "1e", "e5", "1e5.0", "1.e3", ".1e3"}) {
    const auto m = Money::parse_json_number(bad);
    EXPECT_FALSE(m) << bad;
  }
  EXPECT_NE(Money::parse_json_number("1e-10").status().message().find("'1e-10' has more than 9"),
            std::string::npos)
      << Money::parse_json_number("1e-10").status().message();
}

TEST(Money, PrintsWithTwoToNineDecimals) {
  EXPECT_EQ(Money::from_nanos(0).to_string(), "0.00");
  EXPECT_EQ(Money::usd(5).to_string(), "5.00");
  EXPECT_EQ(Money::from_nanos(150'000'000).to_string(), "0.15");
  EXPECT_EQ(Money::from_nanos(150).to_string(), "0.00000015");
  EXPECT_EQ(Money::from_nanos(-1'500'000'000).to_string(), "-1.50");
  EXPECT_EQ(Money::from_nanos(1).to_string(), "0.000000001");
  EXPECT_EQ(Money::from_nanos(std::numeric_limits<std::int64_t>::min()).to_string(),
            "-9223372036.854775808");
  EXPECT_EQ(Money::from_nanos(std::numeric_limits<std::int64_t>::max()).to_string(),
            "9223372036.854775807");
}

TEST(Money, PrintParseRoundTrip) {
  std::mt19937_64 rng(7);
  for (int i = 0; i < 100000; ++i) {
    const auto n = static_cast<std::int64_t>(rng());
    const Money m = Money::from_nanos(i % 2 ? n : n % 1'000'000'000'000);
    auto back = Money::parse(m.to_string());
    ASSERT_TRUE(back) << m.to_string();
    EXPECT_EQ(back->nanos(), m.nanos());
  }
}

TEST(Money, Arithmetic) {
  EXPECT_EQ((Money::usd(2) + Money::from_nanos(5)).nanos(), 2'000'000'005);
  EXPECT_EQ((Money::usd(2) - Money::usd(3)).to_string(), "-1.00");
  EXPECT_LT(Money::from_nanos(-1), Money());
  EXPECT_EQ(-Money::usd(1), Money::usd(-1));
}

TEST(MoneyDeathTest, OverflowStops) {
  const Money max = Money::from_nanos(std::numeric_limits<std::int64_t>::max());
  EXPECT_DEATH({ Money m = max + Money::from_nanos(1); (void)m; }, "assertion failed");
  EXPECT_DEATH({ Money m = -Money::from_nanos(std::numeric_limits<std::int64_t>::min()); (void)m; },
               "assertion failed");
}

TEST(Price, ParsesAndRejectsNegative) {
  EXPECT_EQ(PricePerMtok::parse("0.15")->nanos(), 150'000'000);
  EXPECT_EQ(PricePerMtok::parse("0.000000001")->nanos(), 1);
  EXPECT_FALSE(PricePerMtok::parse("-1"));
}

TEST(Cost, MatchesTheFormulaAndRoundsUp) {
  const auto p = [](const char* t) { return PricePerMtok::parse(t).value(); };
  // 1000 in at 0.15, 0 cached, 500 out at 0.60: 150000 + 300000 nano / ... exactly:
  // (1000·150'000'000 + 500·600'000'000) / 1e6 = 450'000 nano-USD = $0.00045.
  EXPECT_EQ(cost_of(1000, p("0.15"), 0, p("0.075"), 500, p("0.60")).to_string(), "0.00045");
  // One token at $0.000000001 per Mtok is 1e-6 nano-USD: rounds up to 1.
  EXPECT_EQ(cost_of(1, p("0.000000001"), 0, p("0"), 0, p("0")).nanos(), 1);
  EXPECT_EQ(cost_of(0, p("3"), 0, p("0.3"), 0, p("15")).nanos(), 0);
  // Cached tokens priced separately: 1e6 cached at 0.075 = $0.075.
  EXPECT_EQ(cost_of(0, p("0.15"), 1'000'000, p("0.075"), 0, p("0.6")).to_string(), "0.075");
  // Large but legal: 10M tokens each way at $1000/Mtok = $20000.
  EXPECT_EQ(cost_of(10'000'000, p("1000"), 0, p("0"), 10'000'000, p("1000")).to_string(),
            "20000.00");
}

}  // namespace
}  // namespace tp
