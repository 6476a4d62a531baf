#include "auth/keys.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <set>

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
  ::unsetenv("TURNPIKE_SECRET");
  auto first = load_or_create_server_secret(dir.string());
  ASSERT_TRUE(first) << first.status().message();
  EXPECT_EQ(first->size(), kServerSecretBytes);
  struct stat st {};
  ASSERT_EQ(::stat((dir / "secret.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto again = load_or_create_server_secret(dir.string());
  ASSERT_TRUE(again);
  EXPECT_EQ(*again, *first);
  ::chmod((dir / "secret.key").c_str(), 0644);
  EXPECT_FALSE(load_or_create_server_secret(dir.string()));
  ::setenv("TURNPIKE_SECRET", std::string(64, 'a').c_str(), 1);
  EXPECT_EQ(load_or_create_server_secret(dir.string())->size(), 32u);
  ::setenv("TURNPIKE_SECRET", "zz", 1);
  EXPECT_FALSE(load_or_create_server_secret(dir.string()));
  ::unsetenv("TURNPIKE_SECRET");
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace tp::auth
