#pragma once
// The HTTP/1.1 server: N I/O threads, each with its own io_context and SO_REUSEPORT
// acceptor, so a connection and every request on it live on one thread. Keep-alive and
// pipelined requests are answered in order. Every read has a limit and a timer.
//
// The server knows nothing about LLMs: it parses requests, applies limits and hands each
// request to the Handler of its thread.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <boost/beast/core/flat_buffer.hpp>

#include "core/limits.h"
#include "core/status.h"
#include "http/asio.h"
#include "http/deadline.h"
#include "http/http1.h"
#include "http/inbox.h"

namespace tp::http {

namespace beast = boost::beast;

// One request as read by the server: the head (its views point into storage the request
// owns) and the whole body, de-chunked. Reused for every request on a connection.
// What a connection keeps of its buffers between requests: a larger body's (or read
// buffer's) memory is given back once its request is answered, so an idle kept-alive
// connection holds at most this much, not the largest body it ever carried.
inline constexpr std::size_t kKeptBufferBytes = 64 * 1024;

class Request {
 public:
  std::string_view method() const { return head_.method; }
  std::string_view target() const { return head_.target; }
  unsigned version() const { return head_.version; }
  bool keep_alive() const { return head_.keep_alive(); }
  // The first header named `name` (case-insensitive), or "".
  std::string_view operator[](std::string_view name) const { return head_.header(name); }
  const std::vector<HeaderField>& headers() const { return head_.fields; }
  const std::string& body() const { return body_; }

 private:
  friend class RequestReader;
  std::string head_bytes_;
  RequestHead head_;
  std::string body_;
};

struct Header {
  std::string_view name;
  std::string_view value;
};

// Whether an I/O thread's loop, finding no work, polls again rather than sleeping in epoll.
// At low load (at most kPollActiveMax requests in progress) an answer from another thread
// (a store commit, through the Inbox) or the next request usually follows within
// microseconds, and waking a sleeping thread costs tens of them: the loop polls for `spin`
// (limits.io_spin_us; 0 never) after its last work, and while answers it waits for are due,
// up to kPollAnswerMax (a commit takes longer than the usual spin, and the request waiting
// for it would pay for the wake-up). Busier, it never polls: its requests keep it busy, and
// each empty poll (a system call) would take CPU time from the threads and processes that
// feed it. Between polls the loop yields its core to any other runnable thread (the
// upstream answering this very request may be waiting for it on a small machine).
inline constexpr std::size_t kPollActiveMax = 2;
inline constexpr std::chrono::microseconds kPollAnswerMax{1000};
bool keep_polling(std::size_t active, std::size_t answers_due, std::chrono::nanoseconds quiet,
                  std::chrono::microseconds spin);

struct ServerLimits {
  std::size_t header_bytes_max = limits::kHeaderBytesMax;
  std::size_t body_bytes_max = limits::kBodyBytesMax;
  std::uint32_t header_timeout_ms = limits::kHeaderTimeoutMs;
  std::uint32_t body_timeout_ms = limits::kBodyTimeoutMs;
  std::uint32_t idle_timeout_ms = limits::kIdleTimeoutMs;
  std::uint32_t write_timeout_ms = limits::kWriteTimeoutMs;
  std::uint32_t drain_timeout_ms = limits::kDrainTimeoutMs;
  std::size_t connections_per_thread_max = limits::kConnectionsPerThreadMax;
  // After a burst of work an I/O thread polls this long before it sleeps; 0 never polls.
  std::uint32_t io_spin_us = limits::kIoSpinMicros;

  bool operator==(const ServerLimits&) const = default;
};

// Where a Responder builds its response head, kept by the connection so that its capacity
// carries over from one request to the next (no allocation per response).
struct ResponseScratch {
  std::vector<Header> headers;
  std::string head;
};

// How long a response runs before its client is watched for going away (see
// Responder::watch_client).
inline constexpr std::chrono::milliseconds kClientWatchAfter{100};

struct ClientWatch;

// Writes the one response to one request: either whole (send) or as a chunked stream
// (begin_stream, write_chunk..., end_stream). Every call returns false once the client is
// gone; callers stop writing then. Not thread-safe: it lives on its request's thread.
class Responder {
 public:
  Responder(Socket& socket, Deadline& deadline, const ServerLimits& limits,
            ResponseScratch& scratch, unsigned http_version, bool keep_alive);
  ~Responder();
  Responder(const Responder&) = delete;
  Responder& operator=(const Responder&) = delete;

  // Watches the client while the handler waits on something else (an upstream): once the
  // client has gone (it closed or reset its connection), client_gone() is true and
  // `on_gone` runs, once, on this thread. The watch starts kClientWatchAfter into the
  // response (a short one pays nothing for it) and ends with it. A client that sends
  // more meanwhile (a pipelined request) is taken as staying. A response to a client seen
  // gone is not sent: send and begin_stream return false, the connection closes (a client
  // that only half-closed gets nothing, as from nginx) and the status is 499.
  void watch_client(std::function<void()> on_gone);
  bool client_gone() const;

  // Headers added to whichever response is sent (e.g. x-request-id). Views must outlive
  // the response.
  void add_header(std::string_view name, std::string_view value);
  // The value of a header added so, or "".
  std::string_view added_header(std::string_view name) const;

  Task<bool> send(unsigned status, std::string_view content_type, std::string_view body,
                  std::span<const Header> headers = {});
  // `send_head` false keeps the head back, to go out with the first chunk in one write
  // (when that chunk is already at hand: one segment and one wake-up of the client less).
  Task<bool> begin_stream(unsigned status, std::string_view content_type,
                          std::span<const Header> headers = {}, bool send_head = true);
  Task<bool> write_chunk(std::string_view data);
  // Ends the stream; a non-empty `last` goes out as its last chunk, in the same write as the
  // terminator.
  Task<bool> end_stream(std::string_view last = {});

  bool started() const { return started_; }
  unsigned status() const { return status_; }  // 0 until a response started
  bool finished() const { return finished_; }
  bool failed() const { return failed_; }
  // A stream cut short cannot be followed by another response on the same connection.
  bool keep_alive() const { return keep_alive_ && !failed_ && (!started_ || finished_); }
  // The connection closes after this response (a stream cut short).
  void close_after();
  // The request was HEAD: a whole response goes out with its Content-Length and no body.
  void omit_body() { omit_body_ = true; }

 private:
  // Ends the response without sending anything (its client is gone).
  void abandon();
  void append_head(unsigned status, std::string_view content_type,
                   std::span<const Header> headers);
  // Writes what the socket takes without waiting; sets failed_ on a hard error.
  std::size_t write_now(std::span<const asio::const_buffer> buffers);
  // Waits (with the write timer) until the rest after `written` bytes is out.
  Task<bool> write_rest(std::span<const asio::const_buffer> buffers, std::size_t written);
  // Writes the pending head, if any, then `body` (at most 4 buffers).
  Task<bool> write_all(std::span<const asio::const_buffer> body);
  // Writes `data` as one chunk: its size line, the data, then `trailer` (the chunk's CRLF,
  // and the terminator after it when it is the last).
  Task<bool> write_framed(std::string_view data, std::string_view trailer);

  Socket& socket_;
  Deadline& deadline_;
  const ServerLimits& limits_;
  unsigned http_version_;
  bool keep_alive_;
  unsigned status_ = 0;
  bool chunked_ = false;
  bool started_ = false;
  bool finished_ = false;
  bool omit_body_ = false;
  bool failed_ = false;
  bool head_pending_ = false;  // a stream's head, not written yet
  std::vector<Header>& common_headers_;  // the connection's scratch, emptied
  std::string& head_;                    // likewise
  std::shared_ptr<ClientWatch> watch_;   // shared with its pending wait, if any
};

// One Handler per I/O thread (made by the HandlerFactory on that thread's io_context), so
// it may keep per-thread state such as upstream connection pools without locks. The
// thread's Inbox is how other threads (the store writer) hand results back to it.
class Handler {
 public:
  virtual ~Handler() = default;
  // Must answer through `res` (send or a complete stream) unless the client vanished.
  virtual Task<void> handle(Request& req, Responder& res) = 0;
  // Answers a request the server could not parse or accept (400, 408, 413, 431).
  // `target` is what the request line names, as far as it was read (empty when none was).
  virtual Task<void> reject(unsigned status, std::string_view message, std::string_view target,
                            Responder& res) = 0;
  // After the hangup callback (a config reload), on this handler's thread: a chance to take
  // up what changed now rather than at its next request.
  virtual void reloaded() {}
  // Asked of a request that waits for `100 Continue` before it sends its body (its head is
  // parsed, no body read): false when handle() will refuse it whatever the body says (a
  // missing or unknown key). It is then handled without its body, which is never invited,
  // and its connection closes after the answer.
  virtual bool wants_body(const Request& /*req*/) { return true; }
};
using HandlerFactory = std::function<std::unique_ptr<Handler>(asio::io_context&, Inbox&)>;

class Server {
 public:
  Server(ServerLimits limits, HandlerFactory factory);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds `threads` acceptors to host:port (port 0 picks a free port, shared by all).
  Status listen(const std::string& host, std::uint16_t port, int threads);
  std::uint16_t port() const { return port_; }

  // Serves until SIGTERM/SIGINT or drain(); then stops accepting, lets in-flight requests
  // (streams included) finish within drain_timeout_ms, and returns.
  void run();
  // Starts the drain; callable from any thread.
  void drain();
  // Blocks SIGTERM, SIGINT and SIGHUP in the calling thread (and the threads it starts):
  // call before starting any thread. run() takes them while it serves; before, they wait.
  static void hold_signals();
  // Runs `f` on the thread that called run() at every SIGHUP while it runs.
  void on_hangup(std::function<void()> f) { on_hangup_ = std::move(f); }
  // Runs `f` on the thread that called run() every `period` while it serves (not during a
  // drain).
  void every(std::chrono::milliseconds period, std::function<void()> f) {
    chores_.push_back({period, std::move(f)});
  }

  std::size_t open_connections() const { return connections_.load(); }

 private:
  struct Worker;
  Task<void> accept_loop(Worker& worker);
  // Logs the connections `worker` refused at its limit since the last such line, now, or
  // (log_refused_later) a second after that line.
  void log_refused(Worker& worker);
  Task<void> log_refused_later(Worker& worker);
  Task<void> serve_connection(Worker& worker, Socket socket);
  Task<void> watch_drain(Worker& worker);
  struct Chore;
  Task<void> run_chore(const Chore& chore);

  ServerLimits limits_;
  HandlerFactory factory_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::uint16_t port_ = 0;
  std::atomic<std::size_t> connections_{0};
  std::atomic<std::size_t> cut_connections_{0};  // open when their drain's time was up
  std::atomic<bool> draining_{false};
  asio::io_context control_;
  std::function<void()> on_hangup_;
  struct Chore {
    std::chrono::milliseconds period;
    std::function<void()> run;
  };
  std::vector<Chore> chores_;
};

}  // namespace tp::http
