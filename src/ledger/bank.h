#pragma once
// Every customer's wallet in one Ledger, behind one mutex. The ledger's balances are the
// truth in memory; `persist` hands what changed to the store. Thread-safe.

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>

#include "ledger/ledger.h"
#include "ledger/wallet.h"

namespace tp::ledger {

enum class CreditKind { kPaid, kTrial, kPromo };

struct Balance {
  Money paid, trial, promo, held, available;
};

class Bank {
 public:
  // A bank with only the platform accounts.
  static std::unique_ptr<Bank> create();
  // Takes a ledger rebuilt from the store (all of it already stored) and re-attaches every
  // customer's wallet ("acct_<id>:..." accounts).
  static Result<std::unique_ptr<Bank>> adopt(Ledger ledger);

  // Idempotent.
  void open_wallet(std::int64_t account);
  Result<TransferId> deposit(std::int64_t account, CreditKind kind, Money amount,
                             std::optional<std::int64_t> expires_at_ms, std::int64_t now_ms);
  // Unused paid credit only (never trial or promo); kPaymentRequired past it.
  Result<TransferId> refund(std::int64_t account, Money amount, std::int64_t now_ms);
  Result<Balance> balance(std::int64_t account, std::int64_t now_ms) const;
  VerifyReport verify() const;

  // Calls `store` with the ledger and the counts of accounts and transfers already stored;
  // on success, everything up to now counts as stored.
  using StoreFn = std::function<Status(const Ledger&, std::size_t accounts_from,
                                       std::size_t transfers_from)>;
  Status persist(const StoreFn& store);

 private:
  Bank() = default;
  Wallet& wallet(std::int64_t account);  // caller holds mu_; opens it if needed

  mutable std::mutex mu_;
  Ledger ledger_;
  PlatformAccounts platform_;
  std::map<std::int64_t, std::unique_ptr<Wallet>> wallets_;
  std::size_t stored_accounts_ = 0;
  std::size_t stored_transfers_ = 0;
};

std::string customer_name(std::int64_t account);  // "acct_<id>"

}  // namespace tp::ledger
