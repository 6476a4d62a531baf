#include "ledger/ledger.h"

#include <fmt/format.h>

#include "core/assert.h"

namespace tp::ledger {

std::string_view transfer_kind_name(TransferKind kind) {
  switch (kind) {
    case TransferKind::kDeposit: return "deposit";
    case TransferKind::kHold: return "hold";
    case TransferKind::kPost: return "post";
    case TransferKind::kRelease: return "release";
    case TransferKind::kOverdraft: return "overdraft";
    case TransferKind::kExpire: return "expire";
    case TransferKind::kRefund: return "refund";
    case TransferKind::kReverse: return "reverse";
  }
  return "unknown";
}

Status Ledger::check_range(AccountId debit, Money amount) const {
  const Account& from = accounts_.at(debit);
  std::int64_t after = 0;
  if (__builtin_sub_overflow(from.balance.nanos(), amount.nanos(), &after)) {
    return Status{ErrorKind::kInvalidRequest,
                  fmt::format("moving {} USD from {} would take its balance past what the "
                              "ledger can hold (about ±9.2 billion USD)",
                              amount.to_string(), from.name)};
  }
  return Status::ok();
}

AccountId Ledger::open(std::string name, Floor floor) {
  accounts_.push_back({std::move(name), floor, Money(), Money()});
  return static_cast<AccountId>(accounts_.size() - 1);
}

Result<TransferId> Ledger::transfer(AccountId debit, AccountId credit, Money amount,
                                    TransferKind kind, std::uint64_t hold, std::int64_t at_ms,
                                    bool allow_overdraft) {
  TP_ASSERT(debit < accounts_.size() && credit < accounts_.size());
  if (amount <= Money() || debit == credit) {
    return Status{ErrorKind::kInvalidRequest, "a transfer moves a positive amount between two "
                                              "different accounts"};
  }
  Account& from = accounts_[debit];
  Account& to = accounts_[credit];
  if (from.floor == Floor::kNonNegative && !allow_overdraft && from.balance < amount) {
    return Status{ErrorKind::kPaymentRequired,
                  fmt::format("{} holds {} USD, {} USD needed", from.name,
                              from.balance.to_string(), amount.to_string())};
  }
  // Balances are sums of every transfer ever made (the world account's of every deposit),
  // so the range is checked here, where a wrap would otherwise stop the process.
  std::int64_t from_after = 0;
  std::int64_t to_after = 0;
  if (__builtin_sub_overflow(from.balance.nanos(), amount.nanos(), &from_after) ||
      __builtin_add_overflow(to.balance.nanos(), amount.nanos(), &to_after)) {
    return Status{ErrorKind::kInvalidRequest,
                  fmt::format("moving {} USD from {} to {} would take a balance past what the "
                              "ledger can hold (about ±9.2 billion USD)",
                              amount.to_string(), from.name, to.name)};
  }
  from.balance = Money::from_nanos(from_after);
  to.balance = Money::from_nanos(to_after);
  const TransferId id = next_id_++;
  journal_.push_back({id, debit, credit, amount, kind, hold, at_ms});
  return id;
}

Status Ledger::replay(const Transfer& t) {
  if (t.id != next_id_ || t.debit >= accounts_.size() ||
      t.credit >= accounts_.size() || t.debit == t.credit || t.amount <= Money()) {
    return {ErrorKind::kConflict,
            fmt::format("stored transfer {} does not follow the journal", t.id)};
  }
  accounts_[t.debit].balance -= t.amount;
  accounts_[t.credit].balance += t.amount;
  journal_.push_back(t);
  ++next_id_;
  return Status::ok();
}

Result<LedgerTail> Ledger::tail(std::size_t accounts_from, std::uint64_t transfers_from) const {
  const std::uint64_t first_in_memory = transfer_count() - journal_.size();
  if (transfers_from < first_in_memory) {
    return Status{ErrorKind::kInternal, "transfers to store were dropped from memory"};
  }
  LedgerTail t;
  t.accounts_from = accounts_from;
  for (std::size_t id = accounts_from; id < accounts_.size(); ++id) {
    t.accounts.push_back({accounts_[id].name, accounts_[id].floor});
  }
  t.transfers_from = transfers_from;
  t.transfers.assign(journal_.begin() + static_cast<std::ptrdiff_t>(transfers_from - first_in_memory),
                     journal_.end());
  return t;
}

void Ledger::forget_through(TransferId last) {
  std::size_t n = 0;
  while (n < journal_.size() && journal_[n].id <= last) {
    const Transfer& t = journal_[n++];
    accounts_[t.debit].base -= t.amount;
    accounts_[t.credit].base += t.amount;
  }
  journal_.erase(journal_.begin(), journal_.begin() + static_cast<std::ptrdiff_t>(n));
}

VerifyReport Ledger::verify() const {
  VerifyReport report;
  std::vector<Money> recomputed;
  recomputed.reserve(accounts_.size());
  for (const Account& a : accounts_) recomputed.push_back(a.base);
  for (const Transfer& t : journal_) {
    recomputed[t.debit] -= t.amount;
    recomputed[t.credit] += t.amount;
  }
  Money total;
  for (std::size_t i = 0; i < accounts_.size(); ++i) {
    total += recomputed[i];
    if (recomputed[i] != accounts_[i].balance) {
      report.mismatched.push_back(static_cast<AccountId>(i));
    }
  }
  report.transfers = transfer_count();
  report.imbalance = total;
  report.ok = total.is_zero() && report.mismatched.empty();
  return report;
}

}  // namespace tp::ledger
