#pragma once
// A customer's credit within the Ledger and the operations billing performs on it.
//
// Books per customer: `paid` (bought), `trial` (granted at sign-up) and promo lots (each
// with an expiry). Spending draws from the soonest-expiring unexpired promo lot, then
// trial, then paid.
//
// A request takes a hold for its worst case: a reservation against those books, kept in
// memory only (a pending transfer). The books' ledger balances do not move until the hold
// posts its actual cost to revenue, drawn in spend order from what the hold reserved and
// what is unreserved by then (other holds may have let go of trial or promo credit since);
// the rest of the hold is simply no longer reserved. A cost above the hold (the upstream answered
// longer than estimated) is taken from the unreserved books and, only for that shortfall, may
// overdraw `paid`. Holds also expire by themselves. Because a hold writes nothing, a request costs
// the journal one transfer per book it spends from, and a process that dies leaves no
// hold behind to undo.
//
// Journals written before holds were reservations moved held money into a `held` ledger
// account; a restart returns whatever such holds left there (recover, return_stranded).
//
// Not thread-safe, like the Ledger it writes to.

#include <algorithm>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "ledger/ledger.h"

namespace tp::ledger {

// The platform side of every customer transfer. Opened once per Ledger.
struct PlatformAccounts {
  AccountId world = 0;            // money entering from outside (payments, grants)
  AccountId revenue = 0;          // what requests cost
  AccountId expired_credits = 0;  // promo remainders at expiry
  AccountId refunds = 0;          // paid credit handed back
  static PlatformAccounts open(Ledger& ledger);
  // Finds them by name in a ledger rebuilt from the store; kInternal if one is missing.
  static Result<PlatformAccounts> find(const Ledger& ledger);
};

using HoldId = std::uint64_t;

class Wallet {
 public:
  Wallet(Ledger& ledger, const PlatformAccounts& platform, const std::string& customer);
  // Re-attaches to the accounts of `customer` in a ledger rebuilt from the store. Promo lot
  // accounts carry their expiry in their name ("<customer>:promo:<n>:expires=<ms>").
  static Result<Wallet> adopt(Ledger& ledger, const PlatformAccounts& platform,
                              const std::string& customer);

  Result<TransferId> deposit_paid(Money amount, std::int64_t now_ms);
  Result<TransferId> deposit_trial(Money amount, std::int64_t now_ms);
  Result<TransferId> deposit_promo(Money amount, std::int64_t expires_at_ms, std::int64_t now_ms);

  // Each book's balance less what open holds reserve on it.
  Money paid() const { return ledger_.balance(paid_) - paid_reserved_; }
  Money trial() const { return ledger_.balance(trial_) - trial_reserved_; }
  // Unexpired promo lots only.
  Money promo(std::int64_t now_ms) const;
  // What open holds reserve.
  Money held() const { return held_total_; }
  // What a new hold may take: paid + trial + unexpired promo (paid may be negative).
  Money available(std::int64_t now_ms) const;

  // Reserves `amount` until `expires_at_ms`, a time on the monotonic clock (see expire()).
  // kPaymentRequired, saying what is available and what was needed, when available() is
  // short.
  Result<HoldId> hold(Money amount, std::int64_t expires_at_ms, std::int64_t now_ms);
  // A response running past its hold asks for more: makes hold `id` reserve at least
  // `needed`, taking the difference from the unreserved books in spend order. What they
  // cannot give, this one response may overdraw from paid: the first hold to ask gets that
  // licence when paid (less what holds reserve) is not overdrawn already, and keeps it
  // until it ends; any other hold is refused and its response must stop. So the books go
  // below zero by at most one response's shortfall, however many run at once. Without
  // `may_overdraw` a shortfall is refused outright. Either way what the books could give
  // stays reserved, and `reserved` says how much the hold now holds. kNotFound for a hold
  // that is not open.
  enum class Cover { kCovered, kOverdraft, kRefused };
  struct Covered {
    Cover kind;
    Money reserved;
  };
  Result<Covered> cover(HoldId id, Money needed, std::int64_t now_ms, bool may_overdraw = true);
  // Settles a hold at `actual` (>= 0) and returns what was charged (== actual). A cost over
  // the hold comes from the unreserved books, then as an overdraft of paid (owed all the
  // same: see cover). The hold is gone afterwards. kNotFound for an unknown, settled,
  // voided or expired hold.
  Result<Money> post(HoldId id, Money actual, std::int64_t now_ms);
  // Ends the hold without a charge. kNotFound as for post.
  Status void_hold(HoldId id, std::int64_t now_ms);
  // Moves an open hold's expiry to `expires_at_ms` (a request still running). False when
  // the hold is not open.
  bool renew(HoldId id, std::int64_t expires_at_ms);
  // Takes back what hold `id`'s settlement charged (its post and overdraft transfers still
  // in the journal), to the books it came from; what returns to a promo lot past its time
  // expires at once. For a settlement whose store commit failed: its client got an error,
  // not the answer. Returns what came back.
  Money reverse(HoldId id, std::int64_t now_ms);
  // Charges `actual` (> 0) without a hold, for a request whose hold expired before it
  // finished: from the unreserved books in spend order, then an overdraft of paid for the
  // rest. The transfers carry `hold` for the record.
  Money charge(Money actual, HoldId hold, std::int64_t now_ms);
  // Restart of a journal from before holds were reservations: collects, from transfers
  // touching this wallet's `held` account (in journal order), the money holds moved there
  // and never posted or released. Later hold ids follow the largest one seen.
  void recover(const Transfer& transfer);
  // Returns what recover found to the books it came from (a lot swept meanwhile: to
  // expired credits). Returns how many holds that was.
  std::size_t return_stranded(std::int64_t now_ms);
  // Restart: hold ids continue after `id`, the largest one the journal names, so that every
  // hold a transfer refers to stays unique. (A hold that cost nothing moved no money and
  // is named only by its usage row, which has an id of its own.)
  void continue_holds_after(HoldId id) { next_hold_ = std::max(next_hold_, id + 1); }
  AccountId held_account() const { return held_; }
  AccountId paid_account() const { return paid_; }
  // Voids holds whose time has come on the monotonic clock (`monotonic_ms`) and empties
  // promo lots whose time has come on the wall clock (`now_ms`; each lot's transfer is
  // stamped at its expiry, the voids' at `now_ms`). Returns how many of each. A lot that
  // open holds still reserve keeps that part until they end.
  struct Expired {
    std::size_t holds = 0;
    std::size_t lots = 0;
  };
  Expired expire(std::int64_t now_ms, std::int64_t monotonic_ms);
  // Returns unused, unreserved paid credit (never trial or promo). kPaymentRequired past
  // paid().
  Result<TransferId> refund(Money amount, std::int64_t now_ms);

  std::size_t open_holds() const { return holds_.size(); }
  std::size_t promo_lots() const { return lots_.size(); }

 private:
  struct Lot {
    AccountId account;
    std::int64_t expires_at_ms;
    Money reserved;       // by open holds
    bool swept = false;   // expired: its unreserved part went to expired credits
  };
  struct Leg {
    AccountId source;
    Money amount;
  };
  struct Hold {
    Money amount;
    std::int64_t expires_at_ms;
    std::vector<Leg> legs;  // what it reserves on which book (its settlement draws in
                            // spend order anew: close)
  };

  Wallet(Ledger& ledger, const PlatformAccounts& platform, std::string customer, AccountId paid,
         AccountId trial, AccountId held);
  // Calls `take(source)` for each spendable account in spend order at `now_ms` (unexpired
  // lots by expiry, trial, paid) until it returns false. No allocation: holds run on the
  // request path.
  template <typename Take>
  void in_spend_order(std::int64_t now_ms, Take take) const {
    for (const Lot& l : lots_) {
      if (l.expires_at_ms > now_ms && !take(l.account)) return;
    }
    if (take(trial_)) take(paid_);
  }
  Lot* lot(AccountId account);
  // What open holds reserve on `source` (paid, trial or a lot).
  Money& reserved(AccountId source);
  // `source`'s balance less its reservations, never below zero.
  Money spendable(AccountId source);
  // Moves what `lot` holds beyond its reservations to expired credits (a lot past its time),
  // in a transfer stamped `at_ms`. Whether it moved anything (an emptied lot has nothing
  // left to expire).
  bool sweep(const Lot& lot, HoldId hold, std::int64_t at_ms);
  // Ends a hold's reservations and moves `spent` (at most the hold) to revenue, drawn in
  // spend order from what is then unreserved, lots past their time only as far as the hold
  // reserved on them. What a swept lot no longer reserves follows its remainder to expired
  // credits.
  void close(const Hold& hold, Money spent, HoldId id, std::int64_t now_ms);

  Ledger& ledger_;
  PlatformAccounts platform_;
  std::string customer_;
  AccountId paid_;
  AccountId trial_;
  AccountId held_;            // only in journals from before holds were reservations
  std::vector<Lot> lots_;     // in order of expiry
  Money paid_reserved_;
  Money trial_reserved_;
  Money held_total_;          // Σ open holds
  std::map<HoldId, Hold> holds_;
  HoldId overdrawer_ = 0;  // the open hold that cover() let overdraw paid, if any
  std::map<HoldId, std::vector<Leg>> stranded_;  // see recover
  HoldId next_hold_ = 1;
};

}  // namespace tp::ledger
