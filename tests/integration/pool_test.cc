// The upstream client. Against a real turnpike-sim: connections are reused up to the pool's
// idle limit, and only past it are closed and opened again. Against scripted upstreams: a
// long chunked stream, and when a failed request is (not) sent again.

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <functional>
#include <optional>
#include <thread>

#include "http/resolve.h"
#include "http/upstream.h"
#include "integration/harness.h"

namespace tp::test {
namespace {

using namespace std::chrono_literals;

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

// A turnpike-sim and the endpoint that reaches it (`endpoint` empty when it did not start).
struct SimUpstream {
  Process sim{bin("turnpike-sim"), {"--listen", "127.0.0.1:0", "--api-key", "sk-provider-secret"}};
  http::HostResolver resolver;
  std::optional<http::UpstreamEndpoint> endpoint;

  SimUpstream() {
    const int port = sim.wait_listening();
    auto url = http::parse_base_url("http://127.0.0.1:" + std::to_string(port) + "/v1");
    if (port > 0 && url) {
      endpoint.emplace(
          http::UpstreamEndpoint{"sim", *url, 0, nullptr, resolver.add(url->host, url->port)});
    }
  }
};

TEST(UpstreamPool, KeepsUpToItsIdleLimitAndReusesThem) {
  SimUpstream up;
  ASSERT_TRUE(up.endpoint);
  const http::UpstreamEndpoint& endpoint = *up.endpoint;
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

// An idle connection is let go once its idle time is up even when no request comes to the
// pool again: a server that closed it would leave it in CLOSE-WAIT for as long as the
// traffic stayed away (it was looked at only when the pool was next used).
TEST(UpstreamPool, IdleConnectionsGoWhenTheirTimeIsUpWithoutTraffic) {
  SimUpstream up;
  ASSERT_TRUE(up.endpoint);
  const http::UpstreamEndpoint& endpoint = *up.endpoint;
  http::asio::io_context ioc;
  http::UpstreamPool pool(ioc, 1, /*idle_max=*/16, /*pooled_idle=*/300ms);
  ASSERT_EQ(wave(ioc, pool, endpoint, 4), 4);
  EXPECT_EQ(pool.idle_connections(0), 4u);
  ioc.restart();
  for (int i = 0; i < 300 && pool.idle_connections(0) > 0; ++i) ioc.run_for(10ms);
  EXPECT_EQ(pool.idle_connections(0), 0u);
  // The pool still serves, and keeps its new connections as before.
  ASSERT_EQ(wave(ioc, pool, endpoint, 2), 2);
  EXPECT_EQ(pool.idle_connections(0), 2u);
}

// When the host's addresses change (DNS moved the provider), an idle connection to an
// address no longer among them is let go: the next request goes to the new one, however
// busy the pool keeps its old connections.
TEST(UpstreamPool, AnIdleConnectionToAnAddressTheHostNoLongerHasIsLetGo) {
  Process a(bin("turnpike-sim"), {"--listen", "127.0.0.1:0"});
  Process b(bin("turnpike-sim"), {"--listen", "127.0.0.1:0"});
  const int a_port = a.wait_listening();
  const int b_port = b.wait_listening();
  ASSERT_GT(a_port, 0);
  ASSERT_GT(b_port, 0);
  http::HostResolver resolver;
  auto url = http::parse_base_url("http://127.0.0.1:" + std::to_string(a_port) + "/v1");
  ASSERT_TRUE(url);
  const std::shared_ptr<http::ResolvedHost> host = resolver.add(url->host, url->port);
  const http::UpstreamEndpoint endpoint{"sim", *url, 0, nullptr, host};
  http::asio::io_context ioc;
  http::UpstreamPool pool(ioc, 1, /*idle_max=*/4);
  ASSERT_EQ(wave(ioc, pool, endpoint, 1), 1);
  ASSERT_EQ(wave(ioc, pool, endpoint, 1), 1);
  EXPECT_EQ(pool.stats().reuses, 1u);  // the addresses unchanged: kept
  // The same addresses published again change nothing.
  host->publish({http::asio::ip::tcp::endpoint(http::asio::ip::make_address("127.0.0.1"),
                                               static_cast<unsigned short>(a_port))});
  ASSERT_EQ(wave(ioc, pool, endpoint, 1), 1);
  EXPECT_EQ(pool.stats().reuses, 2u);
  host->publish({http::asio::ip::tcp::endpoint(http::asio::ip::make_address("127.0.0.1"),
                                               static_cast<unsigned short>(b_port))});
  ASSERT_EQ(wave(ioc, pool, endpoint, 1), 1);
  EXPECT_EQ(pool.stats().moved, 1u);
  EXPECT_EQ(pool.stats().connects, 2u);  // to b, the only address the host has now
  // The new connection is kept while the addresses stay.
  ASSERT_EQ(wave(ioc, pool, endpoint, 1), 1);
  EXPECT_EQ(pool.stats().reuses, 3u);
}

// A listening socket on a free loopback port, with room for `backlog` unaccepted
// connections: its descriptor, and the port in `port` (0 when it could not listen).
int listen_on_loopback(int& port, int backlog = 16) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), len) == 0 && ::listen(fd, backlog) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  return fd;
}

// A listener whose queue is full and never accepted from: connects to it hear nothing, as
// to an address whose route drops them.
class BlackHole {
 public:
  BlackHole() {
    int port = 0;
    fd_ = listen_on_loopback(port, /*backlog=*/0);
    if (port == 0) return;
    port_ = static_cast<unsigned short>(port);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(port_);
    for (int i = 0; i < 4; ++i) {
      fillers_.push_back(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0));
      (void)::connect(fillers_.back(), reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    }
  }
  ~BlackHole() {
    for (const int fd : fillers_) ::close(fd);
    ::close(fd_);
  }
  unsigned short port() const { return port_; }

 private:
  int fd_ = -1;
  unsigned short port_ = 0;
  std::vector<int> fillers_;
};

// One request through a fresh pool to a host whose addresses are `ports` on loopback, with a
// connect timeout of `connect_ms`; waits at most `wait`. The answer's status (0: failed,
// `error` says why), or nothing when it had not ended by then.
std::optional<int> send_to(const std::vector<unsigned short>& ports, std::uint32_t connect_ms,
                           std::chrono::milliseconds wait, std::string& error, bool tls = false) {
  http::HostResolver resolver;
  auto url = http::parse_base_url(std::string(tls ? "https" : "http") +
                                  "://127.0.0.1:" + std::to_string(ports.back()) + "/v1");
  if (!url) return 0;
  std::shared_ptr<http::asio::ssl::context> context;
  if (tls) {
    auto made = http::make_tls_client_context("");
    if (!made) return 0;
    context = *made;
  }
  const std::shared_ptr<http::ResolvedHost> host = resolver.add(url->host, url->port);
  http::Addresses addresses;
  for (const unsigned short p : ports) {
    addresses.emplace_back(http::asio::ip::make_address("127.0.0.1"), p);
  }
  host->publish(addresses);
  const http::UpstreamEndpoint endpoint{"sim", *url, 0, context, host};
  auto ioc = std::make_shared<http::asio::io_context>();
  auto pool = std::make_shared<http::UpstreamPool>(*ioc, 1, 4);
  http::UpstreamTimeouts timeouts;
  timeouts.connect_timeout_ms = connect_ms;
  auto status = std::make_shared<std::optional<int>>();
  auto message = std::make_shared<std::string>();
  http::asio::co_spawn(
      *ioc,
      [=]() -> http::Task<void> {
        auto sent = co_await pool->send(endpoint, "GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n", {},
                                        timeouts);
        *status = sent ? (*sent)->status() : 0;
        if (!sent) *message = sent.status().message();
      },
      http::asio::detached);
  const auto give_up = std::chrono::steady_clock::now() + wait;
  while (!*status && std::chrono::steady_clock::now() < give_up) {
    ioc->run_for(std::chrono::milliseconds(10));
  }
  error = *message;
  return *status;
}

// Each of a host's addresses gets a share of the connect timeout: one that drops what is
// sent to it leaves time for the next, and a host whose addresses all do fails at the
// timeout. (The one timeout for them all was spent on the first; the next was then tried
// with none, for as long as the system's own connect timeout, minutes.)
TEST(UpstreamPool, EachAddressGetsAShareOfTheConnectTimeout) {
  Process sim(bin("turnpike-sim"), {"--listen", "127.0.0.1:0"});
  const int port = sim.wait_listening();
  ASSERT_GT(port, 0);
  BlackHole hole, other_hole;
  ASSERT_GT(hole.port(), 0);
  ASSERT_GT(other_hole.port(), 0);
  std::string error;
  // Half of 4 s on the hole, then the sim answers: well before the 4 s are up.
  const auto reached = send_to({hole.port(), static_cast<unsigned short>(port)}, 4000, 3s, error);
  ASSERT_TRUE(reached.has_value()) << "no answer after 3 s";
  EXPECT_EQ(*reached, 200) << error;
  const auto lost = send_to({hole.port(), other_hole.port()}, 1000, 5s, error);
  ASSERT_TRUE(lost.has_value()) << "still connecting after 5 s";
  EXPECT_EQ(*lost, 0);
  EXPECT_NE(error.find("timed out"), std::string::npos) << error;
  // A TLS handshake after the connect has what is left of the whole timeout, not of the
  // first address's share: a server that takes the connection and never answers the
  // handshake fails it at 2 s, not at 1.
  int silent_port = 0;
  const int silent = listen_on_loopback(silent_port);
  ASSERT_GT(silent_port, 0);
  const auto started = std::chrono::steady_clock::now();
  const auto silence = send_to({static_cast<unsigned short>(silent_port), hole.port()}, 2000, 5s,
                               error, /*tls=*/true);
  const auto took = std::chrono::steady_clock::now() - started;
  ::close(silent);
  ASSERT_TRUE(silence.has_value()) << "still waiting after 5 s";
  EXPECT_EQ(*silence, 0);
  EXPECT_NE(error.find("TLS handshake"), std::string::npos) << error;
  EXPECT_GE(took, 1800ms);
}

// A one-shot upstream on a thread: accepts connections, reads each request's head and
// hands the socket to `answer`, then closes it.
class ScriptedUpstream {
 public:
  explicit ScriptedUpstream(std::function<void(int fd)> answer) : answer_(std::move(answer)) {
    listener_ = listen_on_loopback(port_);
    if (port_ == 0) return;
    thread_ = std::thread([this] {
      for (;;) {
        const int fd = ::accept(listener_, nullptr, nullptr);
        if (fd < 0) return;  // shut down
        ++accepted_;
        std::string head;
        char c = 0;
        while (head.find("\r\n\r\n") == std::string::npos && ::read(fd, &c, 1) == 1) head += c;
        answer_(fd);
        ::close(fd);
      }
    });
  }
  ~ScriptedUpstream() {
    ::shutdown(listener_, SHUT_RDWR);
    if (thread_.joinable()) thread_.join();
    ::close(listener_);
  }
  int port() const { return port_; }
  int accepted() const { return accepted_; }

  static void write_all(int fd, std::string_view data) {
    while (!data.empty()) {
      const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
      if (n <= 0) return;
      data.remove_prefix(static_cast<std::size_t>(n));
    }
  }

 private:
  std::function<void(int)> answer_;
  int listener_ = -1;
  int port_ = 0;
  std::atomic<int> accepted_ = 0;
  std::thread thread_;
};

// Runs `body` as a coroutine on `ioc` to its end (or 20 s).
void run(http::asio::io_context& ioc, std::function<http::Task<void>()> body) {
  bool done = false;
  http::asio::co_spawn(
      ioc,
      [&]() -> http::Task<void> {
        co_await body();
        done = true;
      },
      http::asio::detached);
  ioc.restart();
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!done && std::chrono::steady_clock::now() < give_up) {
    ioc.run_for(std::chrono::milliseconds(10));
  }
}

http::UpstreamEndpoint endpoint_at(http::HostResolver& resolver, int port) {
  auto url = http::parse_base_url("http://127.0.0.1:" + std::to_string(port) + "/v1");
  return http::UpstreamEndpoint{"scripted", *url, 0, nullptr,
                                resolver.add(url->host, url->port)};
}

// A stream is read piece by piece and bounded event by event, so a chunked one may run past
// the 32 MiB that bounds a whole body (it used to be cut there as "malformed").
TEST(UpstreamResponse, AChunkedStreamMayRunPastTheWholeBodyLimit) {
  constexpr int kMiB = 1 << 20;
  constexpr int kChunks = 40;
  ScriptedUpstream upstream([](int fd) {
    ScriptedUpstream::write_all(fd,
                                "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                                "Transfer-Encoding: chunked\r\n\r\n");
    std::string chunk = "100000\r\n";
    chunk.append(kMiB, 'x').append("\r\n");
    for (int i = 0; i < kChunks; ++i) ScriptedUpstream::write_all(fd, chunk);
    ScriptedUpstream::write_all(fd, "0\r\n\r\n");
  });
  ASSERT_GT(upstream.port(), 0);
  http::HostResolver resolver;
  const auto endpoint = endpoint_at(resolver, upstream.port());
  http::asio::io_context ioc;
  http::UpstreamPool pool(ioc, 1, 4);
  const std::string head = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n\r\n";
  std::uint64_t streamed = 0;
  bool ended = false;
  std::string failure;
  run(ioc, [&]() -> http::Task<void> {
    auto sent = co_await pool.send(endpoint, head, {}, http::UpstreamTimeouts{});
    if (!sent) {
      failure = sent.status().message();
      co_return;
    }
    for (;;) {
      auto piece = co_await (*sent)->read_some();
      if (!piece) {
        failure = piece.status().message();
        co_return;
      }
      if (piece->empty()) break;
      streamed += piece->size();
    }
    ended = true;
  });
  EXPECT_EQ(failure, "");
  EXPECT_TRUE(ended);
  EXPECT_EQ(streamed, std::uint64_t{kChunks} * kMiB);

  // The same answer read whole is refused at its limit, as too large.
  std::string whole_failure;
  run(ioc, [&]() -> http::Task<void> {
    auto sent = co_await pool.send(endpoint, head, {}, http::UpstreamTimeouts{});
    if (!sent) co_return;
    auto body = co_await (*sent)->read_all(limits::kUpstreamResponseBytesMax);
    if (!body) whole_failure = body.status().message();
  });
  EXPECT_NE(whole_failure.find("exceeds"), std::string::npos) << whole_failure;
}

// One request sent to an upstream acting out `script` on each connection: whether it
// failed, how many connections the upstream accepted, and the pool's fresh retries.
struct OneSend {
  bool failed = false;
  std::string error;  // why, when it failed
  int accepted = 0;
  std::uint64_t fresh_retries = 0;
};
OneSend send_once(std::function<void(int fd)> script) {
  ScriptedUpstream upstream(std::move(script));
  EXPECT_GT(upstream.port(), 0);
  http::HostResolver resolver;
  const auto endpoint = endpoint_at(resolver, upstream.port());
  http::asio::io_context ioc;
  http::UpstreamPool pool(ioc, 1, 4);
  OneSend out;
  run(ioc, [&]() -> http::Task<void> {
    auto sent = co_await pool.send(
        endpoint, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n\r\n", {},
        http::UpstreamTimeouts{});
    out.failed = !sent;
    if (!sent) out.error = sent.status().message();
  });
  out.accepted = upstream.accepted();
  out.fresh_retries = pool.stats().fresh_retries;
  return out;
}

// An upstream that starts its answer and then drops the connection has the request: it is
// not sent again (a second run could be charged twice).
TEST(UpstreamPool, ARequestIsNotSentAgainOnceItsAnswerHasBegun) {
  const OneSend sent =
      send_once([](int fd) { ScriptedUpstream::write_all(fd, "HTTP/1.1 200 OK\r\nContent-Ty"); });
  EXPECT_TRUE(sent.failed);
  EXPECT_EQ(sent.accepted, 1);
  EXPECT_EQ(sent.fresh_retries, 0u);
}

// A switch of protocols the request never asked for fails at once: what follows is not
// HTTP. (It was skipped as an interim answer, and the raw bytes after it waited on as a head.)
TEST(UpstreamPool, AnUnaskedSwitchOfProtocolsFails) {
  const OneSend sent = send_once([](int fd) {
    ScriptedUpstream::write_all(
        fd, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nRAW");
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  });
  EXPECT_TRUE(sent.failed);
  EXPECT_NE(sent.error.find("101 Switching Protocols"), std::string::npos) << sent.error;
}

// One that closes before answering anything is tried once more on a fresh connection.
TEST(UpstreamPool, AConnectionClosedBeforeAnyAnswerIsRetriedOnce) {
  const OneSend sent = send_once([](int) {});
  EXPECT_EQ(sent.accepted, 2);
  EXPECT_EQ(sent.fresh_retries, 1u);
}

// One that holds the request a while and then closes without a word may have worked on
// it: it is not sent again (the route's fallback decides what comes next).
TEST(UpstreamPool, AConnectionClosedAfterHoldingTheRequestIsNotRetried) {
  const OneSend sent =
      send_once([](int) { std::this_thread::sleep_for(std::chrono::milliseconds(1500)); });
  EXPECT_TRUE(sent.failed);
  EXPECT_EQ(sent.accepted, 1);
  EXPECT_EQ(sent.fresh_retries, 0u);
}

// An upstream that keeps its connections (a thread each) and answers the first
// `answered` requests of all; past them it reads a request and closes without a word.
class KeepAliveUpstream {
 public:
  explicit KeepAliveUpstream(int answered) : answered_(answered) {
    listener_ = listen_on_loopback(port_);
    if (port_ == 0) return;
    acceptor_ = std::thread([this] {
      for (;;) {
        const int fd = ::accept(listener_, nullptr, nullptr);
        if (fd < 0) return;  // shut down
        connections_.emplace_back([this, fd] { serve(fd); });
      }
    });
  }
  ~KeepAliveUpstream() {
    ::shutdown(listener_, SHUT_RDWR);
    if (acceptor_.joinable()) acceptor_.join();
    for (std::thread& t : connections_) t.join();
    ::close(listener_);
  }
  int port() const { return port_; }
  int requests() const { return requests_; }

 private:
  void serve(int fd) {
    for (;;) {
      std::string head;
      char c = 0;
      while (head.find("\r\n\r\n") == std::string::npos && ::read(fd, &c, 1) == 1) head += c;
      if (head.find("\r\n\r\n") == std::string::npos) break;  // closed by the client
      if (++requests_ > answered_) break;
      ScriptedUpstream::write_all(fd, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}");
    }
    ::close(fd);
  }

  int answered_;
  int listener_ = -1;
  int port_ = 0;
  std::atomic<int> requests_ = 0;
  std::thread acceptor_;
  std::vector<std::thread> connections_;  // the acceptor's alone until it has ended
};

// A request written and closed on without an answer is sent again once at most, however
// many pooled connections there are to try it on: each resend could run it again.
TEST(UpstreamPool, ARequestClosedOnUnansweredIsSentAgainOnceWhateverThePoolHolds) {
  KeepAliveUpstream upstream(3);
  ASSERT_GT(upstream.port(), 0);
  http::HostResolver resolver;
  const auto endpoint = endpoint_at(resolver, upstream.port());
  http::asio::io_context ioc;
  http::UpstreamPool pool(ioc, 1, 8);
  ASSERT_EQ(wave(ioc, pool, endpoint, 3), 3);
  ASSERT_EQ(pool.idle_connections(0), 3u);
  bool failed = false;
  run(ioc, [&]() -> http::Task<void> {
    auto sent = co_await pool.send(endpoint, "GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n", {},
                                   http::UpstreamTimeouts{});
    failed = !sent;
  });
  EXPECT_TRUE(failed);
  EXPECT_EQ(upstream.requests(), 3 + 2);  // the request and one resend
}

// What a pooled connection holds beyond its last response's end, or receives while idle,
// is no answer to the next request: that connection is not reused. (Reused, every answer
// after it would go to the request after its own.)
TEST(UpstreamPool, BytesNoRequestAskedForRetireTheConnection) {
  constexpr std::string_view kAnswer = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nA";
  constexpr std::string_view kUnasked = "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nunasked";
  for (const bool same_write : {true, false}) {
    ScriptedUpstream upstream([&](int fd) {
      if (same_write) {
        ScriptedUpstream::write_all(fd, std::string(kAnswer) + std::string(kUnasked));
      } else {
        ScriptedUpstream::write_all(fd, kAnswer);
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        ScriptedUpstream::write_all(fd, kUnasked);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(600));
    });
    ASSERT_GT(upstream.port(), 0);
    http::HostResolver resolver;
    const auto endpoint = endpoint_at(resolver, upstream.port());
    http::asio::io_context ioc;
    http::UpstreamPool pool(ioc, 1, 4);
    std::vector<std::string> bodies;
    run(ioc, [&]() -> http::Task<void> {
      for (int i = 0; i < 2; ++i) {
        auto sent = co_await pool.send(endpoint, "GET /v1/x HTTP/1.1\r\nHost: x\r\n\r\n", {},
                                       http::UpstreamTimeouts{});
        if (!sent) co_return;
        auto body = co_await (*sent)->read_all(1024);
        bodies.push_back(body ? *body : "failed");
        sent->reset();  // back to the pool, or closed
        http::asio::steady_timer pause(co_await http::asio::this_coro::executor,
                                       std::chrono::milliseconds(300));
        co_await pause.async_wait(http::use_nothrow);
      }
    });
    EXPECT_EQ(bodies, (std::vector<std::string>{"A", "A"})) << "same write: " << same_write;
    EXPECT_EQ(upstream.accepted(), 2) << "same write: " << same_write;
  }
}

}  // namespace
}  // namespace tp::test
