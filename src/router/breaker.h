#pragma once
// A route's circuit breaker on one I/O thread. Closed, it counts outcomes; it opens after
// `failures` failures in a row, or when at least `error_rate` of the last `window`
// attempts failed. Open, the route rests for `cooldown`; after that it is half-open: the
// next attempt is the probe, and the route rests again while it runs (for at most another
// cooldown) — a success closes the circuit and forgets the history, a failure reopens it.

#include <chrono>
#include <cstdint>

namespace tp::router {

struct BreakerSettings {
  std::uint32_t failures = 5;        // in a row
  double error_rate = 0.5;           // of the last `window` attempts; 0 disables
  std::uint32_t window = 20;         // attempts, 2..64
  std::chrono::milliseconds cooldown{10'000};
};

class Breaker {
 public:
  using Clock = std::chrono::steady_clock;
  // kReopened: the half-open probe failed. kExtended: an attempt that started before the
  // circuit opened failed too, and the rest starts over.
  enum class Change { kNone, kOpened, kReopened, kExtended, kClosed };

  Change failed(const BreakerSettings& s, Clock::time_point now);
  Change succeeded();
  // An attempt goes to the route now. Half-open, it is the probe: no other is admitted
  // until it ends, or until another cooldown passes if it never reports.
  void attempting(const BreakerSettings& s, Clock::time_point now) {
    if (open_ && now >= open_until_) {
      open_until_ = now + s.cooldown;
      probing_ = true;
    }
  }

  bool resting(Clock::time_point now) const { return open_ && now < open_until_; }
  bool open() const { return open_; }
  Clock::time_point open_until() const { return open_until_; }
  std::uint32_t failures_in_a_row() const { return in_a_row_; }
  // Failures among the last `window` attempts (fewer when fewer were seen).
  std::uint32_t recent_failures(std::uint32_t window) const;
  std::uint32_t attempts_seen() const { return seen_; }

 private:
  std::uint32_t in_a_row_ = 0;
  std::uint64_t history_ = 0;  // bit 0: the latest attempt failed, bit 1 the one before...
  std::uint32_t seen_ = 0;     // attempts in `history_`, at most 64
  bool open_ = false;
  bool probing_ = false;  // a half-open probe is out
  Clock::time_point open_until_{};
};

}  // namespace tp::router
