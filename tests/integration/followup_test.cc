// Timing promises: the client write timeout measures a stall, not a whole transfer; each
// provider's background probe runs on its own schedule; and a reload reaches idle threads
// at once.

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "integration/harness.h"

namespace tp::test {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

std::chrono::milliseconds ms_since(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t);
}

// A client whose receive buffer is set small before connect, so that its window stays
// small and the gateway's answer backs up in the gateway's socket; `mss` > 0 also announces
// that segment size (an Ethernet-sized one is what a client on a real network sends).
// Over loopback (64 KiB segments) the kernel lets the gateway's send buffer grow to
// megabytes and wakes a writer waiting on it only once a third has drained: without the
// gateway's TCP_NOTSENT_LOWAT the reader below (every 20 ms, about 3 MB/s) was cut by a
// 500 ms write timeout, its progress unseen between wake-ups.
class SlowClient {
 public:
  SlowClient(int port, int rcvbuf = 64 * 1024, int mss = 1460) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    if (mss > 0) ::setsockopt(fd_, IPPROTO_TCP, TCP_MAXSEG, &mss, sizeof mss);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      ::close(fd_);
      fd_ = -1;
    }
  }
  ~SlowClient() {
    if (fd_ >= 0) ::close(fd_);
  }
  SlowClient(const SlowClient&) = delete;
  SlowClient& operator=(const SlowClient&) = delete;

  bool connected() const { return fd_ >= 0; }
  bool send(const std::string& bytes) {
    return fd_ >= 0 && ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL) ==
                           static_cast<ssize_t>(bytes.size());
  }
  // One recv of at most `max` bytes, waiting up to `wait` for some. Empty when nothing
  // came in time, or when the peer closed (then `closed` is set).
  std::string read_some(std::size_t max, std::chrono::milliseconds wait) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(wait.count())) <= 0) return {};
    std::string buf(max, '\0');
    const ssize_t n = ::recv(fd_, buf.data(), buf.size(), 0);
    if (n <= 0) {
      closed = true;
      return {};
    }
    buf.resize(static_cast<std::size_t>(n));
    return buf;
  }
  bool closed = false;

 private:
  int fd_ = -1;
};

// POST /v1/embeddings for `inputs` vectors of 4096 dimensions (the simulator's largest), as
// floats: about 76 KB of JSON each.
std::string embeddings_request(const Stack& stack, int inputs) {
  std::ostringstream body;
  body << R"({"model":"embed-test","dimensions":4096,"input":[)";
  for (int i = 0; i < inputs; ++i) body << (i ? "," : "") << "\"x\"";
  body << "]}";
  const std::string b = body.str();
  return "POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + stack.key +
         "\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: " +
         std::to_string(b.size()) + "\r\n\r\n" + b;
}

// The value of Content-Length in a response head, or -1.
long long content_length(const std::string& head) {
  const std::size_t at = head.find("Content-Length: ");
  return at == std::string::npos ? -1 : std::stoll(head.substr(at + 16));
}

// limits.write_timeout_ms measures a stall: a client reading a 6 MB answer at most 64 KiB
// at a time with a 20 ms pause after each read (about 3 MB/s) takes several write timeouts
// to get it, and gets it whole. A client that reads nothing at all is cut.
TEST(WriteTimeout, ASlowReaderOfALargeAnswerIsNotCutWhileItKeepsReading) {
  Stack stack("limits: { write_timeout_ms: 500 }");
  ASSERT_GT(stack.port, 0) << stack.gateway->log();
  const std::string request = embeddings_request(stack, 80);

  // The stalled client asks first and then reads nothing while the slow one reads.
  SlowClient stalled(stack.port);
  ASSERT_TRUE(stalled.connected());
  ASSERT_TRUE(stalled.send(request));

  SlowClient slow(stack.port, 64 * 1024, 0);
  ASSERT_TRUE(slow.connected());
  const auto started = Clock::now();
  ASSERT_TRUE(slow.send(request));
  std::string got;
  std::size_t head_end = std::string::npos;
  long long length = -1;
  auto longest_pause = 0ms;  // between two reads that brought bytes
  auto last = Clock::now();
  while (ms_since(started) < 10s) {
    const std::string part = slow.read_some(64 * 1024, 2s);
    if (part.empty()) break;
    if (!got.empty()) longest_pause = std::max(longest_pause, ms_since(last));
    last = Clock::now();
    got += part;
    if (head_end == std::string::npos && (head_end = got.find("\r\n\r\n")) != std::string::npos) {
      head_end += 4;
      length = content_length(got.substr(0, head_end));
    }
    if (length >= 0 && static_cast<long long>(got.size() - head_end) >= length) break;
    std::this_thread::sleep_for(20ms);
  }
  const auto took = ms_since(started);
  ASSERT_NE(head_end, std::string::npos) << got.substr(0, 200) << stack.gateway->log();
  ASSERT_TRUE(got.starts_with("HTTP/1.1 200")) << got.substr(0, head_end);
  ASSERT_GT(length, 5'000'000);
  // Whole: a cut would end it early (the gateway closes), short of its Content-Length.
  // (Such a cut leaves no trace in the gateway's log, whose access line says
  // "finished":true either way: the bytes are the evidence.)
  EXPECT_EQ(static_cast<long long>(got.size() - head_end), length)
      << "cut after " << took.count() << " ms; longest pause between reads "
      << longest_pause.count() << " ms; closed: " << slow.closed;
  EXPECT_TRUE(got.ends_with("}")) << got.substr(got.size() -
                                                std::min<std::size_t>(got.size(), 100));
  EXPECT_GT(took, 1500ms) << "the transfer did not outlast the write timeout: nothing tested";

  // By now the stalled client has read nothing for longer than the write timeout: the
  // gateway has closed its connection. What it can still read is what the two kernels
  // held when the gateway gave up, then the end — far short of the answer.
  std::size_t stalled_bytes = 0;
  const auto stalled_from = Clock::now();
  while (!stalled.closed && ms_since(stalled_from) < 3s) {
    stalled_bytes += stalled.read_some(1 << 20, 1s).size();
  }
  EXPECT_TRUE(stalled.closed) << "a client that reads nothing kept its connection";
  EXPECT_LT(static_cast<long long>(stalled_bytes), length / 2);
  // Its access log line says the answer did not reach it whole; the slow reader's does.
  const std::string log = stack.gateway->log();
  EXPECT_NE(log.find(R"("path":"/v1/embeddings","status":200,"finished":false)"),
            std::string::npos)
      << log;
  EXPECT_NE(log.find(R"("path":"/v1/embeddings","status":200,"finished":true)"),
            std::string::npos)
      << log;
}

// A TCP listener that accepts connections and never answers: a provider whose probe hangs
// until the probe timeout.
class SilentServer {
 public:
  SilentServer() {
    listener_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t size = sizeof addr;
    if (::bind(listener_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::listen(listener_, 64) != 0 ||
        ::getsockname(listener_, reinterpret_cast<sockaddr*>(&addr), &size) != 0) {
      return;
    }
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] {
      while (!stop_) {
        pollfd p{listener_, POLLIN, 0};
        if (::poll(&p, 1, 50) <= 0) continue;
        const int fd = ::accept(listener_, nullptr, nullptr);
        if (fd < 0) continue;
        held_.push_back(fd);  // read nothing, answer nothing, close nothing
        ++accepted_;
      }
    });
  }
  ~SilentServer() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    for (const int fd : held_) ::close(fd);
    if (listener_ >= 0) ::close(listener_);
  }
  SilentServer(const SilentServer&) = delete;
  SilentServer& operator=(const SilentServer&) = delete;

  int port() const { return port_; }
  int accepted() const { return accepted_; }

 private:
  int listener_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> accepted_{0};
  std::vector<int> held_;  // the accept thread's
  std::thread thread_;
};

// Each provider is probed on its own schedule: a probe that hangs for its whole 3 s
// timeout on one provider does not hold back the probes that find another one gone, which
// is marked down after two failed probes 100 ms apart.
TEST(Probes, AHangingProbeDoesNotDelayMarkingAnotherProviderDown) {
  SilentServer silent;
  ASSERT_GT(silent.port(), 0);
  auto sim = std::make_unique<Process>(bin("turnpike-sim"),
                                       std::vector<std::string>{"--listen", "127.0.0.1:0"});
  const int sim_port = sim->wait_listening();
  ASSERT_GT(sim_port, 0) << sim->log();
  TempDir dir;
  std::ostringstream yaml;
  yaml << "listen: \"127.0.0.1:0\"\n"
       << "routing: { probe_interval_ms: 100, probe_failures: 2, probe_timeout_ms: 3000 }\n"
       << "providers:\n"
       << "  - { name: hung, base_url: \"http://127.0.0.1:" << silent.port() << "/v1\" }\n"
       << "  - { name: live, base_url: \"http://127.0.0.1:" << sim_port << "/v1\" }\n"
       << "models:\n  - name: m\n    routes:\n"
       << "      - { provider: hung, input_per_mtok: \"1\", output_per_mtok: \"1\" }\n"
       << "      - { provider: live, input_per_mtok: \"1\", output_per_mtok: \"1\" }\n";
  const std::string config = dir.write("turnpike.yaml", yaml.str());
  Process gateway(
      bin("turnpike"),
      {"serve", "--config", config, "--threads", "1", "--data-dir", dir.path() + "/var"},
      {{"TURNPIKE_ADMIN_KEY", kAdminKey}});
  const int port = gateway.wait_listening();
  ASSERT_GT(port, 0) << gateway.log();
  const std::map<std::string, std::string> admin = {
      {"authorization", std::string("Bearer ") + kAdminKey}};
  auto entries = [&] {
    const std::string routes = http_request(port, "GET", "/admin/v1/routes", {}, admin).body;
    return std::pair{route_entry(routes, "m", "hung"), route_entry(routes, "m", "live")};
  };

  // A probe of `hung` is under way (it has 3 s to go), and `live` is up.
  for (int i = 0; i < 100 && silent.accepted() == 0; ++i) std::this_thread::sleep_for(10ms);
  ASSERT_GT(silent.accepted(), 0) << "no probe reached the silent provider";
  ASSERT_NE(entries().second.find(R"("provider_up":true)"), std::string::npos) << entries().second;

  sim.reset();  // SIGKILL: `live` now refuses connections
  const auto killed = Clock::now();
  std::pair<std::string, std::string> seen;
  while (ms_since(killed) < 1s) {
    seen = entries();
    if (seen.second.find(R"("provider_up":false)") != std::string::npos) break;
    std::this_thread::sleep_for(20ms);
  }
  const auto took = ms_since(killed);
  EXPECT_NE(seen.second.find(R"("provider_up":false)"), std::string::npos)
      << "`live` not marked down " << took.count() << " ms after it died: " << seen.second << "\n"
      << gateway.log();
  // `hung` is still up: its first probe has not even timed out, so nothing waited for it.
  EXPECT_NE(seen.first.find(R"("provider_up":true)"), std::string::npos) << seen.first;
  EXPECT_NE(gateway.log().find("provider down"), std::string::npos) << gateway.log();
}

// After SIGHUP every I/O thread takes the new state at once, not at its next request: the
// route report counts all of them (it counted only those that had served one since).
TEST(Reload, IdleThreadsTakeTheNewStateAtOnce) {
  Stack stack;  // two I/O threads
  ASSERT_GT(stack.port, 0);
  const std::map<std::string, std::string> admin = {
      {"authorization", std::string("Bearer ") + kAdminKey}};
  auto threads_reported = [&] {
    return http_request(stack.port, "GET", "/admin/v1/routes", {}, admin).body;
  };
  ASSERT_NE(threads_reported().find(R"("threads":2)"), std::string::npos);
  stack.gateway->signal(SIGHUP);
  for (int i = 0; i < 200 && stack.gateway->log().find("config reloaded") == std::string::npos;
       ++i) {
    std::this_thread::sleep_for(10ms);
  }
  ASSERT_NE(stack.gateway->log().find("config reloaded"), std::string::npos);
  // Each report is one request, on one thread: the other thread serves none meanwhile.
  std::string report = threads_reported();
  for (int i = 0; i < 100 && report.find(R"("threads":2)") == std::string::npos; ++i) {
    std::this_thread::sleep_for(20ms);  // the threads' inboxes run
    report = threads_reported();
  }
  EXPECT_NE(report.find(R"("threads":2)"), std::string::npos) << report;
}

// Established TCP connections (IPv4) whose remote port is `port`: from this machine to it.
int connections_to(int port) {
  std::ifstream tcp("/proc/net/tcp");
  std::string line;
  std::getline(tcp, line);  // the header
  int n = 0;
  while (std::getline(tcp, line)) {
    std::istringstream fields(line);
    std::string slot, local, remote, state;
    fields >> slot >> local >> remote >> state;
    if (state == "01" && std::stoi(remote.substr(remote.find(':') + 1), nullptr, 16) == port) ++n;
  }
  return n;
}

// A request running across a reload keeps its Gateway (catalog, upstream pool) until it
// ends; then the thread lets that Gateway go even if it serves nothing more, and with it the
// pooled upstream connection.
TEST(Reload, TheOldStateGoesSoonAfterItsLastRequestEnds) {
  Stack stack;
  ASSERT_GT(stack.port, 0);
  const int probes = connections_to(stack.sim_port);  // the health probes' own
  std::thread stream([&] {
    const auto res = http_request(
        stack.port, "POST", "/v1/chat/completions",
        R"({"model":"gpt-test","stream":true,"messages":[],"sim":{"output_tokens":10,"tokens_per_second":10}})",
        stack.auth());
    EXPECT_EQ(res.status, 200);
  });
  std::this_thread::sleep_for(300ms);
  ASSERT_EQ(connections_to(stack.sim_port), probes + 1);
  stack.gateway->signal(SIGHUP);
  stream.join();
  // The answer's connection went back to its pool; the old Gateway goes within a second or
  // so of the request's end, not at the thread's next request.
  int open = probes + 1;
  for (int i = 0; i < 150 && open > probes; ++i) {
    std::this_thread::sleep_for(20ms);
    open = connections_to(stack.sim_port);
  }
  EXPECT_EQ(open, probes);
  EXPECT_NE(stack.gateway->log().find("config reloaded"), std::string::npos);
}

// Threads of process `pid` named `name`.
int threads_named(pid_t pid, std::string_view name) {
  int n = 0;
  for (const auto& task : std::filesystem::directory_iterator(fmt::format("/proc/{}/task", pid))) {
    std::ifstream comm(task.path() / "comm");
    std::string line;
    if (std::getline(comm, line) && line == name) ++n;
  }
  return n;
}

// A replaced state (its resolver thread, upstream pools and statistics) is freed within a
// few seconds of its last request, not kept until the next reload.
TEST(Reload, TheReplacedStateIsFreedWithoutAnotherReload) {
  Stack stack;
  ASSERT_GT(stack.port, 0);
  ASSERT_EQ(threads_named(stack.gateway->pid(), "tp-resolve"), 1);
  stack.gateway->signal(SIGHUP);
  for (int i = 0; i < 200 && stack.gateway->log().find("config reloaded") == std::string::npos;
       ++i) {
    std::this_thread::sleep_for(10ms);
  }
  ASSERT_NE(stack.gateway->log().find("config reloaded"), std::string::npos);
  // The new state's resolver, and the old one's until it is freed (which may be at once:
  // the sweep runs every two seconds).
  int resolvers = threads_named(stack.gateway->pid(), "tp-resolve");
  for (int i = 0; i < 400 && resolvers > 1; ++i) {
    std::this_thread::sleep_for(20ms);
    resolvers = threads_named(stack.gateway->pid(), "tp-resolve");
  }
  EXPECT_EQ(resolvers, 1);
}

}  // namespace
}  // namespace tp::test
