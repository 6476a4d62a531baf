#include "http/upstream.h"

#include <fmt/format.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/buffer_traits.hpp>
#include <boost/beast/core/buffers_suffix.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <limits>
#include <optional>

#include "core/log.h"
#include "http/deadline.h"

namespace tp::http {
namespace beast = boost::beast;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using std::chrono::milliseconds;
using SteadyTime = std::chrono::steady_clock::time_point;

namespace {

// "ADDRESS:PORT" ("[ADDRESS]:PORT" for IPv6), for debug lines.
std::string endpoint_text(const tcp::endpoint& e) {
  const std::string address = e.address().to_string();
  return e.address().is_v6() ? fmt::format("[{}]:{}", address, e.port())
                             : fmt::format("{}:{}", address, e.port());
}

}  // namespace

struct UpstreamConnection {
  std::size_t endpoint_index = 0;
  // The address it connected to, and the host's address generation it was last found
  // among (see take_idle).
  asio::ip::tcp::endpoint remote;
  std::uint64_t address_generation = 0;
  std::optional<Socket> tcp;
  std::optional<ssl::stream<Socket>> tls;
  std::optional<Deadline> deadline;  // bound to the socket below either stream
  beast::flat_buffer buffer;
  SteadyTime idle_since{};
  // De-chunked body bytes; kept with the connection so a request allocates nothing for it.
  std::string decoded;

  Socket& lowest() { return tls ? tls->next_layer() : *tcp; }

  // Runs `op` on whichever stream this connection has; both branches yield the same type.
  template <typename Op>
  auto with_stream(Op&& op) {
    return tls ? op(*tls) : op(*tcp);
  }

  // The awaitable for one read into `buffer`. A plain function, not a coroutine, so the
  // hot loops that await it allocate no frame for it.
  auto read_more() {
    return with_stream([this](auto& stream) {
      return stream.async_read_some(buffer.prepare(limits::kUpstreamReadChunkBytes),
                                    use_nothrow);
    });
  }
};

namespace {

Status upstream_error(const UpstreamEndpoint& ep, std::string_view what,
                      const boost::system::error_code& ec, bool timeout) {
  return {timeout ? ErrorKind::kUpstreamTimeout : ErrorKind::kUpstreamFailed,
          fmt::format("upstream '{}' {}: {}", ep.name, what,
                      timeout ? std::string("timed out") : ec.message())};
}

Status past_start_limit(const UpstreamEndpoint& ep) {
  return {ErrorKind::kUpstreamTimeout,
          fmt::format("upstream '{}': no attempt starts past the time left", ep.name)};
}

// `ms`, cut to the time left before `by` (at least 1 ms).
milliseconds cut_to(std::uint32_t ms, const std::optional<SteadyTime>& by) {
  const milliseconds own(ms);
  if (!by) return own;
  const auto left = std::chrono::ceil<milliseconds>(*by - std::chrono::steady_clock::now());
  return std::clamp(left, milliseconds(1), own);
}

Status malformed(const UpstreamEndpoint& ep, std::string_view what) {
  return {ErrorKind::kUpstreamFailed, fmt::format("upstream '{}' sent a malformed response: {}",
                                                  ep.name, what)};
}

}  // namespace

Result<std::shared_ptr<ssl::context>> make_tls_client_context(const std::string& ca_file) {
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_client);
  boost::system::error_code ec;
  ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                       ssl::context::no_sslv3 | ssl::context::no_tlsv1 |
                       ssl::context::no_tlsv1_1,
                   ec);
  ctx->set_verify_mode(ssl::verify_peer, ec);
  if (ca_file.empty()) {
    ctx->set_default_verify_paths(ec);
  } else {
    ctx->load_verify_file(ca_file, ec);
  }
  if (ec) {
    return Status{ErrorKind::kInvalidRequest,
                  fmt::format("TLS trust store{}: {}", ca_file.empty() ? "" : " " + ca_file,
                              ec.message())};
  }
  return ctx;
}

// ---------------------------------------------------------------------------------------
// UpstreamResponse

struct UpstreamResponse::Impl {
  enum class Framing { kNone, kLength, kChunked, kClose };

  UpstreamPool* pool = nullptr;
  // Expired once the pool is gone: a response whose coroutine frame outlived its pool (an
  // I/O loop stopped with requests still running) closes its connection instead.
  std::weak_ptr<const int> pool_alive;
  const UpstreamEndpoint* endpoint = nullptr;
  std::unique_ptr<UpstreamConnection> conn;
  UpstreamTimeouts timeouts;
  std::string head_bytes;  // the head, copied out of the read buffer
  ResponseHead head;       // views into head_bytes
  Framing framing = Framing::kNone;
  std::uint64_t remaining = 0;     // kLength: body bytes still to come
  ChunkedDecoder chunked;
  std::size_t pending_consume = 0;  // bytes of conn->buffer handed out by the last step
  bool done = false;

  // Takes the parsed head (and its first `head_bytes` bytes of the buffer) and decides how
  // the body is delimited (RFC 9112 §6.3).
  void take_head(std::size_t n) {
    const char* from = static_cast<const char*>(conn->buffer.data().data());
    head_bytes.assign(from, n);
    move_views(head, from, head_bytes.data());
    conn->buffer.consume(n);
    if (head.status / 100 == 1 || head.status == 204 || head.status == 304) {
      framing = Framing::kNone;
    } else if (head.chunked) {
      framing = Framing::kChunked;
    } else if (head.content_length) {
      framing = Framing::kLength;
      remaining = *head.content_length;
    } else {
      framing = Framing::kClose;
    }
    done = framing == Framing::kNone || (framing == Framing::kLength && remaining == 0);
  }
};

UpstreamResponse::UpstreamResponse(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

UpstreamResponse::~UpstreamResponse() {
  if (!impl_ || !impl_->conn) return;
  if (impl_->done && poolable()) {
    impl_->conn->buffer.consume(impl_->pending_consume);
    impl_->pool->give_back(std::move(impl_->conn));
  }
}

unsigned UpstreamResponse::status() const { return impl_->head.status; }

const std::vector<HeaderField>& UpstreamResponse::headers() const { return impl_->head.fields; }

std::string_view UpstreamResponse::header(std::string_view name) const {
  return impl_->head.header(name);
}

bool UpstreamResponse::is_event_stream() const {
  // The media type, before any parameters; case-insensitive (RFC 9110 §8.3.1).
  std::string_view type = header("content-type");
  type = type.substr(0, type.find(';'));
  while (!type.empty() && (type.back() == ' ' || type.back() == '\t')) type.remove_suffix(1);
  return iequals(type, "text/event-stream");
}

bool UpstreamResponse::done() const { return impl_->done; }

bool UpstreamResponse::poolable() const {
  return impl_->conn != nullptr && impl_->framing != Impl::Framing::kClose &&
         impl_->head.keep_alive() && !impl_->pool_alive.expired();
}

bool UpstreamResponse::body_buffered() const {
  const Impl& r = *impl_;
  return !r.done && r.conn != nullptr && r.conn->buffer.size() > r.pending_consume;
}

UpstreamResponse::BodyStep UpstreamResponse::parse_buffered(std::string_view& out,
                                                            std::string& error) {
  Impl& r = *impl_;
  auto& buffer = r.conn->buffer;
  buffer.consume(r.pending_consume);  // the caller is done with what the last step gave
  r.pending_consume = 0;
  if (r.done) return BodyStep::kDone;
  if (buffer.size() == 0) return BodyStep::kNeedMore;
  const std::string_view data(static_cast<const char*>(buffer.data().data()), buffer.size());
  switch (r.framing) {
    case Impl::Framing::kLength: {
      const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(r.remaining, data.size()));
      out = data.substr(0, n);
      r.pending_consume = n;
      r.remaining -= n;
      r.done = r.remaining == 0;
      return BodyStep::kData;
    }
    case Impl::Framing::kChunked: {
      std::string& decoded = r.conn->decoded;
      decoded.clear();
      std::size_t used = 0;
      // No limit on the whole here: read_all bounds what it gathers, and a stream (read
      // piece by piece) may run as long as it likes; its events are bounded one by one.
      const ParseStatus status =
          r.chunked.decode(data, used, decoded, std::numeric_limits<std::uint64_t>::max());
      buffer.consume(used);
      if (status == ParseStatus::kError) {
        error = "malformed chunked body";
        return BodyStep::kError;
      }
      r.done = status == ParseStatus::kComplete;
      if (decoded.empty()) return r.done ? BodyStep::kDone : BodyStep::kNeedMore;
      out = decoded;
      return BodyStep::kData;
    }
    case Impl::Framing::kClose:
      out = data;
      r.pending_consume = data.size();
      return BodyStep::kData;
    case Impl::Framing::kNone:
      break;
  }
  r.done = true;
  return BodyStep::kDone;
}

Status UpstreamResponse::after_read(boost::system::error_code ec, std::size_t n) {
  Impl& r = *impl_;
  if (ec == asio::error::eof && r.framing == Impl::Framing::kClose) {
    r.done = true;  // a body delimited by the connection's end is complete here
    return Status::ok();
  }
  if (ec) {
    const bool timed_out = r.conn->deadline->expired();
    r.conn.reset();  // never reuse a connection in an unknown state
    return upstream_error(*r.endpoint, "body", ec, timed_out);
  }
  r.conn->buffer.commit(n);
  return Status::ok();
}

void UpstreamResponse::set_read_timeout(std::uint32_t ms) { impl_->timeouts.idle_timeout_ms = ms; }

Task<Status> UpstreamResponse::await_body(std::uint32_t timeout_ms) {
  Impl& r = *impl_;
  if (r.done || r.conn == nullptr || r.conn->buffer.size() > 0) co_return Status::ok();
  r.conn->deadline->expires_after(milliseconds(timeout_ms));
  auto [ec, n] = co_await r.conn->read_more();
  co_return after_read(ec, n);
}

Task<Result<std::string_view>> UpstreamResponse::read_some() {
  for (;;) {
    std::string_view out;
    std::string error;
    switch (parse_buffered(out, error)) {
      case BodyStep::kData: co_return out;
      case BodyStep::kDone: co_return std::string_view{};
      case BodyStep::kError:
        impl_->conn.reset();
        co_return malformed(*impl_->endpoint, error);
      case BodyStep::kNeedMore: break;
    }
    impl_->conn->deadline->expires_after(milliseconds(impl_->timeouts.idle_timeout_ms));
    auto [rec, n] = co_await impl_->conn->read_more();
    if (Status s = after_read(rec, n); !s) co_return s;
  }
}

Task<Result<std::string>> UpstreamResponse::read_all(std::size_t limit,
                                                    std::optional<SteadyTime> by) {
  std::string all;
  for (;;) {
    std::string_view out;
    std::string error;
    switch (parse_buffered(out, error)) {
      case BodyStep::kData:
        if (all.size() + out.size() > limit) {
          impl_->conn.reset();
          co_return Status{ErrorKind::kUpstreamFailed,
                           fmt::format("upstream '{}' response exceeds {} bytes",
                                       impl_->endpoint->name, limit)};
        }
        all.append(out);
        continue;
      case BodyStep::kDone: co_return all;
      case BodyStep::kError:
        impl_->conn.reset();
        co_return malformed(*impl_->endpoint, error);
      case BodyStep::kNeedMore: break;
    }
    auto late = [&] {
      return Status{ErrorKind::kUpstreamTimeout,
                    fmt::format("upstream '{}' did not end its answer in time",
                                impl_->endpoint->name)};
    };
    if (by && std::chrono::steady_clock::now() >= *by) {
      impl_->conn.reset();
      co_return late();
    }
    impl_->conn->deadline->expires_after(cut_to(impl_->timeouts.idle_timeout_ms, by));
    auto [rec, n] = co_await impl_->conn->read_more();
    if (Status s = after_read(rec, n); !s) {
      // Cut at `by` (timers may fire up to a tick early): said as such.
      const bool at_by = by && s.kind() == ErrorKind::kUpstreamTimeout &&
                         std::chrono::steady_clock::now() + kDeadlineTick >= *by;
      co_return at_by ? late() : s;
    }
  }
}

// ---------------------------------------------------------------------------------------
// UpstreamPool

UpstreamPool::UpstreamPool(asio::io_context& ioc, std::size_t endpoints, std::size_t idle_max,
                           std::chrono::milliseconds pooled_idle)
    : ioc_(ioc),
      deadlines_(std::make_unique<DeadlineTicker>(ioc)),
      idle_(endpoints),
      idle_max_(idle_max),
      pooled_idle_(pooled_idle),
      sweep_timer_(ioc.get_executor()) {}

UpstreamPool::~UpstreamPool() = default;

std::size_t UpstreamPool::idle_connections(std::size_t endpoint_index) const {
  return idle_.at(endpoint_index).size();
}

std::unique_ptr<UpstreamConnection> UpstreamPool::take_idle(const UpstreamEndpoint& ep) {
  auto& list = idle_[ep.index];
  const std::uint64_t generation = ep.addresses->generation();
  const auto oldest_allowed = std::chrono::steady_clock::now() - pooled_idle_;
  // Most recently used first: it is the likeliest to still be open.
  while (!list.empty()) {
    std::unique_ptr<UpstreamConnection> conn = std::move(list.back());
    list.pop_back();
    if (conn->idle_since < oldest_allowed) continue;
    // The host's addresses changed since (a provider moved, or failed over by DNS): one no
    // longer among them is let go, or a busy pool would talk to the old address for ever.
    if (conn->address_generation != generation) {
      const std::shared_ptr<const Addresses> now = ep.addresses->addresses();
      if (std::find(now->begin(), now->end(), conn->remote) == now->end()) {
        ++stats_.moved;
        if (log::enabled(log::Level::kDebug)) {
          log::debug("pooled upstream connection let go: its host no longer resolves to it",
                     {{"provider", ep.name}, {"address", endpoint_text(conn->remote)}});
        }
        continue;
      }
      conn->address_generation = generation;
    }
    // Nothing may have come while it sat idle: bytes no request asked for (a second
    // response, a late 408) would be read as the next request's answer, and every answer
    // after it would go to the request after its own. A closed one is let go here too.
    // (Over TLS the server's post-handshake messages, such as session tickets, come before
    // its first answer and are read with it: later bytes are as unasked for.)
    {
      char probe;
      const ssize_t n =
          ::recv(conn->lowest().native_handle(), &probe, 1, MSG_PEEK | MSG_DONTWAIT);
      if (n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
        ++stats_.stale_retries;
        log::debug(n > 0 ? "pooled upstream connection let go: bytes came that nobody asked for"
                         : "pooled upstream connection let go: the upstream closed it",
                   {{"provider", ep.name}});
        continue;
      }
    }
    return conn;
  }
  return nullptr;
}

namespace {

// Lets the connections of `list` (oldest first) that have been idle since before
// `oldest_allowed` go.
void drop_older(std::vector<std::unique_ptr<UpstreamConnection>>& list,
                std::chrono::steady_clock::time_point oldest_allowed) {
  list.erase(list.begin(), std::find_if(list.begin(), list.end(), [&](const auto& idle) {
               return idle->idle_since >= oldest_allowed;
             }));
}

}  // namespace

void UpstreamPool::arm_sweep(std::chrono::steady_clock::time_point idle_since) {
  sweep_armed_ = true;
  sweep_timer_.expires_at(idle_since + pooled_idle_);
  // A wait that was due when the pool went runs all the same, with no error: only `alive`
  // says `this` is gone.
  sweep_timer_.async_wait(
      [this, alive = std::weak_ptr<const int>(alive_)](const boost::system::error_code& ec) {
        if (ec || alive.expired()) return;
        sweep_armed_ = false;
        sweep();
      });
}

void UpstreamPool::sweep() {
  const auto oldest_allowed = std::chrono::steady_clock::now() - pooled_idle_;
  std::optional<std::chrono::steady_clock::time_point> oldest;  // of those left
  for (auto& list : idle_) {
    drop_older(list, oldest_allowed);
    if (!list.empty())
      oldest = std::min(oldest.value_or(list.front()->idle_since), list.front()->idle_since);
  }
  if (oldest) arm_sweep(*oldest);
}

void UpstreamPool::give_back(std::unique_ptr<UpstreamConnection> conn) {
  auto& list = idle_[conn->endpoint_index];
  const auto now = std::chrono::steady_clock::now();
  // The oldest sit at the front, where take_idle (which takes the newest) never looks: let
  // those past their time go here too, or a busy pool that never drains keeps them open.
  drop_older(list, now - pooled_idle_);
  if (list.size() >= idle_max_) return;  // closes it
  conn->idle_since = now;
  conn->deadline->clear();
  conn->deadline->cap_by(nullptr);  // the request that set it is done
  // Bytes past the response's end are no answer to anything: the connection is not
  // reused (they would be read as the next request's). Over TLS they may wait inside the
  // TLS engine too, read from the socket already but not yet taken.
  if (conn->buffer.size() != 0) return;  // closes it
  if (conn->tls) {
    SSL* ssl = conn->tls->native_handle();
    if (SSL_pending(ssl) > 0 || SSL_has_pending(ssl) != 0 ||
        BIO_ctrl_pending(SSL_get_rbio(ssl)) > 0) {
      return;  // closes it
    }
  }
  list.push_back(std::move(conn));
  if (!sweep_armed_) arm_sweep(now);
}

std::optional<SteadyTime> UpstreamTimeouts::start_limit() const {
  if (start_by && head_by) return std::min(*start_by, *head_by);
  return start_by ? start_by : head_by;
}

milliseconds UpstreamTimeouts::connect_wait() const {
  return cut_to(connect_timeout_ms, start_limit());
}

milliseconds UpstreamTimeouts::head_wait() const { return cut_to(first_byte_timeout_ms, head_by); }

Task<Result<std::unique_ptr<UpstreamConnection>>> UpstreamPool::connect(
    const UpstreamEndpoint& ep, const UpstreamTimeouts& timeouts) {
  ++stats_.connects;
  // Read before the list it numbers: a change in between is found at the next reuse.
  const std::uint64_t generation = ep.addresses->generation();
  const std::shared_ptr<const Addresses> addresses = ep.addresses->addresses();
  if (addresses->empty()) {
    co_return Status{ErrorKind::kUpstreamFailed,
                     fmt::format("upstream '{}': cannot resolve host '{}'", ep.name, ep.url.host)};
  }

  auto conn = std::make_unique<UpstreamConnection>();
  conn->endpoint_index = ep.index;
  if (ep.url.tls) {
    conn->tls.emplace(ioc_.get_executor(), *ep.tls);
  } else {
    conn->tcp.emplace(ioc_.get_executor());
  }
  Socket& lowest = conn->lowest();
  conn->deadline.emplace(*deadlines_, lowest);
  conn->deadline->cap_by(timeouts.cutoff);
  // Each address in turn gets an even share of the time left, so that one that drops what
  // is sent to it (an IPv6 route that goes nowhere) leaves time for the next.
  const SteadyTime connect_by = std::chrono::steady_clock::now() + timeouts.connect_wait();
  boost::system::error_code cec = asio::error::timed_out;
  boost::system::error_code ignored;
  for (std::size_t i = 0; i < addresses->size(); ++i) {
    const auto left =
        std::chrono::duration_cast<milliseconds>(connect_by - std::chrono::steady_clock::now());
    if (left <= milliseconds(0)) break;
    conn->deadline->expires_after(left / static_cast<int>(addresses->size() - i));
    lowest.close(ignored);  // the last attempt's; the next opens it for its own family
    auto [ec] = co_await lowest.async_connect((*addresses)[i], use_nothrow);
    cec = ec;
    if (!cec) {
      conn->remote = (*addresses)[i];
      break;
    }
  }
  if (cec) co_return upstream_error(ep, "connect", cec, conn->deadline->expired());
  // The handshake has what is left of the whole connect timeout, not of one address's share.
  conn->deadline->expires_after(std::max(
      milliseconds(1),
      std::chrono::duration_cast<milliseconds>(connect_by - std::chrono::steady_clock::now())));
  conn->address_generation = generation;
  lowest.set_option(tcp::no_delay(true), ignored);
  lowest.non_blocking(true, ignored);  // for write_request's first, unwaited attempt

  if (conn->tls) {
    if (!SSL_set_tlsext_host_name(conn->tls->native_handle(), ep.url.host.c_str())) {
      co_return Status{ErrorKind::kUpstreamFailed,
                       fmt::format("upstream '{}' TLS: cannot set SNI", ep.name)};
    }
    conn->tls->set_verify_callback(ssl::host_name_verification(ep.url.host));
    auto [hec] = co_await conn->tls->async_handshake(ssl::stream_base::client, use_nothrow);
    if (hec) co_return upstream_error(ep, "TLS handshake", hec, conn->deadline->expired());
  }
  if (log::enabled(log::Level::kDebug)) {
    log::debug("upstream connection opened", {{"provider", ep.name},
                                              {"address", endpoint_text(conn->remote)},
                                              {"tls", conn->tls.has_value()}});
  }
  co_return conn;
}

Task<Result<std::unique_ptr<UpstreamResponse>>> UpstreamPool::send(const UpstreamEndpoint& ep,
                                                                   std::string_view head,
                                                                   std::string_view body,
                                                                   const UpstreamTimeouts& timeouts,
                                                                   bool resend) {
  int fresh_retries = 0;  // connections that could not be made
  int resends = 0;        // requests written and closed on without an answer
  for (;;) {
    if (const auto limit = timeouts.start_limit();
        limit && std::chrono::steady_clock::now() >= *limit) {
      co_return past_start_limit(ep);  // no retry starts past it
    }
    // A resend goes on a fresh connection: pooled ones may have died the same way.
    std::unique_ptr<UpstreamConnection> conn = resends == 0 ? take_idle(ep) : nullptr;
    const bool reused = conn != nullptr;
    if (reused) {
      conn->deadline->cap_by(timeouts.cutoff);
      ++stats_.reuses;
    } else {
      auto connected = co_await connect(ep, timeouts);
      if (!connected) {
        if (connected.status().kind() == ErrorKind::kUpstreamFailed &&
            fresh_retries < limits::kUpstreamFreshRetriesMax) {
          ++fresh_retries;
          ++stats_.fresh_retries;
          continue;
        }
        co_return connected.status();
      }
      conn = std::move(connected.value());
    }

    std::unique_ptr<UpstreamResponse::Impl> impl(new UpstreamResponse::Impl);
    impl->pool = this;
    impl->pool_alive = alive_;
    impl->endpoint = &ep;
    impl->timeouts = timeouts;

    conn->deadline->expires_after(timeouts.head_wait());
    // Plain TCP sockets are non-blocking: the request usually goes out in this one call.
    const std::array<asio::const_buffer, 2> request{asio::buffer(head), asio::buffer(body)};
    boost::system::error_code ec;
    std::size_t written = 0;
    if (conn->tcp) {
      written = conn->tcp->write_some(request, ec);
      if (ec == asio::error::would_block || ec == asio::error::try_again) ec = {};
    }
    if (!ec && written < head.size() + body.size()) {
      beast::buffers_suffix<std::array<asio::const_buffer, 2>> rest(request);
      rest.consume(written);
      auto [wec, n] = co_await conn->with_stream(
          [&](auto& stream) { return asio::async_write(stream, rest, use_nothrow); });
      ec = wec;
    }
    // A server may answer before it has read the whole request (413 for a body too large)
    // and close: the write then fails, but its answer may wait to be read. It is looked for
    // (a connection that ends without one fails as before). Not on a pooled connection,
    // where what waits could be an answer to nothing sent while it was idle.
    if (!reused && (ec == asio::error::broken_pipe || ec == asio::error::connection_reset)) {
      ec = {};
    }
    const auto written_at = std::chrono::steady_clock::now();
    // Read until the head is parsed; body bytes that came with it stay buffered. Interim
    // 1xx heads are skipped.
    bool got_bytes = false;
    while (!ec) {
      if (conn->buffer.size() > 0) {
        got_bytes = true;
        const std::string_view data(static_cast<const char*>(conn->buffer.data().data()),
                                    conn->buffer.size());
        std::size_t n = 0;
        const ParseStatus status =
            parse_response_head(data, limits::kUpstreamHeaderBytesMax, impl->head, n);
        if (status == ParseStatus::kError) co_return malformed(ep, impl->head.error);
        // A switch of protocols nobody asked for: what follows is not HTTP.
        if (status == ParseStatus::kComplete && impl->head.status == 101) {
          co_return malformed(ep, "101 Switching Protocols, never asked for");
        }
        if (status == ParseStatus::kComplete && impl->head.status / 100 == 1) {
          conn->buffer.consume(n);
          continue;
        }
        if (status == ParseStatus::kComplete) {
          impl->conn = std::move(conn);
          impl->take_head(n);
          co_return std::unique_ptr<UpstreamResponse>(new UpstreamResponse(std::move(impl)));
        }
      }
      auto [rec, n] = co_await conn->read_more();
      ec = rec;
      if (!ec) conn->buffer.commit(n);
    }

    const bool timed_out = conn->deadline->expired();
    // Once a byte of the answer has come, or the upstream has held the request a while, it
    // may be working on it: sending it again could run (and charge for) it twice.
    const bool at_once = std::chrono::steady_clock::now() - written_at <
                         milliseconds(limits::kUpstreamRetryWithinMs);
    // Sent again once at most, whatever the connection: the check of an idle one before the
    // write found it open, so a server that closes without a word after the write is
    // likelier to have the request than to have closed it idle, and each resend could run
    // it again.
    if (resend && !timed_out && !got_bytes && at_once &&
        resends < limits::kUpstreamFreshRetriesMax) {
      ++resends;
      // A pooled one the server closed while it sat there, or a fresh one refused at once.
      ++(reused ? stats_.stale_retries : stats_.fresh_retries);
      continue;
    }
    co_return upstream_error(ep, "request", ec, timed_out);
  }
}

}  // namespace tp::http
