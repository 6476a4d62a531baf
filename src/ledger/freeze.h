#pragma once
// Billing's emergency stop: set when the books fail to reconcile, cleared only by an admin
// after investigating. While it is set, billable traffic is refused (503). Thread-safe;
// the request path reads one atomic.

#include <atomic>
#include <mutex>
#include <string>

namespace tp::ledger {

class Freeze {
 public:
  bool frozen() const { return frozen_.load(std::memory_order_acquire); }
  std::string reason() const {
    std::lock_guard lock(mu_);
    return reason_;
  }
  void set(std::string reason) {
    std::lock_guard lock(mu_);
    reason_ = std::move(reason);
    frozen_.store(true, std::memory_order_release);
  }
  void clear() {
    std::lock_guard lock(mu_);
    reason_.clear();
    frozen_.store(false, std::memory_order_release);
  }

 private:
  std::atomic<bool> frozen_{false};
  mutable std::mutex mu_;
  std::string reason_;
};

}  // namespace tp::ledger
