#pragma once
// Test harness: starts turnpike-sim and turnpike as real processes on free ports (port 0,
// read back from their "listening" log line) and talks HTTP/1.1 to them.

#include <sys/types.h>

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace tp::test {

// A child process with stderr captured to a file. Killed (SIGKILL) on destruction unless
// it already exited.
class Process {
 public:
  Process(const std::string& binary, const std::vector<std::string>& args,
          const std::map<std::string, std::string>& env = {});
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  // Waits for the JSON log line {"msg":"listening",...,"port":N}; returns N or 0 on timeout
  // or exit.
  int wait_listening(std::chrono::milliseconds timeout = std::chrono::seconds(10));
  void signal(int signo);
  // Exit status, or nullopt if still running after `timeout`.
  std::optional<int> wait_exit(std::chrono::milliseconds timeout);
  std::string log() const;
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
  bool exited_ = false;
  int status_ = 0;
  std::string log_path_;
};

// A unique temporary directory, removed on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string write(const std::string& name, const std::string& content) const;

 private:
  std::string path_;
};

struct HttpResponse {
  int status = 0;  // 0: connection failed or closed before a full response
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
  std::string header(const std::string& name) const;
};

// One request on a fresh connection; the body is read whole (chunked decoded).
HttpResponse http_request(int port, const std::string& method, const std::string& target,
                          const std::string& body = {},
                          const std::map<std::string, std::string>& headers = {},
                          std::chrono::milliseconds timeout = std::chrono::seconds(20));

// A raw blocking TCP connection for byte-level tests.
class RawConnection {
 public:
  explicit RawConnection(int port);
  ~RawConnection();
  bool send(const std::string& bytes);
  // Reads until `marker` is seen, the peer closes, or the timeout passes.
  std::string read_until(const std::string& marker, std::chrono::milliseconds timeout);
  // True when the peer closed (read returns 0 or an error) within the timeout.
  bool closed_within(std::chrono::milliseconds timeout);
  // Reads what has come, `max` bytes at most, waiting up to `timeout` for the first;
  // returns them (empty: nothing came, or the peer closed).
  std::string read_some(std::size_t max, std::chrono::milliseconds timeout);
  // Sends FIN but keeps reading (a half-close).
  void shutdown_write();
  // Reads and discards until nothing came for `quiet`, or `limit` passed; returns the bytes.
  std::size_t discard_until_quiet(std::chrono::milliseconds quiet, std::chrono::milliseconds limit);
  void close();

 private:
  int fd_ = -1;
};

std::string bin(const std::string& name);

// The value of the first `"name":"…"` string field in `json` at or after `from` ("" if none).
std::string string_field(const std::string& json, const std::string& name, std::size_t from = 0);

// The entry of GET /admin/v1/routes for this model and provider, as text, up to its last
// field ("provider_up":true|false); "" if there is none.
std::string route_entry(const std::string& routes, const std::string& model,
                        const std::string& provider);

inline constexpr const char* kAdminKey = "test-admin-key";
// `turnpike serve` on `config` with one I/O thread (or `threads`), its data directory
// under `dir` and the test admin key.
std::unique_ptr<Process> start_gateway(const TempDir& dir, const std::string& config,
                                       int threads = 1);
// Creates an account and an API key through the admin API; returns the key ("" on failure).
std::string create_key(int port, const std::string& body = "{}");

// `turnpike serve` on the whole config `yaml` (in a directory of its own, one I/O thread),
// and a key of a new account. `port` is 0 when it did not start (its log says why).
struct TestGateway {
  explicit TestGateway(const std::string& yaml);
  // The key as a bearer token, with `more` headers.
  std::map<std::string, std::string> auth(std::map<std::string, std::string> more = {}) const;
  std::string log() const { return process->log(); }

  TempDir dir;
  std::unique_ptr<Process> process;
  int port = 0;
  std::string key;
};

// turnpike-sim plus turnpike with a config pointing at it.
struct Stack {
  explicit Stack(const std::string& extra_yaml = {}, const std::vector<std::string>& sim_args = {},
                 const std::map<std::string, std::string>& env = {});
  TempDir dir;
  std::unique_ptr<Process> sim;
  int sim_port = 0;
  std::unique_ptr<Process> gateway;
  int port = 0;
  std::string key;  // a working customer API key
  std::map<std::string, std::string> auth() const { return {{"authorization", "Bearer " + key}}; }
  static std::string config_yaml(int sim_port, const std::string& extra);
  // Stops the gateway and starts it again on the same data directory and port. SIGTERM
  // must drain and exit 0; SIGKILL is a crash.
  bool restart_gateway(int signo = 15);
  // The two halves of a restart: stop (SIGTERM, exit 0 expected) and start again on the
  // same data directory and port.
  bool stop_gateway();
  bool start_gateway();
  std::string config_path;
  std::map<std::string, std::string> gateway_env;
};

}  // namespace tp::test
