#pragma once
// The usage log: one row per billed request, appended in the transaction that settles it,
// read back page by page. Metadata only; no prompt or completion text ever reaches it.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/money.h"
#include "ledger/bank.h"
#include "store/sqlite.h"

namespace tp::store {

struct UsageRecord {
  std::int64_t id = 0;  // assigned on insert; the pagination cursor
  std::string request_id;
  std::int64_t account_id = 0;
  std::int64_t key_id = 0;
  std::int64_t at_ms = 0;
  std::string model;
  std::string provider;
  std::string node;  // empty: not served by a peer node
  std::int64_t input_tokens = 0;
  std::int64_t cached_tokens = 0;
  std::int64_t output_tokens = 0;
  Money cost;
  Money input_cost;
  Money output_cost;
  bool flex = false;    // served on a flex tier, charged at its flex prices
  Money standard_cost;  // the same usage at the route's standard prices (= cost unless flex)
  std::int64_t latency_ms = 0;
  int status = 0;
  std::uint64_t hold = 0;
};

// Runs inside the caller's transaction.
Status insert_usage(Database& db, const UsageRecord& record);


// A request's settlement, inside the caller's transaction: its usage row, then its charge
// (`record.cost`, against `hold`) in the bank. The row goes first, so a row the store
// refuses leaves the account uncharged. One statement: it needs no savepoint of its own.
// The charge's transfers are stored by the writer's before-commit persist (persist_bank),
// in the same transaction.
Status settle_request(Database& db, ledger::Bank& bank, const ledger::Bank::Hold& hold,
                      const UsageRecord& record, std::int64_t now_ms);

struct UsageQuery {
  std::optional<std::int64_t> account;  // nullopt: every account
  std::int64_t from_ms = 0;             // at_ms >= from_ms
  std::int64_t to_ms = INT64_MAX;       // at_ms < to_ms
  std::int64_t after_id = 0;            // rows with a larger id only
  std::size_t limit = 100;
};

// Rows in id (commit) order.
Result<std::vector<UsageRecord>> query_usage(Database& db, const UsageQuery& query);

}  // namespace tp::store
