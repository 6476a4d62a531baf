#include "store/ledger_store.h"

#include <fmt/format.h>

#include <map>
#include <utility>

namespace tp::store {

Status append_ledger(Database& db, const ledger::LedgerTail& tail) {
  const Status accounts = insert_rows(
      db, "INSERT INTO ledger_accounts (id, name, floor)", 3, tail.accounts.size(),
      [&](Statement& insert, int p, std::size_t row) {
        const ledger::LedgerTail::NewAccount& a = tail.accounts[row];
        insert.bind(p, static_cast<std::int64_t>(tail.accounts_from + row)).bind(p + 1, a.name);
        insert.bind(p + 2, a.floor == ledger::Floor::kNonNegative ? 0 : 1);
      });
  if (!accounts) return accounts;
  return insert_rows(
      db, "INSERT INTO transfers (id, debit, credit, amount_nanos, kind, hold, at_ms)", 7,
      tail.transfers.size(), [&](Statement& insert, int p, std::size_t row) {
        const ledger::Transfer& t = tail.transfers[row];
        insert.bind(p, static_cast<std::int64_t>(t.id)).bind(p + 1, std::int64_t{t.debit});
        insert.bind(p + 2, std::int64_t{t.credit}).bind(p + 3, t.amount.nanos());
        insert.bind(p + 4, static_cast<std::int64_t>(t.kind));
        insert.bind(p + 5, static_cast<std::int64_t>(t.hold)).bind(p + 6, t.at_ms);
      });
}

Status persist_bank(Database& db, ledger::Bank& bank) {
  return bank.persist([&](const ledger::LedgerTail& tail) { return append_ledger(db, tail); });
}

Result<ledger::StoredBooks> read_books(Database& db) {
  ledger::StoredBooks books;
  auto count = db.prepare("SELECT (SELECT COUNT(*) FROM ledger_accounts), COUNT(*), "
                          "COALESCE(MAX(id), 0) FROM transfers");
  if (!count) return count.status();
  if (auto step = count->step(); !step) return step.status();
  books.balances.resize(static_cast<std::size_t>(count->column_int(0)));
  books.transfers = static_cast<std::uint64_t>(count->column_int(1));
  if (count->column_int(2) != count->column_int(1)) {
    return Status{ErrorKind::kInternal, "stored transfer ids are not dense"};
  }
  auto sums = db.prepare(
      "SELECT account, SUM(delta) FROM (SELECT credit AS account, amount_nanos AS delta FROM "
      "transfers UNION ALL SELECT debit, -amount_nanos FROM transfers) GROUP BY account");
  if (!sums) return sums.status();
  for (;;) {
    auto step = sums->step();
    if (!step) return step.status();
    if (*step == Statement::Step::kDone) break;
    const auto account = static_cast<std::size_t>(sums->column_int(0));
    if (account >= books.balances.size()) {
      return Status{ErrorKind::kInternal, "a stored transfer names an unknown account"};
    }
    books.balances[account] = Money::from_nanos(sums->column_int(1));
  }
  return books;
}

Result<std::vector<std::string>> check_books(Database& db, std::span<const UsageRecord> pending,
                                             std::size_t max) {
  std::vector<std::string> problems;
  const auto post = static_cast<std::int64_t>(ledger::TransferKind::kPost);
  const auto overdraft = static_cast<std::int64_t>(ledger::TransferKind::kOverdraft);
  // Floors. An overdraft is the only transfer that may take a book below zero.
  auto floors = db.prepare(
      "SELECT a.name, b.balance, COALESCE(o.overdrawn, 0) FROM ledger_accounts a "
      "JOIN (SELECT account, SUM(delta) AS balance FROM (SELECT credit AS account, "
      "amount_nanos AS delta FROM transfers UNION ALL SELECT debit, -amount_nanos FROM "
      "transfers) GROUP BY account) b ON b.account = a.id "
      "LEFT JOIN (SELECT debit AS account, SUM(amount_nanos) AS overdrawn FROM transfers "
      "WHERE kind = ?1 GROUP BY debit) o ON o.account = a.id "
      "WHERE a.floor = 0 AND b.balance + COALESCE(o.overdrawn, 0) < 0 ORDER BY a.id LIMIT ?2");
  if (!floors) return floors.status();
  floors->bind(1, overdraft).bind(2, static_cast<std::int64_t>(max));
  for (;;) {
    auto step = floors->step();
    if (!step) return step.status();
    if (*step == Statement::Step::kDone) break;
    const Money overdrawn = Money::from_nanos(floors->column_int(2));
    problems.push_back(fmt::format(
        "{} stands at {} USD, below its floor of {} USD", floors->column_text(0),
        Money::from_nanos(floors->column_int(1)).to_string(), (-overdrawn).to_string()));
  }
  // Settlements: each request's usage row against its hold's charges (post and overdraft
  // transfers from the account's books, less reversals), and charges without a row. Hold ids are numbered
  // per account, and a process continues after the last id it finds among the transfers,
  // so an id may recur (after a request that charged nothing): both sides are summed per
  // account and hold. The SQL lists every pair that differs in the store; rows still in
  // the writer's batch may make up the difference.
  std::map<std::pair<std::int64_t, std::int64_t>, Money> unstored;
  for (const UsageRecord& r : pending) {
    if (r.hold != 0) unstored[{r.account_id, static_cast<std::int64_t>(r.hold)}] += r.cost;
  }
  // A reversal (a settlement whose commit failed) takes its charges back.
  auto charges = db.prepare(
      "WITH charged AS (SELECT CAST(substr(a.name, 6, instr(a.name, ':') - 6) AS INTEGER) "
      "AS account, t.hold AS hold, SUM(CASE WHEN t.kind = ?3 THEN -t.amount_nanos ELSE "
      "t.amount_nanos END) AS total FROM transfers t "
      "JOIN ledger_accounts a ON a.id = CASE WHEN t.kind = ?3 THEN t.credit ELSE t.debit END "
      "WHERE t.hold != 0 AND t.kind IN (?1, ?2, ?3) "
      "AND a.name LIKE 'acct!_%:%' ESCAPE '!' GROUP BY 1, 2), "
      "billed AS (SELECT account_id AS account, hold, SUM(cost_nanos) AS total, "
      "MIN(request_id) AS request FROM usage_log WHERE hold != 0 GROUP BY 1, 2) "
      "SELECT b.account, b.hold, b.request, b.total, COALESCE(c.total, 0) FROM billed b "
      "LEFT JOIN charged c ON c.account = b.account AND c.hold = b.hold "
      "WHERE b.total != COALESCE(c.total, 0) "
      "UNION ALL SELECT c.account, c.hold, NULL, 0, c.total FROM charged c "
      "LEFT JOIN billed b ON b.account = c.account AND b.hold = c.hold WHERE b.hold IS NULL "
      "AND c.total != 0");
  if (!charges) return charges.status();
  charges->bind(1, post).bind(2, overdraft);
  charges->bind(3, static_cast<std::int64_t>(ledger::TransferKind::kReverse));
  for (;;) {
    auto step = charges->step();
    if (!step) return step.status();
    if (*step == Statement::Step::kDone) break;
    const std::int64_t account = charges->column_int(0);
    Money billed = Money::from_nanos(charges->column_int(3));
    if (const auto it = unstored.find({account, charges->column_int(1)}); it != unstored.end()) {
      billed += it->second;
    }
    const Money charged = Money::from_nanos(charges->column_int(4));
    if (billed == charged || problems.size() >= max) continue;
    if (charges->column_is_null(2)) {
      problems.push_back(fmt::format("acct_{} was charged {} USD for a request with no usage row",
                                     account, charged.to_string()));
    } else {
      problems.push_back(fmt::format(
          "request {} of acct_{} cost {} USD in the usage log, its charges {} USD",
          charges->column_text(2), account, billed.to_string(), charged.to_string()));
    }
  }
  return problems;
}

Status record_freeze(Database& db, std::string_view reason, std::int64_t at_ms) {
  auto insert = db.prepare("INSERT INTO billing_freezes (frozen_ms, reason) VALUES (?, ?)");
  if (!insert) return insert.status();
  insert->bind(1, at_ms).bind(2, reason);
  return insert->run();
}

Status clear_freezes(Database& db, std::string_view note, std::int64_t at_ms) {
  auto update = db.prepare(
      "UPDATE billing_freezes SET cleared_ms = ?, cleared_note = ? WHERE cleared_ms IS NULL "
      "RETURNING id");
  if (!update) return update.status();
  update->bind(1, at_ms).bind(2, note);
  auto step = update->step();
  if (!step) return step.status();
  const bool any = *step == Statement::Step::kRow;
  if (auto s = update->run(); !s) return s;
  if (!any) return {ErrorKind::kNotFound, "billing is not frozen"};
  return Status::ok();
}

Result<std::string> open_freeze(Database& db) {
  auto select = db.prepare(
      "SELECT reason FROM billing_freezes WHERE cleared_ms IS NULL ORDER BY id DESC LIMIT 1");
  if (!select) return select.status();
  auto step = select->step();
  if (!step) return step.status();
  return *step == Statement::Step::kRow ? std::string(select->column_text(0)) : std::string();
}

Result<std::int64_t> count_start(Database& db) {
  auto update = db.prepare("UPDATE gateway_starts SET starts = starts + 1 RETURNING starts");
  if (!update) return update.status();
  auto step = update->step();
  if (!step) return step.status();
  if (*step != Statement::Step::kRow) return Status{ErrorKind::kInternal, "no gateway_starts row"};
  const std::int64_t starts = update->column_int(0);
  if (auto done = update->step(); !done) return done.status();
  return starts;
}

Status load_ledger(Database& db, ledger::Ledger& ledger) {
  if (ledger.account_count() != 0) {
    return {ErrorKind::kInternal, "load_ledger needs an empty ledger"};
  }
  auto accounts = db.prepare("SELECT id, name, floor FROM ledger_accounts ORDER BY id");
  if (!accounts) return accounts.status();
  for (;;) {
    auto step = accounts->step();
    if (!step) return step.status();
    if (*step == Statement::Step::kDone) break;
    const auto id = accounts->column_int(0);
    const auto opened = ledger.open(std::string(accounts->column_text(1)),
                                    accounts->column_int(2) == 0 ? ledger::Floor::kNonNegative
                                                                 : ledger::Floor::kUnbounded);
    if (opened != id) {
      return {ErrorKind::kConflict, fmt::format("ledger account ids not dense at {}", id)};
    }
  }
  auto transfers = db.prepare(
      "SELECT id, debit, credit, amount_nanos, kind, hold, at_ms FROM transfers ORDER BY id");
  if (!transfers) return transfers.status();
  for (;;) {
    auto step = transfers->step();
    if (!step) return step.status();
    if (*step == Statement::Step::kDone) break;
    ledger::Transfer t;
    t.id = static_cast<ledger::TransferId>(transfers->column_int(0));
    t.debit = static_cast<ledger::AccountId>(transfers->column_int(1));
    t.credit = static_cast<ledger::AccountId>(transfers->column_int(2));
    t.amount = Money::from_nanos(transfers->column_int(3));
    t.kind = static_cast<ledger::TransferKind>(transfers->column_int(4));
    t.hold = static_cast<std::uint64_t>(transfers->column_int(5));
    t.at_ms = transfers->column_int(6);
    if (auto s = ledger.replay(t); !s) return s;
  }
  return Status::ok();
}

}  // namespace tp::store
