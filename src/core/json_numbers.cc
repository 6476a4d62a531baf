#include "core/json_numbers.h"

#include <cmath>
#include <cstdlib>

#include "core/json_scan.h"

namespace tp::json {
namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// Just past the digits from `i`.
std::size_t digits_end(std::string_view s, std::size_t i) {
  while (i < s.size() && is_digit(s[i])) ++i;
  return i;
}

}  // namespace

bool number_out_of_range(std::string_view token) {
  // -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
  const bool negative = token.starts_with('-');
  const std::string_view s = token.substr(negative ? 1 : 0);
  if (s.empty() || !is_digit(s[0])) return false;
  std::size_t i = s[0] == '0' ? 1 : digits_end(s, 0);
  const std::size_t integer_end = i;
  bool integer = true;
  if (i < s.size() && s[i] == '.') {
    const std::size_t end = digits_end(s, i + 1);
    if (end == i + 1) return false;
    i = end;
    integer = false;
  }
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
    const std::size_t end = digits_end(s, i);
    if (end == i) return false;
    i = end;
    integer = false;
  }
  if (i != s.size()) return false;  // not one number
  if (integer) {
    const std::string_view digits = s.substr(0, integer_end);
    const std::string_view limit = negative ? "9223372036854775808" : "18446744073709551615";
    return digits.size() > limit.size() || (digits.size() == limit.size() && digits > limit);
  }
  const std::string copy(token);
  return std::isinf(std::strtod(copy.c_str(), nullptr));
}

std::optional<std::string> tame_large_numbers(std::string_view text) {
  std::optional<std::string> out;
  for (std::size_t i = 0; i < text.size();) {
    const char c = text[i];
    if (c == '"') {
      i = string_end(text, i);
      if (i == std::string_view::npos) break;
      continue;
    }
    if (c != '-' && !is_digit(c)) {
      ++i;
      continue;
    }
    std::size_t end = i + 1;
    while (end < text.size() && (is_digit(text[end]) || text[end] == '.' || text[end] == 'e' ||
                                 text[end] == 'E' || text[end] == '+' || text[end] == '-')) {
      ++end;
    }
    if (number_out_of_range(text.substr(i, end - i))) {
      if (!out) out.emplace(text);
      const std::string_view huge = c == '-' ? "-1e300" : "1e300";
      out->replace(i, end - i, std::string(huge) + std::string(end - i - huge.size(), ' '));
    }
    i = end;
  }
  return out;
}

}  // namespace tp::json
