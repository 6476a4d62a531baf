#include "router/breaker.h"

#include <algorithm>
#include <bit>
#include <utility>

namespace tp::router {

std::uint32_t Breaker::recent_failures(std::uint32_t window) const {
  const std::uint64_t mask = window >= 64 ? ~std::uint64_t{0} : (std::uint64_t{1} << window) - 1;
  return static_cast<std::uint32_t>(std::popcount(history_ & mask));
}

Breaker::Change Breaker::failed(const BreakerSettings& s, Clock::time_point now) {
  ++in_a_row_;
  history_ = (history_ << 1) | 1;
  seen_ = std::min<std::uint32_t>(seen_ + 1, 64);
  if (open_) {
    open_until_ = now + s.cooldown;
    return std::exchange(probing_, false) ? Change::kReopened : Change::kExtended;
  }
  const bool too_many_in_a_row = in_a_row_ >= s.failures;
  const bool too_high_a_rate =
      s.error_rate > 0 && seen_ >= s.window &&
      static_cast<double>(recent_failures(s.window)) >= s.error_rate * s.window;
  if (!too_many_in_a_row && !too_high_a_rate) return Change::kNone;
  open_ = true;
  open_until_ = now + s.cooldown;
  return Change::kOpened;
}

Breaker::Change Breaker::succeeded() {
  in_a_row_ = 0;
  if (open_) {
    *this = Breaker{};
    return Change::kClosed;
  }
  history_ <<= 1;
  seen_ = std::min<std::uint32_t>(seen_ + 1, 64);
  return Change::kNone;
}

}  // namespace tp::router
