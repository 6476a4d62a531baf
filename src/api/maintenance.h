#pragma once
// The background thread of the money side: lapses holds and promo lots whose time has come
// and reconciles the books on schedule (a failure freezes billing). Its store work goes
// through the writer like everything else. It also owns the low-balance webhook: the writer
// records notices with the batch that raised them (store::NoticeRecorder) and hands them
// to it.

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
  // Stops the thread; call before the writer stops. The notifier stops on destruction,
  // after the writer.
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

  Services services_;
  ops::Billing billing_;
  std::unique_ptr<Notifier> notifier_;  // null without a webhook
  std::mutex mu_;
  std::condition_variable wake_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace tp::api
