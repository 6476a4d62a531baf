// The HTTP server's own promises: limits, timeouts, keep-alive, pipelining, drain, config.

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <future>
#include <iterator>
#include <thread>

#include "core/clock.h"
#include "core/rfc3339.h"
#include "integration/harness.h"
#include "store/sqlite.h"

namespace tp::test {
namespace {

// Writes into `dir` a config of one model `m` on one provider `a`, whose other fields are
// `provider` (its base_url, say); `top`: top-level lines before it. Returns its path.
std::string one_route_config(const TempDir& dir, const std::string& top,
                             const std::string& provider) {
  return dir.write("t.yaml", top + "providers:\n  - { name: a, " + provider +
                                 " }\nmodels:\n  - name: m\n    routes: [{provider: a, "
                                 "input_per_mtok: \"1\", output_per_mtok: \"1\"}]\n");
}

using namespace std::chrono_literals;

std::string chat_request(const Stack& stack, const std::string& body, bool close = false) {
  return "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + stack.key +
         "\r\nContent-Type: application/json\r\n" +
         std::string(close ? "Connection: close\r\n" : "") +
         "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}

std::size_t count(const std::string& haystack, const std::string& needle) {
  std::size_t n = 0;
  for (std::size_t pos = haystack.find(needle); pos != std::string::npos;
       pos = haystack.find(needle, pos + 1)) {
    ++n;
  }
  return n;
}

// GET /v1/models with the stack's key, as raw request text.
std::string models_request(const Stack& stack) {
  return "GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + stack.key + "\r\n\r\n";
}

// The I/O threads share their port through SO_REUSEPORT; a port another process already
// listens on (here the simulator, which uses the option too) is still refused, not shared.
TEST(Server, APortAnotherProcessListensOnIsRefused) {
  Stack stack;
  ASSERT_GT(stack.port, 0);
  ASSERT_TRUE(stack.stop_gateway());
  Process second(bin("turnpike"),
                 {"serve", "--config", stack.config_path, "--data-dir", stack.dir.path() + "/var",
                  "--listen", "127.0.0.1:" + std::to_string(stack.sim_port)},
                 stack.gateway_env);
  EXPECT_EQ(second.wait_exit(10s), std::optional<int>(1)) << second.log();
  EXPECT_NE(second.log().find("Address already in use"), std::string::npos) << second.log();
}

// Start-up says where the gateway keeps its data, and that it made a new server secret
// (which its keys will need for as long as they live).
TEST(Server, StartUpSaysWhereItsDataIs) {
  Stack stack;
  ASSERT_GT(stack.port, 0) << stack.gateway->log();
  const std::string log = stack.gateway->log();
  const std::string var = stack.dir.path() + "/var";
  EXPECT_NE(log.find(R"("data_dir":")" + var + R"(")"), std::string::npos) << log;
  EXPECT_NE(log.find(R"("store":")" + var + R"(/turnpike.db")"), std::string::npos) << log;
  EXPECT_NE(log.find(R"("msg":"created a new server secret; back it up with the store","path":")" +
                     var + R"(/secret.key")"),
            std::string::npos)
      << log;
}

// A store outside the data directory is locked too: a second gateway with another data
// directory naming the same file is refused (each would keep its own books over it). The
// store is the user's only.
TEST(Server, AStoreOutsideTheDataDirectoryIsLockedAndPrivate) {
  TempDir shared;
  Stack stack("store: \"sqlite:" + shared.path() + "/tp.db\"");
  ASSERT_GT(stack.port, 0) << stack.gateway->log();
  Process second(bin("turnpike"),
                 {"serve", "--config", stack.config_path, "--data-dir",
                  stack.dir.path() + "/other", "--listen", "127.0.0.1:0"},
                 stack.gateway_env);
  EXPECT_EQ(second.wait_exit(10s), std::optional<int>(2)) << second.log();
  EXPECT_NE(second.log().find("is in use by a running turnpike"), std::string::npos)
      << second.log();
  // A second gateway is told what to do about it (its own data directory would not do),
  // not pointed at the admin API.
  EXPECT_NE(second.log().find("give this one its own store (in the config)"), std::string::npos)
      << second.log();
  EXPECT_EQ(second.log().find("admin API"), std::string::npos) << second.log();
  // And a gateway naming another's own store (inside its data directory) by its path.
  Stack other;
  ASSERT_GT(other.port, 0) << other.gateway->log();
  std::ifstream original(other.config_path);
  const std::string naming = shared.write(
      "naming.yaml", "store: \"sqlite:" + other.dir.path() + "/var/turnpike.db\"\n" +
                         std::string(std::istreambuf_iterator<char>(original), {}));
  Process third(bin("turnpike"),
                {"serve", "--config", naming, "--data-dir", shared.path() + "/third", "--listen",
                 "127.0.0.1:0"},
                other.gateway_env);
  EXPECT_EQ(third.wait_exit(10s), std::optional<int>(2)) << third.log();
  EXPECT_NE(third.log().find("is in use by a running turnpike"), std::string::npos)
      << third.log();
  // And an offline change naming it through a symbolic link: the link's own lock was free,
  // and the change went into a live gateway's store behind its back.
  const std::string link = shared.path() + "/alias.db";
  ASSERT_EQ(::symlink((shared.path() + "/tp.db").c_str(), link.c_str()), 0);
  Process offline(bin("turnpike"),
                  {"accounts", "suspend", "acct_1", "--data-dir", shared.path() + "/offline",
                   "--store", "sqlite:" + link},
                  stack.gateway_env);
  EXPECT_EQ(offline.wait_exit(10s), std::optional<int>(1)) << offline.log();
  EXPECT_NE(offline.log().find("is in use by a running turnpike"), std::string::npos)
      << offline.log();
  struct stat st {};
  ASSERT_EQ(::stat((shared.path() + "/tp.db").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(::stat((stack.dir.path() + "/var").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0077, 0u);
}

// TURNPIKE_ADMIN_KEY is taken without surrounding blanks (a file's newline), which no header
// can carry: with them the admin API could never be used. Other control characters refuse
// the start, naming the variable but not showing its value.
TEST(Server, TheAdminKeyIsTakenWithoutSurroundingBlanks) {
  TempDir dir;
  const std::string config =
      one_route_config(dir, "listen: \"127.0.0.1:0\"\n", "base_url: \"http://127.0.0.1:9/v1\"");
  Process gateway(bin("turnpike"), {"serve", "--config", config, "--data-dir", dir.path() + "/var"},
                  {{"TURNPIKE_ADMIN_KEY", std::string(" ") + kAdminKey + "\r\n"}});
  const int port = gateway.wait_listening();
  ASSERT_GT(port, 0) << gateway.log();
  EXPECT_EQ(http_request(port, "GET", "/admin/v1/routes", {},
                         {{"authorization", std::string("Bearer ") + kAdminKey}})
                .status,
            200);
  Process refused(bin("turnpike"),
                  {"serve", "--config", config, "--data-dir", dir.path() + "/other"},
                  {{"TURNPIKE_ADMIN_KEY", std::string("secret\x01") + kAdminKey}});
  EXPECT_EQ(refused.wait_exit(10s), std::optional<int>(2)) << refused.log();
  EXPECT_NE(refused.log().find("TURNPIKE_ADMIN_KEY has control characters"), std::string::npos)
      << refused.log();
  EXPECT_EQ(refused.log().find(kAdminKey), std::string::npos) << refused.log();
}

// Where it listens is logged at every log level: with port 0 nothing else would say it.
TEST(Server, TheListeningLineIsWrittenAtEveryLogLevel) {
  TempDir dir;
  const std::string config =
      one_route_config(dir, "listen: \"127.0.0.1:0\"\nlog: { level: error }\n",
                       "base_url: \"http://127.0.0.1:9/v1\"");
  Process gateway(bin("turnpike"), {"serve", "--config", config, "--data-dir", dir.path() + "/var"},
                  {{"TURNPIKE_ADMIN_KEY", kAdminKey}});
  EXPECT_GT(gateway.wait_listening(), 0) << gateway.log();
}

// log.level debug says, per request, where it went and what it cost, and when upstream
// connections open; never the words of a prompt or an answer. At info none of it.
TEST(Server, DebugLinesSayWhereARequestWentAndWhatItCost) {
  Process sim(bin("turnpike-sim"), {"--listen", "127.0.0.1:0"});
  const std::string up = std::to_string(sim.wait_listening());
  for (const std::string level : {"debug", "info"}) {
    TempDir dir;
    const std::string config = dir.write(
        "t.yaml", "listen: \"127.0.0.1:0\"\nlog: { level: " + level +
                      " }\nproviders:\n  - { name: simmed, base_url: \"http://127.0.0.1:" + up +
                      "/v1\" }\nmodels:\n  - name: m\n    routes: [{provider: simmed, "
                      "input_per_mtok: \"1\", output_per_mtok: \"1\"}]\n");
    const auto gateway = start_gateway(dir, config);
    const int port = gateway->wait_listening();
    ASSERT_GT(port, 0) << gateway->log();
    const std::string key = create_key(port);
    const auto res = http_request(
        port, "POST", "/v1/chat/completions",
        R"({"model":"m","messages":[{"role":"user","content":"zebra-quartz-prompt"}]})",
        {{"authorization", "Bearer " + key}});
    ASSERT_EQ(res.status, 200) << res.body;
    const std::string id = res.header("x-request-id");
    const std::string log = gateway->log();
    const bool debug = level == "debug";
    EXPECT_EQ(log.find(R"("msg":"routed","request_id":")" + id) != std::string::npos, debug) << log;
    EXPECT_EQ(log.find(R"("msg":"settling","request_id":")" + id) != std::string::npos, debug)
        << log;
    EXPECT_EQ(
        log.find(R"("msg":"upstream connection opened","provider":"simmed")") != std::string::npos,
        debug)
        << log;
    EXPECT_EQ(log.find("zebra-quartz-prompt"), std::string::npos);
  }
}

TEST(Server, SlowClientIsCutOffByHeaderTimeout) {
  Stack stack("limits: { header_timeout_ms: 1000 }");
  ASSERT_GT(stack.port, 0) << stack.gateway->log();
  RawConnection c(stack.port);
  // One byte per second: the request line alone would take ~20 s.
  const std::string head = "GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n";
  bool cut = false;
  for (std::size_t i = 0; i < head.size(); ++i) {
    if (!c.send(head.substr(i, 1))) {
      cut = true;
      break;
    }
    if (c.closed_within(1s)) {
      cut = true;
      break;
    }
  }
  EXPECT_TRUE(cut) << "a client trickling its headers kept the connection";
}

TEST(Server, IdleKeepAliveConnectionIsClosed) {
  Stack stack("limits: { idle_timeout_ms: 300, header_timeout_ms: 1000 }");
  ASSERT_GT(stack.port, 0);
  RawConnection c(stack.port);
  ASSERT_TRUE(c.send(models_request(stack)));
  ASSERT_NE(c.read_until("\"list\"", 2s).find("200 OK"), std::string::npos);
  // Closed without an answer: a 408 there would be read as the answer to a request the
  // client sent just then. (read_until returns what came before the close.)
  EXPECT_EQ(c.read_until("HTTP/1.1", 3s), "");
  EXPECT_TRUE(c.closed_within(1s));
  // An empty line after a request (some clients send one) does not start the next request:
  // the connection stays idle and closes as idle, where a header timeout would answer 408.
  RawConnection stray(stack.port);
  ASSERT_TRUE(stray.send(models_request(stack) + "\r\n"));
  ASSERT_NE(stray.read_until("\"list\"", 2s).find("200 OK"), std::string::npos);
  EXPECT_EQ(stray.read_until("HTTP/1.1", 3s), "");
  EXPECT_TRUE(stray.closed_within(1s));
  RawConnection silent(stack.port);  // a new connection that never sends a byte
  EXPECT_EQ(silent.read_until("HTTP/1.1", 3s), "");
  EXPECT_TRUE(silent.closed_within(1s));
}

// A chunked body past the limit is 413, like one announced by Content-Length; broken
// chunk framing is 400.
TEST(Server, ChunkedBodyOverLimitIs413) {
  Stack stack("limits: { body_bytes_max: 4096 }");
  ASSERT_GT(stack.port, 0);
  const std::string head =
      "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (const auto& [body, status] : std::vector<std::pair<std::string, std::string>>{
           {"2000\r\n", "413"},                                      // one chunk too large
           {"800\r\n" + std::string(2048, 'x') + "\r\n900\r\n", "413"},  // the sum is
           {"ffffffffffffffffff\r\n", "413"},                        // a size past any limit
           {"zz\r\n", "400"}}) {
    RawConnection c(stack.port);
    ASSERT_TRUE(c.send(head + body));
    const std::string got = c.read_until("}}", 5s);
    EXPECT_TRUE(got.starts_with("HTTP/1.1 " + status)) << body.substr(0, 20) << ": " << got;
  }
}

// Every GET path answers HEAD as it answers GET, with the length and without the body (a
// health check may use HEAD), so the next response on the connection starts right after
// the head.
TEST(Server, HeadAnswersCarryNoBody) {
  Stack stack;
  ASSERT_GT(stack.port, 0);
  for (const std::string path : {"/healthz", "/readyz", "/metrics", "/admin/v1/routes"}) {
    RawConnection c(stack.port);
    ASSERT_TRUE(c.send("HEAD " + path + " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                       kAdminKey + "\r\n\r\n" + models_request(stack)));
    const std::string got = c.read_until("\"list\"", 5s);
    const std::size_t second = got.find("HTTP/1.1 200", 1);
    ASSERT_NE(second, std::string::npos) << got;
    const std::string first = got.substr(0, second);
    EXPECT_TRUE(first.starts_with("HTTP/1.1 200")) << path << ": " << got;
    EXPECT_NE(first.find("Content-Length: "), std::string::npos) << got;
    EXPECT_EQ(first.find("Content-Length: 0\r\n"), std::string::npos) << got;
    EXPECT_TRUE(first.ends_with("\r\n\r\n")) << got;  // nothing after the head
  }
}

// An HTTP/1.1 request names its host once (RFC 9112 §3.2); HTTP/1.0 need not.
TEST(Server, AnHttp11RequestWithoutOneHostIs400) {
  Stack stack;
  ASSERT_GT(stack.port, 0);
  for (const auto& [head, status] : std::vector<std::pair<std::string, std::string>>{
           {"GET /healthz HTTP/1.1\r\n\r\n", "400"},
           {"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "400"},
           {"GET /healthz HTTP/1.0\r\n\r\n", "200"},
           {"GET /healthz HTTP/1.1\r\nhOsT: a\r\n\r\n", "200"}}) {
    RawConnection c(stack.port);
    ASSERT_TRUE(c.send(head));
    const std::string got = c.read_until("}", 5s);
    EXPECT_EQ(got.substr(0, 12).substr(9), status) << head << " -> " << got;
  }
  // A request refused before it was whole has its access log line too.
  std::string log;
  for (int i = 0; i < 50; ++i) {
    log = stack.gateway->log();
    if (log.find(R"("path":"/healthz","status":400)") != std::string::npos) break;
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_NE(log.find(R"("path":"/healthz","status":400,"finished":true,"refused":)"),
            std::string::npos)
      << log;
}

// Two credentials of one kind: which one counts would be anybody's guess (a proxy in front
// may read the other), so neither does. A compressed body would be read as bad JSON: 415.
TEST(Server, DuplicateCredentialsAre400AndACodedBodyIs415) {
  Stack stack;
  ASSERT_GT(stack.port, 0);
  const std::string body = R"({"model":"gpt-test","messages":[]})";
  auto post = [&](const std::string& extra) {
    return "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
           stack.key + "\r\n" + extra + "Content-Length: " + std::to_string(body.size()) +
           "\r\n\r\n" + body;
  };
  std::string sixteen;  // more lines of one name: no count may wrap
  for (int i = 0; i < 16; ++i) sixteen += "Authorization: Bearer " + stack.key + "\r\n";
  for (const auto& [request, status, words] :
       std::vector<std::tuple<std::string, std::string, std::string>>{
           {post("authorization: Bearer tp_sk_other\r\n"), "400",
            "more than one Authorization header"},
           {post("x-api-key: a\r\nX-Api-Key: b\r\n"), "400", "more than one x-api-key header"},
           {post(sixteen), "400", "more than one Authorization header"},
           {post("Content-Encoding: gzip\r\n"), "415", "Content-Encoding is not supported"},
           {post("Content-Encoding: gzip\r\nContent-Encoding: identity\r\n"), "415",
            "Content-Encoding is not supported"},
           {post("Content-Encoding: identity\r\n"), "200", "chat.completion"},
           {post("Content-Encoding:\r\n"), "200", "chat.completion"}}) {  // empty: none
    RawConnection c(stack.port);
    ASSERT_TRUE(c.send(request));
    const std::string got = c.read_until("}}", 5s);
    EXPECT_EQ(got.substr(9, 3), status) << request << " -> " << got;
    EXPECT_NE(got.find(words), std::string::npos) << got;
    // An encoding it cannot read is not a malformed request.
    if (status == "415") {
      EXPECT_EQ(got.find("malformed"), std::string::npos) << got;
    }
  }
}

// Past limits.connections_per_thread_max a connection is closed at accept, and a client
// that reconnects in a loop does not fill the log: a line a second at most per thread,
// saying how many were refused (it was a line per connection). Every refusal is counted in
// a line, those after the last line too, a second after it (they waited for a later
// refusal, maybe for ever).
TEST(Server, ConnectionsPastTheLimitAreClosedAndLoggedOnceASecond) {
  Stack stack("limits: { connections_per_thread_max: 2 }\n");  // 2 threads: 4 at most
  ASSERT_GT(stack.port, 0) << stack.gateway->log();
  std::vector<std::unique_ptr<RawConnection>> held;
  std::size_t closed = 0;
  for (int i = 0; i < 10; ++i) {
    held.push_back(std::make_unique<RawConnection>(stack.port));
    if (held.back()->closed_within(200ms)) ++closed;
  }
  EXPECT_GE(closed, 6u);
  for (int i = 0; i < 40; ++i) {
    RawConnection churn(stack.port);
    if (churn.closed_within(50ms)) ++closed;  // else accepted (a thread with room)
  }
  std::size_t lines = 0;
  std::size_t counted = 0;
  for (int i = 0; i < 100 && counted < closed; ++i) {
    std::this_thread::sleep_for(50ms);
    const std::string log = stack.gateway->log();
    lines = counted = 0;
    for (std::size_t at = log.find("refused: per-thread limit"); at != std::string::npos;
         at = log.find("refused: per-thread limit", at + 1)) {
      ++lines;
      const std::size_t count = log.find("\"refused\":", at);
      if (count != std::string::npos) counted += std::stoul(log.substr(count + 10, 12));
    }
  }
  EXPECT_EQ(counted, closed) << stack.gateway->log();
  EXPECT_GE(lines, 1u);
  EXPECT_LE(lines, 6u);
}

// A request that waits for `100 Continue` is invited to send its body only when its key
// would let it through: a missing or unknown key gets its 401 at once (in the shape of the
// path's API), with the connection closed after it. It used to be invited to upload up to
// body_bytes_max before being refused.
TEST(Server, ARefusedKeyIsNotInvitedToSendItsBody) {
  Stack stack;
  ASSERT_GT(stack.port, 0);
  const std::string body = R"({"model":"gpt-test","messages":[]})";
  auto head = [&](const std::string& path, const std::string& auth) {
    return "POST " + path + " HTTP/1.1\r\nHost: x\r\n" + auth +
           "Content-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: " +
           std::to_string(body.size()) + "\r\n\r\n";
  };
  for (const auto& [path, auth, shape] :
       std::vector<std::tuple<std::string, std::string, std::string>>{
           {"/v1/chat/completions", "", R"("error":{"message":"missing API key)"},
           {"/v1/chat/completions", "Authorization: Bearer tp_sk_unknown\r\n",
            R"("error":{"message":"invalid API key)"},
           {"/v1/messages", "x-api-key: nope\r\n", R"("type":"error")"},
           {"/admin/v1/accounts", "Authorization: Bearer " + stack.key + "\r\n",
            "wrong admin key"}}) {
    RawConnection c(stack.port);
    ASSERT_TRUE(c.send(head(path, auth)));
    const std::string got = c.read_until("}", 5s);
    EXPECT_TRUE(got.starts_with("HTTP/1.1 401")) << path << " " << auth << ": " << got;
    EXPECT_NE(got.find(shape), std::string::npos) << got;
    EXPECT_NE(got.find("Connection: close"), std::string::npos) << got;
    EXPECT_TRUE(c.closed_within(2s)) << path;
  }
  // A key that works is invited, and served.
  RawConnection ok(stack.port);
  ASSERT_TRUE(ok.send(head("/v1/chat/completions", "Authorization: Bearer " + stack.key + "\r\n")));
  EXPECT_EQ(ok.read_until("\r\n\r\n", 5s), "HTTP/1.1 100 Continue\r\n\r\n");
  ASSERT_TRUE(ok.send(body));
  EXPECT_NE(ok.read_until("chat.completion", 5s).find("HTTP/1.1 200"), std::string::npos);
}

// The gateway's resident memory, in KiB (VmRSS).
long resident_kib(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(status, line);) {
    if (line.starts_with("VmRSS:")) return std::stol(line.substr(6));
  }
  return -1;
}

// A kept-alive connection gives back a large body's memory once its request is answered:
// 24 idle connections that each carried 4 MiB held ~200 MiB (body and read buffer) until
// their clients closed them, with no key needed.
TEST(Server, AnIdleConnectionDoesNotKeepALargeBodysMemory) {
  Stack stack;
  ASSERT_GT(stack.port, 0);
  const std::string body(4 << 20, 'x');
  const std::string request =
      "GET /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: " + std::to_string(body.size()) +
      "\r\n\r\n" + body;
  // One first, so that the allocator's own reserve for such a body is counted as before.
  RawConnection warm(stack.port);
  ASSERT_TRUE(warm.send(request));
  ASSERT_NE(warm.read_until("\r\n\r\n", 5s).find("200"), std::string::npos);
  const long before = resident_kib(stack.gateway->pid());
  std::vector<std::unique_ptr<RawConnection>> kept;
  for (int i = 0; i < 24; ++i) {
    kept.push_back(std::make_unique<RawConnection>(stack.port));
    ASSERT_TRUE(kept.back()->send(request));
    ASSERT_NE(kept.back()->read_until("\r\n\r\n", 5s).find("200"), std::string::npos) << i;
  }
  const long after = resident_kib(stack.gateway->pid());
  ASSERT_GT(before, 0);
  EXPECT_LT(after - before, 48 * 1024) << before << " KiB before, " << after << " KiB after";
}

TEST(Server, KeepAliveAndPipelinedRequestsAnswerInOrder) {
  Stack stack;
  ASSERT_GT(stack.port, 0);
  RawConnection c(stack.port);
  const std::string a = chat_request(stack, R"({"model":"gpt-test","messages":[],"sim":{"output_tokens":1}})");
  const std::string b = models_request(stack);
  const std::string d = chat_request(stack, R"({"model":"nope"})");
  ASSERT_TRUE(c.send(a + b + d));  // three requests in one write
  const std::string got = c.read_until("does not exist", 5s);
  EXPECT_EQ(count(got, "HTTP/1.1 "), 3u) << got;
  const auto p1 = got.find("chat.completion");
  const auto p2 = got.find("\"object\":\"list\"");
  const auto p3 = got.find("does not exist");
  ASSERT_NE(p1, std::string::npos);
  ASSERT_NE(p2, std::string::npos);
  ASSERT_NE(p3, std::string::npos);
  EXPECT_LT(p1, p2);
  EXPECT_LT(p2, p3);
}

// Framing that two HTTP parsers could read differently is refused and ends the
// connection: a chunked body whose last chunk ends in a bare LF (the next request must not
// be taken for its trailers), and Transfer-Encoding in HTTP/1.0 (RFC 9112 §6.1).
TEST(Server, AmbiguousFramingIs400AndEndsTheConnection) {
  Stack stack;
  ASSERT_GT(stack.port, 0);
  const std::string body = R"({"model":"gpt-test","messages":[],"sim":{"output_tokens":1}})";
  const std::string chunked_head = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                                   "Authorization: Bearer " + stack.key +
                                   "\r\nTransfer-Encoding: chunked\r\n\r\n";
  char size[32];
  std::snprintf(size, sizeof size, "%zx", body.size());
  {
    RawConnection c(stack.port);
    ASSERT_TRUE(c.send(chunked_head + size + "\r\n" + body + "\r\n0\r\n\n" +
                       models_request(stack)));
    const std::string got = c.read_until("\"object\":\"list\"", 3s);
    EXPECT_EQ(count(got, "HTTP/1.1 "), 1u) << got;
    EXPECT_TRUE(got.starts_with("HTTP/1.1 400")) << got;
    EXPECT_EQ(got.find("\"object\":\"list\""), std::string::npos) << got;
  }
  {
    // Leading zeros in a chunk size are legal.
    RawConnection c(stack.port);
    std::snprintf(size, sizeof size, "%016zx", body.size());
    ASSERT_TRUE(c.send(chunked_head + size + "\r\n" + body + "\r\n0\r\n\r\n"));
    EXPECT_TRUE(c.read_until("chat.completion", 3s).starts_with("HTTP/1.1 200"));
  }
  {
    RawConnection c(stack.port);
    std::snprintf(size, sizeof size, "%zx", body.size());
    ASSERT_TRUE(c.send("POST /v1/chat/completions HTTP/1.0\r\nAuthorization: Bearer " +
                       stack.key + "\r\nConnection: keep-alive\r\n"
                       "Transfer-Encoding: chunked\r\n\r\n" + size + "\r\n" + body +
                       "\r\n0\r\n\r\n"));
    const std::string got = c.read_until("HTTP/1.0", 3s);
    EXPECT_TRUE(got.starts_with("HTTP/1.1 400") || got.starts_with("HTTP/1.0 400")) << got;
    EXPECT_NE(got.find("Transfer-Encoding in an HTTP/1.0 request"), std::string::npos) << got;
    EXPECT_TRUE(c.closed_within(3s));
  }
}

// A malformed head is 400 even when it follows a large body in the same read: 431 is only
// for a head past its limit.
TEST(Server, AMalformedHeadAfterALargeBodyIs400) {
  Stack stack;
  ASSERT_GT(stack.port, 0);
  RawConnection c(stack.port);
  const std::string big = R"({"model":"gpt-test","messages":[{"role":"user","content":")" +
                          std::string(10000, 'a') + R"("}],"sim":{"output_tokens":1}})";
  ASSERT_TRUE(c.send(chat_request(stack, big) +
                     "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
                     "Content-Length: 2\r\n\r\n" + std::string(30000, 'x')));
  const std::string got = c.read_until("conflicting Content-Length", 5s);
  EXPECT_EQ(count(got, "HTTP/1.1 200"), 1u) << got.substr(0, 300);
  EXPECT_NE(got.find("HTTP/1.1 400"), std::string::npos) << got.substr(0, 2000);
  EXPECT_EQ(got.find("431"), std::string::npos);
}

TEST(Server, HeadersOverLimitAre431) {
  Stack stack;
  ASSERT_GT(stack.port, 0);
  const auto res = http_request(stack.port, "GET", "/v1/models", "",
                                {{"x-filler", std::string(20000, 'a')}});
  EXPECT_EQ(res.status, 431);
  EXPECT_NE(res.body.find(R"("error":{"message")"), std::string::npos) << res.body;
  // An error the server answers before the head is whole still takes the shape of the
  // API the request line names.
  const auto messages = http_request(stack.port, "POST", "/v1/messages", "{}",
                                     {{"x-filler", std::string(20000, 'a')}});
  EXPECT_EQ(messages.status, 431);
  EXPECT_NE(messages.body.find(R"("type":"error")"), std::string::npos) << messages.body;
  // So does a request line naming it in absolute form (it got OpenAI's shape).
  RawConnection absolute(stack.port);
  ASSERT_TRUE(absolute.send("POST http://h/v1/messages HTTP/1.1\r\nHost: x\r\nX-Filler: " +
                            std::string(20000, 'a') + "\r\n\r\n"));
  const std::string got = absolute.read_until("}}", 5s);
  EXPECT_NE(got.find("HTTP/1.1 431"), std::string::npos) << got;
  EXPECT_NE(got.find(R"("type":"error")"), std::string::npos) << got;
  // It still has a request id, where each SDK looks for one.
  EXPECT_TRUE(res.headers.count("x-request-id"));
  EXPECT_TRUE(messages.headers.count("request-id"));
}

TEST(Server, SigtermDrainsInFlightStreamThenExitsZero) {
  Stack stack;
  ASSERT_GT(stack.port, 0);
  RawConnection c(stack.port);
  // 10 tokens at 10/s: about a second of stream.
  ASSERT_TRUE(c.send(chat_request(
      stack, R"({"model":"gpt-test","stream":true,"messages":[],"sim":{"output_tokens":10,"tokens_per_second":10}})",
      true)));
  ASSERT_NE(c.read_until("role", 3s).find("role"), std::string::npos);
  stack.gateway->signal(SIGTERM);
  const std::string rest = c.read_until("0\r\n\r\n", 10s);
  EXPECT_NE(rest.find("[DONE]"), std::string::npos) << "stream cut by the drain";
  EXPECT_EQ(stack.gateway->wait_exit(10s), std::optional<int>(0)) << stack.gateway->log();
  // No new connections once draining.
  EXPECT_EQ(http_request(stack.port, "GET", "/healthz").status, 0);
}

TEST(Server, DrainTimeoutCutsLongStreamsAndStillExitsZero) {
  Stack stack("limits: { drain_timeout_ms: 300 }");
  ASSERT_GT(stack.port, 0);
  RawConnection c(stack.port);
  // 100 tokens at 10/s: ten seconds, far past the drain timeout.
  ASSERT_TRUE(c.send(chat_request(
      stack, R"({"model":"gpt-test","stream":true,"messages":[],"sim":{"output_tokens":100,"tokens_per_second":10}})")));
  ASSERT_NE(c.read_until("role", 3s).find("role"), std::string::npos);
  stack.gateway->signal(SIGTERM);
  EXPECT_EQ(stack.gateway->wait_exit(5s), std::optional<int>(0)) << stack.gateway->log();
  EXPECT_NE(stack.gateway->log().find("\"connections_cut\":1"), std::string::npos)
      << stack.gateway->log();
  EXPECT_TRUE(c.closed_within(2s));
  // The cut stream ended through its failure path while the store still took settlements:
  // billed for the tokens it relayed, in a usage row, not dropped with its frame.
  auto db = store::open_sqlite(stack.dir.path() + "/var/turnpike.db");
  ASSERT_TRUE(db);
  auto row = (*db)->prepare("SELECT COUNT(*), MIN(output_tokens), MIN(cost_nanos) FROM usage_log");
  ASSERT_TRUE(row);
  ASSERT_EQ(row->step().value(), store::Statement::Step::kRow);
  EXPECT_EQ(row->column_int(0), 1) << stack.gateway->log();
  EXPECT_GE(row->column_int(1), 1);
  EXPECT_GT(row->column_int(2), 0);
}

TEST(Server, SigtermWithIdleConnectionsExitsPromptly) {
  Stack stack;
  ASSERT_GT(stack.port, 0);
  RawConnection idle(stack.port);
  ASSERT_TRUE(idle.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"));
  ASSERT_NE(idle.read_until("ok", 2s).find("ok"), std::string::npos);
  stack.gateway->signal(SIGTERM);
  EXPECT_EQ(stack.gateway->wait_exit(5s), std::optional<int>(0));
  EXPECT_TRUE(idle.closed_within(1s));
}

TEST(Config, InvalidConfigExitsNonZeroNamingKeyAndLine) {
  TempDir dir;
  const std::string path = dir.write("bad.yaml",
                                     "providers:\n"
                                     "  - name: p\n"
                                     "    api: openai\n"
                                     "    base_url: \"ftp://nowhere\"\n"
                                     "models:\n"
                                     "  - name: m\n"
                                     "    routes: [{provider: p, input_per_mtok: \"1\", output_per_mtok: \"1\"}]\n");
  Process p(bin("turnpike"), {"serve", "--config", path, "--data-dir", dir.path() + "/var"});
  const auto code = p.wait_exit(5s);
  ASSERT_TRUE(code.has_value());
  EXPECT_NE(*code, 0);
  const std::string log = p.log();
  EXPECT_NE(log.find("bad.yaml:4: providers[0].base_url"), std::string::npos) << log;
}

TEST(Cli, OfflineAccountsAndKeysServeAfterARestart) {
  Stack stack;
  ASSERT_GT(stack.port, 0);
  const std::string var = stack.dir.path() + "/var";
  // Not beside a live gateway: both would append to the ledger.
  Process refused(bin("turnpike"), {"accounts", "create", "--name", "Too Soon", "--data-dir", var});
  EXPECT_EQ(refused.wait_exit(10s), std::optional<int>(1));
  EXPECT_NE(refused.log().find("in use by a running turnpike"), std::string::npos) << refused.log();
  // Nor can a second gateway share the data directory.
  Process second(bin("turnpike"), {"serve", "--config", stack.config_path, "--data-dir", var,
                                   "--listen", "127.0.0.1:0"},
                 stack.gateway_env);
  EXPECT_EQ(second.wait_exit(10s), std::optional<int>(2));
  ASSERT_TRUE(stack.stop_gateway());
  Process account(bin("turnpike"), {"accounts", "create", "--name", "Offline Co", "--data-dir", var});
  ASSERT_EQ(account.wait_exit(10s), std::optional<int>(0)) << account.log();
  const std::string out = account.log();
  const std::string id = string_field(out, "id");
  ASSERT_FALSE(id.empty()) << out;
  Process key(bin("turnpike"), {"keys", "create", "--account", id, "--data-dir", var});
  ASSERT_EQ(key.wait_exit(10s), std::optional<int>(0)) << key.log();
  const std::string key_out = key.log();
  const std::string secret = string_field(key_out, "key");
  ASSERT_FALSE(secret.empty()) << key_out;
  // Unknown key ids and accounts are errors, not silent successes.
  Process bad(bin("turnpike"), {"keys", "create", "--account", "acct_999", "--data-dir", var});
  EXPECT_EQ(bad.wait_exit(10s), std::optional<int>(1));
  // The admin API's limits hold offline too: refused with the API's words, nothing stored.
  const std::string long_name(201, 'n');
  std::string many_models = "m0";
  for (int i = 1; i <= 100; ++i) many_models += ",m" + std::to_string(i);
  const std::vector<std::pair<std::vector<std::string>, std::string>> refused_changes = {
      {{"accounts", "create", "--name", "", "--data-dir", var}, "'name' is required"},
      {{"accounts", "create", "--name", long_name, "--data-dir", var}, "'name' is required"},
      {{"keys", "create", "--account", id, "--name", long_name, "--data-dir", var},
       "'name' must be a string of at most 200 bytes"},
      {{"keys", "create", "--account", id, "--tags", "bad tag!", "--data-dir", var}, "'tags'"},
      {{"keys", "create", "--account", id, "--models", many_models, "--data-dir", var},
       "'models'"},
      {{"accounts", "policy", id, "--models", many_models, "--data-dir", var}, "'models'"},
      {{"accounts", "policy", id, "--models", ",", "--data-dir", var}, "'models'"},  // not "all"
      {{"keys", "create", "--account", id, "--tags", "a,,b", "--data-dir", var}, "'tags'"},
  };
  for (const auto& [args, said] : refused_changes) {
    Process change(bin("turnpike"), args);
    EXPECT_EQ(change.wait_exit(10s), std::optional<int>(1)) << args[1];
    EXPECT_NE(change.log().find(said), std::string::npos) << change.log();
  }
  Process listed(bin("turnpike"), {"keys", "list", "--account", id, "--data-dir", var});
  ASSERT_EQ(listed.wait_exit(10s), std::optional<int>(0));
  const std::string keys = listed.log();
  EXPECT_EQ(keys.find("\"id\":\"key_"), keys.rfind("\"id\":\"key_")) << keys;  // one key

  ASSERT_TRUE(stack.start_gateway()) << stack.gateway->log();
  const auto balance = http_request(stack.port, "GET", "/api/balance", "",
                                    {{"authorization", "Bearer " + secret}});
  EXPECT_EQ(balance.status, 200) << balance.body;
  EXPECT_NE(balance.body.find(R"("trial_usd":"20.00")"), std::string::npos) << balance.body;
  EXPECT_EQ(http_request(stack.port, "POST", "/v1/chat/completions",
                         R"({"model":"gpt-test","messages":[]})",
                         {{"authorization", "Bearer " + secret}})
                .status,
            200);
  Process verify(bin("turnpike"), {"ledger", "verify", "--data-dir", var});
  EXPECT_EQ(verify.wait_exit(10s), std::optional<int>(0)) << verify.log();
  // The usage log reads beside the live gateway, with the API's paging.
  Process usage(bin("turnpike"), {"usage", "--data-dir", var, "--account", id, "--limit", "5"});
  ASSERT_EQ(usage.wait_exit(10s), std::optional<int>(0)) << usage.log();
  EXPECT_NE(usage.log().find(R"("model":"gpt-test")"), std::string::npos) << usage.log();
  EXPECT_NE(usage.log().find(R"("next_cursor":null)"), std::string::npos) << usage.log();
  Process bad_query(bin("turnpike"), {"usage", "--data-dir", var, "--limit", "0"});
  EXPECT_EQ(bad_query.wait_exit(10s), std::optional<int>(1));
}

// Runs the turnpike CLI to its end; its exit code and output.
std::pair<std::optional<int>, std::string> cli(std::vector<std::string> args) {
  Process p(bin("turnpike"), args);
  const std::optional<int> code = p.wait_exit(10s);
  return {code, p.log()};
}

TEST(Cli, AccountCreationTakesTheConfiguredTrialCredit) {
  Stack stack("billing: { trial_usd: \"3.5\" }");
  ASSERT_GT(stack.port, 0);
  const std::string var = stack.dir.path() + "/var";
  ASSERT_TRUE(stack.stop_gateway());
  auto trial_of = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = {"accounts", "create", "--name", "T", "--data-dir", var};
    args.insert(args.end(), extra.begin(), extra.end());
    Process create(bin("turnpike"), args, stack.gateway_env);  // the config's provider key
    const std::optional<int> code = create.wait_exit(10s);
    const std::string out = create.log();
    EXPECT_EQ(code, std::optional<int>(0)) << out;
    const std::string id = string_field(out, "id");
    const std::string balance = cli({"accounts", "balance", id, "--data-dir", var}).second;
    return string_field(balance, "trial_usd");
  };
  EXPECT_EQ(trial_of({"--config", stack.config_path}), "3.50");  // the gateway's own setting
  EXPECT_EQ(trial_of({"--config", stack.config_path, "--trial-usd", "1"}), "1.00");  // said
  EXPECT_EQ(trial_of({}), "20.00");  // without a config: the documented default
  EXPECT_EQ(cli({"accounts", "create", "--name", "T", "--trial-usd", "2000000000", "--data-dir",
                 var})
                .first,
            std::optional<int>(2));
}

// Only creating an account may make a store. Any other change on a directory without one
// (a mistyped --data-dir, or none given in another working directory) is refused with exit
// 2 and makes nothing there; it used to make an empty store that later commands found.
TEST(Cli, OfflineChangesOtherThanCreatingAnAccountNeedAStore) {
  TempDir dir;
  const std::string typo = dir.path() + "/typo";
  const std::vector<std::vector<std::string>> changes = {
      {"keys", "create", "--account", "acct_1"},
      {"keys", "revoke", "key_1"},
      {"accounts", "credit", "acct_1", "--amount-usd", "1", "--idempotency-key", "k"},
      {"accounts", "suspend", "acct_1"},
  };
  for (std::vector<std::string> args : changes) {
    args.insert(args.end(), {"--data-dir", typo});
    const auto [code, out] = cli(args);
    EXPECT_EQ(code, std::optional<int>(2)) << args[0] << " " << args[1] << ": " << out;
    EXPECT_NE(out.find("no store: " + typo + "/turnpike.db does not exist"), std::string::npos)
        << out;
    EXPECT_FALSE(std::filesystem::exists(typo)) << args[0] << " " << args[1];
  }
  const auto [made, made_out] = cli({"accounts", "create", "--name", "A", "--data-dir", typo});
  EXPECT_EQ(made, std::optional<int>(0)) << made_out;
  EXPECT_EQ(
      cli({"keys", "create", "--account", string_field(made_out, "id"), "--data-dir", typo}).first,
      std::optional<int>(0));
}

// An offline change given the gateway's --config goes to that config's store (unless
// --store says otherwise): the gateway finds it there. It went to the default store file.
TEST(Cli, OfflineChangesUseTheConfigsStore) {
  Stack stack("store: \"sqlite:custom.db\"");
  ASSERT_GT(stack.port, 0);
  const std::string var = stack.dir.path() + "/var";
  ASSERT_TRUE(stack.stop_gateway());
  Process create(bin("turnpike"),
                 {"accounts", "create", "--name", "C", "--config", stack.config_path, "--trial-usd",
                  "1", "--data-dir", var},
                 stack.gateway_env);
  ASSERT_EQ(create.wait_exit(10s), std::optional<int>(0)) << create.log();
  const std::string id = string_field(create.log(), "id");
  Process credit(bin("turnpike"),
                 {"accounts", "credit", id, "--amount-usd", "2", "--idempotency-key", "k",
                  "--config", stack.config_path, "--data-dir", var},
                 stack.gateway_env);
  ASSERT_EQ(credit.wait_exit(10s), std::optional<int>(0)) << credit.log();
  // Nothing in the default store file; the config's has the account and its credit.
  const auto [none, none_out] = cli({"accounts", "list", "--data-dir", var});
  EXPECT_EQ(none, std::optional<int>(2)) << none_out;
  EXPECT_NE(none_out.find("turnpike.db does not exist"), std::string::npos) << none_out;
  ASSERT_TRUE(stack.start_gateway()) << stack.gateway->log();
  const auto balance = http_request(stack.port, "GET", "/admin/v1/accounts/" + id + "/balance", {},
                                    {{"authorization", std::string("Bearer ") + kAdminKey}});
  ASSERT_EQ(balance.status, 200) << balance.body;
  EXPECT_EQ(string_field(balance.body, "paid_usd"), "2.00") << balance.body;
  // A config that cannot be read is an error, whatever else the command is told.
  EXPECT_EQ(cli({"accounts", "create", "--name", "D", "--config", var + "/nowhere.yaml",
                 "--trial-usd", "1", "--data-dir", var})
                .first,
            std::optional<int>(2));
}

// An offline refund that takes an account below a low-balance threshold records its notice,
// as the admin API's would, for the gateway to deliver when it next starts.
TEST(Cli, AnOfflineRefundBelowAThresholdRecordsItsNotice) {
  TempDir dir;
  const std::string var = dir.path() + "/var";
  const auto [made, made_out] = cli({"accounts", "create", "--name", "Low Co", "--trial-usd", "0",
                                     "--data-dir", var});
  ASSERT_EQ(made, std::optional<int>(0)) << made_out;
  const std::string id = string_field(made_out, "id");
  ASSERT_EQ(cli({"accounts", "credit", id, "--amount-usd", "6", "--idempotency-key", "c",
                 "--data-dir", var})
                .first,
            std::optional<int>(0));
  const auto [refunded, refunded_out] = cli({"accounts", "refund", id, "--amount-usd", "5.5",
                                             "--idempotency-key", "r", "--data-dir", var});
  ASSERT_EQ(refunded, std::optional<int>(0)) << refunded_out;
  auto db = store::open_sqlite(var + "/turnpike.db");
  ASSERT_TRUE(db);
  auto rows = (*db)->prepare(
      "SELECT COUNT(*), SUM(delivered_ms IS NULL), MIN(threshold_nanos) FROM low_balance_notices");
  ASSERT_TRUE(rows);
  ASSERT_EQ(rows->step().value(), store::Statement::Step::kRow);
  EXPECT_EQ(rows->column_int(0), 2);  // the 5 and 1 USD thresholds, crossed at once
  EXPECT_EQ(rows->column_int(1), 2);  // waiting for the gateway
  EXPECT_EQ(rows->column_int(2), 1'000'000'000);
}

// A promo lot that expired while no gateway ran is swept by the next offline change, which
// raises its notice once: left in the books, every later change (a credit too) raised the
// drop again.
TEST(Cli, APromoLotThatExpiredOfflineRaisesItsNoticeOnce) {
  TempDir dir;
  const std::string var = dir.path() + "/var";
  const auto [made, made_out] = cli({"accounts", "create", "--name", "Promo Co", "--trial-usd",
                                     "2", "--data-dir", var});
  ASSERT_EQ(made, std::optional<int>(0)) << made_out;
  const std::string id = string_field(made_out, "id");
  const std::string soon = format_rfc3339(SystemClock::instance().unix_millis() + 1500);
  ASSERT_EQ(cli({"accounts", "credit", id, "--amount-usd", "4", "--kind", "promo",
                 "--expires-at", soon, "--idempotency-key", "p", "--data-dir", var})
                .first,
            std::optional<int>(0));
  std::this_thread::sleep_for(2s);  // 6 USD, then 2 once the lot expires: below 5
  for (const std::string key : {"c1", "c2"}) {
    ASSERT_EQ(cli({"accounts", "credit", id, "--amount-usd", "0.01", "--idempotency-key", key,
                   "--data-dir", var})
                  .first,
              std::optional<int>(0));
  }
  auto db = store::open_sqlite(var + "/turnpike.db");
  ASSERT_TRUE(db);
  auto rows = (*db)->prepare(
      "SELECT COUNT(*) FROM low_balance_notices WHERE threshold_nanos = 5000000000");
  ASSERT_TRUE(rows);
  ASSERT_EQ(rows->step().value(), store::Statement::Step::kRow);
  EXPECT_EQ(rows->column_int(0), 1);
  const auto [verified, verified_out] = cli({"ledger", "verify", "--data-dir", var});
  EXPECT_EQ(verified, std::optional<int>(0)) << verified_out;
}

TEST(Cli, OfflineCreditsRefundsBalancePolicySuspensionAndRotation) {
  Stack stack;
  ASSERT_GT(stack.port, 0);
  const std::string var = stack.dir.path() + "/var";
  ASSERT_TRUE(stack.stop_gateway());
  const auto [made, made_out] = cli({"accounts", "create", "--name", "Cli Co", "--trial-usd", "0",
                                     "--data-dir", var});
  ASSERT_EQ(made, std::optional<int>(0)) << made_out;
  const std::string id = string_field(made_out, "id");

  // Credits are idempotent like the admin API's: a replay answers the first result, other
  // values under the same key are refused.
  const std::vector<std::string> credit = {"accounts", "credit", id, "--amount-usd", "10",
                                           "--idempotency-key", "cli-1", "--data-dir", var};
  const auto [first, first_out] = cli(credit);
  ASSERT_EQ(first, std::optional<int>(0)) << first_out;
  EXPECT_NE(first_out.find(R"("paid_usd":"10.00")"), std::string::npos) << first_out;
  const auto [again, again_out] = cli(credit);
  EXPECT_EQ(again, std::optional<int>(0));
  EXPECT_EQ(again_out, first_out);
  const auto [conflict, conflict_out] = cli({"accounts", "credit", id, "--amount-usd", "11",
                                             "--idempotency-key", "cli-1", "--data-dir", var});
  EXPECT_EQ(conflict, std::optional<int>(1));
  EXPECT_NE(conflict_out.find("already used for a different request"), std::string::npos);
  EXPECT_EQ(cli({"accounts", "credit", id, "--amount-usd", "1", "--kind", "promo",
                 "--idempotency-key", "cli-2", "--data-dir", var})
                .first,
            std::optional<int>(2));  // promo needs an expiry
  EXPECT_EQ(cli({"accounts", "credit", id, "--amount-usd", "-1", "--idempotency-key", "cli-3",
                 "--data-dir", var})
                .first,
            std::optional<int>(2));
  EXPECT_EQ(cli({"accounts", "credit", id, "--amount-usd", "5", "--expires-at",
                 "2099-01-01T00:00:00Z", "--idempotency-key", "cli-4", "--data-dir", var})
                .first,
            std::optional<int>(2));  // only promo credit expires
  // Past the admin API's limit: refused like a refusal of the books (1), not a usage error.
  EXPECT_EQ(cli({"accounts", "credit", id, "--amount-usd", "1000000001", "--idempotency-key",
                 "cli-5", "--data-dir", var})
                .first,
            std::optional<int>(1));
  // A promo credit retried after its expiry answers the first result.
  const std::string soon = format_rfc3339(SystemClock::instance().unix_millis() + 1500);
  const std::vector<std::string> promo = {"accounts", "credit", id, "--amount-usd", "1",
                                          "--kind", "promo", "--expires-at", soon,
                                          "--idempotency-key", "cli-6", "--data-dir", var};
  const auto [promo_code, promo_out] = cli(promo);
  ASSERT_EQ(promo_code, std::optional<int>(0)) << promo_out;
  std::this_thread::sleep_for(std::chrono::milliseconds(1600));
  EXPECT_EQ(cli(promo), std::make_pair(std::optional<int>(0), promo_out));
  // A key reference that is no key is named.
  const auto [no_key, no_key_out] = cli({"keys", "revoke", "key_abc", "--data-dir", var});
  EXPECT_EQ(no_key, std::optional<int>(1));
  EXPECT_NE(no_key_out.find("no key 'key_abc'"), std::string::npos) << no_key_out;
  // Refunds give back unused paid credit only.
  EXPECT_EQ(cli({"accounts", "refund", id, "--amount-usd", "4", "--idempotency-key", "r-1",
                 "--data-dir", var})
                .first,
            std::optional<int>(0));
  const auto [too_much, too_much_out] = cli({"accounts", "refund", id, "--amount-usd", "7",
                                             "--idempotency-key", "r-2", "--data-dir", var});
  EXPECT_EQ(too_much, std::optional<int>(1)) << too_much_out;
  const auto [balance, balance_out] = cli({"accounts", "balance", id, "--data-dir", var});
  EXPECT_EQ(balance, std::optional<int>(0));
  EXPECT_NE(balance_out.find(R"("paid_usd":"6.00")"), std::string::npos) << balance_out;
  // The refusal is that key's result, as over HTTP: after a top-up it is refused again.
  ASSERT_EQ(cli({"accounts", "credit", id, "--amount-usd", "2", "--idempotency-key", "t-1",
                 "--data-dir", var})
                .first,
            std::optional<int>(0));
  const auto [refused, refused_out] = cli({"accounts", "refund", id, "--amount-usd", "7",
                                           "--idempotency-key", "r-2", "--data-dir", var});
  EXPECT_EQ(refused, std::optional<int>(1)) << refused_out;
  EXPECT_NE(refused_out.find("6.00 USD unreserved, 7.00 USD needed"), std::string::npos)
      << refused_out;
  ASSERT_EQ(cli({"accounts", "refund", id, "--amount-usd", "2", "--idempotency-key", "r-3",
                 "--data-dir", var})
                .first,
            std::optional<int>(0));

  // Suspension and routing policy.
  EXPECT_NE(cli({"accounts", "suspend", id, "--data-dir", var}).second.find(
                R"("standing":"suspended")"),
            std::string::npos);
  EXPECT_NE(cli({"accounts", "unsuspend", id, "--data-dir", var}).second.find(
                R"("standing":"active")"),
            std::string::npos);
  const auto [policy, policy_out] = cli({"accounts", "policy", id, "--privacy-tier", "cloud",
                                         "--weights", "0.1,0.8,0.1", "--data-dir", var});
  EXPECT_EQ(policy, std::optional<int>(0)) << policy_out;
  EXPECT_NE(policy_out.find(
                R"("privacy_tier":"cloud","routing_weights":{"quality":0.1,"cost":0.8,"latency":0.1})"),
            std::string::npos)
      << policy_out;
  EXPECT_EQ(cli({"accounts", "policy", id, "--weights", "1,2", "--data-dir", var}).first,
            std::optional<int>(1));
  EXPECT_NE(cli({"accounts", "policy", id, "--models", "gpt-test,claude-test", "--data-dir", var})
                .second.find(R"("models":["gpt-test","claude-test"])"),
            std::string::npos);
  EXPECT_NE(cli({"accounts", "policy", id, "--models", "all", "--data-dir", var})
                .second.find(R"("models":[])"),
            std::string::npos);
  EXPECT_EQ(cli({"accounts", "show", "acct_999", "--data-dir", var}).first, std::optional<int>(1));

  // Keys rotate with a grace window; the new key serves after a restart.
  const auto [key, key_out] = cli({"keys", "create", "--account", id, "--data-dir", var});
  ASSERT_EQ(key, std::optional<int>(0)) << key_out;
  const std::string key_id = string_field(key_out, "id");
  const auto [rotated, rotated_out] =
      cli({"keys", "rotate", key_id, "--grace-seconds", "60", "--data-dir", var});
  ASSERT_EQ(rotated, std::optional<int>(0)) << rotated_out;
  EXPECT_NE(rotated_out.find("old_key_expires_at"), std::string::npos);
  const std::string secret = string_field(rotated_out, "key");
  const auto [listed, listed_out] = cli({"accounts", "list", "--data-dir", var});
  EXPECT_NE(listed_out.find("\"id\":\"" + id + "\""), std::string::npos) << listed_out;
  const auto [shown, shown_out] = cli({"accounts", "show", id, "--data-dir", var});
  EXPECT_NE(shown_out.find("\"keys\":[{"), std::string::npos) << shown_out;
  // A key with a lifetime, and the account's keys listed by their last 4 characters.
  const auto [expiring, expiring_out] =
      cli({"keys", "create", "--account", id, "--expires-in", "3600", "--data-dir", var});
  ASSERT_EQ(expiring, std::optional<int>(0)) << expiring_out;
  EXPECT_NE(expiring_out.find("\"account\":\"" + id + "\""), std::string::npos) << expiring_out;
  const std::string expiring_key = string_field(expiring_out, "key");
  const auto [keys, keys_out] = cli({"keys", "list", "--account", id, "--data-dir", var});
  ASSERT_EQ(keys, std::optional<int>(0)) << keys_out;
  EXPECT_TRUE(keys_out.starts_with(R"({"data":[{"id":"key_)")) << keys_out;
  EXPECT_EQ(keys_out.find(expiring_key), std::string::npos);  // never the key itself
  EXPECT_NE(keys_out.find(expiring_key.substr(expiring_key.size() - 4)), std::string::npos);
  EXPECT_NE(keys_out.find(R"("expires_at":"20)"), std::string::npos) << keys_out;
  EXPECT_NE(cli({"keys", "create", "--account", id, "--expires-in", "0", "--data-dir", var}).first,
            std::optional<int>(0));
  EXPECT_EQ(cli({"keys", "list", "--account", "acct_999", "--data-dir", var}).first,
            std::optional<int>(1));

  ASSERT_TRUE(stack.start_gateway()) << stack.gateway->log();
  const auto live = http_request(stack.port, "GET", "/api/balance", "",
                                 {{"authorization", "Bearer " + secret}});
  EXPECT_EQ(live.status, 200) << live.body;
  EXPECT_NE(live.body.find(R"("paid_usd":"6.00")"), std::string::npos) << live.body;
  // Beside the live gateway: reads work, changes are refused.
  EXPECT_EQ(cli({"accounts", "balance", id, "--data-dir", var}).first, std::optional<int>(0));
  const auto [busy, busy_out] = cli({"accounts", "credit", id, "--amount-usd", "1",
                                     "--idempotency-key", "cli-9", "--data-dir", var});
  EXPECT_EQ(busy, std::optional<int>(1));
  EXPECT_NE(busy_out.find("in use by a running turnpike"), std::string::npos) << busy_out;
  EXPECT_EQ(cli({"ledger", "verify", "--data-dir", var}).first, std::optional<int>(0));
}

// An option given empty is refused, never taken as left out: `turnpike usage --account
// "$ACCT"` with ACCT unset must not print every account's usage. The usage options go to the
// API's query parser, which refuses them in its words (exit 1); the other subcommands' options
// whose defaults differ from an empty value are usage errors (exit 2).
TEST(Cli, AnOptionGivenEmptyIsRefusedNotLeftOut) {
  Stack stack;
  ASSERT_GT(stack.port, 0);
  ASSERT_EQ(http_request(stack.port, "POST", "/v1/chat/completions",
                         R"({"model":"gpt-test","messages":[]})", stack.auth())
                .status,
            200);
  const std::string var = stack.dir.path() + "/var";
  const auto [all, all_out] = cli({"usage", "--data-dir", var, "--limit", "1"});
  ASSERT_EQ(all, std::optional<int>(0)) << all_out;
  ASSERT_NE(all_out.find("\"request_id\""), std::string::npos) << all_out;  // a row to show
  for (const auto& [option, said] : std::vector<std::pair<std::string, std::string>>{
           {"--account", "'account' must be an account id like acct_12"},
           {"--from", "'from' must be an RFC 3339 time"},
           {"--to", "'to' must be an RFC 3339 time"},
           {"--limit", "'limit' must be between 1 and 1000"},
           {"--cursor", "'cursor' must be the next_cursor of an earlier page"}}) {
    std::vector<std::string> args = {"usage", "--data-dir", var, option, ""};
    if (option != "--limit") args.insert(args.end(), {"--limit", "1"});
    const auto [code, out] = cli(args);
    EXPECT_EQ(code, std::optional<int>(1)) << option << ": " << out;
    EXPECT_NE(out.find("turnpike: usage: " + said), std::string::npos) << out;
    EXPECT_EQ(out.find("request_id"), std::string::npos) << out;
  }
  // A `to` alone at the epoch has no `from` to be out of order with; two bounds within one
  // millisecond are an empty range; as over HTTP.
  for (const std::vector<std::string>& bounds :
       {std::vector<std::string>{"--to", "1970-01-01T00:00:00Z"},
        {"--from", "2026-11-30T04:54:24.0005Z", "--to", "2026-11-30T04:54:24.0009Z"}}) {
    std::vector<std::string> args = {"usage", "--data-dir", var};
    args.insert(args.end(), bounds.begin(), bounds.end());
    const auto [code, out] = cli(args);
    EXPECT_EQ(code, std::optional<int>(0)) << out;
    EXPECT_EQ(out, "{\"data\":[],\"next_cursor\":null}\n");
  }

  ASSERT_TRUE(stack.stop_gateway());
  const auto [made, made_out] = cli({"accounts", "create", "--name", "E", "--data-dir", var});
  ASSERT_EQ(made, std::optional<int>(0)) << made_out;
  const std::string id = string_field(made_out, "id");
  for (const auto& [args, option] : std::vector<std::pair<std::vector<std::string>, std::string>>{
           {{"accounts", "create", "--name", "F", "--config", ""}, "--config"},
           {{"accounts", "credit", id, "--amount-usd", "1", "--idempotency-key", "e1",
             "--expires-at", ""},
            "--expires-at"},
           {{"accounts", "refund", id, "--amount-usd", "1", "--idempotency-key", "e2", "--config",
             ""},
            "--config"},
           {{"accounts", "policy", id, "--weights", ""}, "--weights"},
           {{"accounts", "policy", id, "--models", ""}, "--models"},  // not every model
           {{"keys", "create", "--account", id, "--models", ""}, "--models"},
           {{"keys", "create", "--account", id, "--tags", ""}, "--tags"}}) {
    std::vector<std::string> with_dir = args;
    with_dir.insert(with_dir.end(), {"--data-dir", var});
    const auto [code, out] = cli(with_dir);
    EXPECT_EQ(code, std::optional<int>(2))
        << args[0] << " " << args[1] << " " << option << ": " << out;
    EXPECT_NE(out.find(option + ": must not be empty"), std::string::npos) << out;
  }
  // Nothing was changed: one account besides the stack's, no key, no credit.
  EXPECT_EQ(cli({"keys", "list", "--account", id, "--data-dir", var}).second, "{\"data\":[]}\n");
  EXPECT_NE(cli({"accounts", "balance", id, "--data-dir", var}).second.find(R"("paid_usd":"0.00")"),
            std::string::npos);
  // serve's --listen given empty does not fall back to the config's listen.
  Process serve(bin("turnpike"),
                {"serve", "--config", stack.config_path, "--data-dir", var, "--listen", ""},
                stack.gateway_env);
  EXPECT_EQ(serve.wait_exit(10s), std::optional<int>(2));
  EXPECT_NE(serve.log().find("--listen: must not be empty"), std::string::npos) << serve.log();
  // A data directory given empty is no data directory, not the file system's root.
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"ledger", "verify", "--data-dir", ""},
        {"usage", "--data-dir", ""},
        {"accounts", "list", "--data-dir", ""},
        {"keys", "list", "--account", id, "--data-dir", ""}}) {
    const auto [code, out] = cli(args);
    EXPECT_EQ(code, std::optional<int>(2)) << args[0] << ": " << out;
    EXPECT_NE(out.find("--data-dir: must not be empty"), std::string::npos) << out;
  }
}

// Usage errors exit 2; CONTRACT's subcommands that are not built yet say so.
TEST(Cli, UsageErrorsExitTwoAndUnbuiltSubcommandsSaySo) {
  const auto [bogus, bogus_out] = cli({"ledger", "verify", "--bogus"});
  EXPECT_EQ(bogus, std::optional<int>(2)) << bogus_out;
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"mcp", "--config", "x.yaml"}, {"audit", "verify"},
        {"config", "sign", "x.yaml"}}) {
    const auto [code, out] = cli(args);
    EXPECT_EQ(code, std::optional<int>(2)) << out;
    EXPECT_NE(out.find("is not built yet"), std::string::npos) << out;
  }
  // A mistyped command is named, at the level it was mistyped at.
  const auto [typo, typo_out] = cli({"ledger", "verfy"});
  EXPECT_EQ(typo, std::optional<int>(2));
  EXPECT_NE(typo_out.find("unknown command 'verfy'; see turnpike ledger --help"), std::string::npos)
      << typo_out;
  EXPECT_NE(cli({"frob"}).second.find("unknown command 'frob'"), std::string::npos);
  // Every other usage error is one line naming the command and where its help is.
  const auto [threads, threads_out] = cli({"serve", "--threads", "abc"});
  EXPECT_EQ(threads, std::optional<int>(2));
  EXPECT_EQ(threads_out,
            "turnpike serve: --threads: must be a whole number, got 'abc'; see turnpike serve "
            "--help\n");
  const auto [bare, bare_out] = cli({"ledger"});
  EXPECT_EQ(bare, std::optional<int>(2));
  EXPECT_NE(bare_out.find("turnpike ledger: A subcommand is required; see turnpike ledger --help"),
            std::string::npos)
      << bare_out;
}

// An admin key short enough to guess is warned of at start, by its length only.
TEST(Cli, AShortAdminKeyIsWarnedOf) {
  TempDir dir;
  const std::string config =
      one_route_config(dir, "listen: \"127.0.0.1:0\"\n", "base_url: \"http://127.0.0.1:1/v1\"");
  Process gateway(bin("turnpike"), {"serve", "--config", config, "--data-dir", dir.path() + "/var"},
                  {{"TURNPIKE_ADMIN_KEY", "hunter2"}});
  ASSERT_GT(gateway.wait_listening(), 0) << gateway.log();
  const std::string log = gateway.log();
  EXPECT_NE(log.find(R"("msg":"TURNPIKE_ADMIN_KEY is short)"), std::string::npos) << log;
  EXPECT_NE(log.find(R"("length":7)"), std::string::npos) << log;
  EXPECT_EQ(log.find("hunter2"), std::string::npos) << log;
}

// check-config refuses what serve would refuse at start-up, trust stores included.
TEST(Cli, CheckConfigLoadsTheTrustStoresServeWould) {
  TempDir dir;
  const std::string config = one_route_config(
      dir, "", "base_url: \"https://127.0.0.1:1/v1\", ca_file: " + dir.path() + "/missing.pem");
  const auto [code, out] = cli({"check-config", config});
  EXPECT_EQ(code, std::optional<int>(2)) << out;
  EXPECT_NE(out.find("provider 'a': TLS trust store " + dir.path() + "/missing.pem"),
            std::string::npos)
      << out;
  // A store this build cannot open, as serve would refuse it.
  const std::string postgres = dir.write(
      "p.yaml", "store: \"postgres://127.0.0.1/turnpike\"\nproviders:\n  - { name: a, "
                "base_url: \"http://127.0.0.1:1/v1\" }\nmodels:\n  - name: m\n    routes: "
                "[{provider: a, input_per_mtok: \"1\", output_per_mtok: \"1\"}]\n");
  const auto [pg_code, pg_out] = cli({"check-config", postgres});
  EXPECT_EQ(pg_code, std::optional<int>(2)) << pg_out;
  EXPECT_NE(pg_out.find("only the embedded sqlite: store"), std::string::npos) << pg_out;
}

TEST(Cli, HelpDescribesServe) {
  Process p(bin("turnpike"), {"serve", "--help"});
  EXPECT_EQ(p.wait_exit(5s), std::optional<int>(0));
  EXPECT_NE(p.log().find("--config"), std::string::npos);
  Process sim(bin("turnpike-sim"), {"--help"});
  EXPECT_EQ(sim.wait_exit(5s), std::optional<int>(0));
  EXPECT_NE(sim.log().find("--ttft-ms"), std::string::npos);
  // The version, as a subcommand and as the flag most tools take.
  for (const char* how : {"version", "--version"}) {
    Process v(bin("turnpike"), {how});
    EXPECT_EQ(v.wait_exit(5s), std::optional<int>(0)) << how;
    EXPECT_TRUE(v.log().starts_with("turnpike 0.")) << how << ": " << v.log();
  }
}

}  // namespace
}  // namespace tp::test
