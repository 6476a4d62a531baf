#include "ledger/wallet.h"

#include <fmt/format.h>

#include <algorithm>
#include <optional>

#include "core/assert.h"

namespace tp::ledger {

PlatformAccounts PlatformAccounts::open(Ledger& ledger) {
  PlatformAccounts p;
  p.world = ledger.open("world", Floor::kUnbounded);
  p.revenue = ledger.open("platform:revenue", Floor::kUnbounded);
  p.expired_credits = ledger.open("platform:expired_credits", Floor::kUnbounded);
  p.refunds = ledger.open("platform:refunds", Floor::kUnbounded);
  return p;
}

Result<PlatformAccounts> PlatformAccounts::find(const Ledger& ledger) {
  PlatformAccounts p;
  int found = 0;
  for (AccountId id = 0; id < ledger.account_count(); ++id) {
    const std::string& name = ledger.name(id);
    if (name == "world") p.world = id, ++found;
    else if (name == "platform:revenue") p.revenue = id, ++found;
    else if (name == "platform:expired_credits") p.expired_credits = id, ++found;
    else if (name == "platform:refunds") p.refunds = id, ++found;
  }
  if (found != 4) return Status{ErrorKind::kInternal, "the stored ledger lacks platform accounts"};
  return p;
}

Wallet::Wallet(Ledger& ledger, const PlatformAccounts& platform, std::string customer,
               AccountId paid, AccountId trial, AccountId held)
    : ledger_(ledger),
      platform_(platform),
      customer_(std::move(customer)),
      paid_(paid),
      trial_(trial),
      held_(held) {}

Result<Wallet> Wallet::adopt(Ledger& ledger, const PlatformAccounts& platform,
                             const std::string& customer) {
  std::optional<AccountId> paid, trial, held;
  std::vector<Lot> lots;
  const std::string prefix = customer + ":";
  for (AccountId id = 0; id < ledger.account_count(); ++id) {
    std::string_view name = ledger.name(id);
    if (!name.starts_with(prefix)) continue;
    name.remove_prefix(prefix.size());
    if (name == "paid") {
      paid = id;
    } else if (name == "trial") {
      trial = id;
    } else if (name == "held") {
      held = id;
    } else if (const auto at = name.find(":expires="); name.starts_with("promo:") && at != name.npos) {
      lots.push_back({id, std::stoll(std::string(name.substr(at + 9))), Money()});
    }
  }
  if (!paid || !trial || !held) {
    return Status{ErrorKind::kInternal, fmt::format("stored ledger lacks {}'s books", customer)};
  }
  Wallet w(ledger, platform, customer, *paid, *trial, *held);
  std::sort(lots.begin(), lots.end(),
            [](const Lot& a, const Lot& b) { return a.expires_at_ms < b.expires_at_ms; });
  w.lots_ = std::move(lots);
  return w;
}

Wallet::Wallet(Ledger& ledger, const PlatformAccounts& platform, const std::string& customer)
    : ledger_(ledger),
      platform_(platform),
      customer_(customer),
      paid_(ledger.open(customer + ":paid", Floor::kNonNegative)),
      trial_(ledger.open(customer + ":trial", Floor::kNonNegative)),
      held_(ledger.open(customer + ":held", Floor::kNonNegative)) {}

Result<TransferId> Wallet::deposit_paid(Money amount, std::int64_t now_ms) {
  return ledger_.transfer(platform_.world, paid_, amount, TransferKind::kDeposit, 0, now_ms);
}

Result<TransferId> Wallet::deposit_trial(Money amount, std::int64_t now_ms) {
  return ledger_.transfer(platform_.world, trial_, amount, TransferKind::kDeposit, 0, now_ms);
}

Result<TransferId> Wallet::deposit_promo(Money amount, std::int64_t expires_at_ms,
                                         std::int64_t now_ms) {
  if (expires_at_ms <= now_ms) {
    return Status{ErrorKind::kInvalidRequest, "a promo lot must expire in the future"};
  }
  // Checked before the lot's account opens: a refused deposit leaves nothing behind.
  if (Status s = ledger_.check_range(platform_.world, amount); !s) return s;
  // Numbered by the ledger's account count, so names stay unique across expiries.
  const AccountId lot = ledger_.open(
      fmt::format("{}:promo:{}:expires={}", customer_, ledger_.account_count(), expires_at_ms),
      Floor::kNonNegative);
  auto id = ledger_.transfer(platform_.world, lot, amount, TransferKind::kDeposit, 0, now_ms);
  if (!id) return id;
  const auto at = std::upper_bound(lots_.begin(), lots_.end(), expires_at_ms,
                                   [](std::int64_t t, const Lot& l) { return t < l.expires_at_ms; });
  lots_.insert(at, Lot{lot, expires_at_ms, Money()});
  return id;
}

Money Wallet::promo(std::int64_t now_ms) const {
  Money total;
  for (const Lot& l : lots_) {
    if (l.expires_at_ms > now_ms) total += ledger_.balance(l.account) - l.reserved;
  }
  return total;
}

Money Wallet::available(std::int64_t now_ms) const { return paid() + trial() + promo(now_ms); }

Wallet::Lot* Wallet::lot(AccountId account) {
  const auto it = std::find_if(lots_.begin(), lots_.end(),
                               [&](const Lot& l) { return l.account == account; });
  return it == lots_.end() ? nullptr : &*it;
}

Money& Wallet::reserved(AccountId source) {
  if (source == paid_) return paid_reserved_;
  if (source == trial_) return trial_reserved_;
  Lot* l = lot(source);
  TP_CHECK(l != nullptr);  // a lot stays while holds reserve on it
  return l->reserved;
}

Money Wallet::spendable(AccountId source) {
  return std::max(Money(), ledger_.balance(source) - reserved(source));
}

Result<HoldId> Wallet::hold(Money amount, std::int64_t expires_at_ms, std::int64_t now_ms) {
  if (amount <= Money()) return Status{ErrorKind::kInvalidRequest, "a hold must be positive"};
  const Money available_now = available(now_ms);
  if (available_now < amount) {
    // Below zero by a response that cost more than its hold: said, or "0.00 available"
    // would hide what a credit must first make up.
    const std::string overdrawn =
        available_now < Money()
            ? fmt::format(" (overdrawn by {} USD)", (Money() - available_now).to_string())
            : std::string();
    return Status{ErrorKind::kPaymentRequired,
                  fmt::format("insufficient balance: {} USD available{}, {} USD needed for "
                              "this request's worst case",
                              std::max(available_now, Money()).to_string(), overdrawn,
                              amount.to_string())};
  }
  const HoldId id = next_hold_++;
  Hold h{amount, expires_at_ms, {}};
  Money left = amount;
  in_spend_order(now_ms, [&](AccountId source) {
    const Money take = std::min(left, spendable(source));
    if (take > Money()) {
      reserved(source) += take;
      h.legs.push_back({source, take});
      left -= take;
    }
    return !left.is_zero();
  });
  TP_CHECK(left.is_zero());  // available() covered it
  held_total_ += amount;
  holds_.emplace(id, std::move(h));
  return id;
}

Result<Wallet::Covered> Wallet::cover(HoldId id, Money needed, std::int64_t now_ms,
                                      bool may_overdraw) {
  const auto it = holds_.find(id);
  if (it == holds_.end()) {
    return Status{ErrorKind::kNotFound, fmt::format("hold {} is not open", id)};
  }
  Hold& h = it->second;
  Money left = needed - h.amount;
  in_spend_order(now_ms, [&](AccountId source) {
    if (left <= Money()) return false;
    const Money take = std::min(left, spendable(source));
    if (take > Money()) {
      reserved(source) += take;
      const auto leg = std::find_if(h.legs.begin(), h.legs.end(),
                                    [&](const Leg& l) { return l.source == source; });
      if (leg == h.legs.end()) {
        h.legs.push_back({source, take});
      } else {
        leg->amount += take;
      }
      h.amount += take;
      held_total_ += take;
      left -= take;
    }
    return left > Money();
  });
  Cover kind = Cover::kRefused;
  if (overdrawer_ == id) {
    kind = Cover::kOverdraft;
  } else if (left <= Money()) {
    kind = Cover::kCovered;
  } else if (may_overdraw && overdrawer_ == 0 && paid() >= Money()) {
    // (paid() below zero: an overdraft already took money that open holds reserve.)
    overdrawer_ = id;
    kind = Cover::kOverdraft;
  }
  return Covered{kind, h.amount};
}

bool Wallet::sweep(const Lot& lot, HoldId hold, std::int64_t at_ms) {
  const Money rest = ledger_.balance(lot.account) - lot.reserved;
  if (rest <= Money()) return false;
  auto moved = ledger_.transfer(lot.account, platform_.expired_credits, rest, TransferKind::kExpire,
                                hold, at_ms);
  TP_CHECK(moved.is_ok());  // never more than the lot holds
  return true;
}

void Wallet::close(const Hold& hold, Money spent, HoldId id, std::int64_t now_ms) {
  held_total_ -= hold.amount;
  if (overdrawer_ == id) overdrawer_ = 0;
  for (const Leg& leg : hold.legs) reserved(leg.source) -= leg.amount;
  // The cost is drawn in spend order again, from what this hold reserved and what is
  // unreserved now: books that other holds had reserved when this one began may be free
  // again, and credit may have come since. So promo and trial are not left unspent while
  // paid is charged. A lot past its time is spent only as far as this hold reserved on it
  // (its request began before the expiry), and before any other book.
  auto take = [&](AccountId source, Money most, bool overdraw) {
    const Money use = std::min(spent, most);
    if (use <= Money()) return;
    auto moved =
        ledger_.transfer(source, platform_.revenue, use, TransferKind::kPost, id, now_ms, overdraw);
    TP_CHECK(moved.is_ok());  // never more than the book holds unreserved, but for paid
    spent -= use;
  };
  Money paid_leg;
  for (const Leg& leg : hold.legs) {
    if (leg.source == paid_) paid_leg += leg.amount;
    const Lot* l = lot(leg.source);
    if (l != nullptr && l->expires_at_ms <= now_ms) {
      take(leg.source, std::min(leg.amount, spendable(leg.source)), false);
    }
  }
  in_spend_order(now_ms, [&](AccountId source) {
    if (source != paid_) {
      take(source, spendable(source), false);
      return spent > Money();
    }
    // Paid comes last, and only paid can fall short of what this hold reserved on it:
    // another response's shortfall overdrew it meanwhile, and this charge is owed all the
    // same (in the same transfer).
    TP_CHECK(spent <= spendable(paid_) + paid_leg);
    take(paid_, spent, true);
    return false;
  });
  for (const Leg& leg : hold.legs) {
    Lot* l = lot(leg.source);
    if (l == nullptr || !l->swept) continue;
    // The lot expired while this hold reserved part of it: that part goes where the rest
    // of the lot went, and the lot is done once nothing reserves it.
    (void)sweep(*l, id, now_ms);
    if (l->reserved.is_zero()) {
      std::erase_if(lots_, [&](const Lot& x) { return x.account == leg.source; });
    }
  }
  TP_CHECK(spent.is_zero());
}

Result<Money> Wallet::post(HoldId id, Money actual, std::int64_t now_ms) {
  const auto it = holds_.find(id);
  if (it == holds_.end()) {
    return Status{ErrorKind::kNotFound, fmt::format("hold {} is not open", id)};
  }
  if (actual < Money()) return Status{ErrorKind::kInvalidRequest, "a cost cannot be negative"};
  const Hold h = std::move(it->second);
  holds_.erase(it);
  close(h, std::min(actual, h.amount), id, now_ms);
  if (actual > h.amount) charge(actual - h.amount, id, now_ms);
  return actual;
}

Money Wallet::charge(Money actual, HoldId hold, std::int64_t now_ms) {
  // First from what the customer has unreserved, then (only for this response) an
  // overdraft of paid.
  Money rest = actual;
  in_spend_order(now_ms, [&](AccountId source) {
    const Money take = std::min(rest, spendable(source));
    if (take > Money()) {
      auto moved = ledger_.transfer(source, platform_.revenue, take, TransferKind::kPost, hold,
                                    now_ms);
      TP_CHECK(moved.is_ok());  // `take` never exceeds the source's balance
      rest -= take;
    }
    return !rest.is_zero();
  });
  if (rest > Money()) {
    auto moved = ledger_.transfer(paid_, platform_.revenue, rest, TransferKind::kOverdraft, hold,
                                  now_ms, /*allow_overdraft=*/true);
    TP_CHECK(moved.is_ok());
  }
  return actual;
}

Money Wallet::reverse(HoldId id, std::int64_t now_ms) {
  // Hold ids are numbered per wallet: a transfer is this hold's when it also touches one
  // of this wallet's books.
  const std::string lot_prefix = customer_ + ":promo:";
  auto mine = [&](AccountId book) {
    return book == paid_ || book == trial_ || ledger_.name(book).starts_with(lot_prefix);
  };
  std::vector<Leg> charged;
  for (const Transfer& t : ledger_.journal()) {
    if (t.hold != id) continue;
    if (t.kind == TransferKind::kReverse && mine(t.credit)) return Money();  // reversed before
    if (t.credit == platform_.revenue && mine(t.debit) &&
        (t.kind == TransferKind::kPost || t.kind == TransferKind::kOverdraft)) {
      charged.push_back({t.debit, t.amount});
    }
  }
  Money total;
  for (const Leg& leg : charged) {
    auto back = ledger_.transfer(platform_.revenue, leg.source, leg.amount, TransferKind::kReverse,
                                 id, now_ms);
    TP_CHECK(back.is_ok());  // revenue has no floor
    total += leg.amount;
    const Lot* l = lot(leg.source);
    if (leg.source != paid_ && leg.source != trial_ && (l == nullptr || l->swept ||
                                                        l->expires_at_ms <= now_ms)) {
      // The lot's time is over: what came back goes where its remainder went.
      auto gone = ledger_.transfer(leg.source, platform_.expired_credits, leg.amount,
                                   TransferKind::kExpire, id, now_ms);
      TP_CHECK(gone.is_ok());
    }
  }
  return total;
}

void Wallet::recover(const Transfer& t) {
  if (t.hold == 0) return;
  next_hold_ = std::max(next_hold_, t.hold + 1);
  if (t.credit == held_ && t.kind == TransferKind::kHold) {
    stranded_[t.hold].push_back({t.debit, t.amount});
  } else if (t.debit == held_) {
    // Posted, released or swept: such a hold was closed in one step under the bank's
    // lock, so any money leaving `held` for it means it is settled.
    stranded_.erase(t.hold);
  }
}

std::size_t Wallet::return_stranded(std::int64_t now_ms) {
  const std::size_t count = stranded_.size();
  for (const auto& [id, legs] : stranded_) {
    for (auto leg = legs.rbegin(); leg != legs.rend(); ++leg) {
      // A lot already swept (or past its time) cannot take money back.
      const Lot* l = lot(leg->source);
      const bool to_book = leg->source == paid_ || leg->source == trial_ ||
                           (l != nullptr && l->expires_at_ms > now_ms);
      auto moved = ledger_.transfer(held_, to_book ? leg->source : platform_.expired_credits,
                                    leg->amount,
                                    to_book ? TransferKind::kRelease : TransferKind::kExpire, id,
                                    now_ms);
      TP_CHECK(moved.is_ok());  // held covers what was moved there
    }
  }
  stranded_.clear();
  return count;
}

bool Wallet::renew(HoldId id, std::int64_t expires_at_ms) {
  const auto it = holds_.find(id);
  if (it == holds_.end()) return false;
  it->second.expires_at_ms = expires_at_ms;
  return true;
}

Status Wallet::void_hold(HoldId id, std::int64_t now_ms) {
  const auto it = holds_.find(id);
  if (it == holds_.end()) {
    return Status{ErrorKind::kNotFound, fmt::format("hold {} is not open", id)};
  }
  const Hold h = std::move(it->second);
  holds_.erase(it);
  close(h, Money(), id, now_ms);
  return Status::ok();
}

Wallet::Expired Wallet::expire(std::int64_t now_ms, std::int64_t monotonic_ms) {
  Expired expired;
  for (auto it = holds_.begin(); it != holds_.end();) {
    if (it->second.expires_at_ms > monotonic_ms) {
      ++it;
      continue;
    }
    const Hold h = std::move(it->second);
    const HoldId id = it->first;
    it = holds_.erase(it);
    close(h, Money(), id, now_ms);
    ++expired.holds;
  }
  // Sweep after the holds, so what they no longer reserve goes too.
  for (auto it = lots_.begin(); it != lots_.end() && it->expires_at_ms <= now_ms;) {
    if (it->swept) {
      ++it;  // swept before; waits for the holds that still reserve on it
      continue;
    }
    // Stamped at the lot's expiry, not at the sweep, which may come much later (the lots
    // that expired while the process was down are swept at its start): past its time the
    // lot is spent no more, so what it holds then is what expired. (Transfers are ordered
    // by id, never by time.)
    // A lot emptied before its time (spent, or restored empty at a start) expires nothing.
    const bool moved = sweep(*it, 0, std::min(now_ms, it->expires_at_ms));
    if (moved || !it->reserved.is_zero()) ++expired.lots;
    if (it->reserved.is_zero()) {
      it = lots_.erase(it);
    } else {
      it->swept = true;
      ++it;
    }
  }
  return expired;
}

Result<TransferId> Wallet::refund(Money amount, std::int64_t now_ms) {
  if (amount > Money() && amount > paid()) {
    return Status{ErrorKind::kPaymentRequired,
                  fmt::format("{}:paid holds {} USD unreserved, {} USD needed", customer_,
                              std::max(paid(), Money()).to_string(), amount.to_string())};
  }
  return ledger_.transfer(paid_, platform_.refunds, amount, TransferKind::kRefund, 0, now_ms);
}

}  // namespace tp::ledger
