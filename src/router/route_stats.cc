#include "router/route_stats.h"

#include <algorithm>
#include <bit>
#include <cmath>

namespace tp::router {

namespace {

constexpr int kFirstOctave = 6;  // 64 µs
constexpr int kLastOctave = 31;  // 2^31 µs and above: the last bucket

std::int64_t micros_of(std::chrono::steady_clock::duration d) {
  return std::chrono::duration_cast<std::chrono::microseconds>(d).count();
}

}  // namespace

std::size_t LatencyBuckets::bucket(std::int64_t micros) {
  if (micros < (std::int64_t{1} << kFirstOctave)) return 0;
  const int octave = std::bit_width(static_cast<std::uint64_t>(micros)) - 1;
  if (octave >= kLastOctave) return kCount - 1;
  const auto quarter = static_cast<std::size_t>((micros >> (octave - 2)) & 3);
  return 1 + static_cast<std::size_t>(octave - kFirstOctave) * 4 + quarter;
}

std::int64_t LatencyBuckets::upper_micros(std::size_t bucket) {
  if (bucket == 0) return std::int64_t{1} << kFirstOctave;
  if (bucket >= kCount - 1) return std::int64_t{1} << kLastOctave;
  const int octave = kFirstOctave + static_cast<int>((bucket - 1) / 4);
  const auto quarter = static_cast<std::int64_t>((bucket - 1) % 4);
  return (4 + quarter + 1) << (octave - 2);
}

double RouteSnapshot::quantile_ms(const std::array<std::uint64_t, LatencyBuckets::kCount>& h,
                                  double q) {
  std::uint64_t total = 0;
  for (const std::uint64_t n : h) total += n;
  if (total == 0) return -1;
  const auto rank = std::max<std::uint64_t>(
      1, static_cast<std::uint64_t>(std::ceil(q * static_cast<double>(total))));
  std::uint64_t seen = 0;
  for (std::size_t i = 0; i < h.size(); ++i) {
    seen += h[i];
    if (seen >= rank) return static_cast<double>(LatencyBuckets::upper_micros(i)) / 1000.0;
  }
  return static_cast<double>(LatencyBuckets::upper_micros(h.size() - 1)) / 1000.0;
}

double RouteSnapshot::tokens_per_second() const {
  if (decoding_micros == 0) return -1;
  return static_cast<double>(output_tokens) * 1e6 / static_cast<double>(decoding_micros);
}

void RouteStats::Thread::ttfb(std::size_t route, std::chrono::steady_clock::duration d) {
  const std::int64_t micros = micros_of(d);
  bump(routes_[route].ttfb[LatencyBuckets::bucket(micros)]);
  bump(routes_[route].ttfb_micros, static_cast<std::uint64_t>(std::max<std::int64_t>(micros, 0)));
}

void RouteStats::Thread::latency(std::size_t route, std::chrono::steady_clock::duration d) {
  const std::int64_t micros = micros_of(d);
  bump(routes_[route].latency[LatencyBuckets::bucket(micros)]);
  bump(routes_[route].latency_micros,
       static_cast<std::uint64_t>(std::max<std::int64_t>(micros, 0)));
}

void RouteStats::Thread::decoding(std::size_t route, std::int64_t output_tokens,
                                  std::chrono::steady_clock::duration d) {
  const std::int64_t micros = micros_of(d);
  if (output_tokens < 2 || micros <= 0) return;
  bump(routes_[route].output_tokens, static_cast<std::uint64_t>(output_tokens));
  bump(routes_[route].decoding_micros, static_cast<std::uint64_t>(micros));
}

void RouteStats::Thread::carry(std::size_t route, const Thread& from, std::size_t from_route) {
  const Route& a = from.routes_[from_route];
  Route& b = routes_[route];
  auto copy = [](const auto& source, auto& target) {
    target.store(source.load(std::memory_order_relaxed), std::memory_order_relaxed);
  };
  for (auto [source, target] : {std::pair{&a.attempts, &b.attempts},
                                {&a.served, &b.served},
                                {&a.errors, &b.errors},
                                {&a.rate_limited, &b.rate_limited},
                                {&a.fallbacks, &b.fallbacks},
                                {&a.flex_attempts, &b.flex_attempts},
                                {&a.flex_served, &b.flex_served},
                                {&a.output_tokens, &b.output_tokens},
                                {&a.decoding_micros, &b.decoding_micros},
                                {&a.latency_micros, &b.latency_micros},
                                {&a.ttfb_micros, &b.ttfb_micros}}) {
    copy(*source, *target);
  }
  for (std::size_t i = 0; i < LatencyBuckets::kCount; ++i) {
    copy(a.latency[i], b.latency[i]);
    copy(a.ttfb[i], b.ttfb[i]);
  }
  copy(a.open_until, b.open_until);
}

std::shared_ptr<RouteStats::Thread> RouteStats::add_thread() {
  auto thread = std::make_shared<Thread>(routes_);
  std::lock_guard lock(mu_);
  threads_.push_back(thread);
  return thread;
}

std::size_t RouteStats::threads() const {
  std::lock_guard lock(mu_);
  return threads_.size();
}

std::vector<RouteSnapshot> RouteStats::snapshot(std::chrono::steady_clock::time_point now) const {
  std::vector<RouteSnapshot> out(routes_);
  std::lock_guard lock(mu_);
  auto add = [](std::uint64_t& to, const Thread::Counter& c) {
    to += c.load(std::memory_order_relaxed);
  };
  for (const auto& thread : threads_) {
    for (std::size_t i = 0; i < routes_; ++i) {
      const Thread::Route& r = thread->routes_[i];
      RouteSnapshot& s = out[i];
      add(s.attempts, r.attempts);
      add(s.served, r.served);
      add(s.errors, r.errors);
      add(s.rate_limited, r.rate_limited);
      add(s.fallbacks, r.fallbacks);
      add(s.flex_attempts, r.flex_attempts);
      add(s.flex_served, r.flex_served);
      add(s.output_tokens, r.output_tokens);
      add(s.decoding_micros, r.decoding_micros);
      add(s.latency_micros, r.latency_micros);
      add(s.ttfb_micros, r.ttfb_micros);
      if (r.open_until.load(std::memory_order_relaxed) > now.time_since_epoch().count()) {
        ++s.open_on_threads;
      }
      for (std::size_t b = 0; b < LatencyBuckets::kCount; ++b) {
        add(s.latency[b], r.latency[b]);
        add(s.ttfb[b], r.ttfb[b]);
      }
    }
  }
  return out;
}

}  // namespace tp::router
