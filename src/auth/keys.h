#pragma once
// API keys. A key is "tp_sk_" followed by 43 base62 characters (256 random bits from the OS
// CSPRNG). Only its HMAC-SHA-256 under a server secret and its last 4 characters are ever
// stored; the full key is shown once, when it is made.

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/status.h"

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

class KeyHasher {
 public:
  explicit KeyHasher(std::string server_secret) : secret_(std::move(server_secret)) {}
  NewKey generate() const;
  KeyDigest digest(std::string_view key) const;

 private:
  std::string secret_;
};

// Whether `text` has the shape of a Turnpike key (cheap check before hashing).
bool looks_like_key(std::string_view text);
bool digests_equal(const KeyDigest& a, const KeyDigest& b);  // constant time
std::string to_hex(const KeyDigest& digest);

// The server secret: TURNPIKE_SECRET (hex) if set, else `dir`/secret.key, created with mode
// 0600 on first start. Refuses a secret file readable by others.
Result<std::string> load_or_create_server_secret(const std::string& dir);

}  // namespace tp::auth
