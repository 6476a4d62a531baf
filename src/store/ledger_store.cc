#include "store/ledger_store.h"

#include <fmt/format.h>

namespace tp::store {

Status append_ledger(Database& db, const ledger::Ledger& ledger, std::size_t accounts_from,
                     std::size_t transfers_from) {
  if (accounts_from < ledger.account_count()) {
    auto cached = db.cached("INSERT INTO ledger_accounts (id, name, floor) VALUES (?, ?, ?)");
    if (!cached) return cached.status();
    Statement* insert = *cached;
    for (std::size_t id = accounts_from; id < ledger.account_count(); ++id) {
      const auto account = static_cast<ledger::AccountId>(id);
      insert->bind(1, static_cast<std::int64_t>(id)).bind(2, ledger.name(account));
      insert->bind(3, ledger.floor(account) == ledger::Floor::kNonNegative ? 0 : 1);
      if (auto s = insert->run(); !s) return s;
    }
  }
  const auto& journal = ledger.journal();
  if (transfers_from < journal.size()) {
    auto cached = db.cached(
        "INSERT INTO transfers (id, debit, credit, amount_nanos, kind, hold, at_ms) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)");
    if (!cached) return cached.status();
    Statement* insert = *cached;
    for (std::size_t i = transfers_from; i < journal.size(); ++i) {
      const ledger::Transfer& t = journal[i];
      insert->bind(1, static_cast<std::int64_t>(t.id)).bind(2, std::int64_t{t.debit});
      insert->bind(3, std::int64_t{t.credit}).bind(4, t.amount.nanos());
      insert->bind(5, static_cast<std::int64_t>(t.kind));
      insert->bind(6, static_cast<std::int64_t>(t.hold)).bind(7, t.at_ms);
      if (auto s = insert->run(); !s) return s;
    }
  }
  return Status::ok();
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
      return {ErrorKind::kInternal, fmt::format("ledger account ids not dense at {}", id)};
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
