#pragma once
// Accounts and their API keys: the authoritative copy in memory (loaded from the store at
// start, changed only through the methods below, each change written through the store
// before it is acknowledged), and an immutable KeyTable snapshot that request threads read
// without locks. Changing methods are serialised by a mutex: they are rare (admin calls).

#include <algorithm>
#include <atomic>
#include <cstring>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "auth/key_limits.h"
#include "auth/keys.h"
#include "catalog/catalog.h"
#include "core/status.h"
#include "router/score.h"

namespace tp::store {
class Database;
class Statement;
}

namespace tp::auth {

// How an account's or a key's requests are routed. A request may tighten the privacy tier,
// never loosen it; weights unset fall through (key → account → routing.weights).
struct RoutingPolicy {
  catalog::PrivacyTier privacy_tier = catalog::PrivacyTier::kCommunity;  // the loosest allowed
  std::optional<router::Weights> weights;
};

struct Account {
  std::int64_t id = 0;
  std::string name;
  std::string kind;  // customer | operator
  std::string plan;
  std::int64_t created_ms = 0;
  bool suspended = false;
  RoutingPolicy policy;
  std::vector<std::string> models;  // the account's model allowlist; empty: every model
};

struct ApiKey {
  std::int64_t id = 0;
  std::int64_t account_id = 0;
  std::string name;
  KeyDigest digest{};
  std::string last4;
  std::vector<std::string> models;  // empty: every model
  std::int64_t created_ms = 0;
  std::optional<std::int64_t> expires_ms;
  std::optional<std::int64_t> revoked_ms;
  RoutingPolicy policy;
  std::vector<std::string> tags;  // matched by routing rules
  std::optional<std::int64_t> replaced_by;  // the key a rotation made in its place
  KeyLimits limits;  // a successor inherits them, and shares its predecessor's meter
  // The first key of its rotation line, whose limits and their use the line shares (the
  // key's own id for a key no rotation made).
  std::int64_t holder = 0;
};

// What a request needs to know about its key, looked up by digest.
struct KeyGrant {
  std::int64_t key_id = 0;
  std::int64_t account_id = 0;
  bool account_suspended = false;
  std::optional<std::int64_t> expires_ms;
  // The models the key may use: its own allowlist and its account's, both applied.
  std::vector<std::string> models;
  bool models_limited = false;  // false: every model (`models` is then empty)
  bool may_use(std::string_view model) const {
    return !models_limited || std::find(models.begin(), models.end(), model) != models.end();
  }
  // The tighter of the account's and the key's tiers; the key's weights, else the
  // account's, else none (the config's).
  catalog::PrivacyTier privacy_tier = catalog::PrivacyTier::kCommunity;
  std::optional<router::Weights> weights;
  enum class WeightsFrom { kConfig, kAccount, kKey } weights_from = WeightsFrom::kConfig;
  std::vector<std::string> tags;
  // Its limits and what it used of them; null when it has none.
  std::shared_ptr<KeyMeter> meter;
};

class KeyTable {
 public:
  // nullptr for an unknown or revoked key.
  const KeyGrant* find(const KeyDigest& digest) const;
  std::size_t size() const { return by_digest_.size(); }

 private:
  friend class Directory;
  struct DigestHash {
    std::size_t operator()(const KeyDigest& d) const {
      std::size_t h;
      std::memcpy(&h, d.data(), sizeof h);  // the digest is already uniformly random
      return h;
    }
  };
  std::unordered_map<KeyDigest, KeyGrant, DigestHash> by_digest_;
};

// The limits on what accounts and keys hold, checked by the Directory itself so that every
// way in (the admin API, the offline CLI) keeps them. Each error names the limit.
inline constexpr std::size_t kNameBytesMax = 200;  // account and key names
inline constexpr std::size_t kModelsMax = 100;     // an allowlist's names
inline constexpr std::size_t kTagsMax = 20;
// The rules, as the errors state them.
inline constexpr std::string_view kAccountNameRule =
    "'name' is required: a string of 1 to 200 bytes, without control characters";
inline constexpr std::string_view kKeyNameRule =
    "'name' must be a string of at most 200 bytes, without control characters";
inline constexpr std::size_t kPlanBytesMax = 64;
inline constexpr std::string_view kPlanRule =
    "'plan' must be a string of at most 64 bytes, without control characters";
inline constexpr std::string_view kModelsRule =
    "'models' must be a list of model names (at most 100, without commas), or null for every "
    "model";
inline constexpr std::string_view kTagsRule =
    "'tags' must be a list of at most 20 tags, each 1 to 64 letters, digits, '-', '_' or '.'";
// An account's name: 1 to 200 bytes. A key's may be empty.
Status check_name(std::string_view name, bool required);
// An account's plan: at most 64 bytes, without control characters (kPlanRule).
Status check_plan(std::string_view plan);
// At most 100 names, none empty or holding a comma (lists are stored comma-separated).
Status check_models(const std::vector<std::string>& models);
// At most 20 tags, each 1 to 64 letters, digits, '-', '_' or '.'.
Status check_tags(const std::vector<std::string>& tags);

class Directory {
 public:
  // Loads every account and key from `db`.
  static Result<std::unique_ptr<Directory>> load(store::Database& db);

  // The current snapshot and its version; a new version replaces it after every change.
  std::shared_ptr<const KeyTable> keys() const;
  std::uint64_t version() const { return version_.load(std::memory_order_acquire); }

  std::optional<Account> account(std::int64_t id) const;
  std::vector<Account> accounts() const;  // every account, by id
  std::vector<ApiKey> keys_of(std::int64_t account_id) const;
  // What a key with a budget has spent (with its predecessors); nullopt without one.
  std::optional<Money> budget_spent(std::int64_t key_id) const;

  // Each change is written to `db` (inside the caller's transaction) first, then made in
  // memory, and written again by persist() until a commit has stored it.
  // `models`: its allowlist from the start (empty: every model), in the same write.
  Result<Account> create_account(store::Database& db, std::string name, std::string kind,
                                 std::string plan, RoutingPolicy policy, std::int64_t now_ms,
                                 std::vector<std::string> models = {});
  Result<Account> set_suspended(store::Database& db, std::int64_t id, bool suspended);
  Result<Account> set_policy(store::Database& db, std::int64_t id, RoutingPolicy policy);
  // The account's model allowlist (empty: every model); its keys keep their own lists too.
  Result<Account> set_models(store::Database& db, std::int64_t id,
                             std::vector<std::string> models);
  // What a new key is: everything but its id, digest and times. `expires_ms` unset: never.
  struct KeySpec {
    std::string name;
    std::vector<std::string> models;  // empty: every model
    RoutingPolicy policy;
    std::vector<std::string> tags;
    std::optional<std::int64_t> expires_ms;
    KeyLimits limits;
  };
  // Returns the stored key; the full secret comes back in `secret` only.
  Result<ApiKey> create_key(store::Database& db, const KeyHasher& hasher, std::int64_t account_id,
                            KeySpec spec, std::int64_t now_ms, std::string* secret);
  // Revoking a revoked key changes nothing and succeeds; an unknown key is kNotFound.
  Status revoke_key(store::Database& db, std::int64_t key_id, std::int64_t now_ms);
  // A new key for the same account, name and models; the old one keeps working until
  // now + grace (or its own earlier expiry). A key is rotated once, unless its successor
  // was revoked (then again). Returns the new key; the secret as create_key.
  Result<ApiKey> rotate_key(store::Database& db, const KeyHasher& hasher, std::int64_t key_id,
                            std::int64_t grace_ms, std::int64_t now_ms, std::string* secret,
                            std::int64_t* old_expires_ms);

  // The store writer's batch hooks. A change is in memory (and in effect) from the moment
  // its piece ran; should that piece's savepoint or the batch's transaction roll back, its
  // rows would be lost while the change stands. So every batch writes again, whole, each
  // account and key changed since the last commit (persist, before the commit), and
  // forgets them once one committed (committed).
  Status persist(store::Database& db);
  void committed(bool ok);

 private:
  void publish();  // caller holds mu_
  // The meter of a key with limits, shared with the keys it replaced and made at first use;
  // `spent` is what the holder's requests cost so far. Caller holds mu_.
  void meter_key(const ApiKey& k, Money spent);
  // One change of a stored account: `apply`, written to the store, then kept in memory;
  // kNotFound for an unknown id.
  Result<Account> change_account(store::Database& db, std::int64_t id,
                                 const std::function<void(Account&)>& apply);
  // Caller holds mu_. `holder`: that of the key the new one replaces (a rotation).
  Result<ApiKey> create_key_locked(store::Database& db, const KeyHasher& hasher,
                                   std::int64_t account_id, KeySpec spec, std::int64_t now_ms,
                                   std::string* secret,
                                   std::optional<std::int64_t> holder = std::nullopt);

  mutable std::mutex mu_;
  std::map<std::int64_t, Account> accounts_;
  std::map<std::int64_t, ApiKey> keys_;
  std::set<std::int64_t> unstored_accounts_;  // changed since the last commit
  std::set<std::int64_t> unstored_keys_;
  // By holder (ApiKey::holder): the meter its rotation line shares (keys with limits only).
  std::map<std::int64_t, std::shared_ptr<KeyMeter>> meters_;
  std::shared_ptr<const KeyTable> table_;
  std::atomic<std::uint64_t> version_{0};
};

}  // namespace tp::auth
