#pragma once
// Low-balance notices as recorded, and what became of their delivery.

#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string_view>
#include <vector>

#include "ledger/bank.h"
#include "store/sqlite.h"

namespace tp::store {

// Records a notice; returns its id. Runs inside the caller's transaction.
Result<std::int64_t> insert_notice(Database& db, const ledger::LowBalanceNotice& notice);

// After a delivery ends: delivered (at `delivered_ms`) or given up (`error` says why).
Status finish_notice(Database& db, std::int64_t id, int attempts,
                     std::optional<std::int64_t> delivered_ms, std::string_view error);

// A notice recorded but never finished (the process stopped before its delivery ended).
struct PendingNotice {
  std::int64_t id = 0;
  ledger::LowBalanceNotice notice;
};
// The pending notices raised at or after `since_ms`, oldest first, for delivery after a
// restart. Older pending notices are closed as not delivered, their error saying why.
Result<std::vector<PendingNotice>> take_pending_notices(Database& db, std::int64_t since_ms);

// Low-balance notices go into the store with the transfers that raised them: the writer's
// before-commit hook takes what the bank raised and records it in the batch's transaction,
// so no kill can keep a charge and lose its notice. Once the batch committed they are
// handed to the delivery (the webhook); what a failed commit held is recorded by the next.
// Writer thread only, except set_delivery.
class NoticeRecorder {
 public:
  using Delivery = std::function<void(std::int64_t id, const ledger::LowBalanceNotice&)>;
  // Thread-safe; an empty one stops deliveries (the rows stay undelivered).
  void set_delivery(Delivery deliver);
  // Takes the bank's new notices (logging each) and records every one not committed yet.
  Status record(Database& db, ledger::Bank& bank);
  void committed(bool ok);
  // After a failed commit whose charges were reversed (UsageBuffer::reverse_unstored): the
  // notices of `accounts` waiting here whose balance is no longer below their threshold
  // announced a crossing that the reversal undid, and are dropped.
  void forget_undone(const ledger::Bank& bank, const std::vector<std::int64_t>& accounts,
                     std::int64_t now_ms);

 private:
  std::vector<ledger::LowBalanceNotice> notices_;  // not committed yet
  std::vector<std::int64_t> ids_;                  // their rows in the open transaction
  std::mutex mu_;
  Delivery deliver_;
};

}  // namespace tp::store
