#pragma once
// The usage log: one row per billed request, appended in the transaction that settles it,
// read back page by page. Metadata only; no prompt or completion text ever reaches it.

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/money.h"
#include "ledger/bank.h"
#include "ledger/freeze.h"
#include "store/idempotency.h"
#include "store/notice_store.h"
#include "store/sqlite.h"
#include "store/writer.h"

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
  std::int64_t audio_input_tokens = 0;   // the part of the input that was audio
  std::int64_t audio_output_tokens = 0;  // the part of the output that was audio
  std::int64_t web_searches = 0;         // server-side web searches, charged each
  // What the price-changing options that served (fast mode, a region) multiplied every
  // token price by, in ten-thousandths: 10'000 is ×1.
  std::int64_t price_multiplier_e4 = 10'000;
  Money cost;
  Money input_cost;
  Money output_cost;
  bool flex = false;    // served on a flex tier, charged at its flex prices
  Money standard_cost;  // the same usage at the route's standard prices (= cost unless flex)
  std::int64_t latency_ms = 0;
  int status = 0;
  std::uint64_t hold = 0;
};

// Run inside the caller's transaction. Many rows go in multi-row statements (insert_rows).
Status insert_usage(Database& db, const UsageRecord& record);
Status insert_usage_rows(Database& db, std::span<const UsageRecord> records);

// The usage rows of one writer batch, stored together. The gateway's settlement pieces
// run through it: each takes its charge in the bank at once (in memory) and leaves its row
// here (so do requests charged nothing, with record); the writer's before-commit hook then
// stores all the rows (flush, a few multi-row statements) and the bank's transfers
// (persist_bank), in the transaction that commits the batch: rows and charges become
// durable together or not at all. When that transaction fails, every piece of the batch
// fails with it (the gateway then freezes billing, as for any failed settlement, and the
// settlements are reversed: reverse_unstored) and the rows stay for the next batch, as the
// bank's transfers do (committed). Writer thread only.
class UsageBuffer {
 public:
  void settle(ledger::Bank& bank, const ledger::Bank::Hold& hold, UsageRecord record,
              std::int64_t now_ms);
  // The row of a request that was charged nothing (its hold went back): stored with the
  // batch, and again after a failed commit, like a settlement's; there is nothing to reverse.
  void record(UsageRecord record) {
    rows_.push_back(std::move(record));
    charged_.push_back(false);
  }
  // Stores the rows waiting, in the caller's transaction. Only the before-commit hook calls
  // it: inside a piece, a savepoint rolled back would take the rows with it while their
  // charges stand. (A read in the same batch does not see them; nobody can expect it to, as
  // their requests wait for this commit before they answer.)
  Status flush(Database& db);
  // After the batch's transaction: committed, the rows are stored and forgotten; rolled
  // back, they stay for the next batch, as the bank hands that batch's charges over again
  // (Bank::committed), so a charge is never stored without its row.
  void committed(bool ok) {
    if (ok) {
      rows_.clear();
      charged_.clear();
      reversed_ = 0;
    }
  }
  // After a failed commit: every settlement of the batch failed, and its client got an
  // error instead of the answer, so its charge is taken back (Bank::reverse) and its row
  // says 503 at no cost. Row and reversal are stored together by the next batch. (A
  // settlement that held nothing, id 0, charged nothing either; should it have, that
  // charge cannot be found, and stays with its row as it was.)
  // Returns the accounts whose charges it reversed.
  std::vector<std::int64_t> reverse_unstored(ledger::Bank& bank, std::int64_t now_ms);
  // The rows not stored yet: this batch's, and any a failed batch left.
  std::span<const UsageRecord> pending() const { return rows_; }
  std::size_t size() const { return rows_.size(); }

 private:
  std::vector<UsageRecord> rows_;
  std::vector<bool> charged_;  // per row: a settlement (which a failed commit reverses)
  std::size_t reversed_ = 0;   // rows_[0, reversed_) were reversed already
};

// What every writer batch stores besides its pieces' own writes, in its own transaction:
// the usage rows of its settlements, the bank's transfers made since the last batch
// (settlements, credits, voids), the answers of idempotent admin calls that made them, the
// low-balance notices they raised, a freeze a failed settlement set (`record`), and what
// `also_store` writes. All of
// it counts as stored only once the transaction commits; what a batch that did not commit
// held is stored by the next one.
struct BatchState {
  std::shared_ptr<ledger::Bank> bank;
  std::shared_ptr<UsageBuffer> usage;
  std::shared_ptr<AnswerBuffer> answers;
  std::shared_ptr<NoticeRecorder> notices;
  std::shared_ptr<ledger::Freeze> freeze;
  // Anything else kept in memory first and stored by the batch (the accounts and keys, from
  // a layer above the store): written before the commit, told how it ended. Optional.
  std::function<Status(Database&)> also_store;
  std::function<void(bool committed)> also_committed;
};
// Sets the writer's before- and after-commit hooks.
void store_settlements_with_batches(Writer& writer, BatchState state);

// Rows a page may read of the account's log (of the whole log, for every account): a time
// filter is not indexed, and the page is read on the store writer, which settlements wait
// for. A narrow filter over a long history takes several pages, some of them empty.
inline constexpr std::size_t kUsageScanRowsMax = 10'000;

struct UsageQuery {
  std::optional<std::int64_t> account;  // nullopt: every account
  std::int64_t from_ms = INT64_MIN;     // at_ms >= from_ms
  std::int64_t to_ms = INT64_MAX;       // at_ms < to_ms
  std::int64_t after_id = 0;            // rows with a larger id only
  std::size_t limit = 100;
  std::size_t scan_max = kUsageScanRowsMax;  // rows read after `after_id`, matching or not
};

struct UsagePage {
  std::vector<UsageRecord> rows;  // matching rows in id (commit) order, at most `limit`
  // Where the scan stopped at `scan_max` rows, when more of the log lies after it: the
  // next page starts there.
  std::optional<std::int64_t> scanned_to;
};

Result<UsagePage> query_usage(Database& db, const UsageQuery& query);

}  // namespace tp::store
