#include "http/http1.h"

#include <gtest/gtest.h>

namespace tp::http {
namespace {

ParseStatus parse(std::string_view text, RequestHead& head, std::size_t& used) {
  return parse_request_head(text, 16 * 1024, head, used);
}

TEST(Http1, FindsLineBreaks) {
  EXPECT_EQ(find_line_break(""), std::string_view::npos);
  EXPECT_EQ(find_line_break("no break here"), std::string_view::npos);
  EXPECT_EQ(find_line_break("a\rb"), 1u);
  EXPECT_EQ(find_line_break("ab\n"), 2u);
  EXPECT_EQ(find_line_break("\r\n", 1), 1u);
  EXPECT_EQ(find_line_break("x\ny\rz", 2), 3u);
  EXPECT_EQ(find_line_break("x\n", 2), std::string_view::npos);
}

TEST(Http1, ParsesRequestHead) {
  const std::string text =
      "POST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n"
      "X-Empty:\r\nAuthorization:  Bearer k \r\n\r\nbody follows";
  RequestHead head;
  std::size_t used = 0;
  ASSERT_EQ(parse(text, head, used), ParseStatus::kComplete) << head.error;
  EXPECT_EQ(used, text.find("body"));
  EXPECT_EQ(head.method, "POST");
  EXPECT_EQ(head.target, "/v1/chat/completions?x=1");
  EXPECT_EQ(head.version, 11u);
  EXPECT_EQ(head.content_length, 12u);
  EXPECT_EQ(head.header("authorization"), "Bearer k");
  EXPECT_EQ(head.header("HOST"), "a");
  EXPECT_EQ(head.header("x-empty"), "");
  EXPECT_EQ(head.header("missing"), "");
  EXPECT_TRUE(head.keep_alive());
}

TEST(Http1, IncompleteUntilTheEmptyLine) {
  const std::string text = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
  for (std::size_t n = 0; n < text.size(); ++n) {
    RequestHead head;
    std::size_t used = 0;
    EXPECT_EQ(parse(text.substr(0, n), head, used), ParseStatus::kIncomplete) << n;
  }
}

TEST(Http1, KeepAliveRules) {
  RequestHead head;
  std::size_t used = 0;
  ASSERT_EQ(parse("GET / HTTP/1.1\r\nConnection: close\r\n\r\n", head, used), ParseStatus::kComplete);
  EXPECT_FALSE(head.keep_alive());
  ASSERT_EQ(parse("GET / HTTP/1.0\r\n\r\n", head, used), ParseStatus::kComplete);
  EXPECT_FALSE(head.keep_alive());
  ASSERT_EQ(parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", head, used),
            ParseStatus::kComplete);
  EXPECT_TRUE(head.keep_alive());
  ASSERT_EQ(parse("GET / HTTP/1.1\r\nConnection: upgrade, close\r\n\r\n", head, used),
            ParseStatus::kComplete);
  EXPECT_FALSE(head.keep_alive());
}

TEST(Http1, RejectsMalformedAndSmugglingShapes) {
  for (const char* bad : {
           "GET /\r\n\r\n",
           "GET  / HTTP/1.1\r\n\r\n",
           "GET / HTTP/2.0\r\n\r\n",
           "G(T / HTTP/1.1\r\n\r\n",
           "GET /caf\xc3\xa9 HTTP/1.1\r\n\r\n",  // not percent-encoded
           "GET /\x7f HTTP/1.1\r\n\r\n",
           "GET / HTTP/1.1\r\nNo colon\r\n\r\n",
           "GET / HTTP/1.1\r\n: empty name\r\n\r\n",
           "GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
           "GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n",
           "GET / HTTP/1.1\r\nA: b\x01c\r\n\r\n",
           "POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n",
           "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
           "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
           "POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
           "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
           "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
       }) {
    RequestHead head;
    std::size_t used = 0;
    EXPECT_EQ(parse(bad, head, used), ParseStatus::kError) << bad;
    EXPECT_FALSE(head.error.empty());
  }
}

TEST(Http1, HeadLimit) {
  RequestHead head;
  std::size_t used = 0;
  // Built by appending: GCC 12 at -O3 warns falsely about `literal + std::string(n, c)`.
  std::string big = "GET / HTTP/1.1\r\nX: ";
  big.append(200, 'a');
  EXPECT_EQ(parse_request_head(big, 100, head, used), ParseStatus::kError);
  std::string whole = big;
  whole.append("\r\n\r\n");
  EXPECT_EQ(parse_request_head(whole, 100, head, used), ParseStatus::kError);
  EXPECT_EQ(parse_request_head(big, 1000, head, used), ParseStatus::kIncomplete);
  // Empty lines before the request count toward the limit (found by fuzzing): a head that
  // fits alone does not fit after them.
  const std::string exact = "GET / HTTP/1.1\r\nX: a\r\n\r\n";
  ASSERT_EQ(parse_request_head(exact, exact.size(), head, used), ParseStatus::kComplete);
  EXPECT_EQ(used, exact.size());
  EXPECT_EQ(parse_request_head("\r\n" + exact, exact.size(), head, used), ParseStatus::kError);
  ASSERT_EQ(parse_request_head("\r\n" + exact, exact.size() + 2, head, used),
            ParseStatus::kComplete);
  EXPECT_EQ(used, exact.size() + 2);
}

TEST(Http1, ParsesResponseHead) {
  ResponseHead head;
  std::size_t used = 0;
  const std::string text =
      "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
  ASSERT_EQ(parse_response_head(text, 1024, head, used), ParseStatus::kComplete) << head.error;
  EXPECT_EQ(head.status, 429u);
  EXPECT_TRUE(head.chunked);
  EXPECT_EQ(used, text.size());
  ASSERT_EQ(parse_response_head("HTTP/1.1 200\r\n\r\n", 1024, head, used), ParseStatus::kComplete);
  for (const char* bad : {"HTTP/1.1 20 OK\r\n\r\n", "HTTP/1.1 2000 OK\r\n\r\n",
                          "HTTP/1.1 200OK\r\n\r\n", "ICY 200 OK\r\n\r\n"}) {
    EXPECT_EQ(parse_response_head(bad, 1024, head, used), ParseStatus::kError) << bad;
  }
  // The head limit holds whether the head came whole or in pieces.
  std::string long_head = "HTTP/1.1 200 OK\r\nX-Pad: ";
  long_head.append(2000, 'p').append("\r\n\r\n");
  EXPECT_EQ(parse_response_head(long_head, 1024, head, used), ParseStatus::kError);
  EXPECT_EQ(head.error, "response head too large");
  EXPECT_EQ(parse_response_head(long_head.substr(0, 1500), 1024, head, used), ParseStatus::kError);
  EXPECT_EQ(parse_response_head(long_head, 4096, head, used), ParseStatus::kComplete);
}

TEST(Http1, ChunkedDecodesSplitAnywhere) {
  const std::string wire = "5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-T: 1\r\n\r\nNEXT";
  for (std::size_t cut = 0; cut <= wire.size(); ++cut) {
    ChunkedDecoder d;
    std::string out;
    std::size_t used1 = 0, used2 = 0;
    auto s1 = d.decode(std::string_view(wire).substr(0, cut), used1, out, 1000);
    ParseStatus s2 = s1;
    if (s1 != ParseStatus::kComplete) {
      s2 = d.decode(std::string_view(wire).substr(used1), used2, out, 1000);
    }
    ASSERT_EQ(s2, ParseStatus::kComplete) << "cut " << cut;
    EXPECT_EQ(out, "helloabcdefghijklmnopqrstuvwxyz");
    EXPECT_EQ(used1 + used2, wire.size() - 4) << "cut " << cut;
  }
}

// `wire` decoded by a fresh decoder in one piece, with a body limit of 1000 bytes.
ParseStatus decode_once(std::string_view wire, std::string* out = nullptr) {
  ChunkedDecoder d;
  std::string body;
  std::size_t used = 0;
  const ParseStatus status = d.decode(wire, used, body, 1000);
  if (out != nullptr) *out = body;
  return status;
}

TEST(Http1, ChunkedRejectsMalformedAndOversize) {
  for (const char* bad : {"x\r\n", "5\r\nhelloXX", "5\nhello\r\n", "\r\n",
                          "10000000000000000\r\n"}) {
    EXPECT_EQ(decode_once(bad), ParseStatus::kError) << bad;
  }
  EXPECT_EQ(decode_once("3e9\r\n"), ParseStatus::kError);  // 1001 > limit
}

// Chunk sizes may have leading zeros (1*HEXDIG); only the significant digits bound them.
TEST(Http1, ChunkedTakesLeadingZeros) {
  std::string out;
  EXPECT_EQ(decode_once("0000000000000000005\r\nhello\r\n00\r\n\r\n", &out),
            ParseStatus::kComplete);
  EXPECT_EQ(out, "hello");
  std::string long_extension = "5;";
  long_extension.append(5000, 'x');
  long_extension += "\r\nhello\r\n";
  EXPECT_EQ(decode_once(long_extension), ParseStatus::kError);
  ChunkedDecoder endless;
  std::string zeros(65, '0');
  zeros += "5\r\n";
  std::size_t used = 0;
  EXPECT_EQ(endless.decode(zeros, used, out, 1000), ParseStatus::kError);
  EXPECT_FALSE(endless.too_large());
}

// A trailer section is field lines ending in CRLF, then CRLF: anything else is malformed,
// so a next request after a bare-LF end cannot be taken for trailers (request smuggling).
TEST(Http1, ChunkedTrailersAreFieldLinesEndingInCrlf) {
  for (const char* good : {"0\r\n\r\n", "0\r\nX-T: 1\r\n\r\n", "0\r\nA:\r\nB: x\ty\r\n\r\n"}) {
    EXPECT_EQ(decode_once(good), ParseStatus::kComplete) << good;
  }
  for (const char* bad :
       {"0\r\n\nPOST / HTTP/1.1\r\nHost: x\r\n\r\n", "0\r\nnot a header\r\n\r\n",
        "0\r\nX-T: 1\n\r\n", "0\r\n: v\r\n\r\n", "0\r\n folded\r\n\r\n",
        "0\r\nX-T: a\x01b\r\n\r\n", "0\r\nX T: 1\r\n\r\n"}) {
    EXPECT_EQ(decode_once(bad), ParseStatus::kError) << bad;
  }
  std::string long_trailer = "0\r\nX-T: ";
  long_trailer.append(17000, 'a');
  long_trailer += "\r\n\r\n";
  EXPECT_EQ(decode_once(long_trailer), ParseStatus::kError);
}

// Well-formed but not served: another HTTP version, a transfer coding other than chunked.
TEST(Http1, UnsupportedVersionAndTransferCodingAreNamed) {
  RequestHead head;
  std::size_t bytes = 0;
  EXPECT_EQ(parse_request_head("GET / HTTP/2.0\r\nHost: x\r\n\r\n", 8192, head, bytes),
            ParseStatus::kError);
  EXPECT_EQ(head.error, kUnsupportedVersion);
  EXPECT_EQ(parse_request_head("GET / HTTP/1.x\r\nHost: x\r\n\r\n", 8192, head, bytes),
            ParseStatus::kError);
  EXPECT_EQ(head.error, "malformed request line");
  EXPECT_EQ(parse_request_head("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked"
                               "\r\n\r\n",
                               8192, head, bytes),
            ParseStatus::kError);
  EXPECT_EQ(head.error, kUnsupportedTransferCoding);
  EXPECT_EQ(parse_request_head("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                               "Transfer-Encoding: chunked\r\n\r\n",
                               8192, head, bytes),
            ParseStatus::kError);
  EXPECT_EQ(head.error, "more than one Transfer-Encoding");
}

// A head whose lines end in a bare LF is refused at once, not waited on until it times out.
TEST(Http1, ABareLfHeadIsMalformedAtOnce) {
  RequestHead head;
  std::size_t bytes = 0;
  EXPECT_EQ(parse_request_head("GET / HTTP/1.1\nHost: x\n\n", 8192, head, bytes),
            ParseStatus::kError);
  EXPECT_EQ(head.error, "request head lines must end in CRLF");
  EXPECT_EQ(parse_request_head("GET / HTTP/1.1\r\nHost: x\r\n", 8192, head, bytes),
            ParseStatus::kIncomplete);
  // A bare LF followed by a CRLF never makes the CRLF CRLF that ends a head: it waited for
  // the header timeout (408).
  for (const char* head_text : {"GET /healthz HTTP/1.1\nHost: x\n\r\n",
                                "GET /healthz HTTP/1.1\r\nHost: x\n\r\n", "\nGET / HTTP/1.1\r\n"}) {
    head = RequestHead{};
    EXPECT_EQ(parse_request_head(head_text, 8192, head, bytes), ParseStatus::kError) << head_text;
    EXPECT_EQ(head.error, "request head lines must end in CRLF") << head_text;
  }
}

TEST(Http1, AnAbsoluteFormTargetStandsForItsPath) {
  EXPECT_EQ(origin_form("http://h/v1/messages?x=1"), "/v1/messages?x=1");
  EXPECT_EQ(origin_form("HTTPS://h:8/v1/models"), "/v1/models");
  EXPECT_EQ(origin_form("/v1/models"), "/v1/models");
  EXPECT_EQ(origin_form("http://h"), "http://h");    // no path: as it is
  EXPECT_EQ(origin_form("ftp://h/x"), "ftp://h/x");  // not http
  EXPECT_EQ(origin_form("*"), "*");
  EXPECT_EQ(origin_form(""), "");
}

}  // namespace
}  // namespace tp::http

// The auth scheme is case-insensitive (RFC 9110 §11.1): `BEARER KEY` is a key like `Bearer KEY`.
TEST(Http1, BearerTokenTakesTheSchemeInAnyCase) {
  using tp::http::bearer_token;
  EXPECT_EQ(bearer_token("Bearer tp_sk_x"), "tp_sk_x");
  EXPECT_EQ(bearer_token("bearer tp_sk_x"), "tp_sk_x");
  EXPECT_EQ(bearer_token("BEARER tp_sk_x"), "tp_sk_x");
  EXPECT_EQ(bearer_token("Basic dXNlcjpwYXNz"), "");
  EXPECT_EQ(bearer_token("Bearer "), "");
  EXPECT_EQ(bearer_token("Bearertp_sk_x"), "");
  EXPECT_EQ(bearer_token("Bearer   tp_sk_x"), "tp_sk_x");  // 1*SP
  EXPECT_EQ(bearer_token("Bearer  "), "");
  EXPECT_EQ(bearer_token(""), "");
}
