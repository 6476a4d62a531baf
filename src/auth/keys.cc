// SHA256_Init and friends: see KeyHasher::Pads for why.
#define OPENSSL_SUPPRESS_DEPRECATED
#include "auth/keys.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cstdlib>
#include <cstring>

#include "core/assert.h"

namespace tp::auth {
namespace {

constexpr char kBase62[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

constexpr std::array<bool, 256> kBase62Chars = [] {
  std::array<bool, 256> t{};
  for (char c : std::string_view(kBase62)) t[static_cast<unsigned char>(c)] = true;
  return t;
}();

Result<std::string> from_hex(std::string_view hex) {
  if (hex.size() != kServerSecretBytes * 2) {
    return Status{ErrorKind::kInvalidRequest,
                  fmt::format("TURNPIKE_SECRET must be {} hex characters", kServerSecretBytes * 2)};
  }
  std::string out;
  for (std::size_t i = 0; i < hex.size(); i += 2) {
    unsigned v = 0;
    for (char c : hex.substr(i, 2)) {
      v <<= 4;
      if (c >= '0' && c <= '9') v |= static_cast<unsigned>(c - '0');
      else if (c >= 'a' && c <= 'f') v |= static_cast<unsigned>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') v |= static_cast<unsigned>(c - 'A' + 10);
      else return Status{ErrorKind::kInvalidRequest, "TURNPIKE_SECRET must be hex"};
    }
    out.push_back(static_cast<char>(v));
  }
  return out;
}

}  // namespace

NewKey KeyHasher::generate() const {
  NewKey k;
  k.key.reserve(kKeyPrefix.size() + kKeyRandomChars);
  k.key += kKeyPrefix;
  // Rejection sampling keeps every character uniform over the 62 symbols.
  while (k.key.size() < kKeyPrefix.size() + kKeyRandomChars) {
    std::uint8_t bytes[64];
    TP_CHECK(RAND_bytes(bytes, sizeof bytes) == 1);
    for (std::uint8_t b : bytes) {
      if (b >= 248) continue;  // 248 = 4 · 62
      k.key.push_back(kBase62[b % 62]);
      if (k.key.size() == kKeyPrefix.size() + kKeyRandomChars) break;
    }
  }
  k.digest = digest(k.key);
  k.last4 = k.key.substr(k.key.size() - 4);
  return k;
}

// The low-level SHA-256 interface: a prepared state is a plain struct, copied per digest,
// with no algorithm dispatch. OpenSSL 3 marks it deprecated in favour of EVP, whose
// per-call overhead is several times the two compression blocks this needs.
struct KeyHasher::Pads {
  SHA256_CTX inner;  // state after (secret ^ ipad)
  SHA256_CTX outer;  // state after (secret ^ opad)
};

KeyHasher::KeyHasher(const std::string& server_secret) : pads_(std::make_unique<Pads>()) {
  constexpr std::size_t kBlock = 64;
  unsigned char key[kBlock] = {};
  if (server_secret.size() > kBlock) {
    SHA256(reinterpret_cast<const unsigned char*>(server_secret.data()), server_secret.size(), key);
  } else {
    std::memcpy(key, server_secret.data(), server_secret.size());
  }
  unsigned char ipad[kBlock];
  unsigned char opad[kBlock];
  for (std::size_t i = 0; i < kBlock; ++i) {
    ipad[i] = key[i] ^ 0x36;
    opad[i] = key[i] ^ 0x5c;
  }
  TP_CHECK(SHA256_Init(&pads_->inner) == 1 && SHA256_Update(&pads_->inner, ipad, kBlock) == 1 &&
           SHA256_Init(&pads_->outer) == 1 && SHA256_Update(&pads_->outer, opad, kBlock) == 1);
  OPENSSL_cleanse(key, sizeof key);
  OPENSSL_cleanse(ipad, sizeof ipad);
  OPENSSL_cleanse(opad, sizeof opad);
}

KeyHasher::~KeyHasher() { OPENSSL_cleanse(pads_.get(), sizeof(Pads)); }

KeyDigest KeyHasher::digest(std::string_view key) const {
  KeyDigest inner{};
  KeyDigest out{};
  SHA256_CTX ctx = pads_->inner;
  SHA256_Update(&ctx, key.data(), key.size());
  SHA256_Final(inner.data(), &ctx);
  ctx = pads_->outer;
  SHA256_Update(&ctx, inner.data(), inner.size());
  SHA256_Final(out.data(), &ctx);
  return out;
}

KeyDigest reference_digest(std::string_view secret, std::string_view key) {
  KeyDigest out{};
  unsigned int len = 0;
  TP_CHECK(HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
                reinterpret_cast<const unsigned char*>(key.data()), key.size(), out.data(),
                &len) != nullptr);
  return out;
}

bool looks_like_key(std::string_view text) {
  if (text.size() != kKeyPrefix.size() + kKeyRandomChars || !text.starts_with(kKeyPrefix)) {
    return false;
  }
  bool ok = true;
  for (char c : text.substr(kKeyPrefix.size())) ok &= kBase62Chars[static_cast<unsigned char>(c)];
  return ok;
}

bool digests_equal(const KeyDigest& a, const KeyDigest& b) {
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::string to_hex(const KeyDigest& digest) {
  std::string out;
  out.reserve(digest.size() * 2);
  for (std::uint8_t b : digest) out += fmt::format("{:02x}", b);
  return out;
}

Result<std::string> load_or_create_server_secret(const std::string& dir) {
  if (const char* env = std::getenv("TURNPIKE_SECRET"); env != nullptr && *env != '\0') {
    return from_hex(env);
  }
  const std::string path = dir + "/secret.key";
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    struct stat st {};
    std::string secret(kServerSecretBytes, '\0');
    const bool ok = ::fstat(fd, &st) == 0 &&
                    ::read(fd, secret.data(), secret.size()) == static_cast<ssize_t>(secret.size());
    ::close(fd);
    if (!ok) return Status{ErrorKind::kInternal, fmt::format("{}: unreadable", path)};
    if ((st.st_mode & 077) != 0) {
      return Status{ErrorKind::kInternal,
                    fmt::format("{}: readable by others (mode {:o}); chmod 600 it", path,
                                st.st_mode & 0777)};
    }
    return secret;
  }
  std::string secret(kServerSecretBytes, '\0');
  TP_CHECK(RAND_bytes(reinterpret_cast<unsigned char*>(secret.data()),
                      static_cast<int>(secret.size())) == 1);
  const int out = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (out < 0) return Status{ErrorKind::kInternal, fmt::format("{}: cannot create", path)};
  const bool written =
      ::write(out, secret.data(), secret.size()) == static_cast<ssize_t>(secret.size()) &&
      ::fsync(out) == 0;
  ::close(out);
  if (!written) return Status{ErrorKind::kInternal, fmt::format("{}: cannot write", path)};
  return secret;
}

}  // namespace tp::auth
