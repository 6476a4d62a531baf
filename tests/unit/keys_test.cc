#include "auth/keys.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <set>

#include "store/migrations.h"
#include "store/sqlite.h"

namespace tp::auth {
namespace {

TEST(Keys, GeneratedKeysHaveTheShapeAndAreUnique) {
  const KeyHasher hasher(std::string(32, 's'));
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    const NewKey k = hasher.generate();
    EXPECT_TRUE(looks_like_key(k.key)) << k.key;
    EXPECT_EQ(k.last4, k.key.substr(k.key.size() - 4));
    EXPECT_TRUE(digests_equal(k.digest, hasher.digest(k.key)));
    EXPECT_TRUE(seen.insert(k.key).second);
  }
}

TEST(Keys, DigestIsStandardHmacSha256) {
  for (const std::string& secret : {std::string(32, 's'), std::string("short"), std::string(100, 'L')}) {
    const KeyHasher hasher(secret);
    for (const std::string& key : {std::string(""), std::string("tp_sk_abc"), std::string(200, 'k')}) {
      EXPECT_TRUE(digests_equal(hasher.digest(key), reference_digest(secret, key)));
    }
  }
  // RFC 4231 test case 2.
  const KeyHasher jefe("Jefe");
  EXPECT_EQ(to_hex(jefe.digest("what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

TEST(Keys, DigestDependsOnTheServerSecret) {
  const KeyHasher a(std::string(32, 'a'));
  const KeyHasher b(std::string(32, 'b'));
  const NewKey k = a.generate();
  EXPECT_FALSE(digests_equal(a.digest(k.key), b.digest(k.key)));
  EXPECT_EQ(to_hex(a.digest("x")).size(), 64u);
}

TEST(Keys, ShapeCheck) {
  EXPECT_FALSE(looks_like_key(""));
  EXPECT_FALSE(looks_like_key("sk-abc"));
  EXPECT_FALSE(looks_like_key("tp_sk_" + std::string(42, 'a')));
  EXPECT_FALSE(looks_like_key("tp_sk_" + std::string(42, 'a') + "!"));
  EXPECT_TRUE(looks_like_key("tp_sk_" + std::string(43, 'a')));
}

TEST(Keys, ServerSecretIsCreatedPrivateAndReused) {
  const auto dir = std::filesystem::temp_directory_path() / "turnpike-secret-test";
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  auto db = store::open_sqlite((dir / "t.db").string());
  ASSERT_TRUE(db && store::migrate(**db));
  ::unsetenv("TURNPIKE_SECRET");
  auto first = open_server_secret(**db, dir.string());
  ASSERT_TRUE(first) << first.status().message();
  EXPECT_EQ(first->size(), kServerSecretBytes);
  struct stat st {};
  ASSERT_EQ(::stat((dir / "secret.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_FALSE(std::filesystem::exists(dir / "secret.key.new"));
  auto again = open_server_secret(**db, dir.string());
  ASSERT_TRUE(again);
  EXPECT_EQ(*again, *first);
  ::chmod((dir / "secret.key").c_str(), 0644);
  EXPECT_FALSE(open_server_secret(**db, dir.string()));
  ::chmod((dir / "secret.key").c_str(), 0600);
  ::setenv("TURNPIKE_SECRET", "zz", 1);
  EXPECT_FALSE(open_server_secret(**db, dir.string()));
  // Another secret than the store's keys were made with is refused, by name.
  ::setenv("TURNPIKE_SECRET", std::string(64, 'a').c_str(), 1);
  const auto other = open_server_secret(**db, dir.string());
  ASSERT_FALSE(other);
  EXPECT_NE(other.status().message().find("not the one this store's keys were made with"),
            std::string::npos)
      << other.status().message();
  ::unsetenv("TURNPIKE_SECRET");
  // A lost secret.key is not made anew for a store that has used one.
  std::filesystem::remove(dir / "secret.key");
  const auto lost = open_server_secret(**db, dir.string());
  ASSERT_FALSE(lost);
  EXPECT_NE(lost.status().message().find("secret.key is missing"), std::string::npos)
      << lost.status().message();
  EXPECT_FALSE(std::filesystem::exists(dir / "secret.key"));
  // A fresh store takes any secret, and keeps its check from then on.
  auto fresh = store::open_sqlite((dir / "fresh.db").string());
  ASSERT_TRUE(fresh && store::migrate(**fresh));
  ::setenv("TURNPIKE_SECRET", std::string(64, 'b').c_str(), 1);
  EXPECT_EQ(open_server_secret(**fresh, dir.string())->size(), 32u);
  ::setenv("TURNPIKE_SECRET", std::string(64, 'c').c_str(), 1);
  EXPECT_FALSE(open_server_secret(**fresh, dir.string()));
  ::unsetenv("TURNPIKE_SECRET");
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace tp::auth
