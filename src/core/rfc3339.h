#pragma once
// RFC 3339 timestamps, the form every time takes in Turnpike's APIs.

#include <compare>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tp {

// Unix milliseconds → "2026-11-23T19:04:50Z", or with `millis` "2026-11-23T19:04:50.123Z".
std::string format_rfc3339(std::int64_t unix_ms, bool millis = false);

// "YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)" → unix milliseconds (a fraction finer than
// milliseconds rounded up; a leap second :60 is the next minute's :00). `t` and `z` are
// accepted in either case; nothing else is.
std::optional<std::int64_t> parse_rfc3339(std::string_view text);

// The order of two times as written, to their last fractional digit (two times within one
// millisecond may round to the same one), or nullopt when either is not one
// parse_rfc3339 reads.
std::optional<std::strong_ordering> compare_rfc3339(std::string_view a, std::string_view b);

}  // namespace tp
