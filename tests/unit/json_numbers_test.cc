#include "core/json_numbers.h"

#include <gtest/gtest.h>

#include "core/json_dom.h"

namespace tp::json {
namespace {

TEST(JsonNumbers, OutOfRangeIsPast64BitsOrADouble) {
  for (const char* in :
       {"0", "-0", "1.5", "18446744073709551615", "-9223372036854775808", "1e308",
        "-1.7976931348623157e308", "1e-400", "0.000001", "123456789012345678901234567890.5"}) {
    EXPECT_FALSE(number_out_of_range(in)) << in;
  }
  for (const char* out : {"18446744073709551616", "-9223372036854775809",
                          "123456789012345678901234567890", "1e400", "-1E+400", "2e308"}) {
    EXPECT_TRUE(number_out_of_range(out)) << out;
  }
  // Not JSON numbers: left for the parser to refuse.
  for (const char* bad : {"01", "1.", ".5", "1e", "--1", "1e+", "+1", "1-2", "-"}) {
    EXPECT_FALSE(number_out_of_range(bad)) << bad;
  }
}

TEST(JsonNumbers, TamingKeepsEveryOtherByteInPlace) {
  EXPECT_FALSE(tame_large_numbers(R"({"a":[1,2.5,-3e10],"b":"123456789012345678901234567890"})"));
  const std::string big = R"({"card":123456789012345678901234567890,"x":-1e400,"s":"1e400"})";
  const auto tamed = tame_large_numbers(big);
  ASSERT_TRUE(tamed);
  EXPECT_EQ(*tamed, R"({"card":1e300                         ,"x":-1e300,"s":"1e400"})");
  EXPECT_EQ(tamed->size(), big.size());
}

// simdjson's DOM refuses a whole document for one such number; parse_dom reads the rest.
TEST(JsonNumbers, ADocumentWithOneIsStillRead) {
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  const std::string text =
      R"({"usage":{"output_tokens":5000},"x_future":123456789012345678901234567890})";
  ASSERT_TRUE(parser.parse(text).error());  // what simdjson alone does
  ASSERT_FALSE(parse_dom(parser, text, doc));
  EXPECT_EQ(doc["usage"]["output_tokens"].get_int64().value(), 5000);
  EXPECT_EQ(doc["x_future"].get_double().value(), 1e300);
  // A number that is no JSON is still an error.
  EXPECT_TRUE(parse_dom(parser, R"({"a":01})", doc));
}

}  // namespace
}  // namespace tp::json
