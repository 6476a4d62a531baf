#pragma once
// The background thread of the money side: lapses holds and promo lots whose time has come
// and reconciles the books on schedule (a failure freezes billing). Its store work goes
// through the writer like everything else. While a failed commit's records wait in memory
// (usage rows, transfers, a freeze to record), it has the writer try again every tick, and
// once more at the stop. It also owns the low-balance webhook: the writer records notices
// with the batch that raised them (store::NoticeRecorder) and hands them to it.

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>

#include "api/notifier.h"
#include "api/services.h"
#include "ops/config.h"

namespace tp::api {

class Maintenance {
 public:
  // Sets the bank's low-balance thresholds; starts the webhook notifier when one is set,
  // and has the writer deliver to it.
  static Result<std::unique_ptr<Maintenance>> start(const Services& services,
                                                    const ops::Billing& billing);
  // Stops the thread, then the notifier (a delivery attempt in flight gets a few seconds to
  // end, and its outcome goes to the writer), then stores what still waits in memory with a
  // last batch (a few tries; an error is logged if the store refuses them all). Call after
  // the I/O threads stopped and before the writer stops. Idempotent.
  void stop();
  ~Maintenance();
  Maintenance(const Maintenance&) = delete;
  Maintenance& operator=(const Maintenance&) = delete;

  // When the next scheduled reconciliation is due after `now_ms` (unix ms).
  static std::int64_t next_reconciliation(const ops::Billing& billing, std::int64_t now_ms);

 private:
  Maintenance(const Services& services, const ops::Billing& billing,
              std::unique_ptr<Notifier> notifier);
  void run();
  void expire(std::int64_t now_ms, std::int64_t monotonic_ms);
  void reconcile();
  // Whether something waits in memory for a commit: what a failed one left, a freeze to
  // record, transfers made outside any batch (a sweep, a void).
  bool waiting_for_store() const;
  // A tick: when something waits, an empty batch (one at a time) stores it, as any batch
  // that commits does; without traffic there may be no other.
  void retry_store();
  // The stop: tries a last batch while something waits, and says so when it cannot.
  void store_before_stop();

  Services services_;
  ops::Billing billing_;
  std::unique_ptr<Notifier> notifier_;  // null without a webhook
  // A retry_store batch is queued and not done yet; shared with its completion, which the
  // writer runs.
  std::shared_ptr<std::atomic<bool>> retrying_ = std::make_shared<std::atomic<bool>>(false);
  std::mutex mu_;
  std::condition_variable wake_;
  bool stop_ = false;
  bool stopped_ = false;  // stop() finished; the caller's thread only
  std::thread thread_;
};

}  // namespace tp::api
