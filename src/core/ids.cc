#include "core/ids.h"

#include <charconv>
#include <cstdint>
#include <random>

namespace tp {
namespace {

// splitmix64: fast, good enough for identifiers, seeded per thread from the OS.
struct IdGenerator {
  std::uint64_t state;
  IdGenerator() {
    std::random_device rd;
    state = (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
  }
  std::uint64_t next() {
    std::uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
};

}  // namespace

std::string random_id(std::string_view prefix, std::size_t length) {
  static constexpr char kAlphabet[] =
      "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
  thread_local IdGenerator gen;
  std::string id(prefix.size() + length, '\0');
  char* out = id.data() + prefix.size();
  prefix.copy(id.data(), prefix.size());
  std::uint64_t bits = 0;
  int left = 0;
  for (std::size_t i = 0; i < length; ++i) {
    if (left == 0) {
      bits = gen.next();
      left = 10;  // 10 draws of 6 bits from 64
    }
    out[i] = kAlphabet[(bits & 63) % 62];
    bits >>= 6;
    --left;
  }
  return id;
}

std::optional<std::int64_t> parse_numbered_id(std::string_view text, std::string_view prefix) {
  if (text.starts_with(prefix)) text.remove_prefix(prefix.size());
  if (text.starts_with('0')) return std::nullopt;  // one spelling per id: no leading zeros
  std::int64_t id = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), id);
  if (ec != std::errc{} || end != text.data() + text.size() || id <= 0) return std::nullopt;
  return id;
}

}  // namespace tp
