#pragma once
// Billing's emergency stop: set when the books fail to reconcile, cleared only by an admin
// after investigating. While it is set, billable traffic is refused (503). Thread-safe;
// the request path reads one atomic.

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <utility>

namespace tp::ledger {

class Freeze {
 public:
  bool frozen() const { return frozen_.load(std::memory_order_acquire); }
  // What kind of freeze it is, for those who may not read its detail (every customer, and
  // /readyz without authentication): the reason up to its first ": " ("reconciliation
  // failed (schedule)", "the store failed to record a settlement"). The detail after it may
  // name another account's request and amounts, or the store's internals.
  std::string summary() const {
    const std::string full = reason();
    return full.substr(0, full.find(": "));
  }
  std::string reason() const {
    std::lock_guard lock(mu_);
    return reason_;
  }
  // `record`: the store does not have the freeze yet; the next store batch records it
  // (pending_record / recorded), so that a restart does not lift it.
  void set(std::string reason, bool record = false) {
    std::lock_guard lock(mu_);
    ++sets_;
    reason_ = std::move(reason);
    if (record) {
      unrecorded_ = reason_;
      ++generation_;
    }
    frozen_.store(true, std::memory_order_release);
  }
  void clear() {
    std::lock_guard lock(mu_);
    clear_locked();
  }
  // Frozen already: counts one more cause (it keeps its first reason and record), so that a
  // clearing decided before it (clear_unless_set_since) leaves the freeze on.
  void count_again() {
    std::lock_guard lock(mu_);
    ++sets_;
  }
  // What a clearing decides on, read at once: how many times it was set, and the freeze to
  // record, if one waits, with its generation for `recorded`.
  struct Snapshot {
    std::uint64_t sets = 0;
    std::string unrecorded;
    std::uint64_t generation = 0;
  };
  Snapshot snapshot() const {
    std::lock_guard lock(mu_);
    return {sets_, unrecorded_, generation_};
  }
  // Clears it unless it was set again after `sets`; false then.
  bool clear_unless_set_since(std::uint64_t sets) {
    std::lock_guard lock(mu_);
    if (sets_ != sets) return false;
    clear_locked();
    return true;
  }
  // The freeze to record, if one waits, with its generation for `recorded`.
  std::pair<std::string, std::uint64_t> pending_record() const {
    std::lock_guard lock(mu_);
    return {unrecorded_, generation_};
  }
  // The store committed the record of that generation (a newer freeze still waits).
  void recorded(std::uint64_t generation) {
    std::lock_guard lock(mu_);
    if (generation == generation_) unrecorded_.clear();
  }

 private:
  void clear_locked() {
    reason_.clear();
    unrecorded_.clear();
    ++generation_;
    frozen_.store(false, std::memory_order_release);
  }

  std::atomic<bool> frozen_{false};
  mutable std::mutex mu_;
  std::string reason_;
  std::string unrecorded_;      // a freeze the store does not have yet
  std::uint64_t generation_ = 0;
  std::uint64_t sets_ = 0;
};

}  // namespace tp::ledger
