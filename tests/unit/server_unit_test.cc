// The HTTP server's pieces that need no running server: the bytes a streamed response puts
// on the wire (a head held back for the first chunk, a last chunk written with the
// terminator, a held head flushed when the stream is cut), and when the I/O loop polls.

#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/read.hpp>
#include <functional>
#include <memory>
#include <thread>

#include "http/deadline.h"
#include "http/server.h"

namespace tp::http {
namespace {

using tcp = asio::ip::tcp;

// Runs `respond` on the server end of a loopback connection, then returns every byte the
// client end received before the server end closed.
std::string wire(unsigned http_version, std::function<Task<void>(Responder&)> respond) {
  asio::io_context ioc{BOOST_ASIO_CONCURRENCY_HINT_UNSAFE};
  Acceptor acceptor(ioc.get_executor(), tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  Socket client(ioc.get_executor());
  client.connect(acceptor.local_endpoint());
  Socket server = acceptor.accept();
  server.non_blocking(true);
  DeadlineTicker ticker(ioc);  // ticks while a Deadline is registered: only during serve()
  const ServerLimits limits;
  ResponseScratch scratch;
  // A named closure: a coroutine lambda's captures live in the closure object, which must
  // outlive the coroutine.
  auto serve = [&]() -> Task<void> {
    Deadline deadline(ticker, server);
    Responder res(server, deadline, limits, scratch, http_version, /*keep_alive=*/true);
    co_await respond(res);
    server.close();
  };
  asio::co_spawn(ioc.get_executor(), serve(), asio::detached);
  ioc.run();
  std::string got;
  boost::system::error_code ec;
  asio::read(client, asio::dynamic_buffer(got), ec);
  EXPECT_EQ(ec, asio::error::eof);
  return got;
}

// A ticker let go while its due tick waits to run (an old catalog's upstream pool freed
// after a reload, by a handler that ran just before the tick's) is not reached by that tick,
// which completes with no error. Under a memory checker the tick read the freed ticker.
TEST(DeadlineTicker, ATickDueWhenItsTickerGoesLeavesItAlone) {
  asio::io_context ioc{BOOST_ASIO_CONCURRENCY_HINT_UNSAFE};
  Socket socket(ioc.get_executor());
  auto ticker = std::make_unique<DeadlineTicker>(ioc);
  auto deadline = std::make_unique<Deadline>(*ticker, socket);  // arms the ticker
  bool called = false;
  deadline->call_at(Deadline::Clock::now(), [&] { called = true; });
  Timer before(ioc.get_executor());
  before.expires_after(kDeadlineTick / 2);
  before.async_wait([&](const boost::system::error_code&) {
    deadline.reset();
    ticker.reset();
  });
  // Both are due before the loop first looks: the tick's handler is queued behind.
  std::this_thread::sleep_for(kDeadlineTick * 2);
  ioc.run();
  EXPECT_EQ(ticker, nullptr);
  EXPECT_FALSE(called);
}

constexpr std::string_view kHead =
    "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
    "Transfer-Encoding: chunked\r\nCache-Control: no-cache\r\n\r\n";

// kHead, then `rest` (appended: GCC 12 warns falsely on std::string(kHead) + "...").
std::string after_head(std::string_view rest) {
  std::string out(kHead);
  out.append(rest);
  return out;
}

TEST(Responder, AHeldHeadGoesOutWithTheFirstChunkAndTheLastChunkWithTheTerminator) {
  const std::string got = wire(11, [](Responder& res) -> Task<void> {
    EXPECT_TRUE(co_await res.begin_stream(200, "text/event-stream", {}, /*send_head=*/false));
    EXPECT_TRUE(co_await res.write_chunk("data: a\n\n"));
    EXPECT_TRUE(co_await res.end_stream("data: [DONE]\n\n"));
    EXPECT_TRUE(res.finished());
  });
  EXPECT_EQ(got, after_head("9\r\ndata: a\n\n\r\ne\r\ndata: [DONE]\n\n\r\n0\r\n\r\n"));
}

// A status Beast's table lacks gets a plain reason phrase, never "<unknown-status>".
TEST(Responder, EveryStatusLineHasAPlainReason) {
  for (const unsigned status : {529u, 520u, 299u}) {
    const std::string got = wire(11, [status](Responder& res) -> Task<void> {
      co_await res.send(status, "application/json", "{}");
    });
    EXPECT_EQ(got.find('<'), std::string::npos) << got;
    if (status == 529) {
      EXPECT_TRUE(got.starts_with("HTTP/1.1 529 Overloaded\r\n")) << got;
    }
  }
}

// A header whose name or value holds a line break would start a header of its own: it is
// dropped, and the others go out.
TEST(Responder, AHeaderWithALineBreakIsDropped) {
  const std::string got = wire(11, [](Responder& res) -> Task<void> {
    res.add_header("x-kept", "yes");
    res.add_header("x-bad", "a\r\nSet-Cookie: b");
    const Header extra[] = {{"x-also-bad\n", "c"}, {"x-too", "d\re"}, {"x-extra", "ok"}};
    co_await res.send(200, "application/json", "{}", extra);
  });
  EXPECT_NE(got.find("\r\nx-kept: yes\r\n"), std::string::npos) << got;
  EXPECT_NE(got.find("\r\nx-extra: ok\r\n"), std::string::npos) << got;
  EXPECT_EQ(got.find("Set-Cookie"), std::string::npos) << got;
  EXPECT_EQ(got.find("x-bad"), std::string::npos) << got;
  EXPECT_EQ(got.find("x-also-bad"), std::string::npos) << got;
  EXPECT_EQ(got.find("x-too"), std::string::npos) << got;
}

TEST(Responder, AStreamWithNothingButItsEndStillSendsItsHead) {
  const std::string got = wire(11, [](Responder& res) -> Task<void> {
    EXPECT_TRUE(co_await res.begin_stream(200, "text/event-stream", {}, false));
    EXPECT_TRUE(co_await res.end_stream());
  });
  EXPECT_EQ(got, after_head("0\r\n\r\n"));
}

TEST(Responder, AStreamCutShortStillSendsAHeldHead) {
  const std::string got = wire(11, [](Responder& res) -> Task<void> {
    EXPECT_TRUE(co_await res.begin_stream(200, "text/event-stream", {}, false));
    res.close_after();
    EXPECT_FALSE(res.keep_alive());
    co_return;
  });
  // The held head as built before the cut (the closing connection says the rest).
  EXPECT_EQ(got, kHead);
}

TEST(Responder, Http10StreamsAreUnframedAndEndWhenTheConnectionCloses) {
  const std::string got = wire(10, [](Responder& res) -> Task<void> {
    EXPECT_TRUE(co_await res.begin_stream(200, "text/event-stream", {}, false));
    EXPECT_TRUE(co_await res.write_chunk("data: a\n\n"));
    EXPECT_TRUE(co_await res.end_stream("data: [DONE]\n\n"));
  });
  EXPECT_EQ(got,
            "HTTP/1.0 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n"
            "Cache-Control: no-cache\r\n\r\ndata: a\n\ndata: [DONE]\n\n");
}

TEST(IoLoop, PollsOnlyAtLowLoadAndOnlyForAWhile) {
  using std::chrono::microseconds;
  const microseconds spin{50};
  // Just after work, with a request or two in progress (or none): poll.
  EXPECT_TRUE(keep_polling(0, 0, microseconds(10), spin));
  EXPECT_TRUE(keep_polling(kPollActiveMax, 0, microseconds(10), spin));
  // Past the spin, only while an answer (a commit) is due, and not forever.
  EXPECT_FALSE(keep_polling(1, 0, microseconds(60), spin));
  EXPECT_TRUE(keep_polling(1, 1, microseconds(60), spin));
  EXPECT_FALSE(keep_polling(1, 1, kPollAnswerMax, spin));
  // Busier threads never poll, nor does a spin of 0.
  EXPECT_FALSE(keep_polling(kPollActiveMax + 1, 0, microseconds(0), spin));
  EXPECT_FALSE(keep_polling(kPollActiveMax + 1, 5, microseconds(0), spin));
  EXPECT_FALSE(keep_polling(1, 1, microseconds(0), microseconds(0)));
}

}  // namespace
}  // namespace tp::http
