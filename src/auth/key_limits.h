#pragma once
// A key's own limits (CONTRACT's per-key `rpm`, `tpm` and `budget_usd`) and what it has used
// of them. A key and the keys that replace it by rotation are one holder: they share one
// KeyMeter, so a rotation's grace window neither doubles a rate nor restarts a budget.
// Keys without limits have no meter and cost the request path nothing.

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "core/money.h"

namespace tp::auth {

struct KeyLimits {
  std::optional<std::int64_t> rpm;  // requests per minute
  std::optional<std::int64_t> tpm;  // tokens (input and output) per minute
  std::optional<Money> budget;      // what its requests may cost, over its life
  bool any() const { return rpm || tpm || budget; }
  friend bool operator==(const KeyLimits&, const KeyLimits&) = default;
};

// Shared by every I/O thread (one mutex, held for a few arithmetic steps). Rates are token
// buckets that hold a minute's allowance and refill continuously: a burst of `rpm` requests
// passes, then one every 60/rpm seconds.
class KeyMeter {
 public:
  using Clock = std::chrono::steady_clock;
  KeyMeter(KeyLimits limits, Money spent, Clock::time_point now);

  struct Refusal {
    std::string message;
    std::int64_t retry_after_ms = 0;  // 0: waiting does not help (`never`)
  };
  // Takes one request and `tokens` (the request's estimate: its input and the output it
  // asks for), or refuses without taking anything.
  std::optional<Refusal> admit(std::int64_t tokens, Clock::time_point now);

  // The budget. reserve() sets `amount` more aside for a request (its hold, then what a
  // response costing more asks for as it runs), or refuses when what is spent, what
  // requests in progress set aside and `amount` pass the budget: a budget has no overdraft.
  std::optional<std::string> reserve(Money amount);
  Money spent() const;
  // A request's end, in one step (no other request sees its cost and what it set aside both
  // counted): its `cost` is spent, the `reserved` it set aside goes back, and its `taken`
  // token estimate is replaced by the tokens it `used` (0 when it failed; the bucket may
  // go below zero, and the next requests wait for it).
  void finish(Money cost, Money reserved, std::int64_t taken, std::int64_t used);

  const KeyLimits& limits() const { return limits_; }

 private:
  void refill(Clock::time_point now);  // caller holds mu_

  const KeyLimits limits_;
  mutable std::mutex mu_;
  double requests_;  // left in the bucket
  double tokens_;
  Clock::time_point refilled_;
  Money spent_;
  Money reserved_;
};

// What one request took of its key's limits: its tokens from admission, and its hold from
// the budget. Settled with what it used and cost, or given back (a request that failed or
// was refused used nothing) when it ends without settling. Empty for a key without limits.
class KeyUse {
 public:
  KeyUse() = default;
  KeyUse(KeyUse&& other) noexcept
      : meter_(std::move(other.meter_)), tokens_(other.tokens_), reserved_(other.reserved_) {}
  KeyUse& operator=(KeyUse&&) = delete;
  ~KeyUse() { settle(0, Money()); }

  KeyMeter* meter() const { return meter_.get(); }
  bool has_budget() const { return meter_ && meter_->limits().budget; }
  // After `meter`'s admit() took `tokens` for this request, and its reserve() `amount`.
  void admitted(std::shared_ptr<KeyMeter> meter, std::int64_t tokens) {
    meter_ = std::move(meter);
    tokens_ = tokens;
  }
  // What it has set aside from the budget in all (reserve() took each increase).
  Money set_aside() const { return reserved_; }
  void set_aside(Money total) { reserved_ = total; }
  // The request's `used` tokens and `cost`, once; afterwards (and for a key without
  // limits) nothing.
  void settle(std::int64_t used, Money cost) {
    if (!meter_) return;
    meter_->finish(cost, reserved_, tokens_, used);
    meter_.reset();
  }

 private:
  std::shared_ptr<KeyMeter> meter_;
  std::int64_t tokens_ = 0;
  Money reserved_;
};

}  // namespace tp::auth
