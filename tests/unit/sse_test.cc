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
  // A CR ends its line at once, at the very end too (the event is not held back until the
  // next byte shows whether an LF follows).
  EXPECT_EQ(sse_complete_prefix("data: a\r\r"), 9u);
  EXPECT_EQ(sse_complete_prefix("data: a\r\n\r"), 10u);
  EXPECT_EQ(sse_complete_prefix("data: a\n\r\n"), 10u);
}

// An event that ends in a CR is complete with it; an LF that follows in the next bytes
// completes that CRLF, and starts no blank line (no event) of its own.
TEST(Sse, ACrAtTheEndEndsItsEventAndItsLfComesAfter) {
  SseFramer framer;
  std::string pending = "data: a\r\r";
  ASSERT_EQ(framer.complete_prefix(pending), 9u);
  pending.erase(0, 9);
  framer.consumed(9);
  pending += "\ndata: b\r";
  EXPECT_EQ(framer.complete_prefix(pending), 0u);
  pending += "\n\r\n";
  ASSERT_EQ(framer.complete_prefix(pending), pending.size());
  SseEvents events(pending);
  std::vector<std::string> data;
  for (SseEvents::Event e; events.next(e);) {
    if (!e.data.empty()) data.emplace_back(e.data);
  }
  EXPECT_EQ(data, std::vector<std::string>{"b"});
}

// A byte order mark at the start of a stream is not part of its first field name.
TEST(Sse, AByteOrderMarkAtTheStartIsDropped) {
  std::string start = "\xEF";
  EXPECT_FALSE(drop_bom(start));
  start += "\xBB";
  EXPECT_FALSE(drop_bom(start));
  start += "\xBF";
  EXPECT_TRUE(drop_bom(start));
  EXPECT_EQ(start, "");
  start =
      "\xEF\xBB\xBF\xEF\xBB\xBF"
      "event: a\n\n";
  EXPECT_TRUE(drop_bom(start));
  EXPECT_EQ(start,
            "\xEF\xBB\xBF"
            "event: a\n\n");  // one only
  start = "ev";
  EXPECT_TRUE(drop_bom(start));
  EXPECT_EQ(start, "ev");
  start = "\xEF\xBBx";
  EXPECT_TRUE(drop_bom(start));
  EXPECT_EQ(start, "\xEF\xBBx");
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

// The framer, fed a byte at a time or in pieces of every size, relays every byte and finds
// the events a scan of the whole stream finds, line endings of every kind included.
TEST(Sse, FramerFindsWhatAWholeScanFinds) {
  const std::string stream =
      "event: message_start\ndata: {\"a\":1}\n\n: comment\n\nevent: x\r\ndata: y\r\n\r\n"
      "data: a\r\rdata: b\r\r\n\r\ndata: [DONE]\n\n\n";
  using Seen = std::vector<std::pair<std::string, std::string>>;  // name and data, if any
  auto events_of = [](std::string_view complete, Seen& seen) {
    SseEvents events(complete);
    for (SseEvents::Event e; events.next(e);) {
      if (!e.name.empty() || !e.data.empty()) seen.emplace_back(e.name, e.data);
    }
  };
  Seen whole;
  events_of(stream, whole);
  ASSERT_EQ(whole.size(), 5u);
  for (std::size_t step = 1; step <= 7; ++step) {
    SseFramer framer;
    std::string pending;
    std::string relayed;
    Seen seen;
    for (std::size_t at = 0; at < stream.size(); at += step) {
      pending += stream.substr(at, step);
      const std::size_t n = framer.complete_prefix(pending);
      relayed += pending.substr(0, n);
      events_of(std::string_view(pending).substr(0, n), seen);
      pending.erase(0, n);
      framer.consumed(n);
    }
    EXPECT_EQ(relayed, stream) << "step " << step;
    EXPECT_EQ(seen, whole) << "step " << step;
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
