#pragma once
// JSON numbers that a parser with 64-bit integers and doubles cannot hold, though they are
// valid JSON: an integer past 64 bits, a value past a double's range. simdjson's DOM refuses
// a whole document for one of them (a tool call's argument, an unknown member), so such a
// document is parsed again from a copy in which each reads as ±1e300 (json_dom.h).

#include <optional>
#include <string>
#include <string_view>

namespace tp::json {

// Whether `token` is a JSON number (RFC 8259 §6) outside what a signed or unsigned 64-bit
// integer (for one without fraction or exponent) or a finite double holds.
bool number_out_of_range(std::string_view token);

// A copy of `text` in which every number outside strings that number_out_of_range is
// replaced by `1e300` (`-1e300`) and spaces to its length, so every other byte keeps its
// place; nullopt when there is none. Text that is not JSON is scanned all the same.
std::optional<std::string> tame_large_numbers(std::string_view text);

}  // namespace tp::json
