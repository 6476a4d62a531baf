#pragma once
// Per-route statistics for GET /admin/v1/routes. Each I/O thread writes its own block
// (plain relaxed stores, no read-modify-write, no lock); a reader sums the blocks of every
// thread. Counts read while requests run are each exact as of some recent moment, not a
// consistent cut across counters.

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

namespace tp::router {

// Durations on a log-linear scale: four buckets per power of two of microseconds, so a
// percentile read from it is within 25% above the true value. Below 64 µs is one bucket;
// at or above 2^31 µs (about 36 minutes) is the last.
class LatencyBuckets {
 public:
  static constexpr std::size_t kCount = 1 + (31 - 6) * 4 + 1;
  static std::size_t bucket(std::int64_t micros);
  // The upper bound of a bucket, in microseconds (what a percentile reports); for the
  // open-ended last bucket, its lower bound.
  static std::int64_t upper_micros(std::size_t bucket);
};

// What a route has seen, summed over threads.
struct RouteSnapshot {
  std::uint64_t attempts = 0;      // requests sent to the route (fallback attempts included)
  std::uint64_t served = 0;        // responses from it that went to the client
  std::uint64_t errors = 0;        // refused or failed connections, timeouts, 5xx
  std::uint64_t rate_limited = 0;  // 429 answers
  std::uint64_t fallbacks = 0;     // attempts after which the request moved to another route
  std::uint64_t flex_attempts = 0;
  std::uint64_t flex_served = 0;
  std::uint64_t output_tokens = 0;   // of streams whose decoding time was measured
  std::uint64_t decoding_micros = 0; // their time from first byte to the end
  std::array<std::uint64_t, LatencyBuckets::kCount> latency{};  // send → response complete
  std::uint64_t latency_micros = 0;                             // their sum
  std::array<std::uint64_t, LatencyBuckets::kCount> ttfb{};     // send → first byte (streams)
  std::uint64_t ttfb_micros = 0;                                // their sum
  std::size_t open_on_threads = 0;  // threads on which the route's circuit is open now

  // The `q` quantile (0..1) of a histogram in milliseconds (bucket upper bound); -1 when
  // it is empty.
  static double quantile_ms(const std::array<std::uint64_t, LatencyBuckets::kCount>& h,
                            double q);
  // Output tokens per second of decoding; -1 before any was measured.
  double tokens_per_second() const;
};

class RouteStats {
 public:
  // One thread's counters for every route. Only its own thread may call the writers.
  class Thread {
   public:
    explicit Thread(std::size_t routes) : routes_(routes) {}
    void attempt(std::size_t route, bool flex) {
      bump(routes_[route].attempts);
      if (flex) bump(routes_[route].flex_attempts);
    }
    void error(std::size_t route) { bump(routes_[route].errors); }
    void rate_limited(std::size_t route) { bump(routes_[route].rate_limited); }
    void fallback(std::size_t route) { bump(routes_[route].fallbacks); }
    void served(std::size_t route, bool flex) {
      bump(routes_[route].served);
      if (flex) bump(routes_[route].flex_served);
    }
    void ttfb(std::size_t route, std::chrono::steady_clock::duration d);
    void latency(std::size_t route, std::chrono::steady_clock::duration d);
    void decoding(std::size_t route, std::int64_t output_tokens,
                  std::chrono::steady_clock::duration d);
    // Across a reload: route `route` starts from what `from`'s `from_route` has counted
    // (`from` is this thread's block of the catalog before). Before any request on it.
    void carry(std::size_t route, const Thread& from, std::size_t from_route);
    // The route's circuit breaker on this thread rests until then (the past: closed).
    void circuit_open_until(std::size_t route, std::chrono::steady_clock::time_point until) {
      routes_[route].open_until.store(until.time_since_epoch().count(),
                                      std::memory_order_relaxed);
    }

   private:
    friend class RouteStats;
    using Counter = std::atomic<std::uint64_t>;
    struct Route {
      Counter attempts{0}, served{0}, errors{0}, rate_limited{0}, fallbacks{0};
      Counter flex_attempts{0}, flex_served{0}, output_tokens{0}, decoding_micros{0};
      Counter latency_micros{0}, ttfb_micros{0};
      std::array<Counter, LatencyBuckets::kCount> latency{};
      std::array<Counter, LatencyBuckets::kCount> ttfb{};
      std::atomic<std::chrono::steady_clock::rep> open_until{0};
    };
    // Single writer: a load and a store, never a locked read-modify-write.
    static void bump(Counter& c, std::uint64_t by = 1) {
      c.store(c.load(std::memory_order_relaxed) + by, std::memory_order_relaxed);
    }
    std::vector<Route> routes_;
  };

  explicit RouteStats(std::size_t routes) : routes_(routes) {}

  // A new thread's block; kept for as long as the RouteStats lives.
  std::shared_ptr<Thread> add_thread();
  // Every route's counters summed over threads, by Route::index; circuits as of `now`.
  std::vector<RouteSnapshot> snapshot(std::chrono::steady_clock::time_point now) const;
  std::size_t threads() const;

 private:
  std::size_t routes_;
  mutable std::mutex mu_;  // guards threads_ (registration and reads, never the hot path)
  std::vector<std::shared_ptr<Thread>> threads_;
};

}  // namespace tp::router
