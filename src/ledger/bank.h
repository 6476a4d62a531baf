#pragma once
// Every customer's wallet in one Ledger, behind one mutex. The ledger's balances are the
// truth in memory; `persist` hands what changed to the store. Thread-safe.

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <string>
#include <vector>

#include "ledger/ledger.h"
#include "ledger/wallet.h"

namespace tp::ledger {

enum class CreditKind { kPaid, kTrial, kPromo };

struct Balance {
  Money paid, trial, promo, held, available;
};

// Balances as recomputed from stored transfers alone.
struct StoredBooks {
  std::vector<Money> balances;  // by AccountId
  std::uint64_t transfers = 0;
};

// An account's settled balance (everything but what in-flight requests hold) fell below a
// configured threshold.
struct LowBalanceNotice {
  std::int64_t account = 0;
  Money threshold;
  Money balance;
  std::int64_t at_ms = 0;
};

struct Reconciliation {
  bool ok = false;
  std::uint64_t transfers = 0;          // stored transfers recomputed
  Money imbalance;                      // Σ of every stored balance; must be 0
  std::vector<std::string> mismatched;  // accounts whose books differ from memory
  std::string problem;                  // what failed, in words; empty when ok
  bool store_failed = false;            // the store could not be written or read
};

class Bank {
 public:
  // A bank with only the platform accounts.
  static std::unique_ptr<Bank> create();
  // Takes a ledger rebuilt from the store (all of it already stored) and re-attaches every
  // customer's wallet ("acct_<id>:..." accounts). Holds are never stored, so a process that
  // died left none open; money that older versions moved to `held` accounts for holds never
  // settled goes back at `now_ms`. Those transfers are not stored yet (see persist). Promo
  // lots past their time are left to the first expire(), after set_low_balance_thresholds:
  // a lot that expired while the process was down then raises the notices it would have
  // raised expiring while it ran.
  static Result<std::unique_ptr<Bank>> adopt(Ledger ledger, std::int64_t now_ms);

  // Every hold from now is numbered above `id`, in every wallet, new ones too: a gateway
  // numbers its holds past those of earlier starts, which a hold that moved no money (a
  // voided one, a zero-cost one) left in usage rows only.
  void continue_holds_after(HoldId id);

  // Idempotent.
  void open_wallet(std::int64_t account);
  // A promo credit needs `expires_at_ms` after `now_ms` (kInvalidRequest); paid and trial
  // credit never expires, and `expires_at_ms` is not used for them.
  Result<TransferId> deposit(std::int64_t account, CreditKind kind, Money amount,
                             std::optional<std::int64_t> expires_at_ms, std::int64_t now_ms);
  // Whether a deposit of `amount` fits the ledger's range (every deposit comes from the
  // world account, whose balance is minus all of them): asked before what a refused deposit
  // would leave half done, such as an account created for its trial credit.
  Status check_deposit(Money amount) const;
  // Unused paid credit only (never trial or promo); kPaymentRequired past it.
  Result<TransferId> refund(std::int64_t account, Money amount, std::int64_t now_ms);
  Result<Balance> balance(std::int64_t account, std::int64_t now_ms) const;

  // A request's reservation: which wallet, which hold, how much.
  struct Hold {
    std::int64_t account = 0;
    HoldId id = 0;
    Money amount;
  };
  // Reserves `amount` for a request until `expires_at_ms`, on the monotonic clock
  // (Clock::monotonic_millis: a step of the wall clock must not lapse the holds of requests
  // still running). kPaymentRequired (saying what is available and what was needed) when
  // the account cannot cover it; kNotFound without a wallet.
  Result<Hold> hold(std::int64_t account, Money amount, std::int64_t expires_at_ms,
                    std::int64_t now_ms);
  // A response running past its hold: makes the hold reserve at least `needed` (see
  // Wallet::cover for who may overdraw when the books fall short, and when the response
  // must stop). kNotFound: the hold is not open (it lapsed).
  Result<Wallet::Covered> cover(const Hold& hold, Money needed, std::int64_t now_ms,
                                bool may_overdraw = true);
  // Charges a request's actual cost against its hold and releases the rest. A hold that
  // expired meanwhile, or none at all (id 0: the worst case cost nothing), is charged all
  // the same, straight from the books. Returns the charge.
  Money settle(const Hold& hold, Money actual, std::int64_t now_ms);
  // Takes back the charge of `hold`'s settlement (see Wallet::reverse). Returns it.
  Money reverse(std::int64_t account, HoldId hold, std::int64_t now_ms);
  // Gives a hold back whole (the request failed). A hold that expired already is a no-op.
  void void_hold(const Hold& hold, std::int64_t now_ms);
  // Keeps the hold of a request still running from lapsing: it now expires at
  // `expires_at_ms`. A lapse is for holds whose request is gone, not slow. False when the
  // hold had lapsed already.
  bool renew(const Hold& hold, std::int64_t expires_at_ms);
  // Voids holds past their expiry (`monotonic_ms`) and sweeps promo lots past theirs
  // (`now_ms`, the wall clock), in every wallet.
  Wallet::Expired expire(std::int64_t now_ms, std::int64_t monotonic_ms);

  // Low-balance thresholds (at most 32). A notice is raised once each time an account's
  // settled balance goes from at or above a threshold to below it (for a threshold of 0:
  // to 0 or below); going back above re-arms it. Holds do not count, so a request in
  // flight never raises one. Set before traffic starts.
  void set_low_balance_thresholds(std::vector<Money> thresholds);
  // The notices raised since the last call, oldest first, and how many were dropped
  // because more than kLowBalancePendingMax waited.
  std::vector<LowBalanceNotice> take_low_balance_notices(std::size_t* dropped = nullptr);
  static constexpr std::size_t kLowBalancePendingMax = 10'000;
  // Whether `account`'s settled balance is below `threshold` now (as a notice means it).
  bool below(std::int64_t account, Money threshold, std::int64_t now_ms) const;
  VerifyReport verify() const;

  // Calls `store` with what is not written yet, copied out under the bank's lock and
  // written without it, so requests taking holds never wait for the store. On success it
  // counts as written — inside the store's open transaction, so not yet durable:
  // committed() settles that. One thread persists at a time (the store writer).
  using StoreFn = std::function<Status(const LedgerTail& tail)>;
  Status persist(const StoreFn& store);
  // The store's transaction ended: on commit, what was written is durable and leaves
  // memory; on failure, it is written again by the next persist.
  void committed(bool ok);
  // Whether memory holds transfers (or accounts) that no commit has made durable yet: made
  // since the last one, or left by one that failed.
  bool has_uncommitted() const;

  // Stores what is new, recomputes every balance from the stored transfers (`read_back`)
  // and compares them with the balances in memory, which must also sum to zero. Both run
  // under the bank's lock, so nothing moves in between.
  Reconciliation reconcile(const StoreFn& store,
                           const std::function<Result<StoredBooks>()>& read_back);

 private:
  Bank() = default;
  Wallet& wallet(std::int64_t account);  // caller holds mu_; opens it if needed
  // Caller holds mu_: copies out what is not yet written and counts it as written.
  Result<LedgerTail> take_unwritten();
  // Caller holds mu_: compares `account`'s settled balance with the thresholds and raises
  // a notice for each one newly crossed downward.
  void check_low_balance(std::int64_t account, const Wallet& w, std::int64_t now_ms);
  std::uint32_t below_mask(const Wallet& w, std::int64_t now_ms) const;

  mutable std::mutex mu_;
  Ledger ledger_;
  PlatformAccounts platform_;
  std::map<std::int64_t, std::unique_ptr<Wallet>> wallets_;
  HoldId holds_after_ = 0;  // every wallet's holds are numbered above it
  std::vector<Money> thresholds_;                       // highest first
  std::unordered_map<std::int64_t, std::uint32_t> below_;  // per account: thresholds crossed
  std::vector<LowBalanceNotice> notices_;
  std::size_t notices_dropped_ = 0;
  std::size_t stored_accounts_ = 0;     // written in the open transaction, or committed
  std::size_t stored_transfers_ = 0;
  std::size_t committed_accounts_ = 0;  // durable
  std::size_t committed_transfers_ = 0;
};

std::string customer_name(std::int64_t account);  // "acct_<id>"

}  // namespace tp::ledger
