#include "ledger/bank.h"

#include <fmt/format.h>

#include <algorithm>
#include <functional>
#include <unordered_map>

#include "core/assert.h"

namespace tp::ledger {
namespace {

// Whether a settled balance is past a low-balance threshold: below it, or for 0, at it.
bool is_below(Money settled, Money threshold) {
  return threshold.is_zero() ? settled <= threshold : settled < threshold;
}

}  // namespace

std::string customer_name(std::int64_t account) { return fmt::format("acct_{}", account); }

std::unique_ptr<Bank> Bank::create() {
  std::unique_ptr<Bank> bank(new Bank());
  bank->platform_ = PlatformAccounts::open(bank->ledger_);
  return bank;
}

Result<std::unique_ptr<Bank>> Bank::adopt(Ledger ledger, std::int64_t now_ms) {
  std::unique_ptr<Bank> bank(new Bank());
  bank->ledger_ = std::move(ledger);
  if (bank->ledger_.account_count() == 0) {
    bank->platform_ = PlatformAccounts::open(bank->ledger_);
  } else {
    auto platform = PlatformAccounts::find(bank->ledger_);
    if (!platform) return platform.status();
    bank->platform_ = *platform;
    bank->stored_accounts_ = bank->committed_accounts_ = bank->ledger_.account_count();
    bank->stored_transfers_ = bank->committed_transfers_ = bank->ledger_.transfer_count();
  }
  for (AccountId id = 0; id < bank->ledger_.account_count(); ++id) {
    const std::string& name = bank->ledger_.name(id);
    if (!name.starts_with("acct_") || !name.ends_with(":paid")) continue;
    const std::string customer = name.substr(0, name.size() - 5);
    auto wallet = Wallet::adopt(bank->ledger_, bank->platform_, customer);
    if (!wallet) return wallet.status();
    const std::int64_t account = std::stoll(customer.substr(5));
    bank->wallets_.emplace(account, std::make_unique<Wallet>(std::move(wallet.value())));
  }
  // Holds are reservations in memory: a dead process left none in the journal, unless
  // it was a version that moved held money to `held` accounts. One pass over the journal
  // finds what such holds left there, and it goes back now.
  std::unordered_map<AccountId, Wallet*> by_held;
  for (auto& [account, w] : bank->wallets_) by_held.emplace(w->held_account(), w.get());
  HoldId last_hold = 0;
  for (const Transfer& t : bank->ledger_.journal()) {
    if (t.hold == 0) continue;
    last_hold = std::max(last_hold, t.hold);
    auto it = by_held.find(t.kind == TransferKind::kHold ? t.credit : t.debit);
    if (it != by_held.end()) it->second->recover(t);
  }
  for (auto& [account, w] : bank->wallets_) w->return_stranded(now_ms);
  bank->continue_holds_after(last_hold);
  return bank;
}

void Bank::continue_holds_after(HoldId id) {
  std::lock_guard lock(mu_);
  holds_after_ = std::max(holds_after_, id);
  for (auto& [account, w] : wallets_) w->continue_holds_after(holds_after_);
}

Wallet& Bank::wallet(std::int64_t account) {
  auto it = wallets_.find(account);
  if (it == wallets_.end()) {
    it = wallets_.emplace(account, std::make_unique<Wallet>(ledger_, platform_,
                                                            customer_name(account)))
             .first;
    it->second->continue_holds_after(holds_after_);
    below_[account] = below_mask(*it->second, 0);  // an empty wallet raises nothing
  }
  return *it->second;
}

std::uint32_t Bank::below_mask(const Wallet& w, std::int64_t now_ms) const {
  const Money settled = w.available(now_ms) + w.held();
  std::uint32_t mask = 0;
  for (std::size_t i = 0; i < thresholds_.size(); ++i) {
    const Money t = thresholds_[i];
    if (is_below(settled, t)) mask |= 1U << i;
  }
  return mask;
}

bool Bank::below(std::int64_t account, Money threshold, std::int64_t now_ms) const {
  std::lock_guard lock(mu_);
  const auto it = wallets_.find(account);
  if (it == wallets_.end()) return false;
  return is_below(it->second->available(now_ms) + it->second->held(), threshold);
}

void Bank::check_low_balance(std::int64_t account, const Wallet& w, std::int64_t now_ms) {
  if (thresholds_.empty()) return;
  const std::uint32_t now_below = below_mask(w, now_ms);
  std::uint32_t& was_below = below_[account];
  const std::uint32_t crossed = now_below & ~was_below;
  was_below = now_below;
  if (crossed == 0) return;
  const Money settled = w.available(now_ms) + w.held();
  for (std::size_t i = 0; i < thresholds_.size(); ++i) {
    if ((crossed & (1U << i)) == 0) continue;
    if (notices_.size() >= kLowBalancePendingMax) {
      ++notices_dropped_;
      continue;
    }
    notices_.push_back({account, thresholds_[i], settled, now_ms});
  }
}

void Bank::set_low_balance_thresholds(std::vector<Money> thresholds) {
  std::lock_guard lock(mu_);
  std::sort(thresholds.begin(), thresholds.end(), std::greater<>());
  thresholds.erase(std::unique(thresholds.begin(), thresholds.end()), thresholds.end());
  TP_CHECK(thresholds.size() <= 32);
  thresholds_ = std::move(thresholds);
  for (auto& [account, w] : wallets_) below_[account] = below_mask(*w, 0);
}

std::vector<LowBalanceNotice> Bank::take_low_balance_notices(std::size_t* dropped) {
  std::lock_guard lock(mu_);
  std::vector<LowBalanceNotice> out;
  out.swap(notices_);
  if (dropped != nullptr) *dropped = notices_dropped_;
  notices_dropped_ = 0;
  return out;
}

Status Bank::check_deposit(Money amount) const {
  std::lock_guard lock(mu_);
  return ledger_.check_range(platform_.world, amount);
}

void Bank::open_wallet(std::int64_t account) {
  std::lock_guard lock(mu_);
  wallet(account);
}

Result<TransferId> Bank::deposit(std::int64_t account, CreditKind kind, Money amount,
                                 std::optional<std::int64_t> expires_at_ms, std::int64_t now_ms) {
  std::lock_guard lock(mu_);
  Wallet& w = wallet(account);
  Result<TransferId> id = Status{ErrorKind::kInvalidRequest, "unknown credit kind"};
  switch (kind) {
    case CreditKind::kPaid: id = w.deposit_paid(amount, now_ms); break;
    case CreditKind::kTrial: id = w.deposit_trial(amount, now_ms); break;
    case CreditKind::kPromo:
      // Checked here, after an idempotent call's lookup: a retry of a promo credit made
      // before its expiry gets the first answer, not this.
      id = !expires_at_ms ? Status{ErrorKind::kInvalidRequest, "promo credit needs an expiry"}
           : *expires_at_ms <= now_ms
               ? Status{ErrorKind::kInvalidRequest, "promo credit must expire in the future"}
               : w.deposit_promo(amount, *expires_at_ms, now_ms);
      break;
  }
  check_low_balance(account, w, now_ms);
  return id;
}

Result<TransferId> Bank::refund(std::int64_t account, Money amount, std::int64_t now_ms) {
  std::lock_guard lock(mu_);
  const auto it = wallets_.find(account);
  if (it == wallets_.end()) {
    return Status{ErrorKind::kNotFound, fmt::format("no wallet for {}", customer_name(account))};
  }
  auto id = it->second->refund(amount, now_ms);
  check_low_balance(account, *it->second, now_ms);
  return id;
}

Result<Balance> Bank::balance(std::int64_t account, std::int64_t now_ms) const {
  std::lock_guard lock(mu_);
  const auto it = wallets_.find(account);
  if (it == wallets_.end()) {
    return Status{ErrorKind::kNotFound, fmt::format("no wallet for {}", customer_name(account))};
  }
  const Wallet& w = *it->second;
  return Balance{w.paid(), w.trial(), w.promo(now_ms), w.held(), w.available(now_ms)};
}

Result<Bank::Hold> Bank::hold(std::int64_t account, Money amount, std::int64_t expires_at_ms,
                              std::int64_t now_ms) {
  std::lock_guard lock(mu_);
  const auto it = wallets_.find(account);
  if (it == wallets_.end()) {
    return Status{ErrorKind::kNotFound, fmt::format("no wallet for {}", customer_name(account))};
  }
  auto id = it->second->hold(amount, expires_at_ms, now_ms);
  if (!id) return id.status();
  return Hold{account, *id, amount};
}

Result<Wallet::Covered> Bank::cover(const Hold& hold, Money needed, std::int64_t now_ms,
                                  bool may_overdraw) {
  if (hold.id == 0) return Status{ErrorKind::kNotFound, "no hold"};
  std::lock_guard lock(mu_);
  const auto it = wallets_.find(hold.account);
  if (it == wallets_.end()) return Status{ErrorKind::kNotFound, "no wallet"};
  return it->second->cover(hold.id, needed, now_ms, may_overdraw);
}

Money Bank::settle(const Hold& hold, Money actual, std::int64_t now_ms) {
  std::lock_guard lock(mu_);
  const auto it = wallets_.find(hold.account);
  if (it == wallets_.end()) return Money();  // no wallet: nothing was ever held or spendable
  Wallet& w = *it->second;
  Money charged;
  if (auto posted = hold.id != 0 ? w.post(hold.id, actual, now_ms) : Result<Money>(Status{
                                       ErrorKind::kNotFound, "no hold"});
      posted) {
    charged = *posted;
  } else if (actual > Money()) {
    // The hold expired while the request ran: the cost is owed all the same.
    charged = w.charge(actual, hold.id, now_ms);
  }
  check_low_balance(hold.account, w, now_ms);
  return charged;
}

Money Bank::reverse(std::int64_t account, HoldId hold, std::int64_t now_ms) {
  std::lock_guard lock(mu_);
  const auto it = wallets_.find(account);
  if (it == wallets_.end() || hold == 0) return Money();
  const Money back = it->second->reverse(hold, now_ms);
  check_low_balance(account, *it->second, now_ms);
  // A notice not taken yet that this reversal undid is dropped (see NoticeRecorder for
  // those taken already).
  const Money settled = it->second->available(now_ms) + it->second->held();
  std::erase_if(notices_, [&](const LowBalanceNotice& n) {
    return n.account == account && !is_below(settled, n.threshold);
  });
  return back;
}

void Bank::void_hold(const Hold& hold, std::int64_t now_ms) {
  if (hold.id == 0) return;
  std::lock_guard lock(mu_);
  (void)wallets_.at(hold.account)->void_hold(hold.id, now_ms);
}

bool Bank::renew(const Hold& hold, std::int64_t expires_at_ms) {
  if (hold.id == 0) return true;
  std::lock_guard lock(mu_);
  const auto it = wallets_.find(hold.account);
  return it != wallets_.end() && it->second->renew(hold.id, expires_at_ms);
}

Wallet::Expired Bank::expire(std::int64_t now_ms, std::int64_t monotonic_ms) {
  std::lock_guard lock(mu_);
  Wallet::Expired total;
  for (auto& [account, w] : wallets_) {
    const Wallet::Expired e = w->expire(now_ms, monotonic_ms);
    total.holds += e.holds;
    total.lots += e.lots;
    if (e.lots > 0) check_low_balance(account, *w, now_ms);
  }
  return total;
}

VerifyReport Bank::verify() const {
  std::lock_guard lock(mu_);
  return ledger_.verify();
}

Status Bank::persist(const StoreFn& store) {
  Result<LedgerTail> tail = [&] {
    std::lock_guard lock(mu_);
    return take_unwritten();
  }();
  if (!tail) return tail.status();
  if (tail->empty()) return Status::ok();
  Status s = store(*tail);
  if (!s) {
    // Not written after all: the next persist hands it over again.
    std::lock_guard lock(mu_);
    stored_accounts_ = tail->accounts_from;
    stored_transfers_ = tail->transfers_from;
  }
  return s;
}

Result<LedgerTail> Bank::take_unwritten() {
  auto tail = ledger_.tail(stored_accounts_, stored_transfers_);
  if (!tail) return tail;
  stored_accounts_ = ledger_.account_count();
  stored_transfers_ = ledger_.transfer_count();
  return tail;
}

void Bank::committed(bool ok) {
  std::lock_guard lock(mu_);
  if (ok) {
    committed_accounts_ = stored_accounts_;
    committed_transfers_ = stored_transfers_;
    ledger_.forget_through(committed_transfers_);  // durable: memory keeps balances only
  } else {
    stored_accounts_ = committed_accounts_;
    stored_transfers_ = committed_transfers_;
  }
}

bool Bank::has_uncommitted() const {
  std::lock_guard lock(mu_);
  return committed_transfers_ < ledger_.transfer_count() ||
         committed_accounts_ < ledger_.account_count();
}

}  // namespace tp::ledger

namespace tp::ledger {

Reconciliation Bank::reconcile(const StoreFn& store,
                               const std::function<Result<StoredBooks>()>& read_back) {
  std::lock_guard lock(mu_);
  Reconciliation r;
  auto tail = take_unwritten();
  const Status stored = !tail ? tail.status() : tail->empty() ? Status::ok() : store(*tail);
  if (!stored) {
    if (tail) {
      stored_accounts_ = tail->accounts_from;
      stored_transfers_ = tail->transfers_from;
    }
    r.problem = fmt::format("storing the ledger failed: {}", stored.message());
    r.store_failed = true;
    return r;
  }

  const VerifyReport memory = ledger_.verify();
  auto books = read_back();
  if (!books) {
    r.problem = fmt::format("reading the stored ledger failed: {}", books.status().message());
    r.store_failed = true;
    return r;
  }
  r.transfers = books->transfers;
  for (const Money& m : books->balances) r.imbalance += m;
  for (AccountId id = 0; id < ledger_.account_count(); ++id) {
    const Money stored = id < books->balances.size() ? books->balances[id] : Money();
    if (stored != ledger_.balance(id)) r.mismatched.push_back(ledger_.name(id));
  }
  if (books->balances.size() > ledger_.account_count()) {
    r.problem = "the store has ledger accounts this process does not know";
  } else if (books->transfers != ledger_.transfer_count()) {
    r.problem = fmt::format("the store has {} transfers, memory {}", books->transfers,
                            ledger_.transfer_count());
  } else if (!r.imbalance.is_zero()) {
    r.problem = fmt::format("stored balances sum to {} USD, not 0", r.imbalance.to_string());
  } else if (!r.mismatched.empty()) {
    r.problem = fmt::format("{} account(s) differ between the store and memory, first {}",
                            r.mismatched.size(), r.mismatched.front());
  } else if (!memory.ok) {
    r.problem = fmt::format("balances in memory do not follow from their transfers (imbalance {} "
                            "USD)",
                            memory.imbalance.to_string());
  }
  r.ok = r.problem.empty();
  return r;
}

}  // namespace tp::ledger
