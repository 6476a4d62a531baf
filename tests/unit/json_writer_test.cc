#include "core/json_writer.h"

#include <gtest/gtest.h>

namespace tp::json {
namespace {

TEST(JsonWriter, QuotesAndEscapes) {
  EXPECT_EQ(quoted("plain"), R"("plain")");
  EXPECT_EQ(quoted("a\"b\\c"), R"("a\"b\\c")");
  EXPECT_EQ(quoted("line\nbreak\ttab\r"), R"("line\nbreak\ttab\r")");
  EXPECT_EQ(quoted(std::string_view("\x01\x1f", 2)), R"("\u0001\u001f")");
  EXPECT_EQ(quoted("héllo ✓"), "\"héllo ✓\"");  // UTF-8 passes through
  EXPECT_EQ(quoted(""), R"("")");
}

TEST(JsonWriter, BuildsNestedStructuresWithCommas) {
  std::string out;
  Writer w(out);
  w.begin_object().field("a", 1).key("b").begin_array().value("x").value(true).null().end_array();
  w.key("c").begin_object().end_object().field("d", std::int64_t{-5}).end_object();
  EXPECT_EQ(out, R"({"a":1,"b":["x",true,null],"c":{},"d":-5})");
}

}  // namespace
}  // namespace tp::json

// A cut never splits a UTF-8 sequence: a client's model name quoted in an error stays
// valid UTF-8 (an SDK decoding the error would fail on half a character).
TEST(JsonWriter, Utf8PrefixCutsBetweenCharacters) {
  using tp::json::utf8_prefix;
  EXPECT_EQ(utf8_prefix("abc", 5), "abc");
  EXPECT_EQ(utf8_prefix("abc", 2), "ab");
  const std::string e_acute = "a\xc3\xa9";  // a, then é in two bytes
  EXPECT_EQ(utf8_prefix(e_acute, 2), "a");
  EXPECT_EQ(utf8_prefix(e_acute, 3), e_acute);
  const std::string euro = "\xe2\x82\xac\xe2\x82\xac";  // two 3-byte characters
  EXPECT_EQ(utf8_prefix(euro, 5), "\xe2\x82\xac");
  EXPECT_EQ(utf8_prefix(euro, 2), "");
  EXPECT_EQ(utf8_prefix("\xf0\x9f\x98\x80x", 4), "\xf0\x9f\x98\x80");  // an emoji whole
  // Bytes that are not UTF-8 end it: a stray continuation or lead byte, an overlong form, a
  // surrogate, a code point past U+10FFFF.
  EXPECT_EQ(utf8_prefix("ab\xff\xfe" "cd", 100), "ab");
  EXPECT_EQ(utf8_prefix("ab\x80", 100), "ab");
  EXPECT_EQ(utf8_prefix("ab\xc3x", 100), "ab");
  EXPECT_EQ(utf8_prefix("a\xc0\xaf" "b", 100), "a");
  EXPECT_EQ(utf8_prefix("a\xed\xa0\x80" "b", 100), "a");
  EXPECT_EQ(utf8_prefix("a\xf4\x90\x80\x80" "b", 100), "a");
  EXPECT_EQ(utf8_prefix("a\xc3", 100), "a");
}
