#include "http/deadline.h"

#include "core/assert.h"

#include <time.h>

#include <algorithm>
#include <atomic>
#include <utility>

namespace tp::http {

CoarseClock::time_point CoarseClock::now() noexcept {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return time_point(std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec));
}

// Connections cut by a drain timeout still have coroutine frames that the io_context
// destroys after this ticker; their deadlines must not reach back into it.
DeadlineTicker::~DeadlineTicker() {
  *alive_ = false;
  for (Deadline* d : entries_) d->ticker_ = nullptr;
}

void DeadlineTicker::add(Deadline* d) {
  d->slot_ = entries_.size();
  entries_.push_back(d);
  if (!armed_) arm();
}

void DeadlineTicker::remove(Deadline* d) {
  TP_ASSERT(d->slot_ < entries_.size() && entries_[d->slot_] == d);
  Deadline* last = entries_.back();
  entries_[d->slot_] = last;
  last->slot_ = d->slot_;
  entries_.pop_back();
}

void DeadlineTicker::arm() {
  armed_ = true;
  timer_.expires_after(kDeadlineTick);
  // A tick that was due when the ticker went (a pool let go after a reload) runs all the
  // same, with no error: only `alive` says `this` is gone.
  timer_.async_wait([this, alive = alive_](const boost::system::error_code& ec) {
    if (ec || !*alive) return;
    armed_ = false;
    tick();
  });
}

namespace {
std::atomic<bool> g_cut_everything{false};
}  // namespace

void DeadlineTicker::cut_everything() { g_cut_everything.store(true, std::memory_order_relaxed); }

bool DeadlineTicker::cutting() { return g_cut_everything.load(std::memory_order_relaxed); }

void DeadlineTicker::tick() {
  const auto now = Deadline::Clock::now();
  const bool cut = g_cut_everything.load(std::memory_order_relaxed);
  for (Deadline* d : entries_) {
    if (d->call_at_ <= now) {
      d->call_at_ = Deadline::Clock::time_point::max();
      if (std::function<void()> call = std::exchange(d->call_, nullptr)) call();
    }
    if (!cut && (d->cap_ ? std::min(d->at_, *d->cap_) : d->at_) > now) continue;
    d->at_ = Deadline::Clock::time_point::max();
    d->expired_ = true;
    boost::system::error_code ignored;
    d->socket_->cancel(ignored);
  }
  if (!entries_.empty()) arm();
}

}  // namespace tp::http
