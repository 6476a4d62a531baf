#include "http/server.h"

#include <fmt/format.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/buffer_traits.hpp>
#include <boost/beast/core/buffers_suffix.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/status.hpp>
#include <boost/intrusive/list.hpp>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>

#include "core/log.h"

namespace tp::http {
namespace bhttp = beast::http;
using tcp = asio::ip::tcp;
using std::chrono::milliseconds;

// ---------------------------------------------------------------------------------------
// Responder

// A watch on a client and its pending wait: `socket` and `deadline` (the connection's) are
// used only while `active`, which the Responder clears before either can go.
struct ClientWatch {
  Socket* socket;
  Deadline* deadline;
  bool active = true;
  bool gone = false;
  std::function<void()> on_gone;
};

namespace {

// The signals the server acts on: SIGTERM and SIGINT drain, SIGHUP reloads.
sigset_t served_signals() {
  sigset_t set;
  sigemptyset(&set);
  for (const int signo : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&set, signo);
  return set;
}

// After a drain's time is up and every wait is cut, how long requests still running get to
// end through their failure paths (settling what they relayed) before the loop stops.
constexpr std::chrono::milliseconds kDrainCutGrace{2000};

// TCP_NOTSENT_LOWAT of client sockets (see serve_connection).
constexpr int kUnsentBytesMax = 256 * 1024;

// Whether the client has closed or reset its connection: its TCP state has left
// ESTABLISHED (CLOSE_WAIT after its FIN, CLOSE after a reset), whatever bytes it sent
// before still wait unread.
bool departed(int fd) {
  tcp_info info{};
  socklen_t size = sizeof info;
  if (::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &size) != 0) return true;
  return info.tcpi_state != TCP_ESTABLISHED;
}

void mark_gone(ClientWatch& w) {
  w.gone = true;
  if (std::function<void()> on_gone = std::exchange(w.on_gone, nullptr)) on_gone();
}

// With bytes of a next request waiting unread the socket stays readable, so readiness
// says nothing more: the connection's state is looked at on every deadline tick instead.
void poll_departure(const std::shared_ptr<ClientWatch>& w) {
  if (!w->active) return;
  if (departed(w->socket->native_handle())) {
    mark_gone(*w);
    return;
  }
  w->deadline->call_at(Deadline::Clock::now() + kDeadlineTick, [w] { poll_departure(w); });
}

// Waits until the client's socket is readable: the client left, or sent more (a pipelined
// request, a stray CRLF), which the polling then looks past; a spurious wake waits again.
void await_departure(const std::shared_ptr<ClientWatch>& w) {
  w->socket->async_wait(Socket::wait_read, [w](const boost::system::error_code& ec) {
    if (!w->active) return;
    // Cancelled while the response goes on (its socket's deadline passed): watch on. The
    // socket is still open, since the Responder clears `active` before it can close.
    if (ec == asio::error::operation_aborted) {
      await_departure(w);
      return;
    }
    const int fd = w->socket->native_handle();
    if (departed(fd)) {
      mark_gone(*w);
      return;
    }
    char byte = 0;
    const ssize_t n = ::recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n > 0) {
      poll_departure(w);
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
      await_departure(w);
    } else {
      mark_gone(*w);  // its end, or an error, whatever the state said a moment ago
    }
  });
}

}  // namespace

void Responder::watch_client(std::function<void()> on_gone) {
  if (watch_) watch_->active = false;
  watch_ = std::make_shared<ClientWatch>(
      ClientWatch{&socket_, &deadline_, true, false, std::move(on_gone)});
  deadline_.call_at(Deadline::Clock::now() + kClientWatchAfter, [w = watch_] {
    if (w->active) await_departure(w);
  });
}

bool Responder::client_gone() const { return watch_ && watch_->gone; }

void Responder::abandon() {
  TP_ASSERT(!started_);
  started_ = true;
  failed_ = true;
  status_ = 499;
}

Responder::~Responder() {
  if (watch_) {
    watch_->active = false;
    watch_->on_gone = nullptr;
    deadline_.cancel_call();
  }
}

Responder::Responder(Socket& socket, Deadline& deadline, const ServerLimits& limits,
                     ResponseScratch& scratch, unsigned http_version, bool keep_alive)
    : socket_(socket),
      deadline_(deadline),
      limits_(limits),
      http_version_(http_version),
      keep_alive_(keep_alive),
      common_headers_(scratch.headers),
      head_(scratch.head) {
  common_headers_.clear();
  head_.clear();
}

void Responder::add_header(std::string_view name, std::string_view value) {
  common_headers_.push_back({name, value});
}

std::string_view Responder::added_header(std::string_view name) const {
  for (const Header& h : common_headers_) {
    if (iequals(h.name, name)) return h.value;
  }
  return {};
}

void Responder::append_head(unsigned status, std::string_view content_type,
                            std::span<const Header> headers) {
  status_ = status;
  head_.clear();
  head_ += http_version_ == 10 ? "HTTP/1.0 " : "HTTP/1.1 ";
  char code[8];
  head_.append(code, std::to_chars(code, code + sizeof code, status).ptr);
  head_ += ' ';
  // Beast knows no reason for a status outside its table (Anthropic's 529) and would say
  // "<unknown-status>"; the reason phrase means nothing to clients (RFC 9112 §4).
  const auto known = bhttp::obsolete_reason(static_cast<bhttp::status>(status));
  const std::string_view reason =
      status == 529 ? std::string_view("Overloaded") : std::string_view(known.data(), known.size());
  head_ += reason.starts_with('<') ? std::string_view() : reason;
  head_ += "\r\n";
  if (!content_type.empty()) {
    head_ += "Content-Type: ";
    head_ += content_type;
    head_ += "\r\n";
  }
  for (const std::span<const Header> list : {std::span<const Header>(common_headers_), headers}) {
    for (const Header& h : list) {
      // Every value is checked where it is made (config names, parsed upstream fields); a
      // line break that got past that would start a header of its own: dropped.
      if (find_line_break(h.name) != std::string_view::npos ||
          find_line_break(h.value) != std::string_view::npos) {
        continue;
      }
      head_ += h.name;
      head_ += ": ";
      head_ += h.value;
      head_ += "\r\n";
    }
  }
  if (!keep_alive_) {
    head_ += "Connection: close\r\n";
  } else if (http_version_ == 10) {
    head_ += "Connection: keep-alive\r\n";
  }
}

std::size_t Responder::write_now(std::span<const asio::const_buffer> buffers) {
  if (failed_) return 0;
  // The socket is non-blocking: most responses go out here, without a trip through the
  // event loop or a coroutine frame.
  boost::system::error_code ec;
  const std::size_t written = socket_.write_some(buffers, ec);
  if (ec && ec != asio::error::would_block && ec != asio::error::try_again) failed_ = true;
  return written;
}

Task<bool> Responder::write_rest(std::span<const asio::const_buffer> buffers,
                                 std::size_t written) {
  beast::buffers_suffix<std::span<const asio::const_buffer>> rest(buffers);
  rest.consume(written);
  // The bytes the socket holds that the client has not acknowledged (-1: unknown).
  const auto unacknowledged = [fd = socket_.native_handle()] {
    int n = -1;
    return ::ioctl(fd, SIOCOUTQ, &n) == 0 ? n : -1;
  };
  int queued = unacknowledged();
  // The timeout is for a client that stalls: each write that makes progress starts it
  // again, so a slow reader of a large answer is not cut while it keeps reading. So does
  // a client that took bytes while no write could go on: the kernel wakes a writer only
  // once half of TCP_NOTSENT_LOWAT has gone, which a slow reader may take longer for.
  boost::system::error_code ec;
  while (!ec && beast::buffer_bytes(rest) > 0) {
    deadline_.expires_after(milliseconds(limits_.write_timeout_ms));
    auto [wec, n] = co_await socket_.async_write_some(rest, use_nothrow);
    rest.consume(n);
    if (wec == asio::error::operation_aborted && deadline_.expired() &&
        !DeadlineTicker::cutting()) {
      const int now = unacknowledged();
      if (now >= 0 && queued >= 0 && now < queued) {
        queued = now;
        continue;
      }
    }
    ec = wec;
    if (n > 0) queued = unacknowledged();
  }
  // Done: left armed, the deadline would cancel the socket later, and with it whatever
  // waits on it then (the client watch).
  deadline_.clear();
  if (ec) failed_ = true;
  co_return !failed_;
}

Task<bool> Responder::send(unsigned status, std::string_view content_type, std::string_view body,
                           std::span<const Header> headers) {
  TP_ASSERT(!started_);
  if (client_gone()) {
    abandon();
    co_return false;
  }
  started_ = true;
  append_head(status, content_type, headers);
  if (status == 204 || status == 304) {
    head_ += "\r\n";  // these carry no body and no Content-Length (RFC 9110 §8.6)
  } else {
    char length[24];
    head_ += "Content-Length: ";
    head_.append(length, std::to_chars(length, length + sizeof length, body.size()).ptr);
    head_ += "\r\n\r\n";
  }
  if (omit_body_) body = {};  // HEAD: the length said, the body not sent (RFC 9110 §9.3.2)
  const std::array<asio::const_buffer, 2> buffers{asio::buffer(head_), asio::buffer(body)};
  finished_ = true;
  const std::size_t written = write_now(buffers);
  if (failed_ || written == head_.size() + body.size()) co_return !failed_;
  co_return co_await write_rest(buffers, written);
}

Task<bool> Responder::begin_stream(unsigned status, std::string_view content_type,
                                   std::span<const Header> headers, bool send_head) {
  TP_ASSERT(!started_);
  if (client_gone()) {
    abandon();
    co_return false;
  }
  started_ = true;
  // HTTP/1.0 has no chunked encoding: the body ends when the connection closes.
  chunked_ = http_version_ != 10;
  if (!chunked_) keep_alive_ = false;
  append_head(status, content_type, headers);
  head_ += chunked_ ? "Transfer-Encoding: chunked\r\nCache-Control: no-cache\r\n\r\n"
                    : "Cache-Control: no-cache\r\n\r\n";
  head_pending_ = true;
  if (!send_head) co_return true;
  co_return co_await write_all({});
}

Task<bool> Responder::write_all(std::span<const asio::const_buffer> body) {
  // The head still pending goes first, in the same write.
  std::array<asio::const_buffer, 5> all;
  std::size_t n = 0;
  std::size_t total = 0;
  if (head_pending_) {
    head_pending_ = false;
    all[n++] = asio::buffer(head_);
  }
  TP_ASSERT(body.size() <= all.size() - n);
  for (const asio::const_buffer& b : body) all[n++] = b;
  for (std::size_t i = 0; i < n; ++i) total += all[i].size();
  const std::span<const asio::const_buffer> buffers(all.data(), n);
  const std::size_t written = write_now(buffers);
  if (failed_ || written == total) co_return !failed_;
  co_return co_await write_rest(buffers, written);
}

Task<bool> Responder::write_chunk(std::string_view data) {
  TP_ASSERT(started_ && !finished_);
  if (data.empty()) co_return !failed_;
  if (!chunked_) {
    const std::array<asio::const_buffer, 1> buffers{asio::buffer(data)};
    co_return co_await write_all(buffers);
  }
  co_return co_await write_framed(data, "\r\n");
}

Task<bool> Responder::end_stream(std::string_view last) {
  TP_ASSERT(started_ && !finished_);
  if (!chunked_) {
    if (!last.empty() && !co_await write_chunk(last)) co_return false;
    finished_ = true;
    if (head_pending_) co_return co_await write_all({});
    co_return !failed_;
  }
  finished_ = true;
  if (last.empty()) {
    const std::array<asio::const_buffer, 1> terminator{asio::buffer("0\r\n\r\n", 5)};
    co_return co_await write_all(terminator);
  }
  // The last chunk and the terminator in one write.
  co_return co_await write_framed(last, "\r\n0\r\n\r\n");
}

Task<bool> Responder::write_framed(std::string_view data, std::string_view trailer) {
  char size_line[24];
  char* end = std::to_chars(size_line, size_line + 16, data.size(), 16).ptr;
  *end++ = '\r';
  *end++ = '\n';
  const std::array<asio::const_buffer, 3> buffers{
      asio::buffer(size_line, static_cast<std::size_t>(end - size_line)), asio::buffer(data),
      asio::buffer(trailer)};
  co_return co_await write_all(buffers);
}

void Responder::close_after() {
  keep_alive_ = false;
  // A head held back for the first chunk goes out anyway (best effort, without waiting):
  // the client learns that the stream started before it is cut.
  if (head_pending_) {
    head_pending_ = false;
    const std::array<asio::const_buffer, 1> buffers{asio::buffer(head_)};
    (void)write_now(buffers);
  }
}

// ---------------------------------------------------------------------------------------
// Server

namespace {

// A connection waiting for its next request, linked into its worker's idle list from its
// own coroutine frame (no allocation per request). Unlinked by that coroutine only, after
// its read completed: a frame destroyed with its io_context leaves the list alone.
struct IdleConnection
    : boost::intrusive::list_base_hook<
          boost::intrusive::link_mode<boost::intrusive::normal_link>> {
  Socket* socket = nullptr;
};

}  // namespace

struct Server::Worker {
  // Everything in this io_context is touched by this worker's thread only, so it runs
  // without locks; other threads reach it through atomics it polls (see watch_drain).
  asio::io_context ioc{BOOST_ASIO_CONCURRENCY_HINT_UNSAFE};
  DeadlineTicker deadlines{ioc};
  Inbox inbox{ioc};
  std::unique_ptr<Acceptor> acceptor;
  std::unique_ptr<Handler> handler;
  std::thread thread;
  // Connections waiting for their next request; closed at once when a drain starts.
  boost::intrusive::list<IdleConnection> idle;
  std::size_t connections = 0;
  // Connections refused at limits.connections_per_thread_max since the last line that said
  // so, and when that line was written: at most one a second.
  std::size_t refused = 0;
  std::chrono::steady_clock::time_point refused_logged{};
  bool refused_line_due = false;  // a line is to say what was refused since (see accept_loop)
  bool draining = false;
  bool cutting = false;  // the drain's time is up: every wait is being cut
  std::chrono::steady_clock::time_point drain_deadline{};

  // Runs ioc on this thread until it stops; `spin` is limits.io_spin_us.
  void run_loop(std::chrono::microseconds spin);
};

Server::Server(ServerLimits limits, HandlerFactory factory)
    : limits_(limits), factory_(std::move(factory)) {}

Server::~Server() {
  // run() joined every thread it started; a server that never ran has none.
  for (auto& w : workers_) TP_CHECK(!w->thread.joinable());
}

Status Server::listen(const std::string& host, std::uint16_t port, int threads) {
  boost::system::error_code ec;
  const auto address = asio::ip::make_address(host, ec);
  if (ec) return {ErrorKind::kInvalidRequest, fmt::format("listen: bad address '{}'", host)};
  // The I/O threads share the port through SO_REUSEPORT, which would just as quietly share
  // it with another process listening there with the same option (another turnpike, a
  // simulator) and split the connections between them. A plain bind first finds any
  // listener already there.
  if (port != 0) {
    const tcp::endpoint endpoint(address, port);
    const int fd = ::socket(endpoint.protocol().family(), SOCK_STREAM | SOCK_CLOEXEC, 0);
    const int one = 1;
    const bool bound =
        fd >= 0 && ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0 &&
        ::bind(fd, endpoint.data(), static_cast<socklen_t>(endpoint.size())) == 0;
    const int error = errno;
    if (fd >= 0) ::close(fd);
    if (!bound) {
      return {ErrorKind::kUnavailable,
              fmt::format("listen on {}:{}: {}", host, port, std::strerror(error))};
    }
  }
  for (int i = 0; i < threads; ++i) {
    auto w = std::make_unique<Worker>();
    auto acceptor = std::make_unique<Acceptor>(w->ioc.get_executor());
    const tcp::endpoint endpoint(address, port);
    acceptor->open(endpoint.protocol(), ec);
    if (!ec) acceptor->set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) {
      const int one = 1;
      if (::setsockopt(acceptor->native_handle(), SOL_SOCKET, SO_REUSEPORT, &one,
                       sizeof one) != 0) {
        ec.assign(errno, boost::system::system_category());
      }
    }
    if (!ec) acceptor->bind(endpoint, ec);
    if (!ec) acceptor->listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
      return {ErrorKind::kUnavailable,
              fmt::format("listen on {}:{}: {}", host, port, ec.message())};
    }
    // Port 0 asks the OS once; the other threads join the same port.
    port = acceptor->local_endpoint().port();
    w->acceptor = std::move(acceptor);
    w->handler = factory_(w->ioc, w->inbox);
    workers_.push_back(std::move(w));
  }
  port_ = port;
  return Status::ok();
}

bool keep_polling(std::size_t active, std::size_t answers_due, std::chrono::nanoseconds quiet,
                  std::chrono::microseconds spin) {
  if (spin.count() == 0 || active > kPollActiveMax) return false;
  return quiet < spin || (answers_due > 0 && quiet < kPollAnswerMax);
}

void Server::Worker::run_loop(std::chrono::microseconds spin) {
  if (spin.count() == 0) {
    ioc.run();
    return;
  }
  auto last_work = std::chrono::steady_clock::now();
  while (!ioc.stopped()) {
    if (ioc.poll() > 0) {
      last_work = std::chrono::steady_clock::now();
      continue;
    }
    if (keep_polling(connections - idle.size(), inbox.expected(),
                     std::chrono::steady_clock::now() - last_work, spin)) {
      sched_yield();
      continue;
    }
    if (ioc.run_one() == 0) break;  // sleeps until something happens
    last_work = std::chrono::steady_clock::now();
  }
}

void Server::run() {
  for (std::size_t i = 0; i < workers_.size(); ++i) {
    auto& w = workers_[i];
    asio::co_spawn(w->ioc.get_executor(), accept_loop(*w), asio::detached);
    asio::co_spawn(w->ioc.get_executor(), watch_drain(*w), asio::detached);
    asio::co_spawn(w->ioc.get_executor(), w->inbox.run(), asio::detached);
    w->thread = std::thread([&w = *w, i, spin = std::chrono::microseconds(limits_.io_spin_us)] {
      const std::string name = "tp-io-" + std::to_string(i);
      pthread_setname_np(pthread_self(), name.c_str());
      w.run_loop(spin);
    });
  }
  asio::signal_set signals(control_, SIGTERM, SIGINT);
  signals.async_wait([this](const boost::system::error_code& ec, int signo) {
    if (ec) return;
    log::info("drain started", {{"signal", signo}});
    drain();
  });
  asio::signal_set hangups(control_);
  std::function<void(const boost::system::error_code&, int)> on_hangup =
      [&](const boost::system::error_code& ec, int) {
        if (ec) return;
        // Threads a reload starts (a resolver, the prober's loop) take the mask they start
        // with: the served signals stay this thread's, whatever happens after run().
        sigset_t served = served_signals();
        pthread_sigmask(SIG_BLOCK, &served, nullptr);
        on_hangup_();
        pthread_sigmask(SIG_UNBLOCK, &served, nullptr);
        // Queued calls run only while the worker's loop runs, when its handler is alive.
        for (auto& w : workers_) {
          w->inbox.post([handler = w->handler.get()] { handler->reloaded(); });
        }
        hangups.async_wait(on_hangup);
      };
  if (on_hangup_) {
    hangups.add(SIGHUP);
    hangups.async_wait(on_hangup);
  }
  for (const Chore& chore : chores_) asio::co_spawn(control_, run_chore(chore), asio::detached);
  // Taken from here by the handlers above, on this thread only (the I/O threads keep the
  // mask they started with); after serving, held again, so that one that comes while the
  // store is flushed waits rather than ends the process.
  sigset_t served = served_signals();
  pthread_sigmask(SIG_UNBLOCK, &served, nullptr);
  control_.run();
  pthread_sigmask(SIG_BLOCK, &served, nullptr);
  // Each worker stops itself once its connections are done or the drain deadline passed.
  for (auto& w : workers_) w->thread.join();
  log::info("drain finished", {{"connections_cut", cut_connections_.load()},
                               {"connections_left", connections_.load()}});
}

void Server::hold_signals() {
  sigset_t served = served_signals();
  pthread_sigmask(SIG_BLOCK, &served, nullptr);
}

void Server::drain() {
  draining_.store(true);
  control_.stop();
}

Task<void> Server::watch_drain(Worker& worker) {
  Timer timer(worker.ioc.get_executor());
  for (;;) {
    timer.expires_after(milliseconds(20));
    co_await timer.async_wait(use_nothrow);
    if (!draining_.load(std::memory_order_relaxed)) continue;
    const auto now = std::chrono::steady_clock::now();
    if (!worker.draining) {
      worker.draining = true;
      worker.drain_deadline = now + milliseconds(limits_.drain_timeout_ms);
      boost::system::error_code ignored;
      worker.acceptor->close(ignored);
      for (IdleConnection& c : worker.idle) c.socket->close(ignored);
    }
    if (worker.connections == 0) {
      worker.ioc.stop();
      co_return;
    }
    if (now >= worker.drain_deadline && !worker.cutting) {
      // Time is up: every socket's waits end now, and what still runs ends through its own
      // failure paths within a short grace (a stream billed for what it relayed, a whole
      // answer voided), while the store still takes settlements.
      worker.cutting = true;
      cut_connections_ += worker.connections;
      DeadlineTicker::cut_everything();
      worker.drain_deadline = now + kDrainCutGrace;
    } else if (now >= worker.drain_deadline) {
      worker.ioc.stop();  // still not done: their frames go with the loop
      co_return;
    }
  }
}

Task<void> Server::run_chore(const Chore& chore) {
  Timer timer(control_.get_executor());
  for (;;) {
    timer.expires_after(chore.period);
    auto [ec] = co_await timer.async_wait(use_nothrow);
    if (ec) co_return;
    chore.run();
  }
}

void Server::log_refused(Worker& worker) {
  log::warn("connections refused: per-thread limit",
            {{"limit", limits_.connections_per_thread_max}, {"refused", worker.refused}});
  worker.refused = 0;
  worker.refused_logged = std::chrono::steady_clock::now();
}

Task<void> Server::log_refused_later(Worker& worker) {
  Timer timer(worker.ioc.get_executor());
  timer.expires_at(worker.refused_logged + std::chrono::seconds(1));
  co_await timer.async_wait(use_nothrow);
  worker.refused_line_due = false;
  if (worker.refused > 0) log_refused(worker);
}

Task<void> Server::accept_loop(Worker& worker) {
  for (;;) {
    auto [ec, socket] = co_await worker.acceptor->async_accept(use_nothrow);
    if (ec) {
      if (ec == asio::error::operation_aborted || worker.draining) co_return;
      // Out of descriptors or similar: log, back off briefly, keep serving.
      log::warn("accept failed", {{"error", ec.message()}});
      Timer backoff(worker.ioc.get_executor(), milliseconds(50));
      co_await backoff.async_wait(use_nothrow);
      continue;
    }
    if (worker.connections >= limits_.connections_per_thread_max) {
      // A client that reconnects in a loop must not fill the log: a line a second at most,
      // with how many were refused since the last.
      ++worker.refused;
      if (std::chrono::steady_clock::now() - worker.refused_logged >= std::chrono::seconds(1)) {
        log_refused(worker);
      } else if (!std::exchange(worker.refused_line_due, true)) {
        // Said a second after the last line, should no refusal come to say it then.
        asio::co_spawn(worker.ioc.get_executor(), log_refused_later(worker), asio::detached);
      }
      continue;  // the socket closes as it leaves scope
    }
    asio::co_spawn(worker.ioc.get_executor(), serve_connection(worker, std::move(socket)),
                   asio::detached);
  }
}

namespace {


// After an error answer sent while the client may still be sending (a body over the limit),
// closing at once would make the kernel reset the connection and the client could lose the
// answer. Instead: stop sending, then read and discard for a bounded time and size.
Task<void> linger(Socket& socket, Deadline& deadline, beast::flat_buffer& buffer) {
  constexpr std::size_t kLingerBytesMax = 64 * 1024 * 1024;
  constexpr milliseconds kLingerTime{2000};
  boost::system::error_code ignored;
  socket.shutdown(tcp::socket::shutdown_send, ignored);
  deadline.expires_after(kLingerTime);
  std::size_t discarded = 0;
  while (discarded < kLingerBytesMax) {
    buffer.clear();
    auto [ec, n] = co_await socket.async_read_some(buffer.prepare(64 * 1024), use_nothrow);
    if (ec) break;
    discarded += n;
  }
}

}  // namespace

// The reading side of one request, as plain steps so the connection's coroutine awaits the
// socket only when more bytes are needed. The idle timer runs until the request's first
// byte, the header timer from the first byte (so a client trickling bytes cannot hold the
// connection), the body timer after the head.
class RequestReader {
 public:
  enum class Step { kDone, kNeedMore, kSendContinue, kError };

  RequestReader(const ServerLimits& limits, Deadline& deadline, Request& req)
      : limits_(limits), deadline_(deadline), req_(req) {
    if (req_.body_.capacity() > kKeptBufferBytes) {
      std::string().swap(req_.body_);
    } else {
      req_.body_.clear();
    }
    deadline_.expires_after(milliseconds(limits_.idle_timeout_ms));
  }

  // Parses what `buffer` holds. On kError, error_status() and error() say why.
  Step parse(beast::flat_buffer& buffer) {
    if (phase_ == Phase::kBody && !req_.head_.chunked && remaining_ == 0) return Step::kDone;
    if (phase_ == Phase::kIdle) {
      // Empty lines before a request line are ignored (RFC 9112 §2.2), and do not start a
      // request: an idle connection stays idle, with its idle timer, until a request begins.
      std::string_view pending(static_cast<const char*>(buffer.data().data()), buffer.size());
      const std::size_t blank = std::min(pending.find_first_not_of("\r\n"), pending.size());
      buffer.consume(blank);
    }
    if (buffer.size() == 0) return Step::kNeedMore;
    const std::string_view data(static_cast<const char*>(buffer.data().data()), buffer.size());
    if (phase_ == Phase::kIdle) {
      phase_ = Phase::kHeader;
      deadline_.expires_after(milliseconds(limits_.header_timeout_ms));
    }
    if (phase_ == Phase::kHeader) {
      std::size_t head_bytes = 0;
      const ParseStatus status =
          parse_request_head(data, limits_.header_bytes_max, req_.head_, head_bytes);
      if (status == ParseStatus::kIncomplete) return Step::kNeedMore;
      if (status == ParseStatus::kError) {
        const std::string_view error = req_.head_.error;
        return fail(error == kRequestHeadTooLarge          ? 431
                    : error == kUnsupportedTransferCoding ? 501
                    : error == kUnsupportedVersion        ? 505
                                                          : 400,
                    req_.head_.error);
      }
      keep_head(data, head_bytes);
      buffer.consume(head_bytes);
      phase_ = Phase::kBody;
      deadline_.expires_after(milliseconds(limits_.body_timeout_ms));
      const auto& head = req_.head_;
      std::size_t hosts = 0;
      // Credentials: which of two would count is anybody's guess.
      std::size_t authorizations = 0;
      std::size_t api_keys = 0;
      bool coded = false;  // a Content-Encoding other than identity, on any of its lines
      for (const HeaderField& f : head.fields) {
        if (iequals(f.name, "host")) {
          ++hosts;
        } else if (iequals(f.name, "authorization")) {
          ++authorizations;
        } else if (iequals(f.name, "x-api-key")) {
          ++api_keys;
        } else if (iequals(f.name, "content-encoding")) {
          coded |= !f.value.empty() && !iequals(f.value, "identity");  // empty: none
        }
      }
      // HTTP/1.1 requires exactly one Host field (RFC 9112 §3.2).
      if (head.version == 11 && hosts != 1) {
        return fail(400, hosts == 0 ? "missing Host header" : "more than one Host header");
      }
      if (authorizations > 1) return fail(400, "more than one Authorization header");
      if (api_keys > 1) return fail(400, "more than one x-api-key header");
      // Bodies are read as they come: a compressed one would be taken for bad JSON.
      if (coded) return fail(415, "Content-Encoding is not supported: send the body uncompressed");
      // HTTP/1.0 has no chunked framing: its Transfer-Encoding is faulty framing, and the
      // connection cannot go on after it (RFC 9112 §6.1).
      if (head.version == 10 && head.chunked) {
        return fail(400, "Transfer-Encoding in an HTTP/1.0 request");
      }
      if (head.content_length && *head.content_length > limits_.body_bytes_max) {
        return fail(413, "body too large");
      }
      remaining_ = head.content_length.value_or(0);
      // An HTTP/1.0 client cannot take a 100 (RFC 9110 §10.1.1): it just gets the answer.
      if (head.expect_continue && head.version == 11 && (remaining_ > 0 || head.chunked)) {
        return Step::kSendContinue;
      }
      return parse(buffer);
    }
    std::size_t used = 0;
    if (req_.head_.chunked) {
      const ParseStatus status =
          chunked_.decode(data, used, req_.body_, limits_.body_bytes_max);
      buffer.consume(used);
      if (status == ParseStatus::kError) {
        return chunked_.too_large() ? fail(413, "body too large")
                                    : fail(400, "malformed chunked body");
      }
      return status == ParseStatus::kComplete ? Step::kDone : Step::kNeedMore;
    }
    used = static_cast<std::size_t>(std::min<std::uint64_t>(remaining_, data.size()));
    req_.body_.append(data.data(), used);
    buffer.consume(used);
    remaining_ -= used;
    return remaining_ == 0 ? Step::kDone : Step::kNeedMore;
  }

  // Only a connection waiting for its next request may be closed at once by a drain.
  bool idle() const { return phase_ == Phase::kIdle; }
  bool started() const { return phase_ != Phase::kIdle; }
  // After kSendContinue: the request is taken without its body (Handler::wants_body).
  void skip_body() {
    body_skipped_ = true;
    req_.head_.chunked = false;
    remaining_ = 0;
  }
  bool body_skipped() const { return body_skipped_; }
  std::size_t read_size() const { return phase_ == Phase::kBody ? 64 * 1024 : 8 * 1024; }
  unsigned error_status() const { return error_status_; }
  const std::string& error() const { return error_; }
  // The request's target, for an error's shape: once the head is parsed, its target; before
  // (a head too large, malformed or late), whatever the request line in `buffer` names.
  std::string_view target(const beast::flat_buffer& buffer) const {
    if (phase_ == Phase::kBody) return req_.target();
    std::string_view line(static_cast<const char*>(buffer.data().data()), buffer.size());
    line.remove_prefix(std::min(line.find_first_not_of("\r\n"), line.size()));
    const std::size_t begin = line.find(' ');
    if (begin == std::string_view::npos) return "";
    line.remove_prefix(begin + 1);
    return origin_form(line.substr(0, line.find_first_of(" \r\n")));
  }

 private:
  enum class Phase { kIdle, kHeader, kBody };

  Step fail(unsigned status, std::string message) {
    error_status_ = status;
    error_ = std::move(message);
    return Step::kError;
  }

  // Copies the head out of the read buffer (which the body will overwrite) and points the
  // parsed views at the copy.
  void keep_head(std::string_view data, std::size_t head_bytes) {
    req_.head_bytes_.assign(data.data(), head_bytes);
    move_views(req_.head_, data.data(), req_.head_bytes_.data());
  }

  const ServerLimits& limits_;
  Deadline& deadline_;
  Request& req_;
  Phase phase_ = Phase::kIdle;
  std::uint64_t remaining_ = 0;
  bool body_skipped_ = false;
  ChunkedDecoder chunked_;
  unsigned error_status_ = 400;
  std::string error_;
};

Task<void> Server::serve_connection(Worker& worker, Socket socket) {
  ++worker.connections;
  ++connections_;
  boost::system::error_code ignored;
  socket.set_option(tcp::no_delay(true), ignored);
  // At most this much unsent in the socket: a writer waiting on a slow reader is woken each
  // time that much has gone, so its write timeout (a stall) sees the progress. Without it
  // the kernel lets the send buffer grow to megabytes and wakes the writer only once a third
  // of that has drained, which a slow but steady reader may take longer than the timeout for.
  const int unsent_max = kUnsentBytesMax;
  (void)::setsockopt(socket.native_handle(), IPPROTO_TCP, TCP_NOTSENT_LOWAT, &unsent_max,
                     sizeof unsent_max);
  // Responses are first written without waiting (most fit the socket buffer); see Responder.
  socket.non_blocking(true, ignored);
  Deadline deadline(worker.deadlines, socket);
  beast::flat_buffer buffer;

  IdleConnection idle_entry;
  idle_entry.socket = &socket;
  Request req;  // reused: its buffers keep their capacity from request to request
  ResponseScratch scratch;  // likewise, for the responses' heads

  // A drain ends a connection between requests, but answers the first request of one it
  // accepted just before, if its client has sent it already (Connection: close).
  for (bool first = true;; first = false) {
    if (worker.draining && (!first || socket.available(ignored) == 0)) break;
    if (buffer.capacity() > kKeptBufferBytes && buffer.size() <= kKeptBufferBytes) {
      buffer.shrink_to_fit();  // what a pipelined next request sent already stays
    }
    RequestReader reader(limits_, deadline, req);
    RequestReader::Step step;
    boost::system::error_code read_error;
    for (;;) {
      step = reader.parse(buffer);
      if (step == RequestReader::Step::kDone || step == RequestReader::Step::kError) break;
      if (step == RequestReader::Step::kSendContinue) {
        if (!worker.handler->wants_body(req)) {  // refused whatever it sends: not invited
          reader.skip_body();
          continue;
        }
        static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
        co_await asio::async_write(socket, asio::buffer(kContinue), use_nothrow);
        continue;
      }
      const bool waiting = reader.idle();
      if (waiting) worker.idle.push_back(idle_entry);
      auto [ec, n] = co_await socket.async_read_some(buffer.prepare(reader.read_size()),
                                                     use_nothrow);
      if (waiting) worker.idle.erase(worker.idle.iterator_to(idle_entry));
      if (ec) {
        read_error = ec;
        break;
      }
      buffer.commit(n);
    }

    if (read_error || step == RequestReader::Step::kError) {
      const bool timed_out = deadline.expired();
      // Nothing of a next request came: closed between requests, or idle past its time
      // (closed without an answer, which a client sending a request just then would take
      // for that request's).
      if (read_error && !reader.started()) break;
      if (read_error && !timed_out && read_error != asio::error::eof) break;  // went away
      const unsigned status = timed_out ? 408 : read_error ? 400 : reader.error_status();
      const std::string message =
          status == 413
              ? fmt::format("request body exceeds the limit of {} bytes", limits_.body_bytes_max)
          : status == 431 ? fmt::format("request headers exceed the limit of {} bytes",
                                        limits_.header_bytes_max)
          : status == 408 ? std::string("request not received in time")
          : read_error    ? std::string("malformed HTTP request: connection closed mid-request")
          : status == 501 || status == 505 || status == 415
              ? reader.error()
              : fmt::format("malformed HTTP request: {}", reader.error());
      Responder res(socket, deadline, limits_, scratch, 11, /*keep_alive=*/false);
      co_await worker.handler->reject(status, message, reader.target(buffer), res);
      co_await linger(socket, deadline, buffer);
      break;
    }

    deadline.clear();  // the handler's own waits (upstream) have their own timeouts
    Responder res(socket, deadline, limits_, scratch, req.version(),
                  req.keep_alive() && !worker.draining && !reader.body_skipped());
    if (req.method() == "HEAD") res.omit_body();
    co_await worker.handler->handle(req, res);
    if (!res.started()) {
      log::error("handler sent no response", {{"target", req.target()}});
      co_await worker.handler->reject(500, "internal error: no response", req.target(), res);
    }
    if (reader.body_skipped()) {
      // Its client may send the body all the same: read and dropped before the close, so
      // that the answer is not lost to a reset.
      co_await linger(socket, deadline, buffer);
      break;
    }
    if (!res.keep_alive()) break;
  }

  socket.shutdown(tcp::socket::shutdown_send, ignored);
  socket.close(ignored);
  --worker.connections;
  --connections_;
}

}  // namespace tp::http
