#pragma once
// Low-balance notices as recorded, and what became of their delivery.

#include <cstdint>
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

}  // namespace tp::store
