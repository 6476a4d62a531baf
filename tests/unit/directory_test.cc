#include "auth/directory.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "store/migrations.h"
#include "store/sqlite.h"

namespace tp::auth {
namespace {

TEST(Directory, AccountsAndKeysPersistAndPublishSnapshots) {
  const auto dir = std::filesystem::temp_directory_path() / "turnpike-directory-test";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "t.db").string();
  const KeyHasher hasher(std::string(32, 'k'));
  std::string secret;
  std::int64_t key_id = 0;
  {
    auto db = store::Database::open(path).value();
    ASSERT_TRUE(store::migrate(*db));
    auto directory = Directory::load(*db).value();
    const auto v0 = directory->version();
    auto account = directory->create_account(*db, "Acme", "customer", "", 1000);
    ASSERT_TRUE(account);
    EXPECT_EQ(account->id, 1);
    auto key = directory->create_key(*db, hasher, account->id, "ci", {"gpt-4o-mini"}, std::nullopt,
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
    EXPECT_FALSE(directory->create_key(*db, hasher, 99, "", {}, std::nullopt, 1, &secret));
    ASSERT_TRUE(directory->set_suspended(*db, 1, true));
    EXPECT_TRUE(directory->keys()->find(hasher.digest(secret))->account_suspended);
  }
  {
    auto db = store::Database::open(path).value();
    ASSERT_TRUE(store::migrate(*db));
    auto directory = Directory::load(*db).value();
    EXPECT_TRUE(directory->account(1)->suspended);
    const KeyGrant* grant = directory->keys()->find(hasher.digest(secret));
    ASSERT_NE(grant, nullptr);
    ASSERT_TRUE(directory->revoke_key(*db, key_id, 3000));
    EXPECT_EQ(directory->keys()->find(hasher.digest(secret)), nullptr);
    EXPECT_FALSE(directory->revoke_key(*db, key_id, 3000));  // already revoked
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace tp::auth
