#include "integration/harness.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <thread>

namespace tp::test {
namespace fs = std::filesystem;
using namespace std::chrono_literals;

std::string bin(const std::string& name) { return std::string(TURNPIKE_BIN_DIR) + "/" + name; }

std::string string_field(const std::string& json, const std::string& name, std::size_t from) {
  const std::string marker = "\"" + name + "\":\"";
  const std::size_t at = json.find(marker, from);
  if (at == std::string::npos) return {};
  const std::size_t begin = at + marker.size();
  return json.substr(begin, json.find('"', begin) - begin);
}

std::string route_entry(const std::string& routes, const std::string& model,
                        const std::string& provider) {
  const std::string marker = R"({"model":")" + model + R"(","provider":")" + provider + "\"";
  const std::size_t at = routes.find(marker);
  if (at == std::string::npos) return {};
  const std::size_t last = routes.find("\"provider_up\":", at);
  if (last == std::string::npos) return {};
  return routes.substr(at, routes.find_first_of(",}", last + 14) - at);
}

// ---------------------------------------------------------------------------------------

TempDir::TempDir() {
  std::string pattern = (fs::temp_directory_path() / "turnpike-test-XXXXXX").string();
  path_ = ::mkdtemp(pattern.data());
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

std::string TempDir::write(const std::string& name, const std::string& content) const {
  const std::string p = path_ + "/" + name;
  std::ofstream(p) << content;
  return p;
}

// ---------------------------------------------------------------------------------------

Process::Process(const std::string& binary, const std::vector<std::string>& args,
                 const std::map<std::string, std::string>& env) {
  static int counter = 0;
  log_path_ = (fs::temp_directory_path() /
               ("turnpike-proc-" + std::to_string(::getpid()) + "-" + std::to_string(counter++) +
                ".log"))
                  .string();
  pid_ = ::fork();
  if (pid_ == 0) {
    const int fd = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ::dup2(fd, STDERR_FILENO);
    ::dup2(fd, STDOUT_FILENO);
    for (const auto& [k, v] : env) ::setenv(k.c_str(), v.c_str(), 1);
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>(binary.c_str()));
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(binary.c_str(), argv.data());
    ::_exit(127);
  }
}

Process::~Process() {
  if (!exited_ && pid_ > 0) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, &status_, 0);
  }
  std::error_code ec;
  fs::remove(log_path_, ec);
}

std::string Process::log() const {
  std::ifstream in(log_path_);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

int Process::wait_listening(std::chrono::milliseconds timeout) {
  static const std::regex kListening(R"("msg":"listening".*"port":(\d+))");
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < until) {
    std::smatch m;
    const std::string text = log();
    if (std::regex_search(text, m, kListening)) return std::stoi(m[1]);
    if (wait_exit(0ms)) return 0;
    std::this_thread::sleep_for(10ms);
  }
  return 0;
}

void Process::signal(int signo) {
  if (!exited_) ::kill(pid_, signo);
}

std::optional<int> Process::wait_exit(std::chrono::milliseconds timeout) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (exited_) return WIFEXITED(status_) ? WEXITSTATUS(status_) : 128 + WTERMSIG(status_);
    if (::waitpid(pid_, &status_, WNOHANG) == pid_) {
      exited_ = true;
      continue;
    }
    if (std::chrono::steady_clock::now() >= until) return std::nullopt;
    std::this_thread::sleep_for(10ms);
  }
}

// ---------------------------------------------------------------------------------------

std::string HttpResponse::header(const std::string& name) const {
  const auto it = headers.find(name);
  return it == headers.end() ? "" : it->second;
}

HttpResponse http_request(int port, const std::string& method, const std::string& target,
                          const std::string& body, const std::map<std::string, std::string>& headers,
                          std::chrono::milliseconds timeout) {
  namespace asio = boost::asio;
  namespace bhttp = boost::beast::http;
  HttpResponse out;
  asio::io_context ioc;
  asio::ip::tcp::socket socket(ioc);
  boost::system::error_code ec;
  socket.connect({asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port)}, ec);
  if (ec) return out;
  timeval tv{static_cast<time_t>(timeout.count() / 1000),
             static_cast<suseconds_t>((timeout.count() % 1000) * 1000)};
  ::setsockopt(socket.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);

  bhttp::request<bhttp::string_body> req(bhttp::string_to_verb(method), target, 11);
  req.set(bhttp::field::host, "127.0.0.1");
  if (!body.empty()) req.set(bhttp::field::content_type, "application/json");
  for (const auto& [k, v] : headers) req.set(k, v);
  req.body() = body;
  req.prepare_payload();
  bhttp::write(socket, req, ec);
  if (ec) return out;
  boost::beast::flat_buffer buffer;
  bhttp::response_parser<bhttp::string_body> parser;
  parser.body_limit(64 * 1024 * 1024);
  bhttp::read(socket, buffer, parser, ec);
  if (ec) return out;
  auto res = parser.release();
  out.status = res.result_int();
  for (const auto& f : res) {
    std::string name(f.name_string());
    for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    out.headers[name] = std::string(f.value());
  }
  out.body = res.body();
  return out;
}

// ---------------------------------------------------------------------------------------

RawConnection::RawConnection(int port) {
  fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) close();
  const int one = 1;
  if (fd_ >= 0) ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

RawConnection::~RawConnection() { close(); }

std::size_t RawConnection::discard_until_quiet(std::chrono::milliseconds quiet,
                                               std::chrono::milliseconds limit) {
  const auto until = std::chrono::steady_clock::now() + limit;
  std::size_t total = 0;
  std::vector<char> buf(1 << 16);
  while (fd_ >= 0 && std::chrono::steady_clock::now() < until) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(quiet.count())) <= 0) break;
    const ssize_t n = ::recv(fd_, buf.data(), buf.size(), 0);
    if (n <= 0) break;
    total += static_cast<std::size_t>(n);
  }
  return total;
}

void RawConnection::shutdown_write() {
  if (fd_ >= 0) ::shutdown(fd_, SHUT_WR);
}

void RawConnection::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

bool RawConnection::send(const std::string& bytes) {
  if (fd_ < 0) return false;
  return ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size());
}

std::string RawConnection::read_until(const std::string& marker,
                                      std::chrono::milliseconds timeout) {
  std::string got;
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (fd_ >= 0 && got.find(marker) == std::string::npos) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        until - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) break;
    char buf[4096];
    const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n <= 0) break;
    got.append(buf, static_cast<std::size_t>(n));
  }
  return got;
}

std::string RawConnection::read_some(std::size_t max, std::chrono::milliseconds timeout) {
  std::string got(max, '\0');
  pollfd p{fd_, POLLIN, 0};
  if (fd_ < 0 || ::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return {};
  const ssize_t n = ::recv(fd_, got.data(), max, 0);
  got.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
  return got;
}

bool RawConnection::closed_within(std::chrono::milliseconds timeout) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (fd_ >= 0) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        until - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) return false;
    char buf[4096];
    if (::recv(fd_, buf, sizeof buf, 0) <= 0) return true;
  }
  return true;
}

// ---------------------------------------------------------------------------------------

std::string Stack::config_yaml(int sim_port, const std::string& extra) {
  std::ostringstream y;
  y << "listen: \"127.0.0.1:0\"\n"
    << "log: { level: info, access: true }\n"
    << extra << "\n"
    << "providers:\n"
    << "  - name: sim-openai\n    api: openai\n    base_url: \"http://127.0.0.1:" << sim_port
    << "/v1\"\n    api_key_env: TP_TEST_PROVIDER_KEY\n"
    << "  - name: sim-anthropic\n    api: anthropic\n    base_url: \"http://127.0.0.1:" << sim_port
    << "/v1\"\n    api_key_env: TP_TEST_PROVIDER_KEY\n"
    << "  - name: dead\n    api: openai\n    base_url: \"http://127.0.0.1:1/v1\"\n"
    << "models:\n"
    << "  - name: gpt-test\n    max_output_tokens: 1000\n    routes:\n"
    << "      - { provider: sim-openai, upstream_model: gpt-upstream, input_per_mtok: \"0.15\", "
       "output_per_mtok: \"0.60\" }\n"
    << "  - name: embed-test\n    routes:\n"
    << "      - { provider: sim-openai, upstream_model: embed-upstream, input_per_mtok: \"0.02\", "
       "output_per_mtok: \"0\" }\n"
    << "  - name: claude-test\n    routes:\n"
    << "      - { provider: sim-anthropic, upstream_model: claude-upstream, input_per_mtok: \"3\", "
       "output_per_mtok: \"15\" }\n"
    << "  - name: dead-model\n    routes:\n"
    << "      - { provider: dead, input_per_mtok: \"1\", output_per_mtok: \"1\" }\n";
  return y.str();
}

Stack::Stack(const std::string& extra_yaml, const std::vector<std::string>& sim_args,
             const std::map<std::string, std::string>& env) {
  std::vector<std::string> args = {"--listen", "127.0.0.1:0", "--api-key", "sk-provider-secret"};
  args.insert(args.end(), sim_args.begin(), sim_args.end());
  sim = std::make_unique<Process>(bin("turnpike-sim"), args);
  sim_port = sim->wait_listening();
  config_path = dir.write("turnpike.yaml", config_yaml(sim_port, extra_yaml));
  gateway_env = {{"TP_TEST_PROVIDER_KEY", "sk-provider-secret"}, {"TURNPIKE_ADMIN_KEY", kAdminKey}};
  gateway_env.insert(env.begin(), env.end());
  gateway = std::make_unique<Process>(
      bin("turnpike"),
      std::vector<std::string>{"serve", "--config", config_path, "--threads", "2", "--data-dir",
                               dir.path() + "/var"},
      gateway_env);
  port = gateway->wait_listening();
  if (port > 0) key = create_key(port);
}

bool Stack::restart_gateway(int signo) {
  gateway->signal(signo);
  const std::optional<int> exit = gateway->wait_exit(std::chrono::seconds(10));
  if (!exit || (signo == SIGTERM && *exit != 0)) return false;
  return start_gateway();
}

bool Stack::stop_gateway() {
  gateway->signal(SIGTERM);
  return gateway->wait_exit(std::chrono::seconds(10)) == std::optional<int>(0);
}

bool Stack::start_gateway() {
  gateway = std::make_unique<Process>(
      bin("turnpike"),
      std::vector<std::string>{"serve", "--config", config_path, "--threads", "2", "--data-dir",
                               dir.path() + "/var", "--listen",
                               "127.0.0.1:" + std::to_string(port)},
      gateway_env);
  return gateway->wait_listening() == port;
}

std::unique_ptr<Process> start_gateway(const TempDir& dir, const std::string& config,
                                       int threads) {
  return std::make_unique<Process>(
      bin("turnpike"),
      std::vector<std::string>{"serve", "--config", config, "--threads", std::to_string(threads),
                               "--data-dir", dir.path() + "/var"},
      std::map<std::string, std::string>{{"TURNPIKE_ADMIN_KEY", kAdminKey}});
}

TestGateway::TestGateway(const std::string& yaml)
    : process(start_gateway(dir, dir.write("turnpike.yaml", yaml))) {
  port = process->wait_listening();
  if (port > 0) key = create_key(port);
}

std::map<std::string, std::string> TestGateway::auth(
    std::map<std::string, std::string> more) const {
  more["authorization"] = "Bearer " + key;
  return more;
}

std::string create_key(int port, const std::string& body) {
  const std::map<std::string, std::string> admin = {
      {"authorization", std::string("Bearer ") + kAdminKey}};
  const auto account = http_request(port, "POST", "/admin/v1/accounts", R"({"name":"test"})", admin);
  const std::size_t at = account.body.find("\"id\":\"");
  if (account.status != 201 || at == std::string::npos) return "";
  const std::string id = account.body.substr(at + 6, account.body.find('"', at + 6) - at - 6);
  const auto key = http_request(port, "POST", "/admin/v1/accounts/" + id + "/keys", body, admin);
  const std::size_t k = key.body.find("\"key\":\"");
  if (key.status != 201 || k == std::string::npos) return "";
  return key.body.substr(k + 7, key.body.find('"', k + 7) - k - 7);
}

}  // namespace tp::test
