#include "auth/key_limits.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

namespace tp::auth {
namespace {

// Milliseconds until a bucket refilling `per_minute` has `missing` more; at least 1.
std::int64_t wait_ms(double missing, std::int64_t per_minute) {
  const double ms = std::ceil(missing * 60'000.0 / static_cast<double>(per_minute));
  return std::max<std::int64_t>(1, static_cast<std::int64_t>(ms));
}

// Refills add up in floating point: a bucket this close to what is asked has it.
constexpr double kSlack = 1e-6;

}  // namespace

KeyMeter::KeyMeter(KeyLimits limits, Money spent, Clock::time_point now)
    : limits_(limits),
      requests_(static_cast<double>(limits.rpm.value_or(0))),
      tokens_(static_cast<double>(limits.tpm.value_or(0))),
      refilled_(now),
      spent_(spent) {}

void KeyMeter::refill(Clock::time_point now) {
  if (now <= refilled_) return;
  const double minutes = std::chrono::duration<double>(now - refilled_).count() / 60.0;
  refilled_ = now;
  if (limits_.rpm) {
    const auto per_minute = static_cast<double>(*limits_.rpm);
    requests_ = std::min(per_minute, requests_ + minutes * per_minute);
  }
  if (limits_.tpm) {
    const auto per_minute = static_cast<double>(*limits_.tpm);
    tokens_ = std::min(per_minute, tokens_ + minutes * per_minute);
  }
}

std::optional<KeyMeter::Refusal> KeyMeter::admit(std::int64_t tokens, Clock::time_point now) {
  std::lock_guard lock(mu_);
  if (limits_.tpm && tokens > *limits_.tpm) {
    return Refusal{fmt::format("this request may use {} tokens (its input, estimated, and the "
                               "output it asks for with max_tokens), more than this key's "
                               "limit of {} tokens per minute allows at once",
                               tokens, *limits_.tpm),
                   0};
  }
  refill(now);
  std::int64_t wait = 0;
  std::string limit;
  if (limits_.rpm && requests_ + kSlack < 1.0) {
    wait = wait_ms(1.0 - requests_, *limits_.rpm);
    limit = fmt::format("{} requests per minute", *limits_.rpm);
  }
  if (limits_.tpm && tokens_ + kSlack < static_cast<double>(tokens)) {
    const std::int64_t for_tokens = wait_ms(static_cast<double>(tokens) - tokens_, *limits_.tpm);
    if (for_tokens > wait) {
      wait = for_tokens;
      limit = fmt::format("{} tokens per minute", *limits_.tpm);
    }
  }
  if (wait > 0) {
    return Refusal{fmt::format("this key's rate limit of {} is reached; try again in {:.3f} s",
                               limit, static_cast<double>(wait) / 1000.0),
                   wait};
  }
  if (limits_.rpm) requests_ -= 1.0;
  if (limits_.tpm) tokens_ -= static_cast<double>(tokens);
  return std::nullopt;
}

std::optional<std::string> KeyMeter::reserve(Money amount) {
  std::lock_guard lock(mu_);
  if (limits_.budget && spent_ + reserved_ + amount > *limits_.budget) {
    return fmt::format("this key's budget of {} USD does not cover this request: {} USD spent, "
                       "{} USD set aside for its requests in progress, and this one may cost "
                       "up to {} USD",
                       limits_.budget->to_string(), spent_.to_string(), reserved_.to_string(),
                       amount.to_string());
  }
  reserved_ += amount;
  return std::nullopt;
}

Money KeyMeter::spent() const {
  std::lock_guard lock(mu_);
  return spent_;
}

void KeyMeter::finish(Money cost, Money reserved, std::int64_t taken, std::int64_t used) {
  std::lock_guard lock(mu_);
  spent_ += cost;
  reserved_ -= reserved;
  if (limits_.tpm) {
    tokens_ = std::min(static_cast<double>(*limits_.tpm),
                       tokens_ + static_cast<double>(taken) - static_cast<double>(used));
  }
}

}  // namespace tp::auth
