#include "store/notice_store.h"

#include <algorithm>

#include "core/log.h"

namespace tp::store {

Result<std::int64_t> insert_notice(Database& db, const ledger::LowBalanceNotice& n) {
  auto insert = db.cached(
      "INSERT INTO low_balance_notices (account_id, threshold_nanos, balance_nanos, at_ms) "
      "VALUES (?, ?, ?, ?) RETURNING id");
  if (!insert) return insert.status();
  Statement& st = **insert;
  st.bind(1, n.account).bind(2, n.threshold.nanos()).bind(3, n.balance.nanos()).bind(4, n.at_ms);
  auto step = st.step();
  if (!step) {
    st.reset();
    return step.status();
  }
  const std::int64_t id = st.column_int(0);
  if (Status s = st.run(); !s) return s;
  return id;
}

Status finish_notice(Database& db, std::int64_t id, int attempts,
                     std::optional<std::int64_t> delivered_ms, std::string_view error) {
  auto update = db.cached(
      "UPDATE low_balance_notices SET attempts = ?, delivered_ms = ?, last_error = ? "
      "WHERE id = ?");
  if (!update) return update.status();
  Statement& st = **update;
  st.bind(1, std::int64_t{attempts});
  if (delivered_ms) st.bind(2, *delivered_ms); else st.bind_null(2);
  if (error.empty()) st.bind_null(3); else st.bind(3, error);
  st.bind(4, id);
  return st.run();
}

Result<std::vector<PendingNotice>> take_pending_notices(Database& db, std::int64_t since_ms) {
  auto stale = db.prepare(
      "UPDATE low_balance_notices SET last_error = 'not delivered before a restart; too old to "
      "send' WHERE delivered_ms IS NULL AND attempts = 0 AND last_error IS NULL AND at_ms < ?");
  if (!stale) return stale.status();
  stale->bind(1, since_ms);
  if (Status s = stale->run(); !s) return s;
  auto select = db.prepare(
      "SELECT id, account_id, threshold_nanos, balance_nanos, at_ms FROM low_balance_notices "
      "WHERE delivered_ms IS NULL AND attempts = 0 AND last_error IS NULL ORDER BY id");
  if (!select) return select.status();
  std::vector<PendingNotice> out;
  for (;;) {
    auto step = select->step();
    if (!step) return step.status();
    if (*step == Statement::Step::kDone) break;
    PendingNotice p;
    p.id = select->column_int(0);
    p.notice.account = select->column_int(1);
    p.notice.threshold = Money::from_nanos(select->column_int(2));
    p.notice.balance = Money::from_nanos(select->column_int(3));
    p.notice.at_ms = select->column_int(4);
    out.push_back(p);
  }
  return out;
}

void NoticeRecorder::set_delivery(Delivery deliver) {
  std::lock_guard lock(mu_);
  deliver_ = std::move(deliver);
}

Status NoticeRecorder::record(Database& db, ledger::Bank& bank) {
  std::size_t dropped = 0;
  std::vector<ledger::LowBalanceNotice> raised = bank.take_low_balance_notices(&dropped);
  for (ledger::LowBalanceNotice& n : raised) {
    log::warn("low balance", {{"account", n.account},
                              {"threshold_usd", n.threshold.to_string()},
                              {"balance_usd", n.balance.to_string()}});
    if (notices_.size() < ledger::Bank::kLowBalancePendingMax) {
      notices_.push_back(std::move(n));
    } else {
      ++dropped;  // commits keep failing: the bound holds across them too
    }
  }
  if (dropped > 0) {
    log::warn("low-balance notices dropped", {{"count", static_cast<std::int64_t>(dropped)}});
  }
  ids_.clear();
  for (const ledger::LowBalanceNotice& n : notices_) {
    auto id = insert_notice(db, n);
    if (!id) return id.status();
    ids_.push_back(*id);
  }
  return Status::ok();
}

void NoticeRecorder::forget_undone(const ledger::Bank& bank,
                                   const std::vector<std::int64_t>& accounts,
                                   std::int64_t now_ms) {
  if (accounts.empty()) return;
  std::erase_if(notices_, [&](const ledger::LowBalanceNotice& n) {
    return std::find(accounts.begin(), accounts.end(), n.account) != accounts.end() &&
           !bank.below(n.account, n.threshold, now_ms);
  });
  ids_.clear();  // rolled back with their batch
}

void NoticeRecorder::committed(bool ok) {
  if (!ok || notices_.empty()) return;
  {
    std::lock_guard lock(mu_);
    if (deliver_) {
      for (std::size_t i = 0; i < notices_.size(); ++i) deliver_(ids_[i], notices_[i]);
    }
  }
  notices_.clear();
  ids_.clear();
}

}  // namespace tp::store
