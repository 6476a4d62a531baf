#pragma once
// API keys. A key is "tp_sk_" followed by 43 base62 characters (256 random bits from the OS
// CSPRNG). Only its HMAC-SHA-256 under a server secret and its last 4 characters are ever
// stored; the full key is shown once, when it is made.

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "core/status.h"

namespace tp::store {
class Database;
}

namespace tp::auth {

inline constexpr std::string_view kKeyPrefix = "tp_sk_";
inline constexpr std::size_t kKeyRandomChars = 43;  // ⌈256 / log2(62)⌉
inline constexpr std::size_t kServerSecretBytes = 32;

using KeyDigest = std::array<std::uint8_t, 32>;

struct NewKey {
  std::string key;    // the full secret: return it to the caller once, never store it
  KeyDigest digest;   // HMAC-SHA-256(secret, key)
  std::string last4;
};

// HMAC-SHA-256 under the server secret, on every request: the key's inner and outer pads
// are hashed once here, so a digest costs two SHA-256 blocks and no algorithm lookup.
// Thread-safe: const methods only touch per-thread scratch state.
class KeyHasher {
 public:
  explicit KeyHasher(const std::string& server_secret);
  ~KeyHasher();
  KeyHasher(const KeyHasher&) = delete;
  KeyHasher& operator=(const KeyHasher&) = delete;

  NewKey generate() const;
  KeyDigest digest(std::string_view key) const;

 private:
  struct Pads;
  std::unique_ptr<Pads> pads_;
};

// The same digest by OpenSSL's one-shot HMAC(), for tests and tools.
KeyDigest reference_digest(std::string_view secret, std::string_view key);

// Whether `text` has the shape of a Turnpike key (cheap check before hashing).
bool looks_like_key(std::string_view text);
bool digests_equal(const KeyDigest& a, const KeyDigest& b);  // constant time
std::string to_hex(const KeyDigest& digest);

// The server secret: TURNPIKE_SECRET (hex) if set, else `dir`/secret.key, created with mode
// 0600 on first start. Refuses a secret file readable by others, and a secret that is not
// the one `db`'s keys were made with (the store keeps a check of it, written on first use):
// a missing secret.key is made anew only while the store has no keys, since every key
// would fail under a new one. Inside the caller's transaction, if any.
Result<std::string> open_server_secret(store::Database& db, const std::string& dir);

}  // namespace tp::auth
