// The upstream connection pool against a real turnpike-sim: connections are reused up to
// the pool's idle limit, and only past it are closed and opened again.

#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>

#include "http/resolve.h"
#include "http/upstream.h"
#include "integration/harness.h"

namespace tp::test {
namespace {

// `n` requests to `endpoint` at once through `pool`, each read to its end; returns how many
// answered 200.
int wave(http::asio::io_context& ioc, http::UpstreamPool& pool,
         const http::UpstreamEndpoint& endpoint, int n) {
  int ok = 0;
  int done = 0;
  const std::string head = "GET " + endpoint.url.path + "/models HTTP/1.1\r\nHost: x\r\n" +
                           "Authorization: Bearer sk-provider-secret\r\n\r\n";
  for (int i = 0; i < n; ++i) {
    http::asio::co_spawn(
        ioc,
        [&]() -> http::Task<void> {
          auto sent = co_await pool.send(endpoint, head, {}, http::UpstreamTimeouts{});
          if (sent && (*sent)->status() == 200) {
            if (auto body = co_await (*sent)->read_all(1 << 20); body) ++ok;
          }
          ++done;
        },
        http::asio::detached);
  }
  // The pool's deadline ticker keeps the loop busy for ever: run until the wave is done.
  ioc.restart();
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (done < n && std::chrono::steady_clock::now() < give_up) {
    ioc.run_for(std::chrono::milliseconds(10));
  }
  return ok;
}

TEST(UpstreamPool, KeepsUpToItsIdleLimitAndReusesThem) {
  Process sim(bin("turnpike-sim"),
              {"--listen", "127.0.0.1:0", "--api-key", "sk-provider-secret"});
  const int port = sim.wait_listening();
  ASSERT_GT(port, 0);
  http::HostResolver resolver;
  auto url = http::parse_base_url("http://127.0.0.1:" + std::to_string(port) + "/v1");
  ASSERT_TRUE(url);
  const http::UpstreamEndpoint endpoint{"sim", *url, 0, nullptr,
                                        resolver.add(url->host, url->port)};
  http::asio::io_context ioc;
  {
    http::UpstreamPool pool(ioc, 1, /*idle_max=*/3);
    ASSERT_EQ(wave(ioc, pool, endpoint, 8), 8);
    EXPECT_EQ(pool.stats().connects, 8u);  // eight at once need eight connections
    EXPECT_EQ(pool.idle_connections(0), 3u);  // five were closed as they ended
    ASSERT_EQ(wave(ioc, pool, endpoint, 8), 8);
    EXPECT_EQ(pool.stats().reuses, 3u);
    EXPECT_EQ(pool.stats().connects, 13u);
  }
  {
    // With room for the whole wave, the second wave opens nothing.
    http::UpstreamPool pool(ioc, 1, /*idle_max=*/16);
    ASSERT_EQ(wave(ioc, pool, endpoint, 8), 8);
    ASSERT_EQ(wave(ioc, pool, endpoint, 8), 8);
    EXPECT_EQ(pool.stats().connects, 8u);
    EXPECT_EQ(pool.stats().reuses, 8u);
  }
}

}  // namespace
}  // namespace tp::test
