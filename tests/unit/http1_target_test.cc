// Request targets in absolute form. (Apart from http1_test.cc: GCC 12 at -O3 warns falsely
// of array bounds in that file's string tests as soon as one more test joins them.)
#include <gtest/gtest.h>

#include <string>
#include <string_view>

#include "http/http1.h"

namespace tp::http {
namespace {

TEST(Http1, AnAbsoluteFormTargetStandsForItsPath) {
  struct Case {
    std::string_view target;
    std::string_view expected;
  };
  for (const Case& c : {Case{"http://gw.example:8080/v1/models?x=1", "/v1/models?x=1"},
                        Case{"HTTPS://gw.example/v1/chat/completions", "/v1/chat/completions"},
                        Case{"http://gw.example", "http://gw.example"},  // no path: left alone
                        Case{"http://gw.example?a=/b", "http://gw.example?a=/b"},  // nor a query
                        Case{"ftp://gw.example/x", "ftp://gw.example/x"},
                        Case{"/v1/models", "/v1/models"}}) {
    std::string data = "GET ";
    data.append(c.target).append(" HTTP/1.1\r\nHost: x\r\n\r\n");
    RequestHead head;
    std::size_t n = 0;
    ASSERT_EQ(parse_request_head(data, 4096, head, n), ParseStatus::kComplete) << c.target;
    EXPECT_EQ(head.target, c.expected);
  }
}

}  // namespace
}  // namespace tp::http
