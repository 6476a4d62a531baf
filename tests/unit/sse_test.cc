#include "http/sse.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace tp::http {
namespace {

TEST(Sse, CompletePrefixStopsAtLastBlankLine) {
  EXPECT_EQ(sse_complete_prefix(""), 0u);
  EXPECT_EQ(sse_complete_prefix("data: a"), 0u);
  EXPECT_EQ(sse_complete_prefix("data: a\n"), 0u);
  EXPECT_EQ(sse_complete_prefix("data: a\n\n"), 9u);
  EXPECT_EQ(sse_complete_prefix("data: a\n\ndata: b\n"), 9u);
  EXPECT_EQ(sse_complete_prefix("data: a\n\ndata: b\n\n"), 18u);
}

TEST(Sse, AllLineTerminators) {
  EXPECT_EQ(sse_complete_prefix("data: a\r\n\r\n"), 11u);
  EXPECT_EQ(sse_complete_prefix("data: a\r\rdata: b"), 9u);
  EXPECT_EQ(sse_complete_prefix("data: a\r\r\n"), 10u);
  // A CR at the very end may be half of a CRLF: not complete yet.
  EXPECT_EQ(sse_complete_prefix("data: a\r\r"), 0u);
  EXPECT_EQ(sse_complete_prefix("data: a\r\n\r"), 0u);
  EXPECT_EQ(sse_complete_prefix("data: a\n\r\n"), 10u);
}

TEST(Sse, SplitAnywhereGivesSameEvents) {
  const std::string stream =
      "event: message_start\ndata: {\"a\":1}\n\n: comment\n\nevent: x\r\ndata: y\r\n\r\ndata: [DONE]\n\n";
  for (std::size_t cut = 0; cut <= stream.size(); ++cut) {
    std::string pending;
    std::string relayed;
    for (const std::string& piece : {stream.substr(0, cut), stream.substr(cut)}) {
      pending += piece;
      const std::size_t n = sse_complete_prefix(pending);
      relayed += pending.substr(0, n);
      pending.erase(0, n);
    }
    EXPECT_EQ(relayed, stream) << "cut at " << cut;
    EXPECT_TRUE(pending.empty());
  }
}

// The framer, fed a byte at a time or in pieces of every size, finds the same complete
// prefixes as a scan of the whole buffer each time, line endings of every kind included.
TEST(Sse, FramerFindsWhatAWholeScanFinds) {
  const std::string stream =
      "event: message_start\ndata: {\"a\":1}\n\n: comment\n\nevent: x\r\ndata: y\r\n\r\n"
      "data: a\r\rdata: b\r\r\n\r\ndata: [DONE]\n\n\n";
  for (std::size_t step = 1; step <= 7; ++step) {
    SseFramer framer;
    std::string pending;
    std::string relayed;
    for (std::size_t at = 0; at < stream.size(); at += step) {
      pending += stream.substr(at, step);
      const std::size_t n = framer.complete_prefix(pending);
      ASSERT_EQ(n, sse_complete_prefix(pending)) << "step " << step << " at " << at;
      relayed += pending.substr(0, n);
      pending.erase(0, n);
      framer.consumed(n);
    }
    EXPECT_EQ(relayed, stream) << "step " << step;
  }
}

TEST(Sse, EventsExposeNameAndData) {
  SseEvents events("event: message_delta\ndata: {\"x\":1}\n\n: keepalive\n\ndata:[DONE]\r\n\r\n");
  SseEvents::Event e;
  ASSERT_TRUE(events.next(e));
  EXPECT_EQ(e.name, "message_delta");
  EXPECT_EQ(e.data, "{\"x\":1}");
  ASSERT_TRUE(events.next(e));
  EXPECT_EQ(e.name, "");
  EXPECT_EQ(e.data, "");
  ASSERT_TRUE(events.next(e));
  EXPECT_EQ(e.data, "[DONE]");
  EXPECT_FALSE(events.next(e));
}

// The data lines of one event are one value, joined by LF, as the SSE standard reads them.
TEST(Sse, DataOverSeveralLinesIsJoined) {
  SseEvents events("data: {\"a\":\ndata:1,\r\ndata: \"b\":2}\n\ndata: x\n\n");
  SseEvents::Event e;
  ASSERT_TRUE(events.next(e));
  EXPECT_EQ(e.data, "{\"a\":\n1,\n\"b\":2}");
  ASSERT_TRUE(events.next(e));
  EXPECT_EQ(e.data, "x");
}

}  // namespace
}  // namespace tp::http
