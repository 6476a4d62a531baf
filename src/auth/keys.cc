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
#include "core/log.h"
#include "store/database.h"

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

namespace {

constexpr std::string_view kSecretCheckText = "turnpike: server secret check";

std::string secret_check(const std::string& secret) {
  return to_hex(reference_digest(secret, kSecretCheckText));
}

// What the store holds of the secret: its check (empty if none yet), and whether any key
// was made.
struct StoredSecret {
  std::string check_hex;
  bool has_keys = false;
};

Result<StoredSecret> stored_secret(store::Database& db) {
  StoredSecret out;
  auto check = db.cached("SELECT check_hex FROM server_secret_check LIMIT 1");
  if (!check) return check.status();
  auto step = (*check)->step();
  if (step && *step == store::Statement::Step::kRow) out.check_hex = (*check)->column_text(0);
  (*check)->reset();
  if (!step) return step.status();
  auto keys = db.cached("SELECT EXISTS (SELECT 1 FROM api_keys)");
  if (!keys) return keys.status();
  step = (*keys)->step();
  if (step && *step == store::Statement::Step::kRow) out.has_keys = (*keys)->column_int(0) != 0;
  (*keys)->reset();
  if (!step) return step.status();
  return out;
}

Result<std::string> read_secret_file(const std::string& path, int fd) {
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

// Writes a new secret whole or not at all: to a temporary file, synced, then renamed into
// place and the directory synced (a crash never leaves a short secret.key behind).
Result<std::string> create_secret_file(const std::string& dir, const std::string& path) {
  std::string secret(kServerSecretBytes, '\0');
  TP_CHECK(RAND_bytes(reinterpret_cast<unsigned char*>(secret.data()),
                      static_cast<int>(secret.size())) == 1);
  const std::string temp = path + ".new";
  (void)::unlink(temp.c_str());  // left by a crash while it was written
  const int out = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (out < 0) return Status{ErrorKind::kInternal, fmt::format("{}: cannot create", temp)};
  const bool written =
      ::write(out, secret.data(), secret.size()) == static_cast<ssize_t>(secret.size()) &&
      ::fsync(out) == 0;
  ::close(out);
  if (!written || ::rename(temp.c_str(), path.c_str()) != 0) {
    (void)::unlink(temp.c_str());
    return Status{ErrorKind::kInternal, fmt::format("{}: cannot write", path)};
  }
  if (const int d = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); d >= 0) {
    (void)::fsync(d);
    ::close(d);
  }
  return secret;
}

}  // namespace

Result<std::string> open_server_secret(store::Database& db, const std::string& dir) {
  auto stored = stored_secret(db);
  if (!stored) return stored.status();
  const std::string path = dir + "/secret.key";
  std::string source;
  Result<std::string> secret = Status{ErrorKind::kInternal, "no secret"};
  if (const char* env = std::getenv("TURNPIKE_SECRET"); env != nullptr && *env != '\0') {
    source = "TURNPIKE_SECRET";
    secret = from_hex(env);
  } else if (const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC); fd >= 0) {
    source = path;
    secret = read_secret_file(path, fd);
  } else if (!stored->check_hex.empty() || stored->has_keys) {
    return Status{ErrorKind::kInternal,
                  fmt::format("{} is missing, but this store holds keys made with a server "
                              "secret: restore the file (or set TURNPIKE_SECRET to it); a new "
                              "secret would make every key fail",
                              path)};
  } else {
    source = path;
    secret = create_secret_file(dir, path);
    // A new data directory (or a mistyped --data-dir): said, as keys made now need this
    // file for as long as they live.
    if (secret)
      log::info("created a new server secret; back it up with the store", {{"path", path}});
  }
  if (!secret) return secret;
  const std::string check = secret_check(*secret);
  if (stored->check_hex.empty()) {
    auto insert = db.prepare("INSERT INTO server_secret_check (check_hex) VALUES (?)");
    if (!insert) return insert.status();
    if (Status s = insert->bind(1, check).run(); !s) return s;
  } else if (stored->check_hex.size() != check.size() ||
             CRYPTO_memcmp(stored->check_hex.data(), check.data(), check.size()) != 0) {
    return Status{ErrorKind::kInternal,
                  fmt::format("the server secret from {} is not the one this store's keys were "
                              "made with: use that one (every key would fail under another)",
                              source)};
  }
  return secret;
}

}  // namespace tp::auth
