#pragma once
// The upstream HTTP client: per-thread keep-alive pools, one per endpoint, over plain TCP or
// TLS (certificate and host name verified, SNI set, system CA store or a given CA file).
//
// A request is written whole (head + body) and answered by an UpstreamResponse whose body
// is read piece by piece, so streams are relayed as they arrive. A pooled connection that
// turns out stale is replaced transparently; a connection that fails before any response
// byte arrived is retried once on a fresh connection. Timeouts: connect, first byte
// (request written → response headers), idle (between body reads).
//
// Not thread-safe: a pool and its responses live on one I/O thread.

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>


#include "core/limits.h"
#include "core/status.h"
#include "http/asio.h"
#include "http/deadline.h"
#include "http/http1.h"
#include "http/resolve.h"
#include "http/url.h"

namespace boost::asio::ssl {
class context;
}  // namespace boost::asio::ssl

namespace tp::http {

struct UpstreamTimeouts {
  std::uint32_t connect_timeout_ms = limits::kUpstreamConnectTimeoutMs;
  std::uint32_t first_byte_timeout_ms = limits::kUpstreamFirstByteTimeoutMs;
  std::uint32_t idle_timeout_ms = limits::kUpstreamIdleTimeoutMs;
  // The first-byte timeout of a request for a whole (non-stream) answer (the caller picks).
  std::uint32_t answer_timeout_ms = limits::kUpstreamAnswerTimeoutMs;
  // When set, connecting (retries included) ends by then whatever connect_timeout_ms
  // allows, and no retry starts past it: a whole answer's fallback attempt, which must
  // start within the fallback deadline and then has its whole answer timeout.
  std::optional<std::chrono::steady_clock::time_point> start_by;
  // When set, the wait for the response head ends by then too (and connecting, as with
  // start_by): a stream's fallback attempt within the fallback deadline, a flex attempt
  // within start_within.
  std::optional<std::chrono::steady_clock::time_point> head_by;
  // When set, every wait of the exchange (connect, head, body) also ends by `*cutoff`, which
  // the caller may move earlier while it runs (its client went away); it then fails as a
  // timeout.
  std::shared_ptr<const CoarseClock::time_point> cutoff;

  // The earlier of start_by and head_by, if either is set.
  std::optional<std::chrono::steady_clock::time_point> start_limit() const;
  // connect_timeout_ms cut to the time left before start_limit(), first_byte_timeout_ms
  // to the time left before head_by (at least 1 ms each).
  std::chrono::milliseconds connect_wait() const;
  std::chrono::milliseconds head_wait() const;
};

// An upstream server as configured: where it is and how to trust it. Immutable; shared
// by every thread.
struct UpstreamEndpoint {
  std::string name;   // for messages and logs
  Url url;
  std::size_t index;  // slot in each thread's pool table
  std::shared_ptr<asio::ssl::context> tls;  // set when url.tls
  std::shared_ptr<const ResolvedHost> addresses;  // kept fresh by a HostResolver
};

// A TLS client context that verifies certificates against the system store, or against
// `ca_file` when it is not empty.
Result<std::shared_ptr<asio::ssl::context>> make_tls_client_context(const std::string& ca_file);

class UpstreamPool;
class DeadlineTicker;
struct UpstreamConnection;

class UpstreamResponse {
 public:
  ~UpstreamResponse();
  UpstreamResponse(const UpstreamResponse&) = delete;
  UpstreamResponse& operator=(const UpstreamResponse&) = delete;

  unsigned status() const;
  const std::vector<HeaderField>& headers() const;
  // The first header named `name` (case-insensitive), or "".
  std::string_view header(std::string_view name) const;
  bool is_event_stream() const;

  // Waits at most `timeout_ms` until the body's first bytes have arrived, consuming
  // nothing: the first byte of a stream whose headers came before its first token.
  // kUpstreamTimeout when none came in time.
  Task<Status> await_body(std::uint32_t timeout_ms);

  // Later reads wait at most `ms` for more of the body (instead of the idle timeout).
  void set_read_timeout(std::uint32_t ms);

  // The next piece of the body as it arrives; empty once the body is complete.
  // The view is valid until the next call (or the response's end).
  Task<Result<std::string_view>> read_some();
  // The rest of the body, at most `limit` bytes (kUpstreamFailed past it).
  // With `by`, the whole body must have come by then (each wait is cut to the time left),
  // else kUpstreamTimeout: a body dripping in just within the idle timeout is not read for
  // ever.
  Task<Result<std::string>> read_all(
      std::size_t limit = limits::kUpstreamResponseBytesMax,
      std::optional<std::chrono::steady_clock::time_point> by = std::nullopt);
  bool done() const;
  // Whether its connection may go back to the pool once the body is read to its end (the
  // body is framed and the server keeps the connection alive).
  bool poolable() const;
  // Whether body bytes are already buffered: the next read_some may need no I/O.
  bool body_buffered() const;

  // Destroying the response returns the connection to its pool when the body was read to
  // the end and the server allows keep-alive; otherwise the connection is closed, which also
  // cancels the upstream request (used when the client went away).

 private:
  friend class UpstreamPool;
  struct Impl;
  explicit UpstreamResponse(std::unique_ptr<Impl> impl);
  // One parse step over bytes already buffered, without I/O. kError sets `error`.
  enum class BodyStep { kData, kNeedMore, kDone, kError };
  BodyStep parse_buffered(std::string_view& out, std::string& error);
  // Accounts for one socket read: commits the bytes, or ends or fails the body.
  Status after_read(boost::system::error_code ec, std::size_t n);
  std::unique_ptr<Impl> impl_;
};

// Counters of one pool, read by tests and metrics.
struct UpstreamPoolStats {
  std::uint64_t connects = 0;
  std::uint64_t reuses = 0;
  std::uint64_t stale_retries = 0;
  std::uint64_t fresh_retries = 0;
  std::uint64_t moved = 0;  // idle connections let go: their address was no longer the host's
};

class UpstreamPool {
 public:
  // Keeps at most `idle_max` idle connections per endpoint; more are closed when their
  // response ends, so a pool smaller than the concurrency churns connections.
  // An idle connection is let go after `pooled_idle`, while the pool is used or not.
  UpstreamPool(asio::io_context& ioc, std::size_t endpoints,
               std::size_t idle_max = limits::kUpstreamIdleConnectionsMax,
               std::chrono::milliseconds pooled_idle =
                   std::chrono::milliseconds(limits::kUpstreamPooledIdleMs));
  ~UpstreamPool();

  // Sends one request and reads the response headers. `head` is the full request head
  // (request line and headers, ending in an empty line); `body` follows it.
  // Errors: kUpstreamFailed (refused, reset, TLS, malformed), kUpstreamTimeout.
  // `resend`: whether a request the server closed on at once, without a byte of answer, is
  // sent again (once, on a fresh connection); a caller that counts its own attempts of a
  // request that must not arrive twice (a webhook) says no.
  Task<Result<std::unique_ptr<UpstreamResponse>>> send(const UpstreamEndpoint& endpoint,
                                                       std::string_view head, std::string_view body,
                                                       const UpstreamTimeouts& timeouts,
                                                       bool resend = true);

  const UpstreamPoolStats& stats() const { return stats_; }
  std::size_t idle_connections(std::size_t endpoint_index) const;

 private:
  friend class UpstreamResponse;
  Task<Result<std::unique_ptr<UpstreamConnection>>> connect(const UpstreamEndpoint& endpoint,
                                                            const UpstreamTimeouts& timeouts);
  std::unique_ptr<UpstreamConnection> take_idle(const UpstreamEndpoint& ep);
  void give_back(std::unique_ptr<UpstreamConnection> conn);
  // Lets idle connections past `pooled_idle_` go while nothing else comes to the pool
  // (its traffic stopped): left, those a server closed would stay in CLOSE-WAIT. Armed
  // while any connection is idle, for when the oldest (idle since `idle_since`) is due.
  void arm_sweep(std::chrono::steady_clock::time_point idle_since);
  void sweep();

  asio::io_context& ioc_;
  std::shared_ptr<const int> alive_ = std::make_shared<const int>(0);  // see Impl::pool_alive
  std::unique_ptr<DeadlineTicker> deadlines_;  // outlives every connection below
  std::vector<std::vector<std::unique_ptr<UpstreamConnection>>> idle_;
  std::size_t idle_max_;
  std::chrono::milliseconds pooled_idle_;
  Timer sweep_timer_;
  bool sweep_armed_ = false;
  UpstreamPoolStats stats_;
};

}  // namespace tp::http
