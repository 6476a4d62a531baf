#include "api/maintenance.h"

#include <pthread.h>

#include <chrono>
#include <future>
#include <string_view>

#include "core/clock.h"
#include "core/log.h"
#include "store/ledger_store.h"
#include "store/notice_store.h"

namespace tp::api {
namespace {

constexpr std::int64_t kExpiryTickMs = 1000;
constexpr std::int64_t kDayMs = 86'400'000;
// Notices left undelivered by a stop are sent after a restart if younger than this.
constexpr std::int64_t kRedeliverMaxAgeMs = kDayMs;
// At the stop, how often a last batch is tried, and the pause between two tries. A store
// whose lock another process holds makes each try wait out the busy timeout (5 s) first.
constexpr int kStopStoreAttempts = 3;
constexpr std::chrono::milliseconds kStopStoreRetryPause{1000};

}  // namespace

Result<std::unique_ptr<Maintenance>> Maintenance::start(const Services& services,
                                                        const ops::Billing& billing) {
  services.bank->set_low_balance_thresholds(billing.low_balance);
  std::unique_ptr<Notifier> notifier;
  if (!billing.low_balance_webhook.empty()) {
    auto started =
        Notifier::start({billing.low_balance_webhook, billing.low_balance_webhook_ca_file,
                         billing.low_balance_retry_ms, 5, services.notice_counts},
                        services.writer);
    if (!started) return started.status();
    notifier = std::move(started.value());
    Notifier* n = notifier.get();
    services.notices->set_delivery([n](std::int64_t id, const ledger::LowBalanceNotice& notice) {
      if (!n->deliver(id, notice)) {
        log::warn("low-balance webhook queue full", {{"account", notice.account}});
      }
    });
    // What a stop left undelivered goes out again, once the store says what it was.
    auto pending = std::make_shared<std::vector<store::PendingNotice>>();
    const std::int64_t since = SystemClock::instance().unix_millis() - kRedeliverMaxAgeMs;
    services.writer->submit(
        [pending, since](store::Database& db) -> Status {
          auto found = store::take_pending_notices(db, since);
          if (!found) return found.status();
          *pending = std::move(found.value());
          return Status::ok();
        },
        [pending, n](const Status& committed) {
          if (!committed || pending->empty()) return;
          std::int64_t queued = 0;
          for (const store::PendingNotice& p : *pending) queued += n->deliver(p.id, p.notice);
          log::info("low-balance notices delivered again after a restart", {{"count", queued}});
          if (const auto left = static_cast<std::int64_t>(pending->size()) - queued; left > 0) {
            // Their rows stay undelivered: the next start takes them up again.
            log::warn("low-balance webhook queue full: notices left for the next start",
                      {{"count", left}});
          }
        });
  }
  return std::unique_ptr<Maintenance>(new Maintenance(services, billing, std::move(notifier)));
}

Maintenance::Maintenance(const Services& services, const ops::Billing& billing,
                         std::unique_ptr<Notifier> notifier)
    : services_(services),
      billing_(billing),
      notifier_(std::move(notifier)),
      thread_([this] {
        pthread_setname_np(pthread_self(), "tp-maint");
        run();
      }) {}

Maintenance::~Maintenance() { stop(); }

void Maintenance::stop() {
  if (stopped_) return;
  stopped_ = true;
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
  // The notifier stops before the writer: the outcome of an attempt that ends during its
  // grace must be stored, or a notice the receiver took goes out again after the restart.
  // Notices that the last batches record stay undelivered until then.
  services_.notices->set_delivery(nullptr);
  if (notifier_) notifier_->stop();
  store_before_stop();
}

std::int64_t Maintenance::next_reconciliation(const ops::Billing& billing, std::int64_t now_ms) {
  if (billing.reconcile_every_ms > 0) {
    return now_ms + static_cast<std::int64_t>(billing.reconcile_every_ms);
  }
  const std::int64_t day_start = now_ms - now_ms % kDayMs;
  const std::int64_t today = day_start + std::int64_t{billing.reconcile_at_minute} * 60'000;
  return today > now_ms ? today : today + kDayMs;
}

void Maintenance::run() {
  const Clock& clock = SystemClock::instance();
  std::int64_t next_reconcile = next_reconciliation(billing_, clock.unix_millis());
  // Promo lots that expired while the process was down go at once: Bank::adopt leaves them
  // for this sweep, which comes after start() set the low-balance thresholds, so that their
  // drop raises the notices it would have raised expiring while the gateway ran.
  expire(clock.unix_millis(), clock.monotonic_millis());
  std::unique_lock lock(mu_);
  while (!stop_) {
    const std::int64_t now = clock.unix_millis();
    const std::int64_t wait = std::max<std::int64_t>(
        1, std::min(kExpiryTickMs, next_reconcile - now));
    if (wake_.wait_for(lock, std::chrono::milliseconds(wait), [this] { return stop_; })) break;
    lock.unlock();
    const std::int64_t at = clock.unix_millis();
    retry_store();
    expire(at, clock.monotonic_millis());
    if (at >= next_reconcile) {
      reconcile();
      next_reconcile = next_reconciliation(billing_, clock.unix_millis());
    }
    lock.lock();
  }
}

void Maintenance::expire(std::int64_t now_ms, std::int64_t monotonic_ms) {
  const ledger::Wallet::Expired expired = services_.bank->expire(now_ms, monotonic_ms);
  if (expired.holds == 0 && expired.lots == 0) return;
  log::info("credit expired", {{"holds", static_cast<std::int64_t>(expired.holds)},
                               {"promo_lots", static_cast<std::int64_t>(expired.lots)}});
  std::shared_ptr<ledger::Bank> bank = services_.bank;
  services_.writer->submit([bank](store::Database& db) {
    return store::persist_bank(db, *bank);
  });
}

bool Maintenance::waiting_for_store() const {
  return services_.writer->last_commit_failed() ||
         !services_.freeze->pending_record().first.empty() || services_.bank->has_uncommitted();
}

void Maintenance::retry_store() {
  // One at a time: with the store's lock held elsewhere each try takes the busy timeout.
  if (retrying_->load(std::memory_order_acquire) || !waiting_for_store()) return;
  retrying_->store(true, std::memory_order_release);
  const bool after_failure = services_.writer->last_commit_failed();
  services_.writer->submit(
      store::write_nothing,
      [retrying = retrying_, after_failure](const Status& committed) {
        if (committed && after_failure) {
          log::info("stored what a failed store commit had left in memory");
        }
        retrying->store(false, std::memory_order_release);
      },
      store::Writer::Isolation::kSingleStatement);
}

void Maintenance::store_before_stop() {
  Status last;
  for (int attempt = 0; waiting_for_store(); ++attempt) {
    if (attempt == kStopStoreAttempts) {
      // Lost with the process: the usage rows and transfers of failed commits (their
      // charges were reversed, so balances come back right) and a freeze not recorded yet,
      // which the next start no longer knows of.
      log::error("stopping with billing records the store did not take; they are lost",
                 {{"attempts", attempt},
                  {"freeze_unrecorded", !services_.freeze->pending_record().first.empty()},
                  {"error", last.is_ok() ? std::string_view() : last.message()}});
      return;
    }
    if (attempt > 0) std::this_thread::sleep_for(kStopStoreRetryPause);
    std::promise<Status> done;
    services_.writer->submit(
        store::write_nothing, [&done](const Status& committed) { done.set_value(committed); },
        store::Writer::Isolation::kSingleStatement);
    last = done.get_future().get();
  }
}

void Maintenance::reconcile() {
  std::promise<void> done;
  std::shared_ptr<ledger::Bank> bank = services_.bank;
  std::shared_ptr<ledger::Freeze> freeze = services_.freeze;
  std::shared_ptr<store::UsageBuffer> usage = services_.usage;
  services_.writer->submit(
      [bank, freeze, usage](store::Database& db) {
        (void)reconcile_books(db, *bank, *freeze, "schedule", usage->pending());
        return Status::ok();
      },
      [&done](const Status&) { done.set_value(); });
  done.get_future().wait();
}

}  // namespace tp::api
