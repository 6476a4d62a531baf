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
