#pragma once
// Coarse timeouts without a timer per operation. Each connection owns a Deadline; one
// DeadlineTicker per thread wakes every tick and cancels the sockets whose deadline passed.
// Arming a deadline is a clock read and a store, so the request path pays no timer-queue
// work; the price is precision: a timeout fires up to one tick late.
//
// Not thread-safe: a ticker and its deadlines live on one io_context thread.

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <vector>

#include "http/asio.h"

namespace tp::http {

inline constexpr std::chrono::milliseconds kDeadlineTick{50};

class Deadline;

class DeadlineTicker {
 public:
  explicit DeadlineTicker(asio::io_context& ioc) : timer_(ioc.get_executor()) {}
  ~DeadlineTicker();
  DeadlineTicker(const DeadlineTicker&) = delete;
  DeadlineTicker& operator=(const DeadlineTicker&) = delete;

  // From now on every deadline of every ticker in the process counts as passed: each tick
  // cancels every socket a deadline watches (clients and upstreams alike). A drain whose
  // time is up uses it, so that what still runs ends through its own failure paths (a cut
  // stream billed for what it relayed) while the store still takes settlements. Once.
  static void cut_everything();
  // Whether cut_everything was called.
  static bool cutting();

 private:
  friend class Deadline;
  void add(Deadline* d);
  void remove(Deadline* d);
  void arm();
  void tick();

  Timer timer_;
  std::vector<Deadline*> entries_;
  bool armed_ = false;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);  // false once destroyed
};

// CLOCK_MONOTONIC_COARSE: a few nanoseconds to read, accurate to a few milliseconds, which
// is all a 50 ms tick needs. Deadlines are armed several times per request.
struct CoarseClock {
  using duration = std::chrono::nanoseconds;
  using rep = duration::rep;
  using period = duration::period;
  using time_point = std::chrono::time_point<CoarseClock>;
  static constexpr bool is_steady = true;
  static time_point now() noexcept;
};

class Deadline {
 public:
  using Clock = CoarseClock;

  // `socket` is cancelled (pending operations complete with operation_aborted) when the
  // deadline passes. Both must outlive nothing: the Deadline unregisters itself.
  Deadline(DeadlineTicker& ticker, Socket& socket) : ticker_(&ticker), socket_(&socket) {
    ticker_->add(this);
  }
  ~Deadline() {
    if (ticker_ != nullptr) ticker_->remove(this);
  }
  Deadline(const Deadline&) = delete;
  Deadline& operator=(const Deadline&) = delete;

  void expires_after(std::chrono::milliseconds ms) {
    at_ = Clock::now() + ms;
    expired_ = false;
  }
  void clear() { at_ = Clock::time_point::max(); }
  // True once the deadline passed and the socket was cancelled; reset by expires_after.
  bool expired() const { return expired_; }

  // Every expiry is also capped by `*cap`, which its owner may move earlier at any time (a
  // request whose client went away cuts its upstream's waits short). Past the cap, each
  // tick cancels the socket again. Null: no cap.
  void cap_by(std::shared_ptr<const Clock::time_point> cap) { cap_ = std::move(cap); }

  // Runs `fn` once, at the first tick at or after `at`, on the ticker's thread: a lazy start
  // for what only a long wait needs (a short request never pays for it). Replaces an
  // earlier one. `fn` must not add or remove deadlines.
  void call_at(Clock::time_point at, std::function<void()> fn) {
    call_at_ = at;
    call_ = std::move(fn);
  }
  void cancel_call() {
    call_at_ = Clock::time_point::max();
    call_ = nullptr;
  }

 private:
  friend class DeadlineTicker;
  DeadlineTicker* ticker_;  // null once the ticker is gone (see ~DeadlineTicker)
  Socket* socket_;
  Clock::time_point at_ = Clock::time_point::max();
  bool expired_ = false;
  std::shared_ptr<const Clock::time_point> cap_;
  Clock::time_point call_at_ = Clock::time_point::max();
  std::function<void()> call_;
  std::size_t slot_ = 0;
};

}  // namespace tp::http
