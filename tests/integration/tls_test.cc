// HTTPS upstreams: certificates and host names are verified, SNI is sent.

#include <gtest/gtest.h>

#include <cstdlib>

#include "integration/harness.h"

namespace tp::test {
namespace {

// A CA and a server certificate for "localhost" made with the openssl command.
struct Pki {
  TempDir dir;
  std::string ca, cert, key;
  bool ok = false;
  Pki() {
    const std::string d = dir.path();
    ca = d + "/ca.pem";
    cert = d + "/server.pem";
    key = d + "/server.key";
    const std::string script =
        "cd " + d + " && "
        "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 "
        "  -subj /CN=turnpike-test-ca 2>/dev/null && "
        "openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr "
        "  -subj /CN=localhost 2>/dev/null && "
        "printf 'subjectAltName=DNS:localhost\\n' > ext.cnf && "
        "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
        "  -out server.pem -days 2 -extfile ext.cnf 2>/dev/null";
    ok = std::system(script.c_str()) == 0;
  }
};

std::string tls_config(int port, const std::string& host, const std::string& ca_file) {
  return "listen: \"127.0.0.1:0\"\n"
         "providers:\n"
         "  - name: tls\n    base_url: \"https://" + host + ":" + std::to_string(port) + "/v1\"\n" +
         (ca_file.empty() ? "" : "    ca_file: \"" + ca_file + "\"\n") +
         "models:\n"
         "  - name: m\n    routes: [{provider: tls, input_per_mtok: \"1\", output_per_mtok: \"1\"}]\n";
}

class TlsUpstream : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(pki_.ok) << "openssl could not make test certificates";
    upstream_ = std::make_unique<Process>(
        "/usr/bin/python3",
        std::vector<std::string>{std::string(TURNPIKE_SOURCE_DIR) + "/tests/integration/tls_upstream.py",
                                 pki_.cert, pki_.key});
    port_ = upstream_->wait_listening();
    ASSERT_GT(port_, 0) << upstream_->log();
  }
  HttpResponse through_gateway(const std::string& config) {
    const std::string path = pki_.dir.write("gw.yaml", config);
    Process gw(bin("turnpike"), {"serve", "--config", path, "--data-dir", pki_.dir.path() + "/var"},
               {{"TURNPIKE_ADMIN_KEY", kAdminKey}});
    const int port = gw.wait_listening();
    EXPECT_GT(port, 0) << gw.log();
    const std::string key = create_key(port);
    EXPECT_FALSE(key.empty());
    return http_request(port, "POST", "/v1/chat/completions", R"({"model":"m","messages":[]})",
                        {{"authorization", "Bearer " + key}});
  }
  Pki pki_;
  std::unique_ptr<Process> upstream_;
  int port_ = 0;
};

// A TLS connection goes back to the pool and serves the next request: the server's
// post-handshake messages (session tickets) do not make it look like one that received
// bytes nobody asked for.
TEST_F(TlsUpstream, AConnectionIsReusedForTheNextRequest) {
  const TestGateway gw(tls_config(port_, "localhost", pki_.ca) +
                       "routing: { probe_interval_ms: 0 }\n");
  ASSERT_GT(gw.port, 0) << gw.log();
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(http_request(gw.port, "POST", "/v1/chat/completions",
                           R"({"model":"m","messages":[]})", gw.auth())
                  .status,
              200);
  }
  const std::string log = upstream_->log();
  std::size_t connections = 0;
  for (std::size_t at = log.find("\"connection\""); at != std::string::npos;
       at = log.find("\"connection\"", at + 1)) {
    ++connections;
  }
  EXPECT_EQ(connections, 1u) << log;
}

// Bytes after an answer, in a TLS record of their own, are read by the TLS engine with the
// answer though no request asked for them: the connection is not pooled, or the next
// request (another customer's, maybe) would be given them as its answer.
TEST_F(TlsUpstream, BytesLeftInTheTlsEngineKeepAConnectionOutOfThePool) {
  Process extra("/usr/bin/python3",
                std::vector<std::string>{
                    std::string(TURNPIKE_SOURCE_DIR) + "/tests/integration/tls_upstream.py",
                    pki_.cert, pki_.key, "extra_record"});
  const int extra_port = extra.wait_listening();
  ASSERT_GT(extra_port, 0) << extra.log();
  const TestGateway gw(tls_config(extra_port, "localhost", pki_.ca) +
                       "routing: { probe_interval_ms: 0 }\n");
  ASSERT_GT(gw.port, 0) << gw.log();
  for (int i = 0; i < 3; ++i) {
    const auto res = http_request(gw.port, "POST", "/v1/chat/completions",
                                  R"({"model":"m","messages":[]})", gw.auth());
    EXPECT_EQ(res.status, 200) << res.body;
    EXPECT_NE(res.body.find("over tls"), std::string::npos) << res.body;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // the extra record is in
  }
}

TEST_F(TlsUpstream, TrustedCertificateAndMatchingHostServe) {
  const auto res = through_gateway(tls_config(port_, "localhost", pki_.ca));
  EXPECT_EQ(res.status, 200) << res.body;
  EXPECT_NE(res.body.find("over tls"), std::string::npos);
}

TEST_F(TlsUpstream, UnknownIssuerIsRefused) {
  // Without ca_file only the system store is trusted: the test CA is not in it.
  const auto res = through_gateway(tls_config(port_, "localhost", ""));
  EXPECT_EQ(res.status, 502) << res.body;
  EXPECT_NE(res.body.find("TLS handshake"), std::string::npos) << res.body;
}

TEST_F(TlsUpstream, HostNameMismatchIsRefused) {
  // Same server, reached as 127.0.0.1: the certificate names only localhost.
  const auto res = through_gateway(tls_config(port_, "127.0.0.1", pki_.ca));
  EXPECT_EQ(res.status, 502) << res.body;
}

}  // namespace
}  // namespace tp::test
