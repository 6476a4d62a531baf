#pragma once
// The double-entry ledger: accounts that hold Money and transfers that move it, one debit
// and one credit each. Balances are never edited: an account's balance is the sum of its
// credits minus its debits, cached as transfers apply and recomputable from the journal at
// any time (verify). Because every transfer adds to one account what it takes from
// another, the balances of all accounts always sum to zero.
//
// Not thread-safe: a Ledger is owned by one thread (the shard that owns its accounts).

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/money.h"
#include "core/status.h"

namespace tp::ledger {

using AccountId = std::uint32_t;
using TransferId = std::uint64_t;

// Whether an account may go below zero. Customer credit accounts may not, except by an
// explicit overdraft (a response that cost more than its hold); platform and outside-world
// accounts carry any sign.
enum class Floor { kNonNegative, kUnbounded };

enum class TransferKind : std::uint8_t {
  kDeposit,   // credits bought or granted, from the outside world
  kHold,      // reserve for a request: spendable → held
  kPost,      // a request's actual cost: held → revenue
  kRelease,   // the unused part of a hold back to where it came from
  kOverdraft, // the part of a cost above its hold: paid (may go negative) → revenue
  kExpire,    // an expired promo lot's remainder → expired_credits
  kRefund,    // unused paid credit returned: paid → refunds
  kReverse,   // a charge taken back (its settlement failed to store): revenue → the book
};
std::string_view transfer_kind_name(TransferKind kind);

struct Transfer {
  TransferId id = 0;
  AccountId debit = 0;
  AccountId credit = 0;
  Money amount;
  TransferKind kind = TransferKind::kDeposit;
  std::uint64_t hold = 0;  // the hold this transfer belongs to, 0 if none
  std::int64_t at_ms = 0;  // wall-clock time, from the caller's Clock
};

// What a ledger added after some point, copied out so that it can be stored without the
// ledger (and without its owner's lock).
struct LedgerTail {
  struct NewAccount {
    std::string name;
    Floor floor;
  };
  std::size_t accounts_from = 0;     // the id of accounts.front()
  std::vector<NewAccount> accounts;  // opened since
  std::uint64_t transfers_from = 0;  // transfers already counted before transfers.front()
  std::vector<Transfer> transfers;   // made since, in id order
  bool empty() const { return accounts.empty() && transfers.empty(); }
};

struct VerifyReport {
  bool ok = false;
  std::uint64_t transfers = 0;
  Money imbalance;                 // Σ of all balances recomputed from the journal; must be 0
  std::vector<AccountId> mismatched;  // cached balance differs from the journal's
};

class Ledger {
 public:
  AccountId open(std::string name, Floor floor);

  // Moves `amount` (> 0) from `debit` to `credit`. Fails with kPaymentRequired when a
  // kNonNegative debit account would go below zero, unless `allow_overdraft`.
  Result<TransferId> transfer(AccountId debit, AccountId credit, Money amount, TransferKind kind,
                              std::uint64_t hold, std::int64_t at_ms, bool allow_overdraft = false);

  // Whether `amount` can leave `debit` within the range a balance holds (the floor aside):
  // the check transfer() makes, for a caller that must know before it changes anything.
  Status check_range(AccountId debit, Money amount) const;

  // Applies a transfer read back from the store, as it was made: ids must follow on from
  // the journal and the accounts must exist; floors are not re-checked (they held when the
  // transfer was made, and an overdraft is legal).
  Status replay(const Transfer& transfer);

  Money balance(AccountId id) const { return accounts_.at(id).balance; }
  // Every transfer ever made, stored or not (ids are dense from 1).
  std::uint64_t transfer_count() const { return next_id_ - 1; }
  Floor floor(AccountId id) const { return accounts_.at(id).floor; }
  const std::string& name(AccountId id) const { return accounts_.at(id).name; }
  std::size_t account_count() const { return accounts_.size(); }
  // The transfers still in memory: all of them until forget_through(), then only later
  // ones. The first has id transfer_count() - journal().size() + 1.
  const std::vector<Transfer>& journal() const { return journal_; }
  // Drops the transfers in memory up to and including id `last`, once they are durably
  // stored: the balances they produced become each account's starting point. A
  // long-running gateway keeps only what is not yet committed.
  void forget_through(TransferId last);
  // The accounts from id `accounts_from` and the transfers after the first
  // `transfers_from`. kInternal when some of those transfers were forgotten already.
  Result<LedgerTail> tail(std::size_t accounts_from, std::uint64_t transfers_from) const;

  // Recomputes every balance from its starting point and the journal in memory, and checks
  // that all balances sum to zero.
  VerifyReport verify() const;

 private:
  struct Account {
    std::string name;
    Floor floor;
    Money balance;
    Money base;  // the balance when the journal was last forgotten
  };
  std::vector<Account> accounts_;
  std::vector<Transfer> journal_;
  TransferId next_id_ = 1;
};

}  // namespace tp::ledger
