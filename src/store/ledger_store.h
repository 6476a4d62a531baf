#pragma once
// The ledger's journal in the database: accounts and transfers are appended, never
// updated, and a Ledger is rebuilt at start by replaying them in order.

#include <vector>

#include "ledger/ledger.h"
#include "store/sqlite.h"

namespace tp::store {

// Appends the accounts the ledger opened and the transfers it made since `accounts_from` /
// `transfers_from` (both counts already stored). Runs inside the caller's transaction.
Status append_ledger(Database& db, const ledger::Ledger& ledger, std::size_t accounts_from,
                     std::size_t transfers_from);

// Rebuilds `ledger` (which must be empty) from the database.
Status load_ledger(Database& db, ledger::Ledger& ledger);

}  // namespace tp::store
