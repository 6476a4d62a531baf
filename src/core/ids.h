#pragma once
// Identifiers shown to clients: a prefix and random base62 characters. Not secrets (keys
// use a CSPRNG in auth/); these only need to be unique with overwhelming probability.

#include <string>
#include <string_view>

namespace tp {

// `prefix` followed by `length` base62 characters from a per-thread generator seeded from
// the OS. Thread-safe.
std::string random_id(std::string_view prefix, std::size_t length = 24);

}  // namespace tp
