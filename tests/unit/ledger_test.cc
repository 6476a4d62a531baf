#include "ledger/ledger.h"

#include <gtest/gtest.h>

#include <future>
#include <map>
#include <random>
#include <thread>

#include "ledger/bank.h"
#include "ledger/wallet.h"

namespace tp::ledger {
namespace {

Money usd(const char* text) { return Money::parse(text).value(); }

class WalletTest : public ::testing::Test {
 protected:
  Ledger ledger;
  PlatformAccounts platform = PlatformAccounts::open(ledger);
  Wallet wallet{ledger, platform, "acct_1"};
  std::int64_t now = 1'000'000;

  void expect_balanced() {
    const VerifyReport r = ledger.verify();
    EXPECT_TRUE(r.ok) << "imbalance " << r.imbalance.to_string() << ", mismatched "
                      << r.mismatched.size();
  }
};

TEST_F(WalletTest, SpendOrderIsPromoThenTrialThenPaid) {
  ASSERT_TRUE(wallet.deposit_paid(usd("10"), now));
  ASSERT_TRUE(wallet.deposit_trial(usd("1"), now));
  ASSERT_TRUE(wallet.deposit_promo(usd("2"), now + 5000, now));
  ASSERT_TRUE(wallet.deposit_promo(usd("0.5"), now + 1000, now));  // expires first
  auto h = wallet.hold(usd("3"), now + 60'000, now);
  ASSERT_TRUE(h);
  EXPECT_EQ(wallet.promo(now), usd("0"));     // both lots drawn: 0.5 first, then 2
  EXPECT_EQ(wallet.trial(), usd("0.5"));      // then 0.5 of trial
  EXPECT_EQ(wallet.paid(), usd("10"));
  EXPECT_EQ(wallet.held(), usd("3"));
  expect_balanced();
}

TEST_F(WalletTest, PostChargesActualAndReleasesTheRestToItsSources) {
  ASSERT_TRUE(wallet.deposit_paid(usd("10"), now));
  ASSERT_TRUE(wallet.deposit_trial(usd("1"), now));
  auto h = wallet.hold(usd("2"), now + 60'000, now);  // 1 trial + 1 paid
  ASSERT_TRUE(h);
  auto charged = wallet.post(*h, usd("0.25"), now);
  ASSERT_TRUE(charged);
  EXPECT_EQ(*charged, usd("0.25"));
  // Released last-drawn first: paid gets its 1 back, trial gets 0.75 of its 1.
  EXPECT_EQ(wallet.paid(), usd("10"));
  EXPECT_EQ(wallet.trial(), usd("0.75"));
  EXPECT_EQ(wallet.held(), usd("0"));
  EXPECT_EQ(ledger.balance(platform.revenue), usd("0.25"));
  EXPECT_FALSE(wallet.post(*h, usd("0.25"), now));  // settled once only
  expect_balanced();
}

// A settlement draws its cost in spend order from what is unreserved when it settles, not
// only from the books its hold reserved: a hold that began while other holds reserved all
// the trial credit must not charge paid once trial is free again.
TEST_F(WalletTest, SettlementSpendsInSpendOrderWhatIsFreeWhenItSettles) {
  ASSERT_TRUE(wallet.deposit_trial(usd("0.01"), now));
  ASSERT_TRUE(wallet.deposit_paid(usd("1"), now));
  auto a = wallet.hold(usd("0.03"), now + 60'000, now);  // all of trial, 0.02 of paid
  auto b = wallet.hold(usd("0.02"), now + 60'000, now);  // paid only
  ASSERT_TRUE(a && b);
  EXPECT_EQ(wallet.trial(), usd("0"));
  ASSERT_TRUE(wallet.post(*a, usd("0.0005"), now));
  ASSERT_TRUE(wallet.post(*b, usd("0.0005"), now));
  EXPECT_EQ(wallet.trial(), usd("0.009"));
  EXPECT_EQ(wallet.paid(), usd("1"));
  // Promo credit that came while a request ran goes first too.
  auto c = wallet.hold(usd("0.5"), now + 60'000, now);
  ASSERT_TRUE(c);
  ASSERT_TRUE(wallet.deposit_promo(usd("0.1"), now + 100'000, now));
  ASSERT_TRUE(wallet.post(*c, usd("0.15"), now));
  EXPECT_EQ(wallet.promo(now), usd("0"));
  EXPECT_EQ(wallet.trial(), usd("0"));
  EXPECT_EQ(wallet.paid(), usd("0.959"));
  expect_balanced();
}

// A hold whose paid reservation another response's shortfall overdrew is charged from paid
// all the same, in one transfer (it was two: what paid had unreserved, then the rest).
TEST_F(WalletTest, ASettlementTakesOneTransferFromPaidEvenWhenPaidWasOverdrawn) {
  ASSERT_TRUE(wallet.deposit_paid(usd("0.01"), now));
  auto z = wallet.hold(usd("0.002"), now + 60'000, now);
  auto x = wallet.hold(usd("0.005"), now + 60'000, now);
  ASSERT_TRUE(z && x);
  EXPECT_EQ(wallet.cover(*x, usd("0.0098"), now)->kind, Wallet::Cover::kOverdraft);
  ASSERT_TRUE(wallet.post(*x, usd("0.0098"), now));  // 0.0018 past all it could reserve
  ASSERT_TRUE(wallet.post(*z, usd("0.0005"), now));  // paid has 0.0002 left of z's 0.002
  std::size_t transfers = 0;
  for (const Transfer& t : ledger.journal()) transfers += t.hold == *z ? 1 : 0;
  EXPECT_EQ(transfers, 1u);
  EXPECT_EQ(wallet.paid(), usd("-0.0003"));
  expect_balanced();
}

// A lot that expired while a request ran is spent as far as that request's hold reserved
// on it (the request began before its time), before any other book; the rest of the lot
// is not.
TEST_F(WalletTest, ALotPastItsTimeIsSpentOnlyAsFarAsTheHoldReservedOnIt) {
  ASSERT_TRUE(wallet.deposit_promo(usd("0.5"), now + 1000, now));
  ASSERT_TRUE(wallet.deposit_trial(usd("1"), now));
  auto h = wallet.hold(usd("0.2"), now + 60'000, now);  // from the lot
  ASSERT_TRUE(h);
  ASSERT_TRUE(wallet.post(*h, usd("0.3"), now + 2000));  // the lot's 0.2, then trial
  EXPECT_EQ(wallet.trial(), usd("0.9"));
  EXPECT_EQ(wallet.expire(now + 2000, now + 2000).lots, 1u);
  EXPECT_EQ(ledger.balance(platform.expired_credits), usd("0.3"));
  EXPECT_EQ(ledger.balance(platform.revenue), usd("0.3"));
  expect_balanced();
}

TEST_F(WalletTest, InsufficientBalanceSaysWhatIsAvailableAndNeeded) {
  ASSERT_TRUE(wallet.deposit_paid(usd("0.05"), now));
  auto h = wallet.hold(usd("0.10"), now + 1000, now);
  ASSERT_FALSE(h);
  EXPECT_EQ(h.status().kind(), ErrorKind::kPaymentRequired);
  EXPECT_NE(h.status().message().find("0.05 USD available"), std::string::npos);
  EXPECT_NE(h.status().message().find("0.10 USD needed"), std::string::npos);
}

TEST_F(WalletTest, ShortfallOverHoldMayOverdrawPaidByThatMuchOnly) {
  ASSERT_TRUE(wallet.deposit_paid(usd("1"), now));
  auto h = wallet.hold(usd("1"), now + 1000, now);
  ASSERT_TRUE(h);
  ASSERT_TRUE(wallet.post(*h, usd("1.30"), now));
  EXPECT_EQ(wallet.paid(), usd("-0.30"));
  EXPECT_EQ(ledger.balance(platform.revenue), usd("1.30"));
  const auto refused = wallet.hold(usd("0.01"), now + 1000, now);  // nothing left to hold
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.status().message().find("0.00 USD available (overdrawn by 0.30 USD), 0.01"),
            std::string::npos)
      << refused.status().message();
  ASSERT_TRUE(wallet.deposit_paid(usd("1"), now));
  EXPECT_EQ(wallet.available(now), usd("0.70"));
  expect_balanced();
}

TEST_F(WalletTest, CoverExtendsAHoldFromWhatIsUnreserved) {
  ASSERT_TRUE(wallet.deposit_promo(usd("0.5"), now + 10'000, now));
  ASSERT_TRUE(wallet.deposit_paid(usd("2"), now));
  auto h = wallet.hold(usd("0.25"), now + 1000, now);
  ASSERT_TRUE(h);
  const auto c = wallet.cover(*h, usd("1"), now);  // the rest of the lot, then paid
  ASSERT_TRUE(c);
  EXPECT_EQ(c->kind, Wallet::Cover::kCovered);
  EXPECT_EQ(c->reserved, usd("1"));
  EXPECT_EQ(wallet.held(), usd("1"));
  EXPECT_EQ(wallet.promo(now), usd("0"));
  EXPECT_EQ(wallet.available(now), usd("1.5"));
  EXPECT_EQ(wallet.cover(*h, usd("0.5"), now)->reserved, usd("1"));  // covered already
  EXPECT_EQ(wallet.held(), usd("1"));
  ASSERT_TRUE(wallet.post(*h, usd("0.75"), now));
  EXPECT_EQ(wallet.promo(now), usd("0"));  // spend order: the lot first
  EXPECT_EQ(wallet.paid(), usd("1.75"));
  EXPECT_EQ(wallet.held(), usd("0"));
  expect_balanced();
}

TEST_F(WalletTest, CoverKeepsTheSpendOrder) {
  ASSERT_TRUE(wallet.deposit_paid(usd("1"), now));
  auto h = wallet.hold(usd("0.5"), now + 1000, now);  // from paid
  ASSERT_TRUE(h);
  // Promo credit arrives while the request runs; the extension takes it, and the
  // settlement spends it before paid.
  ASSERT_TRUE(wallet.deposit_promo(usd("0.4"), now + 100'000, now));
  EXPECT_EQ(wallet.cover(*h, usd("0.9"), now)->kind, Wallet::Cover::kCovered);
  ASSERT_TRUE(wallet.post(*h, usd("0.5"), now));
  EXPECT_EQ(wallet.promo(now), usd("0"));
  EXPECT_EQ(wallet.paid(), usd("0.90"));
  expect_balanced();
}

TEST_F(WalletTest, OnlyOneResponseAtATimeMayOverdraw) {
  ASSERT_TRUE(wallet.deposit_paid(usd("1"), now));
  auto a = wallet.hold(usd("0.5"), now + 1000, now);
  auto b = wallet.hold(usd("0.5"), now + 1000, now);
  ASSERT_TRUE(a && b);
  // Both run past their holds with nothing unreserved left: the first to ask may overdraw,
  // the second must stop.
  const auto first = wallet.cover(*a, usd("0.8"), now);
  ASSERT_TRUE(first);
  EXPECT_EQ(first->kind, Wallet::Cover::kOverdraft);
  EXPECT_EQ(first->reserved, usd("0.5"));  // nothing more to reserve
  const auto second = wallet.cover(*b, usd("0.6"), now);
  ASSERT_TRUE(second);
  EXPECT_EQ(second->kind, Wallet::Cover::kRefused);
  EXPECT_EQ(wallet.cover(*a, usd("0.9"), now)->kind, Wallet::Cover::kOverdraft);  // still a's
  ASSERT_TRUE(wallet.post(*b, usd("0.5"), now));  // b stopped within its hold
  ASSERT_TRUE(wallet.post(*a, usd("0.9"), now));
  EXPECT_EQ(wallet.paid(), usd("-0.40"));  // a's shortfall alone
  EXPECT_FALSE(wallet.hold(usd("0.01"), now + 1000, now));  // nothing left to hold
  expect_balanced();
}

TEST_F(WalletTest, AnOverdrawnAccountLendsNoMore) {
  ASSERT_TRUE(wallet.deposit_paid(usd("1"), now));
  auto a = wallet.hold(usd("0.5"), now + 1000, now);
  auto b = wallet.hold(usd("0.5"), now + 1000, now);
  ASSERT_TRUE(a && b);
  EXPECT_EQ(wallet.cover(*a, usd("0.9"), now)->kind, Wallet::Cover::kOverdraft);
  ASSERT_TRUE(wallet.post(*a, usd("0.9"), now));
  // Paid's book still holds 0.10, but b reserves 0.50 of it: overdrawn by 0.40.
  EXPECT_EQ(wallet.paid(), usd("-0.40"));
  // a's licence ended with it, but paid is still overdrawn: b must stop at its hold.
  EXPECT_EQ(wallet.cover(*b, usd("0.6"), now)->kind, Wallet::Cover::kRefused);
  ASSERT_TRUE(wallet.post(*b, usd("0.5"), now));
  EXPECT_EQ(wallet.available(now), usd("-0.40"));
  expect_balanced();
}

TEST_F(WalletTest, TheOverdraftLicenceEndsWithItsHold) {
  ASSERT_TRUE(wallet.deposit_paid(usd("1"), now));
  auto a = wallet.hold(usd("0.5"), now + 1000, now);
  auto b = wallet.hold(usd("0.5"), now + 5000, now);
  ASSERT_TRUE(a && b);
  EXPECT_EQ(wallet.cover(*a, usd("0.6"), now)->kind, Wallet::Cover::kOverdraft);
  EXPECT_EQ(wallet.expire(now + 1000, now + 1000).holds, 1u);  // a lapsed without a charge
  // Nothing was overdrawn, so the next response over its hold may have the licence.
  EXPECT_EQ(wallet.cover(*b, usd("1.2"), now)->kind, Wallet::Cover::kOverdraft);
  EXPECT_EQ(wallet.held(), usd("1"));  // what a had held came back to b
  ASSERT_TRUE(wallet.post(*b, usd("1.2"), now));
  EXPECT_EQ(wallet.paid(), usd("-0.20"));
  expect_balanced();
}

TEST_F(WalletTest, AReversalGivesEveryBookBackWhatTheSettlementTook) {
  ASSERT_TRUE(wallet.deposit_promo(usd("0.5"), now + 1000, now));
  ASSERT_TRUE(wallet.deposit_promo(usd("0.25"), now + 100'000, now));
  ASSERT_TRUE(wallet.deposit_trial(usd("0.5"), now));
  auto h = wallet.hold(usd("1.25"), now + 10'000, now);  // both lots and the trial
  ASSERT_TRUE(h);
  EXPECT_EQ(wallet.cover(*h, usd("2"), now)->kind, Wallet::Cover::kOverdraft);
  ASSERT_TRUE(wallet.post(*h, usd("2"), now));  // 0.75 of it overdrawn from paid
  EXPECT_EQ(wallet.paid(), usd("-0.75"));
  EXPECT_EQ(wallet.expire(now + 1000, now + 1000).lots, 0u);  // the first lot, spent: nothing expires
  EXPECT_EQ(wallet.reverse(*h, now + 2000), usd("2"));
  EXPECT_EQ(wallet.paid(), usd("0"));
  EXPECT_EQ(wallet.trial(), usd("0.5"));
  EXPECT_EQ(wallet.promo(now + 2000), usd("0.25"));  // the lot still running has its part
  EXPECT_EQ(ledger.balance(platform.revenue), usd("0"));
  EXPECT_EQ(ledger.balance(platform.expired_credits), usd("0.5"));  // the other lot's went
  EXPECT_EQ(wallet.reverse(*h, now + 2000), usd("0"));  // once only
  expect_balanced();
}

// Hold ids are numbered per wallet: another account's hold of the same id, reversed first,
// must not pass for this one's.
TEST_F(WalletTest, AReversalIsTheWalletsOwnWhateverTheHoldId) {
  Wallet other{ledger, platform, "acct_2"};
  ASSERT_TRUE(wallet.deposit_paid(usd("1"), now));
  ASSERT_TRUE(other.deposit_paid(usd("1"), now));
  auto mine = wallet.hold(usd("0.5"), now + 1000, now);
  auto theirs = other.hold(usd("0.5"), now + 1000, now);
  ASSERT_TRUE(mine && theirs);
  ASSERT_EQ(*mine, *theirs);
  ASSERT_TRUE(wallet.post(*mine, usd("0.3"), now));
  ASSERT_TRUE(other.post(*theirs, usd("0.2"), now));
  EXPECT_EQ(other.reverse(*theirs, now), usd("0.2"));
  EXPECT_EQ(wallet.reverse(*mine, now), usd("0.3"));
  EXPECT_EQ(wallet.paid(), usd("1"));
  EXPECT_EQ(other.paid(), usd("1"));
  EXPECT_EQ(ledger.balance(platform.revenue), usd("0"));
  expect_balanced();
}

TEST_F(WalletTest, VoidAndExpiryReturnEverything) {
  ASSERT_TRUE(wallet.deposit_paid(usd("5"), now));
  auto a = wallet.hold(usd("2"), now + 1000, now);
  auto b = wallet.hold(usd("1"), now + 5000, now);
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(wallet.void_hold(*a, now));
  EXPECT_EQ(wallet.available(now), usd("4"));
  const auto expired = wallet.expire(now + 5000, now + 5000);
  EXPECT_EQ(expired.holds, 1u);
  EXPECT_EQ(wallet.available(now), usd("5"));
  EXPECT_EQ(wallet.held(), usd("0"));
  EXPECT_FALSE(wallet.post(*b, usd("0.1"), now + 6000));  // an expired hold cannot be posted
  expect_balanced();
}

TEST_F(WalletTest, PromoRemainderExpiresEvenWhenHeldAcrossItsExpiry) {
  ASSERT_TRUE(wallet.deposit_promo(usd("2"), now + 1000, now));
  auto h = wallet.hold(usd("1.5"), now + 10'000, now);
  ASSERT_TRUE(h);
  EXPECT_EQ(wallet.expire(now + 1000, now + 1000).lots, 1u);  // 0.5 left in the lot expires
  EXPECT_EQ(ledger.balance(platform.expired_credits), usd("0.5"));
  ASSERT_TRUE(wallet.post(*h, usd("1"), now + 2000));  // 0.5 released after the sweep
  EXPECT_EQ(ledger.balance(platform.expired_credits), usd("1"));
  EXPECT_EQ(wallet.available(now + 2000), usd("0"));
  expect_balanced();
}

TEST_F(WalletTest, AnEmptiedLotExpiresNothing) {
  ASSERT_TRUE(wallet.deposit_promo(usd("1"), now + 1000, now));
  auto all = wallet.hold(usd("1"), now + 500, now);
  ASSERT_TRUE(all);
  ASSERT_TRUE(wallet.post(*all, usd("1"), now + 100));  // spent before its time
  EXPECT_EQ(wallet.expire(now + 1000, now + 1000).lots, 0u);
  EXPECT_EQ(ledger.balance(platform.expired_credits), usd("0"));
  expect_balanced();
}

TEST_F(WalletTest, SeveralHoldsOnASweptLotEachSettleTheirPart) {
  ASSERT_TRUE(wallet.deposit_paid(usd("5"), now));
  ASSERT_TRUE(wallet.deposit_promo(usd("3"), now + 1000, now));
  auto a = wallet.hold(usd("1"), now + 10'000, now);
  auto b = wallet.hold(usd("1"), now + 10'000, now);
  auto c = wallet.hold(usd("2"), now + 10'000, now);  // 1 from the lot, 1 from paid
  ASSERT_TRUE(a && b && c);
  EXPECT_EQ(wallet.expire(now + 1000, now + 1000).lots, 1u);  // nothing unreserved left in the lot
  EXPECT_EQ(ledger.balance(platform.expired_credits), usd("0"));
  EXPECT_EQ(wallet.promo_lots(), 1u);  // kept while holds reserve on it
  ASSERT_TRUE(wallet.post(*a, usd("0.25"), now + 2000));  // 0.75 of a's part expires
  EXPECT_EQ(ledger.balance(platform.expired_credits), usd("0.75"));
  ASSERT_TRUE(wallet.void_hold(*b, now + 2000));  // all of b's part expires
  EXPECT_EQ(ledger.balance(platform.expired_credits), usd("1.75"));
  // c costs more than it held: its lot part is spent, the rest comes from paid.
  ASSERT_TRUE(wallet.post(*c, usd("2.5"), now + 3000));
  EXPECT_EQ(wallet.promo_lots(), 0u);  // the last reservation ended
  EXPECT_EQ(ledger.balance(platform.revenue), usd("2.75"));
  EXPECT_EQ(wallet.paid(), usd("3.50"));  // 5 - 1 (c's paid part) - 0.5 over the hold
  EXPECT_EQ(wallet.held(), usd("0"));
  expect_balanced();
}

TEST_F(WalletTest, RefundsOnlyUnusedPaid) {
  ASSERT_TRUE(wallet.deposit_paid(usd("3"), now));
  ASSERT_TRUE(wallet.deposit_trial(usd("20"), now));
  EXPECT_FALSE(wallet.refund(usd("3.01"), now));
  ASSERT_TRUE(wallet.refund(usd("3"), now));
  EXPECT_EQ(wallet.paid(), usd("0"));
  EXPECT_EQ(wallet.trial(), usd("20"));
  expect_balanced();
}

TEST_F(WalletTest, RefundsNeverTakeWhatAHoldReserves) {
  ASSERT_TRUE(wallet.deposit_paid(usd("3"), now));
  auto h = wallet.hold(usd("2"), now + 1000, now);
  ASSERT_TRUE(h);
  const auto refused = wallet.refund(usd("1.5"), now);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.status().kind(), ErrorKind::kPaymentRequired);
  ASSERT_TRUE(wallet.refund(usd("1"), now));
  ASSERT_TRUE(wallet.post(*h, usd("2"), now));
  EXPECT_EQ(wallet.paid(), usd("0"));
  expect_balanced();
}

TEST_F(WalletTest, AHoldOnPaidPostsAfterAnotherResponseOverdrewIt) {
  ASSERT_TRUE(wallet.deposit_paid(usd("1"), now));
  auto h = wallet.hold(usd("1"), now + 1000, now);
  ASSERT_TRUE(h);
  // A response whose hold lapsed is charged with nothing unreserved: paid is overdrawn
  // below what h reserves.
  EXPECT_EQ(wallet.charge(usd("0.3"), 99, now), usd("0.3"));
  ASSERT_TRUE(wallet.post(*h, usd("1"), now));
  EXPECT_EQ(wallet.paid(), usd("-0.30"));  // overdrawn by that one shortfall only
  EXPECT_EQ(ledger.balance(platform.revenue), usd("1.30"));
  expect_balanced();
}

TEST_F(WalletTest, ChargeWithoutAHoldTakesTheBooksThenOverdrawsPaid) {
  ASSERT_TRUE(wallet.deposit_trial(usd("1"), now));
  ASSERT_TRUE(wallet.deposit_paid(usd("0.5"), now));
  EXPECT_EQ(wallet.charge(usd("2"), 7, now), usd("2"));
  EXPECT_EQ(wallet.trial(), usd("0"));
  EXPECT_EQ(wallet.paid(), usd("-0.5"));
  EXPECT_EQ(ledger.balance(platform.revenue), usd("2"));
  expect_balanced();
}

// A store in memory: what banks persisted to it, in order; and the ledger a restart would
// rebuild from it.
struct MemoryStore {
  std::vector<LedgerTail::NewAccount> accounts;
  std::vector<Transfer> transfers;

  void append(const LedgerTail& tail) {
    EXPECT_EQ(tail.accounts_from, accounts.size());
    EXPECT_EQ(tail.transfers_from, transfers.size());
    accounts.insert(accounts.end(), tail.accounts.begin(), tail.accounts.end());
    transfers.insert(transfers.end(), tail.transfers.begin(), tail.transfers.end());
  }
  void persist(Bank& bank) {
    EXPECT_TRUE(bank.persist([&](const LedgerTail& tail) {
      append(tail);
      return Status::ok();
    }));
    bank.committed(true);
  }
  Ledger load() const {
    Ledger copy;
    for (const auto& a : accounts) copy.open(a.name, a.floor);
    for (const Transfer& t : transfers) EXPECT_TRUE(copy.replay(t));
    return copy;
  }
};

TEST(Bank, RestartLeavesNoHoldOfADeadProcessOpen) {
  const std::int64_t now = 1'000'000;
  auto bank = Bank::create();
  ASSERT_TRUE(bank->deposit(1, CreditKind::kTrial, usd("1"), std::nullopt, now));
  ASSERT_TRUE(bank->deposit(1, CreditKind::kPaid, usd("4"), std::nullopt, now));
  auto settled = bank->hold(1, usd("2"), now + 60'000, now);
  ASSERT_TRUE(settled);
  EXPECT_EQ(bank->settle(*settled, usd("0.5"), now), usd("0.5"));
  auto open = bank->hold(1, usd("3"), now + 60'000, now);  // the process dies holding this
  ASSERT_TRUE(open);
  EXPECT_EQ(bank->balance(1, now)->held, usd("3"));

  MemoryStore disk;
  disk.persist(*bank);
  auto restarted = Bank::adopt(disk.load(), now + 1);
  ASSERT_TRUE(restarted);
  Bank& b = **restarted;
  const Balance after = b.balance(1, now + 1).value();
  EXPECT_EQ(after.held, usd("0"));
  EXPECT_EQ(after.available, usd("4.5"));
  EXPECT_TRUE(b.verify().ok);
  // New holds follow every hold the journal names (the open one was never stored).
  auto next = b.hold(1, usd("1"), now + 60'000, now + 2);
  ASSERT_TRUE(next);
  EXPECT_GT(next->id, settled->id);
  EXPECT_EQ(b.settle(*next, usd("0.25"), now + 2), usd("0.25"));
  EXPECT_EQ(b.balance(1, now + 2)->available, usd("4.25"));
  // And a second restart finds nothing left open.
  disk.persist(b);
  auto again = Bank::adopt(disk.load(), now + 3);
  ASSERT_TRUE(again);
  EXPECT_EQ((*again)->balance(1, now + 3)->available, usd("4.25"));
  EXPECT_TRUE((*again)->verify().ok);
}

TEST(Bank, AHoldWritesNothingAndItsSettlementOneTransferPerBook) {
  const std::int64_t now = 1'000'000;
  auto bank = Bank::create();
  ASSERT_TRUE(bank->deposit(1, CreditKind::kPaid, usd("4"), std::nullopt, now));
  MemoryStore disk;
  disk.persist(*bank);
  const std::size_t before = disk.transfers.size();
  auto h = bank->hold(1, usd("2"), now + 60'000, now);
  ASSERT_TRUE(h);
  disk.persist(*bank);
  EXPECT_EQ(disk.transfers.size(), before);  // a reservation, not a transfer
  EXPECT_EQ(bank->settle(*h, usd("0.5"), now), usd("0.5"));
  disk.persist(*bank);
  ASSERT_EQ(disk.transfers.size(), before + 1);
  EXPECT_EQ(disk.transfers.back().kind, TransferKind::kPost);
  EXPECT_EQ(disk.transfers.back().hold, h->id);
  EXPECT_EQ(bank->balance(1, now)->available, usd("3.5"));
}

// A start's floor for hold ids holds for the wallets it has and for those opened after it.
TEST(Bank, HoldsAreNumberedAfterTheFloorInEveryWallet) {
  const std::int64_t now = 1'000'000;
  auto bank = Bank::create();
  ASSERT_TRUE(bank->deposit(1, CreditKind::kPaid, usd("4"), std::nullopt, now));
  bank->continue_holds_after(5000);
  ASSERT_TRUE(bank->deposit(2, CreditKind::kPaid, usd("4"), std::nullopt, now));
  for (const std::int64_t account : {1, 2}) {
    auto h = bank->hold(account, usd("1"), now + 60'000, now);
    ASSERT_TRUE(h);
    EXPECT_EQ(h->id, 5001u) << account;
  }
  bank->continue_holds_after(10);  // never lowered
  EXPECT_EQ(bank->hold(1, usd("1"), now + 60'000, now)->id, 5002u);
}

TEST(Bank, RestartReturnsWhatOlderVersionsLeftInHeld) {
  // A journal from before holds were reservations: 3 of paid moved to `held` for hold 7,
  // whose request never finished; hold 5 was held and posted.
  const std::int64_t now = 1'000'000;
  Ledger journal;
  const PlatformAccounts platform = PlatformAccounts::open(journal);
  Wallet legacy(journal, platform, "acct_1");
  ASSERT_TRUE(legacy.deposit_paid(usd("10"), now));
  ASSERT_TRUE(legacy.deposit_promo(usd("1"), now + 1000, now));
  const AccountId paid = 4, held = 6, lot = 7;  // opened in this order by Wallet
  ASSERT_EQ(journal.name(held), "acct_1:held");
  ASSERT_TRUE(journal.transfer(paid, held, usd("1"), TransferKind::kHold, 5, now));
  ASSERT_TRUE(journal.transfer(held, platform.revenue, usd("1"), TransferKind::kPost, 5, now));
  ASSERT_TRUE(journal.transfer(lot, held, usd("1"), TransferKind::kHold, 7, now));
  ASSERT_TRUE(journal.transfer(paid, held, usd("2"), TransferKind::kHold, 7, now));
  auto bank = Bank::adopt(std::move(journal), now + 2000);  // the lot expired meanwhile
  ASSERT_TRUE(bank);
  const Balance b = (*bank)->balance(1, now + 2000).value();
  EXPECT_EQ(b.held, usd("0"));
  EXPECT_EQ(b.paid, usd("9"));   // 10 - 1 posted; the 2 held came back
  EXPECT_EQ(b.promo, usd("0"));  // the lot's 1 went to expired credits
  EXPECT_TRUE((*bank)->verify().ok);
  auto next = (*bank)->hold(1, usd("1"), now + 60'000, now + 2000);
  ASSERT_TRUE(next);
  EXPECT_GT(next->id, 7u);
}

TEST(Bank, RestartReturnsLegacyHeldMoneyToALotStillValid) {
  const std::int64_t now = 1'000'000;
  Ledger journal;
  const PlatformAccounts platform = PlatformAccounts::open(journal);
  Wallet legacy(journal, platform, "acct_1");
  ASSERT_TRUE(legacy.deposit_promo(usd("2"), now + 60'000, now));
  const AccountId held = 6, lot = 7;
  ASSERT_TRUE(journal.transfer(lot, held, usd("1.5"), TransferKind::kHold, 3, now));
  auto bank = Bank::adopt(std::move(journal), now + 10);
  ASSERT_TRUE(bank);
  const Balance b = (*bank)->balance(1, now + 10).value();
  EXPECT_EQ(b.promo, usd("2"));  // back in the lot, still spendable
  EXPECT_EQ(b.held, usd("0"));
  EXPECT_TRUE((*bank)->verify().ok);
}

// A hold's time runs on the monotonic clock and a promo lot's on the wall clock: a step of
// the wall clock (an NTP step, a resumed VM) expires lots, never the holds of requests
// still running.
TEST(Bank, HoldsLapseOnTheMonotonicClockAndLotsOnTheWallClock) {
  const std::int64_t wall = 1'700'000'000'000;
  const std::int64_t mono = 5'000;
  auto bank = Bank::create();
  ASSERT_TRUE(bank->deposit(1, CreditKind::kPaid, usd("1"), std::nullopt, wall));
  ASSERT_TRUE(bank->deposit(1, CreditKind::kPromo, usd("1"), wall + 60'000, wall));
  auto h = bank->hold(1, usd("0.5"), mono + 1000, wall);
  ASSERT_TRUE(h);
  const std::int64_t hour_later = wall + 3'600'000;
  const Wallet::Expired stepped = bank->expire(hour_later, mono + 10);
  EXPECT_EQ(stepped.holds, 0u);
  EXPECT_EQ(stepped.lots, 1u);
  EXPECT_EQ(bank->balance(1, hour_later)->held, usd("0.5"));
  EXPECT_EQ(bank->expire(hour_later, mono + 1000).holds, 1u);
  EXPECT_EQ(bank->balance(1, hour_later)->held, usd("0"));
  EXPECT_TRUE(bank->verify().ok);
}

// A promo lot that expired while the process was down is swept by the first expire() after
// the start, not by adopt: the thresholds, set in between, see the balance from before the
// expiry, so its drop raises the notice an expiry while running would. The expiry is
// stamped at the lot's time.
TEST(Bank, ALotThatExpiredWhileDownRaisesItsNoticeWhenSwept) {
  const std::int64_t now = 1'000'000;
  const std::int64_t expires_at = now + 60'000;
  auto bank = Bank::create();
  ASSERT_TRUE(bank->deposit(1, CreditKind::kPaid, usd("0.5"), std::nullopt, now));
  ASSERT_TRUE(bank->deposit(1, CreditKind::kPromo, usd("2"), expires_at, now));
  MemoryStore disk;
  disk.persist(*bank);
  const std::size_t stored = disk.transfers.size();
  const std::int64_t restart = now + 3'600'000;  // down for an hour
  auto restarted = Bank::adopt(disk.load(), restart);
  ASSERT_TRUE(restarted);
  Bank& b = **restarted;
  EXPECT_FALSE(b.has_uncommitted());
  b.set_low_balance_thresholds({usd("1")});  // as Maintenance::start does, after adopt
  EXPECT_TRUE(b.take_low_balance_notices().empty());
  EXPECT_EQ(b.balance(1, restart)->available, usd("0.5"));  // the lot is spent no more
  EXPECT_EQ(b.expire(restart, 0).lots, 1u);
  const auto notices = b.take_low_balance_notices();
  ASSERT_EQ(notices.size(), 1u);
  EXPECT_EQ(notices[0].threshold, usd("1"));
  EXPECT_EQ(notices[0].balance, usd("0.5"));
  EXPECT_TRUE(b.has_uncommitted());
  disk.persist(b);
  EXPECT_FALSE(b.has_uncommitted());
  ASSERT_EQ(disk.transfers.size(), stored + 1);
  EXPECT_EQ(disk.transfers.back().kind, TransferKind::kExpire);
  EXPECT_EQ(disk.transfers.back().amount, usd("2"));
  EXPECT_EQ(disk.transfers.back().at_ms, expires_at);
  EXPECT_TRUE(b.verify().ok);
}

TEST(Bank, SettlingAnExpiredHoldStillCharges) {
  const std::int64_t now = 1'000'000;
  auto bank = Bank::create();
  ASSERT_TRUE(bank->deposit(1, CreditKind::kPaid, usd("1"), std::nullopt, now));
  auto h = bank->hold(1, usd("0.5"), now + 10, now);
  ASSERT_TRUE(h);
  EXPECT_EQ(bank->expire(now + 10, now + 10).holds, 1u);
  EXPECT_EQ(bank->settle(*h, usd("0.2"), now + 20), usd("0.2"));
  EXPECT_EQ(bank->balance(1, now + 20)->available, usd("0.8"));
  bank->void_hold(*h, now + 30);  // gone already: nothing happens
  EXPECT_EQ(bank->balance(1, now + 30)->available, usd("0.8"));
  // No hold at all (the worst case cost nothing) is charged as well.
  EXPECT_EQ(bank->settle(Bank::Hold{1, 0, Money()}, usd("0.1"), now + 40), usd("0.1"));
  EXPECT_EQ(bank->balance(1, now + 40)->available, usd("0.7"));
  bank->void_hold(Bank::Hold{1, 0, Money()}, now + 40);
  EXPECT_TRUE(bank->verify().ok);
}

TEST(Ledger, RejectsNonPositiveAndSelfTransfers) {
  Ledger l;
  const AccountId a = l.open("a", Floor::kUnbounded);
  const AccountId b = l.open("b", Floor::kNonNegative);
  EXPECT_FALSE(l.transfer(a, b, Money(), TransferKind::kDeposit, 0, 0));
  EXPECT_FALSE(l.transfer(a, b, Money::from_nanos(-1), TransferKind::kDeposit, 0, 0));
  EXPECT_FALSE(l.transfer(a, a, Money::usd(1), TransferKind::kDeposit, 0, 0));
  EXPECT_FALSE(l.transfer(b, a, Money::usd(1), TransferKind::kDeposit, 0, 0));  // b is empty
  EXPECT_TRUE(l.verify().ok);
}

TEST(Ledger, ATransferPastTheRangeIsRefusedNotFatal) {
  // The world account carries minus every deposit ever made: enough of them would wrap.
  Ledger l;
  const AccountId world = l.open("world", Floor::kUnbounded);
  const AccountId paid = l.open("paid", Floor::kNonNegative);
  const Money big = Money::usd(4'000'000'000);
  ASSERT_TRUE(l.transfer(world, paid, big, TransferKind::kDeposit, 0, 0));
  ASSERT_TRUE(l.transfer(world, paid, big, TransferKind::kDeposit, 0, 0));
  const auto third = l.transfer(world, paid, big, TransferKind::kDeposit, 0, 0);
  ASSERT_FALSE(third);
  EXPECT_EQ(third.status().kind(), ErrorKind::kInvalidRequest);
  EXPECT_NE(third.status().message().find("past what the ledger can hold"), std::string::npos);
  EXPECT_EQ(l.balance(paid), big + big);  // nothing moved
  EXPECT_TRUE(l.verify().ok);
}

// A promo deposit past the range opens no lot account (an empty one was stored), and the
// bank says beforehand whether a deposit fits.
TEST(Ledger, ADepositPastTheRangeLeavesNothingBehind) {
  Ledger l;
  const PlatformAccounts platform = PlatformAccounts::open(l);
  Wallet w(l, platform, "acct_1");
  const Money big = Money::usd(4'000'000'000);
  ASSERT_TRUE(w.deposit_paid(big, 0));
  ASSERT_TRUE(w.deposit_paid(big, 0));
  const std::size_t accounts = l.account_count();
  const auto promo = w.deposit_promo(big, 10'000, 0);
  ASSERT_FALSE(promo);
  EXPECT_NE(promo.status().message().find("past what the ledger can hold"), std::string::npos);
  EXPECT_EQ(l.account_count(), accounts);
  EXPECT_TRUE(l.check_range(platform.world, Money::usd(1)));
  EXPECT_FALSE(l.check_range(platform.world, big));
  auto bank = Bank::create();
  EXPECT_TRUE(bank->check_deposit(big));
  ASSERT_TRUE(bank->deposit(1, CreditKind::kPaid, big, std::nullopt, 0));
  ASSERT_TRUE(bank->deposit(1, CreditKind::kPaid, big, std::nullopt, 0));
  EXPECT_FALSE(bank->check_deposit(big));
}

// What the ledger's property tests share: a seeded generator and `n` customer wallets
// ("acct_0"...) on one ledger.
struct RandomBooks {
  std::mt19937_64 rng;
  Ledger ledger;
  const PlatformAccounts platform = PlatformAccounts::open(ledger);
  std::vector<std::unique_ptr<Wallet>> wallets;

  RandomBooks(std::uint64_t seed, int n) : rng(seed) {
    for (int i = 0; i < n; ++i) {
      wallets.push_back(std::make_unique<Wallet>(ledger, platform, "acct_" + std::to_string(i)));
    }
  }
  std::int64_t between(std::int64_t lo, std::int64_t hi) {
    return std::uniform_int_distribution<std::int64_t>(lo, hi)(rng);
  }
  // One random deposit: paid, trial, or a promo lot expiring within `promo_ms`.
  void deposit(Wallet& wallet, Money amount, std::int64_t now, std::int64_t promo_ms) {
    switch (between(0, 2)) {
      case 0: (void)wallet.deposit_paid(amount, now); break;
      case 1: (void)wallet.deposit_trial(amount, now); break;
      default: (void)wallet.deposit_promo(amount, now + between(1, promo_ms), now); break;
    }
  }
};

// Random sequences of every operation on several wallets keep the books balanced, every
// non-negative book at or above zero, `held` equal to the open holds, and charge each
// posted request exactly its cost once.
TEST(LedgerProperty, RandomOperationsKeepEveryInvariant) {
  for (std::uint64_t seed = 1; seed <= 40; ++seed) {
    RandomBooks books(seed, 3);
    auto between = [&](std::int64_t lo, std::int64_t hi) { return books.between(lo, hi); };
    const Ledger& ledger = books.ledger;
    const PlatformAccounts& platform = books.platform;
    auto& wallets = books.wallets;
    struct OpenHold {
      Money amount;
      std::int64_t expires_at_ms;
    };
    std::vector<std::map<HoldId, OpenHold>> open(3);
    std::int64_t now = 0;
    Money charged_total;
    // The largest shortfall over its hold of a response that was let overdraw, per wallet:
    // the most paid may go below zero.
    std::vector<Money> shortfall_max(3);
    for (int step = 0; step < 400; ++step) {
      const int w = static_cast<int>(between(0, 2));
      Wallet& wallet = *wallets[w];
      const Money amount = Money::from_nanos(between(1, 3'000'000'000));
      switch (between(0, 8)) {
        case 0:
        case 1:
        case 2: books.deposit(wallet, amount, now, 50'000); break;
        case 3:
        case 4:
          if (const std::int64_t until = now + between(1, 60'000);
              auto h = wallet.hold(amount, until, now)) {
            open[w][*h] = {amount, until};
          }
          break;
        case 5:
        case 6:
          if (!open[w].empty()) {
            const auto it = std::next(open[w].begin(), between(0, open[w].size() - 1));
            const Money held = it->second.amount;
            Money actual = Money::from_nanos(between(0, held.nanos() * 3 / 2));
            // As the gateway does: a response past its hold asks for cover, and one the
            // account cannot cover stops at its hold.
            if (actual > held) {
              const auto covered = wallet.cover(it->first, actual, now);
              ASSERT_TRUE(covered);
              if (covered->kind == Wallet::Cover::kRefused) {
                actual = std::min(actual, covered->reserved);  // stopped: charged what it holds
              } else if (covered->kind == Wallet::Cover::kOverdraft) {
                shortfall_max[w] = std::max(shortfall_max[w], actual - held);
              }
            }
            const std::size_t journal_before = ledger.journal().size();
            auto c = wallet.post(it->first, actual, now);
            ASSERT_TRUE(c) << c.status().message();
            EXPECT_EQ(*c, actual);
            // Spend order at settlement: paid is charged only once promo and trial have
            // nothing unreserved left.
            for (std::size_t t = journal_before; t < ledger.journal().size(); ++t) {
              if (ledger.journal()[t].debit != wallet.paid_account()) continue;
              ASSERT_EQ(wallet.trial(), Money()) << "seed " << seed << " step " << step;
              ASSERT_EQ(wallet.promo(now), Money()) << "seed " << seed << " step " << step;
            }
            charged_total += actual;
            open[w].erase(it);
          }
          break;
        case 7:
          if (!open[w].empty()) {
            const auto it = open[w].begin();
            ASSERT_TRUE(wallet.void_hold(it->first, now));
            open[w].erase(it);
          }
          break;
        case 8:
          now += between(0, 20'000);
          for (int i = 0; i < 3; ++i) {
            const auto expired = wallets[i]->expire(now, now);
            const auto before = open[i].size();
            std::erase_if(open[i], [&](const auto& h) { return h.second.expires_at_ms <= now; });
            ASSERT_EQ(before - open[i].size(), expired.holds);
          }
          break;
      }
      if (between(0, 10) == 0) (void)wallet.refund(amount, now);

      const VerifyReport report = ledger.verify();
      ASSERT_TRUE(report.ok) << "seed " << seed << " step " << step;
      for (int i = 0; i < 3; ++i) {
        ASSERT_GE(wallets[i]->trial(), Money());
        ASSERT_GE(wallets[i]->held(), Money());
        ASSERT_GE(wallets[i]->promo(now), Money());
        ASSERT_GE(wallets[i]->paid() + shortfall_max[i], Money()) << "seed " << seed << " step " << step;
        // What `ledger verify` checks in the store: a paid book is below zero by at most the
        // overdraft transfers taken from it.
        Money overdrawn;
        for (const Transfer& t : ledger.journal()) {
          if (t.kind == TransferKind::kOverdraft && t.debit == wallets[i]->paid_account()) {
            overdrawn += t.amount;
          }
        }
        ASSERT_GE(wallets[i]->paid() + overdrawn, Money()) << "seed " << seed << " step " << step;
        Money open_total;
        for (const auto& h : open[i]) open_total += h.second.amount;
        ASSERT_EQ(wallets[i]->held(), open_total);
        ASSERT_EQ(wallets[i]->open_holds(), open[i].size());
      }
      ASSERT_EQ(ledger.balance(platform.revenue), charged_total) << "seed " << seed;
    }
  }
}

// Many responses of one account run at once, each with a hold, and many run past it: in any
// order of asking for cover and settling, paid goes below zero by one response's shortfall
// at most.
TEST(LedgerProperty, ResponsesPastTheirHoldsOverdrawByOneShortfallAtMost) {
  for (std::uint64_t seed = 1; seed <= 200; ++seed) {
    RandomBooks books(seed, 1);
    auto between = [&](std::int64_t lo, std::int64_t hi) { return books.between(lo, hi); };
    Wallet& wallet = *books.wallets[0];
    ASSERT_TRUE(wallet.deposit_paid(Money::from_nanos(between(1, 10'000'000'000)), 0));
    struct Running {
      HoldId id;
      Money held;
      Money actual;
      bool asked = false;
    };
    std::vector<Running> running;
    for (;;) {  // until the account cannot hold the next one
      const Money amount = Money::from_nanos(between(1, 2'000'000'000));
      const auto h = wallet.hold(amount, 1000, 0);
      if (!h) break;
      running.push_back({*h, amount, Money::from_nanos(between(0, amount.nanos() * 3))});
    }
    Money shortfall_max;
    while (!running.empty()) {
      const auto it = std::next(running.begin(), between(0, running.size() - 1));
      if (it->actual > it->held && !it->asked) {
        it->asked = true;  // asks now; settles at a later step
        const auto covered = wallet.cover(it->id, it->actual, 0);
        ASSERT_TRUE(covered);
        if (covered->kind == Wallet::Cover::kRefused) {
          it->actual = std::min(it->actual, covered->reserved);  // stopped: what it holds
        } else if (covered->kind == Wallet::Cover::kOverdraft) {
          shortfall_max = std::max(shortfall_max, it->actual - it->held);
        }
      } else {
        ASSERT_TRUE(wallet.post(it->id, it->actual, 0));
        running.erase(it);
      }
      ASSERT_GE(wallet.paid() + shortfall_max, Money()) << "seed " << seed;
    }
    ASSERT_TRUE(books.ledger.verify().ok);
  }
}

// Crashes at random points: the store holds the journal as of the last persist, and a
// restart from it must balance and find every book exactly as it was then (open holds are
// reservations, so they leave nothing behind), except promo lots past their time, which
// are swept to expired credits.
TEST(LedgerProperty, ARestartFromTheStoreFindsEveryBookAsPersisted) {
  for (std::uint64_t seed = 1; seed <= 40; ++seed) {
    RandomBooks books(seed, 2);
    auto between = [&](std::int64_t lo, std::int64_t hi) { return books.between(lo, hi); };
    const Ledger& ledger = books.ledger;
    auto& wallets = books.wallets;
    std::vector<std::vector<HoldId>> open(2);
    std::int64_t now = 0;
    // The store: what the last persist copied out, and the books' balances at that moment.
    MemoryStore disk;
    std::vector<Money> persisted_balances;
    auto persist = [&] {
      auto tail = ledger.tail(disk.accounts.size(), disk.transfers.size());
      ASSERT_TRUE(tail);
      disk.append(*tail);
      persisted_balances.clear();
      for (AccountId id = 0; id < ledger.account_count(); ++id) {
        persisted_balances.push_back(ledger.balance(id));
      }
    };
    persist();
    for (int step = 0; step < 300; ++step) {
      const int w = static_cast<int>(between(0, 1));
      Wallet& wallet = *wallets[w];
      const Money amount = Money::from_nanos(between(1, 3'000'000'000));
      switch (between(0, 9)) {
        case 0:
        case 1:
        case 2: books.deposit(wallet, amount, now, 30'000); break;
        case 3:
        case 4:
          if (auto h = wallet.hold(amount, now + between(1, 60'000), now)) open[w].push_back(*h);
          break;
        case 5:
          if (!open[w].empty()) {
            const HoldId id = open[w].back();
            open[w].pop_back();
            (void)wallet.post(id, Money::from_nanos(between(0, 4'000'000'000)), now);
          }
          break;
        case 6:
          if (!open[w].empty()) {
            (void)wallet.void_hold(open[w].front(), now);
            open[w].erase(open[w].begin());
          }
          break;
        case 7:
          now += between(0, 15'000);
          for (auto& each : wallets) (void)each->expire(now, now);
          break;
        case 8: (void)wallet.refund(amount, now); break;
        case 9: persist(); break;
      }
      if (between(0, 25) != 0) continue;

      // Crash now, and start again from the store.
      auto bank = Bank::adopt(disk.load(), now);
      ASSERT_TRUE(bank) << bank.status().message();
      ASSERT_TRUE((*bank)->verify().ok) << "seed " << seed << " step " << step;
      for (int i = 0; i < 2; ++i) {
        const std::string customer = "acct_" + std::to_string(i);
        Money paid, trial, promo;
        for (AccountId id = 0; id < disk.accounts.size(); ++id) {
          const std::string& name = disk.accounts[id].name;
          if (!name.starts_with(customer + ":")) continue;
          const Money was = persisted_balances[id];
          if (name == customer + ":paid") paid = was;
          if (name == customer + ":trial") trial = was;
          if (const auto at = name.find(":expires="); at != std::string::npos) {
            const std::int64_t expires = std::stoll(name.substr(at + 9));
            if (expires > now) promo += was;  // else spent no more, and swept by expire()
          }
        }
        const Balance after = (*bank)->balance(i, now).value();
        ASSERT_EQ(after.paid, paid) << "seed " << seed << " step " << step;
        ASSERT_EQ(after.trial, trial) << "seed " << seed << " step " << step;
        ASSERT_EQ(after.promo, promo) << "seed " << seed << " step " << step;
        ASSERT_EQ(after.held, Money());
      }
    }
  }
}

}  // namespace
}  // namespace tp::ledger

namespace tp::ledger {
namespace {

TEST(LedgerJournal, ForgettingCommittedTransfersKeepsBalancesAndVerify) {
  Ledger l;
  const AccountId a = l.open("a", Floor::kUnbounded);
  const AccountId b = l.open("b", Floor::kNonNegative);
  ASSERT_TRUE(l.transfer(a, b, Money::usd(5), TransferKind::kDeposit, 0, 1));
  l.forget_through(1);
  EXPECT_TRUE(l.journal().empty());
  EXPECT_EQ(l.transfer_count(), 1u);
  auto next = l.transfer(b, a, Money::usd(2), TransferKind::kRefund, 0, 2);
  ASSERT_TRUE(next);
  EXPECT_EQ(*next, 2u);  // ids go on
  EXPECT_EQ(l.balance(b), Money::usd(3));
  const VerifyReport r = l.verify();
  EXPECT_TRUE(r.ok);
  EXPECT_EQ(r.transfers, 2u);
}

TEST(Bank, ReconcileComparesStoredBooksWithMemory) {
  auto bank = Bank::create();
  ASSERT_TRUE(bank->deposit(1, CreditKind::kPaid, Money::usd(3), std::nullopt, 1));
  std::vector<Transfer> stored;
  std::size_t accounts = 0;
  auto store = [&](const LedgerTail& tail) {
    accounts = tail.accounts_from + tail.accounts.size();
    stored.insert(stored.end(), tail.transfers.begin(), tail.transfers.end());
    return Status::ok();
  };
  auto books = [&](Money tamper) {
    return [&, tamper]() -> Result<StoredBooks> {
      StoredBooks b;
      b.balances.resize(accounts);
      for (const Transfer& t : stored) {
        b.balances[t.debit] -= t.amount;
        b.balances[t.credit] += t.amount;
      }
      b.balances.back() += tamper;  // a row edited behind the gateway's back
      b.transfers = stored.size();
      return b;
    };
  };
  const Reconciliation good = bank->reconcile(store, books(Money()));
  EXPECT_TRUE(good.ok) << good.problem;
  EXPECT_EQ(good.transfers, 1u);
  const Reconciliation bad = bank->reconcile(store, books(Money::from_nanos(1)));
  EXPECT_FALSE(bad.ok);
  EXPECT_EQ(bad.imbalance, Money::from_nanos(1));
  EXPECT_FALSE(bad.problem.empty());
  auto failing = []() -> Result<StoredBooks> { return Status{ErrorKind::kInternal, "disk"}; };
  const Reconciliation broken = bank->reconcile(store, failing);
  EXPECT_FALSE(broken.ok);
  EXPECT_TRUE(broken.store_failed);
}

}  // namespace
}  // namespace tp::ledger

namespace tp::ledger {
namespace {

TEST(Bank, LowBalanceNoticesFireOncePerDownwardCrossing) {
  const std::int64_t now = 1'000;
  auto bank = Bank::create();
  bank->set_low_balance_thresholds({Money::usd(5), Money::usd(1), Money()});
  ASSERT_TRUE(bank->deposit(1, CreditKind::kPaid, Money::usd(6), std::nullopt, now));
  EXPECT_TRUE(bank->take_low_balance_notices().empty());  // a new wallet starts below all
  auto spend = [&](const char* usd) {
    auto h = bank->hold(1, Money::parse(usd).value(), now + 60'000, now);
    ASSERT_TRUE(h);
    bank->settle(*h, Money::parse(usd).value(), now);
  };
  spend("0.5");  // 5.50: nothing crossed
  EXPECT_TRUE(bank->take_low_balance_notices().empty());
  // A hold alone never raises one: only settled money counts.
  auto big = bank->hold(1, Money::usd(5), now + 60'000, now);
  ASSERT_TRUE(big);
  EXPECT_TRUE(bank->take_low_balance_notices().empty());
  bank->void_hold(*big, now);
  spend("1");  // 4.50: below 5
  auto notices = bank->take_low_balance_notices();
  ASSERT_EQ(notices.size(), 1u);
  EXPECT_EQ(notices[0].threshold, Money::usd(5));
  EXPECT_EQ(notices[0].balance, Money::parse("4.5").value());
  spend("0.5");  // 4.00: still below 5, no repeat
  EXPECT_TRUE(bank->take_low_balance_notices().empty());
  spend("4");  // 0.00: below 1 and at 0, in one step
  notices = bank->take_low_balance_notices();
  ASSERT_EQ(notices.size(), 2u);
  EXPECT_EQ(notices[0].threshold, Money::usd(1));
  EXPECT_EQ(notices[1].threshold, Money());
  // A top-up re-arms them; spending down fires again.
  ASSERT_TRUE(bank->deposit(1, CreditKind::kPaid, Money::usd(10), std::nullopt, now));
  EXPECT_TRUE(bank->take_low_balance_notices().empty());
  spend("6");
  notices = bank->take_low_balance_notices();
  ASSERT_EQ(notices.size(), 1u);
  EXPECT_EQ(notices[0].threshold, Money::usd(5));
}

}  // namespace
}  // namespace tp::ledger

namespace tp::ledger {
namespace {

TEST(Bank, WhatAFailedCommitLostIsWrittenAgain) {
  auto bank = Bank::create();
  ASSERT_TRUE(bank->deposit(1, CreditKind::kPaid, Money::usd(2), std::nullopt, 1));
  std::vector<TransferId> written;
  auto store = [&](const LedgerTail& tail) {
    for (const Transfer& t : tail.transfers) written.push_back(t.id);
    return Status::ok();
  };
  ASSERT_TRUE(bank->persist(store));
  EXPECT_EQ(written, std::vector<TransferId>({1}));
  bank->committed(false);  // the transaction rolled back
  ASSERT_TRUE(bank->deposit(1, CreditKind::kPaid, Money::usd(1), std::nullopt, 2));
  written.clear();
  ASSERT_TRUE(bank->persist(store));
  EXPECT_EQ(written, std::vector<TransferId>({1, 2}));  // transfer 1 again
  bank->committed(true);
  written.clear();
  ASSERT_TRUE(bank->persist(store));
  EXPECT_TRUE(written.empty());
  EXPECT_EQ(bank->balance(1, 3)->paid, Money::usd(3));
  EXPECT_TRUE(bank->verify().ok);
}

TEST(Bank, AFailedStoreHandsTheSameTransfersOverAgain) {
  auto bank = Bank::create();
  ASSERT_TRUE(bank->deposit(1, CreditKind::kPaid, Money::usd(2), std::nullopt, 1));
  std::vector<TransferId> written;
  bool fail = true;
  auto store = [&](const LedgerTail& tail) {
    if (fail) return Status{ErrorKind::kInternal, "disk full"};
    for (const Transfer& t : tail.transfers) written.push_back(t.id);
    return Status::ok();
  };
  EXPECT_FALSE(bank->persist(store));
  fail = false;
  ASSERT_TRUE(bank->persist(store));
  EXPECT_EQ(written, std::vector<TransferId>({1}));
}

TEST(Bank, HoldsDoNotWaitForTheStore) {
  auto bank = Bank::create();
  ASSERT_TRUE(bank->deposit(1, CreditKind::kPaid, Money::usd(2), std::nullopt, 1));
  // While the store writes (slowly), another thread takes a hold: it must not wait for the
  // write to end, since holds run on the request path.
  std::promise<void> held;
  auto store = [&](const LedgerTail&) {
    std::thread other([&] {
      EXPECT_TRUE(bank->hold(1, Money::usd(1), 100, 2));
      held.set_value();
    });
    const bool in_time =
        held.get_future().wait_for(std::chrono::seconds(5)) == std::future_status::ready;
    other.join();
    EXPECT_TRUE(in_time) << "the hold waited for the store";
    return Status::ok();
  };
  ASSERT_TRUE(bank->persist(store));
  EXPECT_EQ(bank->balance(1, 3)->held, Money::usd(1));
}

}  // namespace
}  // namespace tp::ledger
