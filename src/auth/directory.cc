#include "auth/directory.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstring>

#include "router/rules.h"
#include "store/sqlite.h"

namespace tp::auth {
namespace {

std::string join_models(const std::vector<std::string>& models) {
  std::string out;
  for (const auto& m : models) out += (out.empty() ? "" : ",") + m;
  return out;
}

std::vector<std::string> split_models(std::string_view text) {
  std::vector<std::string> out;
  while (!text.empty()) {
    const std::size_t comma = text.find(',');
    out.emplace_back(text.substr(0, comma));
    if (comma == std::string_view::npos) break;
    text.remove_prefix(comma + 1);
  }
  return out;
}

// Weights as stored: "quality,cost,latency" in shortest round-trip form; "" for none.
std::string weights_text(const std::optional<router::Weights>& w) {
  return w ? fmt::format("{},{},{}", w->quality, w->cost, w->latency) : std::string();
}

Result<std::optional<router::Weights>> weights_from_text(std::string_view text) {
  if (text.empty()) return std::optional<router::Weights>();
  const std::vector<std::string> parts = split_models(text);
  double v[3];
  bool ok = parts.size() == 3;
  for (std::size_t i = 0; ok && i < 3; ++i) {
    const auto [end, ec] = std::from_chars(parts[i].data(), parts[i].data() + parts[i].size(), v[i]);
    ok = ec == std::errc() && end == parts[i].data() + parts[i].size();
  }
  if (!ok) return Status{ErrorKind::kInternal, "stored routing weights malformed"};
  return std::optional<router::Weights>(router::Weights{v[0], v[1], v[2]});
}

Result<RoutingPolicy> policy_from(std::string_view tier, std::string_view weights) {
  RoutingPolicy p;
  const auto parsed = catalog::parse_privacy_tier(tier);
  if (!parsed) return Status{ErrorKind::kInternal, "stored privacy tier malformed"};
  p.privacy_tier = *parsed;
  auto w = weights_from_text(weights);
  if (!w) return w.status();
  p.weights = *w;
  return p;
}

Result<KeyDigest> digest_from_hex(std::string_view hex) {
  KeyDigest d{};
  if (hex.size() != d.size() * 2) return Status{ErrorKind::kInternal, "stored digest malformed"};
  for (std::size_t i = 0; i < d.size(); ++i) {
    unsigned v = 0;
    for (char c : hex.substr(i * 2, 2)) {
      v = v * 16 + static_cast<unsigned>(c >= 'a' ? c - 'a' + 10 : c - '0');
    }
    d[i] = static_cast<std::uint8_t>(v);
  }
  return d;
}

// How a row is written: a new one must not exist yet (an id taken by another writer, such
// as the offline CLI beside a running gateway, is an error, not overwritten); a changed
// one, or one written again after a rollback, updates the row only if it is the same
// account or key (its immutable columns match), and is an error otherwise.
enum class Write { kNew, kWhole };

// Runs a row's write. A rewrite's RETURNING clause yields the row only when it was
// written: none means the id now belongs to another account or key, which is an error (the
// store and memory would disagree from then on), never a silent no-op.
Status run_write(store::Statement& st, Write how, std::string_view row) {
  if (how == Write::kNew) return st.run();
  auto step = st.step();
  if (!step) {
    st.reset();
    return step.status();
  }
  const bool written = *step == store::Statement::Step::kRow;
  if (Status s = st.run(); !s) return s;
  if (!written) {
    return Status{ErrorKind::kConflict,
                  fmt::format("the store's row of {} belongs to another writer (the offline CLI "
                              "beside a running gateway?); it was not overwritten",
                              row)};
  }
  return Status::ok();
}

// Writes an account's row whole, in the caller's transaction.
Status write_account(store::Database& db, const Account& a, Write how) {
  auto statement = db.cached(
      how == Write::kNew
          ? "INSERT INTO accounts (id, name, kind, plan, created_ms, suspended, privacy_tier, "
            "routing_weights, models) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
          : "INSERT INTO accounts (id, name, kind, plan, created_ms, suspended, privacy_tier, "
            "routing_weights, models) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO "
            "UPDATE SET suspended = excluded.suspended, privacy_tier = excluded.privacy_tier, "
            "routing_weights = excluded.routing_weights, models = excluded.models "
            "WHERE accounts.name = excluded.name AND accounts.created_ms = excluded.created_ms "
            "RETURNING id");
  if (!statement) return statement.status();
  store::Statement& st = **statement;
  st.bind(1, a.id).bind(2, a.name).bind(3, a.kind).bind(4, a.plan).bind(5, a.created_ms);
  st.bind(6, a.suspended ? 1 : 0).bind(7, catalog::privacy_tier_name(a.policy.privacy_tier));
  st.bind(8, weights_text(a.policy.weights)).bind(9, join_models(a.models));
  return run_write(st, how, fmt::format("acct_{}", a.id));
}

// The same for a key.
Status write_key(store::Database& db, const ApiKey& k, Write how) {
  auto statement = db.cached(
      how == Write::kNew
          ? "INSERT INTO api_keys (id, account_id, name, digest, last4, models, created_ms, "
            "expires_ms, revoked_ms, privacy_tier, routing_weights, tags, replaced_by, rpm, tpm, "
            "budget_nanos, holder) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
          : "INSERT INTO api_keys (id, account_id, name, digest, last4, models, created_ms, "
            "expires_ms, revoked_ms, privacy_tier, routing_weights, tags, replaced_by, rpm, tpm, "
            "budget_nanos, holder) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET expires_ms = "
            "excluded.expires_ms, revoked_ms = excluded.revoked_ms, replaced_by = "
            "excluded.replaced_by WHERE api_keys.digest = excluded.digest RETURNING id");
  if (!statement) return statement.status();
  store::Statement& st = **statement;
  st.bind(1, k.id).bind(2, k.account_id).bind(3, k.name).bind(4, to_hex(k.digest));
  st.bind(5, k.last4).bind(6, join_models(k.models)).bind(7, k.created_ms);
  if (k.expires_ms) st.bind(8, *k.expires_ms); else st.bind_null(8);
  if (k.revoked_ms) st.bind(9, *k.revoked_ms); else st.bind_null(9);
  st.bind(10, catalog::privacy_tier_name(k.policy.privacy_tier));
  st.bind(11, weights_text(k.policy.weights)).bind(12, join_models(k.tags));
  if (k.replaced_by) st.bind(13, *k.replaced_by); else st.bind_null(13);
  if (k.limits.rpm) st.bind(14, *k.limits.rpm); else st.bind_null(14);
  if (k.limits.tpm) st.bind(15, *k.limits.tpm); else st.bind_null(15);
  if (k.limits.budget) st.bind(16, k.limits.budget->nanos()); else st.bind_null(16);
  if (k.holder != 0 && k.holder != k.id) st.bind(17, k.holder); else st.bind_null(17);
  return run_write(st, how, fmt::format("key_{}", k.id));
}

}  // namespace

const KeyGrant* KeyTable::find(const KeyDigest& digest) const {
  const auto it = by_digest_.find(digest);
  if (it == by_digest_.end() || !digests_equal(it->first, digest)) return nullptr;
  return &it->second;
}

Result<std::unique_ptr<Directory>> Directory::load(store::Database& db) {
  auto dir = std::make_unique<Directory>();
  auto accounts = db.prepare(
      "SELECT id, name, kind, plan, created_ms, suspended, privacy_tier, routing_weights, models "
      "FROM accounts ORDER BY id");
  if (!accounts) return accounts.status();
  for (;;) {
    auto step = accounts->step();
    if (!step) return step.status();
    if (*step == store::Statement::Step::kDone) break;
    auto policy = policy_from(accounts->column_text(6), accounts->column_text(7));
    if (!policy) return policy.status();
    Account a{accounts->column_int(0), std::string(accounts->column_text(1)),
              std::string(accounts->column_text(2)), std::string(accounts->column_text(3)),
              accounts->column_int(4), accounts->column_int(5) != 0, *policy,
              split_models(accounts->column_text(8))};
    dir->accounts_.emplace(a.id, std::move(a));
  }
  auto keys = db.prepare(
      "SELECT id, account_id, name, digest, last4, models, created_ms, expires_ms, revoked_ms, "
      "privacy_tier, routing_weights, tags, replaced_by, rpm, tpm, budget_nanos, holder "
      "FROM api_keys ORDER BY id");
  if (!keys) return keys.status();
  for (;;) {
    auto step = keys->step();
    if (!step) return step.status();
    if (*step == store::Statement::Step::kDone) break;
    auto digest = digest_from_hex(keys->column_text(3));
    if (!digest) return digest.status();
    ApiKey k;
    k.id = keys->column_int(0);
    k.account_id = keys->column_int(1);
    k.name = std::string(keys->column_text(2));
    k.digest = *digest;
    k.last4 = std::string(keys->column_text(4));
    k.models = split_models(keys->column_text(5));
    k.created_ms = keys->column_int(6);
    if (!keys->column_is_null(7)) k.expires_ms = keys->column_int(7);
    if (!keys->column_is_null(8)) k.revoked_ms = keys->column_int(8);
    auto policy = policy_from(keys->column_text(9), keys->column_text(10));
    if (!policy) return policy.status();
    k.policy = *policy;
    k.tags = split_models(keys->column_text(11));
    if (!keys->column_is_null(12)) k.replaced_by = keys->column_int(12);
    if (!keys->column_is_null(13)) k.limits.rpm = keys->column_int(13);
    if (!keys->column_is_null(14)) k.limits.tpm = keys->column_int(14);
    if (!keys->column_is_null(15)) k.limits.budget = Money::from_nanos(keys->column_int(15));
    k.holder = keys->column_is_null(16) ? k.id : keys->column_int(16);
    dir->keys_.emplace(k.id, std::move(k));
  }
  std::lock_guard lock(dir->mu_);
  const bool budgets = std::any_of(dir->keys_.begin(), dir->keys_.end(),
                                   [](const auto& key) {
                                     return key.second.limits.budget.has_value();
                                   });
  // What the holders with a budget spent: their usage rows' costs (one scan of the log,
  // only when some key has a budget).
  std::map<std::int64_t, Money> spent;
  if (budgets) {
    auto sums = db.prepare("SELECT key_id, SUM(cost_nanos) FROM usage_log GROUP BY key_id");
    if (!sums) return sums.status();
    for (;;) {
      auto step = sums->step();
      if (!step) return step.status();
      if (*step == store::Statement::Step::kDone) break;
      const auto key = dir->keys_.find(sums->column_int(0));
      if (key != dir->keys_.end()) {
        spent[key->second.holder] += Money::from_nanos(sums->column_int(1));
      }
    }
  }
  for (const auto& [id, k] : dir->keys_) dir->meter_key(k, spent[k.holder]);
  dir->publish();
  return dir;
}

void Directory::meter_key(const ApiKey& k, Money spent) {
  if (!k.limits.any()) return;
  meters_.try_emplace(k.holder,
                      std::make_shared<KeyMeter>(k.limits, spent, KeyMeter::Clock::now()));
}

std::optional<Money> Directory::budget_spent(std::int64_t key_id) const {
  std::lock_guard lock(mu_);
  const auto key = keys_.find(key_id);
  if (key == keys_.end()) return std::nullopt;
  const auto meter = meters_.find(key->second.holder);
  if (meter == meters_.end() || !meter->second->limits().budget) return std::nullopt;
  return meter->second->spent();
}

void Directory::publish() {
  auto table = std::make_shared<KeyTable>();
  for (const auto& [id, k] : keys_) {
    if (k.revoked_ms) continue;
    const Account& a = accounts_.at(k.account_id);
    KeyGrant g{k.id, k.account_id, a.suspended, k.expires_ms};
    if (!a.models.empty() && !k.models.empty()) {
      for (const std::string& m : k.models) {
        if (std::find(a.models.begin(), a.models.end(), m) != a.models.end()) g.models.push_back(m);
      }
    } else {
      g.models = a.models.empty() ? k.models : a.models;
    }
    g.models_limited = !a.models.empty() || !k.models.empty();
    g.privacy_tier = std::min(a.policy.privacy_tier, k.policy.privacy_tier);
    if (k.policy.weights) {
      g.weights = k.policy.weights;
      g.weights_from = KeyGrant::WeightsFrom::kKey;
    } else if (a.policy.weights) {
      g.weights = a.policy.weights;
      g.weights_from = KeyGrant::WeightsFrom::kAccount;
    }
    g.tags = k.tags;
    if (const auto meter = meters_.find(k.holder); meter != meters_.end()) {
      g.meter = meter->second;
    }
    table->by_digest_.emplace(k.digest, std::move(g));
  }
  table_ = std::move(table);
  version_.fetch_add(1, std::memory_order_release);
}

std::shared_ptr<const KeyTable> Directory::keys() const {
  std::lock_guard lock(mu_);
  return table_;
}

std::optional<Account> Directory::account(std::int64_t id) const {
  std::lock_guard lock(mu_);
  const auto it = accounts_.find(id);
  return it == accounts_.end() ? std::nullopt : std::optional<Account>(it->second);
}

std::vector<Account> Directory::accounts() const {
  std::lock_guard lock(mu_);
  std::vector<Account> out;
  out.reserve(accounts_.size());
  for (const auto& [id, a] : accounts_) out.push_back(a);
  return out;
}

std::vector<ApiKey> Directory::keys_of(std::int64_t account_id) const {
  std::lock_guard lock(mu_);
  std::vector<ApiKey> out;
  for (const auto& [id, k] : keys_) {
    if (k.account_id == account_id) out.push_back(k);
  }
  return out;
}

Status Directory::persist(store::Database& db) {
  std::lock_guard lock(mu_);
  for (const std::int64_t id : unstored_accounts_) {
    if (Status s = write_account(db, accounts_.at(id), Write::kWhole); !s) return s;
  }
  for (const std::int64_t id : unstored_keys_) {
    if (Status s = write_key(db, keys_.at(id), Write::kWhole); !s) return s;
  }
  return Status::ok();
}

void Directory::committed(bool ok) {
  if (!ok) return;
  std::lock_guard lock(mu_);
  unstored_accounts_.clear();
  unstored_keys_.clear();
}

namespace {

// A control character (a NUL, a line break) in a name would break the lines it is shown in.
bool has_control(std::string_view text) {
  return std::any_of(text.begin(), text.end(), [](char c) {
    return static_cast<unsigned char>(c) < 0x20 || c == 0x7f;
  });
}

}  // namespace

Status check_name(std::string_view name, bool required) {
  if ((required && name.empty()) || name.size() > kNameBytesMax || has_control(name)) {
    return {ErrorKind::kInvalidRequest, std::string(required ? kAccountNameRule : kKeyNameRule)};
  }
  return Status::ok();
}

Status check_plan(std::string_view plan) {
  if (plan.size() > kPlanBytesMax || has_control(plan)) {
    return {ErrorKind::kInvalidRequest, std::string(kPlanRule)};
  }
  return Status::ok();
}

Status check_models(const std::vector<std::string>& models) {
  const bool ok = models.size() <= kModelsMax &&
                  std::none_of(models.begin(), models.end(), [](const std::string& m) {
                    return m.empty() || m.find(',') != std::string::npos;
                  });
  if (ok) return Status::ok();
  return {ErrorKind::kInvalidRequest, std::string(kModelsRule)};
}

Status check_tags(const std::vector<std::string>& tags) {
  if (tags.size() <= kTagsMax &&
      std::all_of(tags.begin(), tags.end(),
                  [](const std::string& tag) { return router::valid_tag(tag); })) {
    return Status::ok();
  }
  return {ErrorKind::kInvalidRequest, std::string(kTagsRule)};
}

Result<Account> Directory::create_account(store::Database& db, std::string name, std::string kind,
                                          std::string plan, RoutingPolicy policy,
                                          std::int64_t now_ms, std::vector<std::string> models) {
  if (Status s = check_name(name, true); !s) return s;
  if (Status s = check_plan(plan); !s) return s;
  if (Status s = check_models(models); !s) return s;
  std::lock_guard lock(mu_);
  Account a{accounts_.empty() ? 1 : accounts_.rbegin()->first + 1,
            std::move(name),
            std::move(kind),
            std::move(plan),
            now_ms,
            false,
            std::move(policy),
            std::move(models)};
  if (Status s = write_account(db, a, Write::kNew); !s) return s;
  accounts_.emplace(a.id, a);
  unstored_accounts_.insert(a.id);
  return a;
}

Result<Account> Directory::change_account(store::Database& db, std::int64_t id,
                                          const std::function<void(Account&)>& apply) {
  std::lock_guard lock(mu_);
  const auto it = accounts_.find(id);
  if (it == accounts_.end()) {
    return Status{ErrorKind::kNotFound, fmt::format("no account acct_{}", id)};
  }
  Account changed = it->second;
  apply(changed);
  if (Status s = write_account(db, changed, Write::kWhole); !s) return s;
  it->second = std::move(changed);
  unstored_accounts_.insert(id);
  publish();
  return it->second;
}

Result<Account> Directory::set_suspended(store::Database& db, std::int64_t id, bool suspended) {
  return change_account(db, id, [&](Account& a) { a.suspended = suspended; });
}

Result<Account> Directory::set_policy(store::Database& db, std::int64_t id, RoutingPolicy policy) {
  return change_account(db, id, [&](Account& a) { a.policy = policy; });
}

Result<Account> Directory::set_models(store::Database& db, std::int64_t id,
                                      std::vector<std::string> models) {
  if (Status s = check_models(models); !s) return s;
  return change_account(db, id, [&](Account& a) { a.models = models; });
}

Result<ApiKey> Directory::create_key(store::Database& db, const KeyHasher& hasher,
                                     std::int64_t account_id, KeySpec spec, std::int64_t now_ms,
                                     std::string* secret) {
  if (Status s = check_name(spec.name, false); !s) return s;
  if (Status s = check_models(spec.models); !s) return s;
  if (Status s = check_tags(spec.tags); !s) return s;
  std::lock_guard lock(mu_);
  return create_key_locked(db, hasher, account_id, std::move(spec), now_ms, secret);
}

Result<ApiKey> Directory::rotate_key(store::Database& db, const KeyHasher& hasher,
                                     std::int64_t key_id, std::int64_t grace_ms,
                                     std::int64_t now_ms, std::string* secret,
                                     std::int64_t* old_expires_ms) {
  std::lock_guard lock(mu_);
  const auto it = keys_.find(key_id);
  if (it == keys_.end() || it->second.revoked_ms ||
      (it->second.expires_ms && *it->second.expires_ms <= now_ms)) {
    return Status{ErrorKind::kNotFound, fmt::format("no active key key_{}", key_id)};
  }
  const ApiKey old = it->second;
  // When the new key ends: when this one would have, before any rotation gave it a grace
  // deadline.
  std::optional<std::int64_t> lifetime_end = old.expires_ms;
  if (old.replaced_by) {
    const ApiKey& successor = keys_.at(*old.replaced_by);
    if (!successor.revoked_ms || successor.replaced_by) {
      // Its expiry is now the grace deadline of that rotation, which a second successor
      // would inherit (and die with): the successor is the key to rotate.
      // The key to rotate is the newest of the line (that successor's own successor, when
      // it was rotated in turn).
      // Down the line to the key whose successor (if any) was revoked before it was rotated
      // in turn: that one may be rotated.
      std::int64_t newest = *old.replaced_by;
      while (const auto next = keys_.at(newest).replaced_by) {
        const ApiKey& after = keys_.at(*next);
        if (after.revoked_ms && !after.replaced_by) break;
        newest = *next;
      }
      if (keys_.at(newest).revoked_ms) {  // revoked itself: nothing of the line is left
        return Status{ErrorKind::kConflict,
                      fmt::format("key_{} was rotated already, to key_{}, and the rest of its "
                                  "line was revoked: create a new key",
                                  key_id, *old.replaced_by)};
      }
      return Status{ErrorKind::kConflict,
                    fmt::format("key_{} was rotated already, to key_{}, and stops working at "
                                "its grace deadline: rotate key_{} instead",
                                key_id, *old.replaced_by, newest)};
    }
    // That successor was revoked before it was rotated itself (else its expiry is a grace
    // deadline, and its own successor lives): this key, still in its grace, is rotated
    // again, and the new successor takes the revoked one's expiry (this key's own, before
    // that rotation).
    lifetime_end = successor.expires_ms;
  }
  // The old key's end is written first and the new key made last, so that a new key (and
  // its secret) exists only once the whole rotation has taken effect.
  ApiKey ending = old;
  ending.expires_ms =
      old.expires_ms ? std::min(*old.expires_ms, now_ms + grace_ms) : now_ms + grace_ms;
  ending.replaced_by = keys_.rbegin()->first + 1;  // the id create_key_locked gives
  if (Status s = write_key(db, ending, Write::kWhole); !s) return s;
  auto fresh = create_key_locked(
      db, hasher, old.account_id,
      KeySpec{old.name, old.models, old.policy, old.tags, lifetime_end, old.limits}, now_ms,
      secret, old.holder);
  if (!fresh) return fresh;
  TP_ASSERT(fresh->id == *ending.replaced_by);
  *old_expires_ms = *ending.expires_ms;
  keys_.at(key_id) = std::move(ending);
  unstored_keys_.insert(key_id);
  publish();
  return fresh;
}

Result<ApiKey> Directory::create_key_locked(store::Database& db, const KeyHasher& hasher,
                                            std::int64_t account_id, KeySpec spec,
                                            std::int64_t now_ms, std::string* secret,
                                            std::optional<std::int64_t> holder) {
  if (!accounts_.contains(account_id)) {
    return Status{ErrorKind::kNotFound, fmt::format("no account acct_{}", account_id)};
  }
  const NewKey fresh = hasher.generate();
  ApiKey k;
  k.id = keys_.empty() ? 1 : keys_.rbegin()->first + 1;
  k.account_id = account_id;
  k.name = std::move(spec.name);
  k.digest = fresh.digest;
  k.last4 = fresh.last4;
  k.models = std::move(spec.models);
  k.created_ms = now_ms;
  k.expires_ms = spec.expires_ms;
  k.policy = std::move(spec.policy);
  k.tags = std::move(spec.tags);
  k.limits = spec.limits;
  k.holder = holder.value_or(k.id);
  if (Status s = write_key(db, k, Write::kNew); !s) return s;
  meter_key(k, Money());  // a successor's holder has its meter already
  keys_.emplace(k.id, k);
  unstored_keys_.insert(k.id);
  publish();
  *secret = fresh.key;
  return k;
}

Status Directory::revoke_key(store::Database& db, std::int64_t key_id, std::int64_t now_ms) {
  std::lock_guard lock(mu_);
  const auto it = keys_.find(key_id);
  if (it == keys_.end()) return {ErrorKind::kNotFound, fmt::format("no key key_{}", key_id)};
  if (it->second.revoked_ms) return Status::ok();  // revoked already: a retry, say
  ApiKey revoked = it->second;
  revoked.revoked_ms = now_ms;
  if (Status s = write_key(db, revoked, Write::kWhole); !s) return s;
  it->second = std::move(revoked);
  unstored_keys_.insert(key_id);
  publish();
  return Status::ok();
}

}  // namespace tp::auth
