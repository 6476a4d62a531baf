#include "store/usage_store.h"

#include "store/ledger_store.h"

#include "core/clock.h"

namespace tp::store {

namespace {

constexpr std::string_view kInsertHead =
    "INSERT INTO usage_log (request_id, account_id, key_id, at_ms, model, provider, node, "
    "input_tokens, cached_tokens, output_tokens, cost_nanos, input_cost_nanos, "
    "output_cost_nanos, latency_ms, status, hold, service_tier, standard_cost_nanos, "
    "audio_input_tokens, audio_output_tokens, web_searches, price_multiplier_e4)";
constexpr int kInsertColumns = 22;

void bind_row(Statement& insert, int first, const UsageRecord& r) {
  const int p = first - 1;  // parameters p + 1 .. p + kInsertColumns
  insert.bind(p + 1, r.request_id).bind(p + 2, r.account_id).bind(p + 3, r.key_id);
  insert.bind(p + 4, r.at_ms).bind(p + 5, r.model).bind(p + 6, r.provider);
  if (r.node.empty()) insert.bind_null(p + 7); else insert.bind(p + 7, r.node);
  insert.bind(p + 8, r.input_tokens).bind(p + 9, r.cached_tokens).bind(p + 10, r.output_tokens);
  insert.bind(p + 11, r.cost.nanos()).bind(p + 12, r.input_cost.nanos());
  insert.bind(p + 13, r.output_cost.nanos());
  insert.bind(p + 14, r.latency_ms).bind(p + 15, std::int64_t{r.status});
  insert.bind(p + 16, static_cast<std::int64_t>(r.hold));
  insert.bind(p + 17, r.flex ? "flex" : "standard");
  if (r.flex) insert.bind(p + 18, r.standard_cost.nanos()); else insert.bind_null(p + 18);
  insert.bind(p + 19, r.audio_input_tokens).bind(p + 20, r.audio_output_tokens);
  insert.bind(p + 21, r.web_searches).bind(p + 22, r.price_multiplier_e4);
}

}  // namespace

Status insert_usage(Database& db, const UsageRecord& record) {
  return insert_usage_rows(db, std::span(&record, 1));
}

Status insert_usage_rows(Database& db, std::span<const UsageRecord> records) {
  return insert_rows(db, kInsertHead, kInsertColumns, records.size(),
                     [&](Statement& insert, int first, std::size_t row) {
                       bind_row(insert, first, records[row]);
                     });
}

void UsageBuffer::settle(ledger::Bank& bank, const ledger::Bank::Hold& hold, UsageRecord record,
                         std::int64_t now_ms) {
  if (!record.cost.is_zero() || hold.id != 0) bank.settle(hold, record.cost, now_ms);
  rows_.push_back(std::move(record));
  charged_.push_back(true);
}

Status UsageBuffer::flush(Database& db) { return insert_usage_rows(db, rows_); }

std::vector<std::int64_t> UsageBuffer::reverse_unstored(ledger::Bank& bank, std::int64_t now_ms) {
  std::vector<std::int64_t> accounts;
  for (; reversed_ < rows_.size(); ++reversed_) {
    UsageRecord& r = rows_[reversed_];
    if (!charged_[reversed_]) continue;
    const Money back = r.hold != 0 ? bank.reverse(r.account_id, r.hold, now_ms) : Money();
    // A charge without a hold to find it by cannot be taken back, and keeps its row as it
    // is. (A request holds nothing only on a free route, which charges nothing.)
    if (back != r.cost) continue;
    if (!back.is_zero()) accounts.push_back(r.account_id);
    r.status = 503;
    r.cost = r.input_cost = r.output_cost = r.standard_cost = Money();
  }
  return accounts;
}

void store_settlements_with_batches(Writer& writer, BatchState state) {
  // The generation of the freeze record this batch writes (0: none).
  auto recording = std::make_shared<std::uint64_t>(0);
  writer.set_before_commit([state, recording](Database& db) {
    if (Status s = state.usage->flush(db); !s) return s;
    if (Status s = state.answers->flush(db); !s) return s;
    if (Status s = persist_bank(db, *state.bank); !s) return s;
    if (Status s = state.notices->record(db, *state.bank); !s) return s;
    if (state.also_store) {
      if (Status s = state.also_store(db); !s) return s;
    }
    *recording = 0;
    if (const auto [reason, generation] = state.freeze->pending_record(); !reason.empty()) {
      if (Status s = record_freeze(db, reason, SystemClock::instance().unix_millis()); !s) {
        return s;
      }
      *recording = generation;
    }
    return Status::ok();
  });
  writer.set_after_commit([state, recording](bool committed) {
    if (!committed) {
      const std::int64_t now = SystemClock::instance().unix_millis();
      const std::vector<std::int64_t> reversed = state.usage->reverse_unstored(*state.bank, now);
      state.notices->forget_undone(*state.bank, reversed, now);
    }
    state.usage->committed(committed);
    state.answers->committed(committed);
    state.bank->committed(committed);
    state.notices->committed(committed);
    if (state.also_committed) state.also_committed(committed);
    if (committed && *recording != 0) state.freeze->recorded(*recording);
  });
}

Result<UsagePage> query_usage(Database& db, const UsageQuery& q) {
  UsagePage page;
  // An empty time range (two bounds within one millisecond round to the same one) matches
  // no row anywhere in the log: the whole answer, not a page to scan on from.
  if (q.from_ms >= q.to_ms) return page;
  // The last row the scan may read: the scan_max-th after the cursor (index only), or the
  // log's end when fewer are left.
  std::int64_t scan_end = INT64_MAX;
  {
    auto bound = db.cached(q.account ? "SELECT id FROM usage_log WHERE account_id = ? AND id > ? "
                                       "ORDER BY id LIMIT 1 OFFSET ?"
                                     : "SELECT id FROM usage_log WHERE ? IS NULL AND id > ? "
                                       "ORDER BY id LIMIT 1 OFFSET ?");
    if (!bound) return bound.status();
    Statement& s = **bound;
    if (q.account) s.bind(1, *q.account); else s.bind_null(1);
    s.bind(2, q.after_id)
        .bind(3, static_cast<std::int64_t>(std::max<std::size_t>(q.scan_max, 1) - 1));
    auto step = s.step();
    if (step && *step == Statement::Step::kRow) scan_end = s.column_int(0);
    s.reset();
    if (!step) return step.status();
  }
  constexpr std::string_view kColumns =
      "SELECT id, request_id, account_id, key_id, at_ms, model, provider, node, input_tokens, "
      "cached_tokens, output_tokens, cost_nanos, input_cost_nanos, output_cost_nanos, "
      "latency_ms, status, hold, service_tier, standard_cost_nanos, audio_input_tokens, "
      "audio_output_tokens, web_searches, price_multiplier_e4 FROM usage_log ";
  auto cached = db.cached(
      q.account ? std::string(kColumns) +
                      "WHERE account_id = ? AND id > ? AND id <= ? AND at_ms >= ? AND "
                      "at_ms < ? ORDER BY id LIMIT ?"
                : std::string(kColumns) +
                      "WHERE ? IS NULL AND id > ? AND id <= ? AND at_ms >= ? AND at_ms < ? "
                      "ORDER BY id LIMIT ?");
  if (!cached) return cached.status();
  Statement& select = **cached;
  if (q.account) select.bind(1, *q.account); else select.bind_null(1);
  select.bind(2, q.after_id).bind(3, scan_end).bind(4, q.from_ms).bind(5, q.to_ms);
  select.bind(6, static_cast<std::int64_t>(q.limit));
  std::vector<UsageRecord>& rows = page.rows;
  for (;;) {
    auto step = select.step();
    if (!step) {
      select.reset();
      return step.status();
    }
    if (*step == Statement::Step::kDone) break;
    UsageRecord r;
    r.id = select.column_int(0);
    r.request_id = select.column_text(1);
    r.account_id = select.column_int(2);
    r.key_id = select.column_int(3);
    r.at_ms = select.column_int(4);
    r.model = select.column_text(5);
    r.provider = select.column_text(6);
    r.node = select.column_text(7);
    r.input_tokens = select.column_int(8);
    r.cached_tokens = select.column_int(9);
    r.output_tokens = select.column_int(10);
    r.cost = Money::from_nanos(select.column_int(11));
    r.input_cost = Money::from_nanos(select.column_int(12));
    r.output_cost = Money::from_nanos(select.column_int(13));
    r.latency_ms = select.column_int(14);
    r.status = static_cast<int>(select.column_int(15));
    r.hold = static_cast<std::uint64_t>(select.column_int(16));
    r.flex = select.column_text(17) == "flex";
    r.standard_cost =
        select.column_is_null(18) ? r.cost : Money::from_nanos(select.column_int(18));
    r.audio_input_tokens = select.column_int(19);
    r.audio_output_tokens = select.column_int(20);
    r.web_searches = select.column_int(21);
    r.price_multiplier_e4 = select.column_int(22);
    rows.push_back(std::move(r));
  }
  select.reset();
  if (rows.size() < q.limit && scan_end != INT64_MAX) page.scanned_to = scan_end;
  return page;
}

}  // namespace tp::store
