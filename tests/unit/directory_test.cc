#include "auth/directory.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "store/migrations.h"
#include "store/sqlite.h"

namespace tp::auth {
namespace {

// A fresh directory for one test's database, removed afterwards.
class TempDb {
 public:
  explicit TempDb(const std::string& name)
      : dir_(std::filesystem::temp_directory_path() / name) {
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  ~TempDb() { std::filesystem::remove_all(dir_); }
  std::string path() const { return (dir_ / "t.db").string(); }

 private:
  std::filesystem::path dir_;
};

TEST(Directory, AccountsAndKeysPersistAndPublishSnapshots) {
  const TempDb db_dir("turnpike-directory-test");
  const std::string path = db_dir.path();
  const KeyHasher hasher(std::string(32, 'k'));
  std::string secret;
  std::int64_t key_id = 0;
  {
    auto db = store::open_sqlite(path).value();
    ASSERT_TRUE(store::migrate(*db));
    auto directory = Directory::load(*db).value();
    const auto v0 = directory->version();
    auto account = directory->create_account(*db, "Acme", "customer", "", {}, 1000);
    ASSERT_TRUE(account);
    EXPECT_EQ(account->id, 1);
    auto key = directory->create_key(*db, hasher, account->id, {"ci", {"gpt-4o-mini"}, {}, {}, std::nullopt},
                                     2000, &secret);
    ASSERT_TRUE(key) << key.status().message();
    key_id = key->id;
    EXPECT_TRUE(looks_like_key(secret));
    EXPECT_EQ(key->last4, secret.substr(secret.size() - 4));
    EXPECT_GT(directory->version(), v0);
    const KeyGrant* grant = directory->keys()->find(hasher.digest(secret));
    ASSERT_NE(grant, nullptr);
    EXPECT_EQ(grant->account_id, 1);
    EXPECT_EQ(grant->models, std::vector<std::string>{"gpt-4o-mini"});
    EXPECT_EQ(directory->keys()->find(hasher.digest(secret + "x")), nullptr);
    EXPECT_FALSE(directory->create_key(*db, hasher, 99, {}, 1, &secret));
    ASSERT_TRUE(directory->set_suspended(*db, 1, true));
    EXPECT_TRUE(directory->keys()->find(hasher.digest(secret))->account_suspended);
  }
  {
    auto db = store::open_sqlite(path).value();
    ASSERT_TRUE(store::migrate(*db));
    auto directory = Directory::load(*db).value();
    EXPECT_TRUE(directory->account(1)->suspended);
    const KeyGrant* grant = directory->keys()->find(hasher.digest(secret));
    ASSERT_NE(grant, nullptr);
    ASSERT_TRUE(directory->revoke_key(*db, key_id, 3000));
    EXPECT_EQ(directory->keys()->find(hasher.digest(secret)), nullptr);
    EXPECT_TRUE(directory->revoke_key(*db, key_id, 4000));  // already revoked: a retry
    EXPECT_FALSE(directory->revoke_key(*db, key_id + 100, 4000));  // no such key
  }
}

// A change stands in memory from the moment its piece ran; when its transaction rolls
// back, the next one that persists writes it again.
TEST(Directory, ChangesRolledBackAreWrittenAgainByTheNextCommit) {
  const TempDb db_dir("turnpike-directory-redo-test");
  const std::string path = db_dir.path();
  const KeyHasher hasher(std::string(32, 'k'));
  std::string secret, rotated;
  {
    auto db = store::open_sqlite(path).value();
    ASSERT_TRUE(store::migrate(*db));
    auto directory = Directory::load(*db).value();
    ASSERT_TRUE(db->exec("BEGIN"));
    ASSERT_TRUE(directory->create_account(*db, "Acme", "customer", "", {}, 1000));
    auto key = directory->create_key(*db, hasher, 1, {"ci", {}, {}, {}, std::nullopt}, 2000, &secret);
    ASSERT_TRUE(key);
    ASSERT_TRUE(db->exec("COMMIT"));
    directory->committed(true);
    // A batch that fails: its changes stay in memory, its rows are gone.
    ASSERT_TRUE(db->exec("BEGIN"));
    ASSERT_TRUE(directory->set_suspended(*db, 1, true));
    std::int64_t old_expires = 0;
    ASSERT_TRUE(directory->rotate_key(*db, hasher, key->id, 60'000, 3000, &rotated, &old_expires));
    ASSERT_TRUE(directory->create_account(*db, "Beta", "customer", "", {}, 4000));
    ASSERT_TRUE(db->exec("ROLLBACK"));
    directory->committed(false);
    // The next one stores them.
    ASSERT_TRUE(db->exec("BEGIN"));
    ASSERT_TRUE(directory->persist(*db));
    ASSERT_TRUE(db->exec("COMMIT"));
    directory->committed(true);
    ASSERT_TRUE(db->exec("BEGIN"));
    ASSERT_TRUE(directory->persist(*db));  // nothing left to write
    ASSERT_TRUE(db->exec("COMMIT"));
  }
  auto db = store::open_sqlite(path).value();
  auto directory = Directory::load(*db).value();
  ASSERT_TRUE(directory->account(1));
  EXPECT_TRUE(directory->account(1)->suspended);
  ASSERT_TRUE(directory->account(2));
  EXPECT_EQ(directory->account(2)->name, "Beta");
  const KeyGrant* old_key = directory->keys()->find(hasher.digest(secret));
  ASSERT_NE(old_key, nullptr);
  EXPECT_EQ(old_key->expires_ms, std::optional<std::int64_t>(63'000));
  EXPECT_NE(directory->keys()->find(hasher.digest(rotated)), nullptr);
}

// Another writer (the offline CLI beside a running gateway) took the next id: a new
// account or key is refused rather than written over that row, and nothing changes in
// memory; a change written again for a row that is not this account's leaves it alone.
TEST(Directory, AnIdTakenByAnotherWriterIsNeverOverwritten) {
  const TempDb db_dir("turnpike-directory-taken-test");
  const std::string path = db_dir.path();
  const KeyHasher hasher(std::string(32, 'k'));
  auto db = store::open_sqlite(path).value();
  ASSERT_TRUE(store::migrate(*db));
  auto directory = Directory::load(*db).value();
  ASSERT_TRUE(directory->create_account(*db, "Acme", "customer", "", {}, 1000));
  ASSERT_TRUE(db->exec("INSERT INTO accounts (id, name, kind, plan, created_ms) VALUES "
                       "(2, 'cli', 'customer', '', 5)"));
  ASSERT_TRUE(db->exec("INSERT INTO api_keys (id, account_id, name, digest, last4, models, "
                       "created_ms) VALUES (1, 1, 'cli', 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', "
                       "'aaaa', '', 5)"));
  EXPECT_FALSE(directory->create_account(*db, "Beta", "customer", "", {}, 2000));
  EXPECT_FALSE(directory->account(2));
  std::string secret;
  EXPECT_FALSE(directory->create_key(*db, hasher, 1, {}, 2000, &secret));
  EXPECT_TRUE(directory->keys_of(1).empty());
  // The row of id 1 now belongs to someone else: a change to memory's account 1 fails,
  // and leaves both alone.
  ASSERT_TRUE(db->exec("UPDATE accounts SET name = 'other', created_ms = 7 WHERE id = 1"));
  const auto suspended = directory->set_suspended(*db, 1, true);
  ASSERT_FALSE(suspended);
  EXPECT_EQ(suspended.status().kind(), ErrorKind::kConflict);
  EXPECT_FALSE(directory->account(1)->suspended);
  auto row = db->prepare("SELECT suspended FROM accounts WHERE id = 1").value();
  ASSERT_EQ(row.step().value(), store::Statement::Step::kRow);
  EXPECT_EQ(row.column_int(0), 0);
}

// An account created in a batch that rolled back, whose id another writer then took: the
// next batch's rewrite fails loudly rather than leave memory and the store disagreeing
// (a key created for it would belong to the other account after a restart).
TEST(Directory, ARewriteOverAnotherWritersRowFails) {
  const TempDb db_dir("turnpike-directory-rewrite-test");
  auto db = store::open_sqlite(db_dir.path()).value();
  ASSERT_TRUE(store::migrate(*db));
  auto directory = Directory::load(*db).value();
  ASSERT_TRUE(db->exec("BEGIN"));
  ASSERT_TRUE(directory->create_account(*db, "Gateway", "customer", "", {}, 1000));
  ASSERT_TRUE(db->exec("ROLLBACK"));
  directory->committed(false);
  ASSERT_TRUE(db->exec("INSERT INTO accounts (id, name, kind, plan, created_ms) VALUES "
                       "(1, 'cli', 'customer', '', 5)"));
  ASSERT_TRUE(db->exec("BEGIN"));
  const Status persisted = directory->persist(*db);
  ASSERT_TRUE(db->exec("ROLLBACK"));
  ASSERT_FALSE(persisted);
  EXPECT_EQ(persisted.kind(), ErrorKind::kConflict);
  EXPECT_NE(persisted.message().find("acct_1"), std::string::npos) << persisted.message();
}

TEST(Directory, RoutingPoliciesPersistAndCombineIntoTheGrant) {
  const TempDb db_dir("turnpike-directory-policy-test");
  const std::string path = db_dir.path();
  const KeyHasher hasher(std::string(32, 'k'));
  std::string loose, tight;
  const router::Weights cost{0.1, 0.8, 0.1};
  const router::Weights speed{0.2, 0.2, 0.6};
  {
    auto db = store::open_sqlite(path).value();
    ASSERT_TRUE(store::migrate(*db));
    auto directory = Directory::load(*db).value();
    RoutingPolicy account_policy{catalog::PrivacyTier::kCloud, cost};
    ASSERT_TRUE(directory->create_account(*db, "Acme", "customer", "", account_policy, 1));
    // A key asking for a looser tier than its account gets the account's.
    ASSERT_TRUE(directory->create_key(*db, hasher, 1, {"loose", {}, {}, {"batch", "ci"}, {}}, 2,
                                      &loose));
    Directory::KeySpec spec{"tight", {}, {catalog::PrivacyTier::kConfidential, speed}, {}, {}};
    ASSERT_TRUE(directory->create_key(*db, hasher, 1, spec, 3, &tight));
  }
  auto db = store::open_sqlite(path).value();
  auto directory = Directory::load(*db).value();  // everything survives a restart
  const KeyGrant* l = directory->keys()->find(hasher.digest(loose));
  ASSERT_NE(l, nullptr);
  EXPECT_EQ(l->privacy_tier, catalog::PrivacyTier::kCloud);
  ASSERT_TRUE(l->weights);
  EXPECT_DOUBLE_EQ(l->weights->cost, 0.8);
  EXPECT_EQ(l->weights_from, KeyGrant::WeightsFrom::kAccount);
  EXPECT_EQ(l->tags, (std::vector<std::string>{"batch", "ci"}));
  const KeyGrant* t = directory->keys()->find(hasher.digest(tight));
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->privacy_tier, catalog::PrivacyTier::kConfidential);
  EXPECT_DOUBLE_EQ(t->weights->latency, 0.6);
  EXPECT_EQ(t->weights_from, KeyGrant::WeightsFrom::kKey);
  // Loosening the account leaves a key's own tighter tier; clearing its weights falls back
  // to the config's.
  ASSERT_TRUE(directory->set_policy(*db, 1, RoutingPolicy{catalog::PrivacyTier::kCommunity, {}}));
  l = directory->keys()->find(hasher.digest(loose));
  EXPECT_EQ(l->privacy_tier, catalog::PrivacyTier::kCommunity);
  EXPECT_FALSE(l->weights);
  EXPECT_EQ(l->weights_from, KeyGrant::WeightsFrom::kConfig);
  EXPECT_EQ(directory->keys()->find(hasher.digest(tight))->privacy_tier,
            catalog::PrivacyTier::kConfidential);
  EXPECT_FALSE(directory->set_policy(*db, 42, {}));
  // An account allowlist applies to every key, together with the key's own.
  EXPECT_TRUE(directory->keys()->find(hasher.digest(loose))->may_use("anything"));
  ASSERT_TRUE(directory->set_models(*db, 1, {"a", "b"}));
  const KeyGrant* limited = directory->keys()->find(hasher.digest(loose));
  EXPECT_TRUE(limited->may_use("a"));
  EXPECT_FALSE(limited->may_use("c"));
  std::string narrow;
  ASSERT_TRUE(directory->create_key(*db, hasher, 1, {"narrow", {"b", "c"}, {}, {}, {}}, 4, &narrow));
  const KeyGrant* both = directory->keys()->find(hasher.digest(narrow));
  EXPECT_EQ(both->models, std::vector<std::string>{"b"});  // the intersection
  ASSERT_TRUE(directory->set_models(*db, 1, {"a"}));
  both = directory->keys()->find(hasher.digest(narrow));
  EXPECT_TRUE(both->models_limited);
  EXPECT_FALSE(both->may_use("a"));  // nothing left: not "everything"
  EXPECT_FALSE(both->may_use("b"));
  ASSERT_TRUE(directory->set_models(*db, 1, {}));
  EXPECT_TRUE(directory->keys()->find(hasher.digest(loose))->may_use("c"));
}

}  // namespace
}  // namespace tp::auth
