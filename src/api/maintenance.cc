#include "api/maintenance.h"

#include <future>

#include "core/clock.h"
#include "core/log.h"
#include "store/ledger_store.h"

namespace tp::api {
namespace {

constexpr std::int64_t kExpiryTickMs = 1000;
constexpr std::int64_t kDayMs = 86'400'000;

}  // namespace

Maintenance::Maintenance(const Services& services, const ops::Billing& billing)
    : services_(services), billing_(billing), thread_([this] { run(); }) {}

Maintenance::~Maintenance() { stop(); }

void Maintenance::stop() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
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
  std::unique_lock lock(mu_);
  while (!stop_) {
    const std::int64_t now = clock.unix_millis();
    const std::int64_t wait = std::max<std::int64_t>(
        1, std::min(kExpiryTickMs, next_reconcile - now));
    if (wake_.wait_for(lock, std::chrono::milliseconds(wait), [this] { return stop_; })) break;
    lock.unlock();
    const std::int64_t at = clock.unix_millis();
    expire(at);
    if (at >= next_reconcile) {
      reconcile();
      next_reconcile = next_reconciliation(billing_, clock.unix_millis());
    }
    lock.lock();
  }
}

void Maintenance::expire(std::int64_t now_ms) {
  const ledger::Wallet::Expired expired = services_.bank->expire(now_ms);
  if (expired.holds == 0 && expired.lots == 0) return;
  log::info("credit expired", {{"holds", static_cast<std::int64_t>(expired.holds)},
                               {"promo_lots", static_cast<std::int64_t>(expired.lots)}});
  std::shared_ptr<ledger::Bank> bank = services_.bank;
  services_.writer->submit([bank](store::Database& db) {
    return bank->persist([&](const ledger::Ledger& ledger, std::size_t accounts,
                             std::size_t transfers) {
      return store::append_ledger(db, ledger, accounts, transfers);
    });
  });
}

void Maintenance::reconcile() {
  std::promise<void> done;
  std::shared_ptr<ledger::Bank> bank = services_.bank;
  std::shared_ptr<ledger::Freeze> freeze = services_.freeze;
  services_.writer->submit(
      [bank, freeze](store::Database& db) {
        (void)reconcile_books(db, *bank, *freeze, "schedule");
        return Status::ok();
      },
      [&done](const Status&) { done.set_value(); });
  done.get_future().wait();
}

}  // namespace tp::api
