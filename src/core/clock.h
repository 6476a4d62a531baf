#pragma once
// Time is read through Clock so tests can substitute a manual one.

#include <chrono>
#include <cstdint>

namespace tp {

class Clock {
 public:
  virtual ~Clock() = default;
  // Wall-clock time, for timestamps shown to people and stored in records.
  virtual std::int64_t unix_millis() const = 0;
  // Monotonic time, for durations and deadlines.
  virtual std::int64_t monotonic_nanos() const = 0;
  std::int64_t monotonic_millis() const { return monotonic_nanos() / 1'000'000; }
};

class SystemClock final : public Clock {
 public:
  std::int64_t unix_millis() const override {
    using namespace std::chrono;
    return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
  }
  std::int64_t monotonic_nanos() const override {
    using namespace std::chrono;
    return duration_cast<nanoseconds>(steady_clock::now().time_since_epoch()).count();
  }
  static const SystemClock& instance() {
    static const SystemClock clock;
    return clock;
  }
};

}  // namespace tp
