#pragma once
// The ledger's journal in the database: accounts and transfers are appended, never
// updated, and a Ledger is rebuilt at start by replaying them in order.

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ledger/bank.h"
#include "ledger/ledger.h"
#include "store/sqlite.h"
#include "store/usage_store.h"

namespace tp::store {

// Appends a ledger's new accounts and transfers (Ledger::tail). Runs inside the caller's
// transaction.
Status append_ledger(Database& db, const ledger::LedgerTail& tail);

// Appends what `bank` changed since it last stored (Bank::persist with append_ledger).
Status persist_bank(Database& db, ledger::Bank& bank);

// Every account's balance recomputed from the stored transfers alone, and their count.
Result<ledger::StoredBooks> read_books(Database& db);

// What the stored books must satisfy beyond summing to zero (which every balanced transfer
// does by itself), each found breach as a sentence (at most `max`):
// - no account with a non-negative floor is below zero, except a paid book by at most what
//   overdrafts (responses' shortfalls over their holds) took from it;
// - every settled request's charges (its hold's post and overdraft transfers, less any
//   reversal) add up to the cost in its usage row, and no charge is without its usage row.
// `pending`: usage rows whose charges are in the ledger but which are not stored yet (the
// writer's current batch). Scans both tables: for reconciliation, not the request path.
Result<std::vector<std::string>> check_books(Database& db,
                                             std::span<const UsageRecord> pending = {},
                                             std::size_t max = 5);

// Billing freezes: recorded when set, closed when an admin clears them.
Status record_freeze(Database& db, std::string_view reason, std::int64_t at_ms);
// Closes every open freeze with `note`. kNotFound when none is open.
Status clear_freezes(Database& db, std::string_view note, std::int64_t at_ms);
// The reason of the latest open freeze, or "" when none.
Result<std::string> open_freeze(Database& db);

// Counts a gateway's start (in the caller's transaction) and gives the number of starts so
// far, this one included.
Result<std::int64_t> count_start(Database& db);

// Rebuilds `ledger` (which must be empty) from the database. kConflict when the stored
// books cannot be replayed (ids not dense, a transfer naming no account): the store was
// read, but what it holds is no ledger.
Status load_ledger(Database& db, ledger::Ledger& ledger);

}  // namespace tp::store
