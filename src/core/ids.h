#pragma once
// Identifiers shown to clients: a prefix and random base62 characters. Not secrets (keys
// use a CSPRNG in auth/); these only need to be unique with overwhelming probability.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tp {

// `prefix` followed by `length` base62 characters from a per-thread generator seeded from
// the OS. Thread-safe.
std::string random_id(std::string_view prefix, std::size_t length = 24);

// A numbered record's public id: "acct_12" (or just "12") with prefix "acct_" → 12.
// nullopt unless the rest is a positive decimal number.
std::optional<std::int64_t> parse_numbered_id(std::string_view text, std::string_view prefix);

}  // namespace tp
