#pragma once
// A customer's credit within the Ledger and the operations billing performs on it.
//
// Books per customer: `paid` (bought), `trial` (granted at sign-up), promo lots (each with
// an expiry), and `held` (reserved for requests in flight). Spending draws from the
// soonest-expiring unexpired promo lot, then trial, then paid.
//
// A request takes a hold for its worst case, then posts its actual cost: the hold pays up
// to its amount, the rest of the hold goes back where it came from, and a cost above the
// hold (the upstream answered longer than estimated) is taken from the other books and,
// only for that shortfall, may overdraw `paid`. Holds also expire by themselves.
//
// Not thread-safe, like the Ledger it writes to.

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

  Money paid() const { return ledger_.balance(paid_); }
  Money trial() const { return ledger_.balance(trial_); }
  Money held() const { return ledger_.balance(held_); }
  // Unexpired promo lots only.
  Money promo(std::int64_t now_ms) const;
  // What a new hold may take: paid + trial + unexpired promo (paid may be negative).
  Money available(std::int64_t now_ms) const;

  // Reserves `amount` until `expires_at_ms`. kPaymentRequired, saying what is available and
  // what was needed, when available() is short.
  Result<HoldId> hold(Money amount, std::int64_t expires_at_ms, std::int64_t now_ms);
  // Settles a hold at `actual` (>= 0) and returns what was charged (== actual). The hold is
  // gone afterwards. kNotFound for an unknown, settled, voided or expired hold.
  Result<Money> post(HoldId id, Money actual, std::int64_t now_ms);
  // Returns the whole hold. kNotFound as for post.
  Status void_hold(HoldId id, std::int64_t now_ms);
  // Moves an open hold's expiry to `expires_at_ms` (a request still running). False when
  // the hold is not open.
  bool renew(HoldId id, std::int64_t expires_at_ms);
  // Charges `actual` (> 0) without a hold, for a request whose hold expired before it
  // finished: from the books in spend order, then an overdraft of paid for the rest. The
  // transfers carry `hold` for the record.
  Money charge(Money actual, HoldId hold, std::int64_t now_ms);
  // Restart recovery: re-opens, from journal transfers touching this wallet's held account
  // (in journal order), every hold that was taken but never posted, voided or expired.
  // They expire at `expires_at_ms`. Later hold ids follow the largest one seen.
  void recover(const Transfer& transfer, std::int64_t expires_at_ms);
  AccountId held_account() const { return held_; }
  // Voids holds and empties promo lots whose time has come. Returns how many of each.
  struct Expired {
    std::size_t holds = 0;
    std::size_t lots = 0;
  };
  Expired expire(std::int64_t now_ms);
  // Returns unused paid credit (never trial or promo). kPaymentRequired past paid().
  Result<TransferId> refund(Money amount, std::int64_t now_ms);

  std::size_t open_holds() const { return holds_.size(); }
  std::size_t promo_lots() const { return lots_.size(); }

 private:
  struct Lot {
    AccountId account;
    std::int64_t expires_at_ms;
  };
  struct Leg {
    AccountId source;
    Money amount;
  };
  struct Hold {
    Money amount;
    std::int64_t expires_at_ms;
    std::vector<Leg> legs;  // where the held money came from, in spend order
  };

  Wallet(Ledger& ledger, const PlatformAccounts& platform, std::string customer, AccountId paid,
         AccountId trial, AccountId held);
  // Spendable accounts in spend order at `now_ms`.
  std::vector<AccountId> spend_order(std::int64_t now_ms) const;
  // Moves `amount` from the spend-order accounts to `to`; the amounts taken go to `legs`.
  // The caller has checked that they cover it.
  void draw(Money amount, AccountId to, TransferKind kind, HoldId hold, std::int64_t now_ms,
            std::vector<Leg>* legs);
  // Gives `amount` of a hold back to its legs, last-drawn first.
  void release(Hold& hold, Money amount, HoldId id, std::int64_t now_ms);

  Ledger& ledger_;
  PlatformAccounts platform_;
  std::string customer_;
  AccountId paid_;
  AccountId trial_;
  AccountId held_;
  std::vector<Lot> lots_;  // in order of expiry
  std::map<HoldId, Hold> holds_;
  HoldId next_hold_ = 1;
};

}  // namespace tp::ledger
