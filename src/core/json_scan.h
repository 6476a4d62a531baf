#pragma once
// Walking raw JSON text without parsing it: where whitespace, a string or a value ends.
// For documents already validated (request bodies, whose members are forwarded as sent)
// and for text that may not be (an upstream's stream chunks): an unterminated string or
// value ends at npos, never past the text.

#include <cstddef>
#include <string_view>

namespace tp::json {

inline bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

// The first index from `i` that is not JSON whitespace (s.size() at the end).
inline std::size_t skip_ws(std::string_view s, std::size_t i) {
  while (i < s.size() && is_ws(s[i])) ++i;
  return i;
}

// Just past the string whose opening quote is s[at], or npos if it does not end.
inline std::size_t string_end(std::string_view s, std::size_t at) {
  for (std::size_t i = at + 1; i < s.size(); ++i) {
    if (s[i] == '\\') {
      ++i;
    } else if (s[i] == '"') {
      return i + 1;
    }
  }
  return std::string_view::npos;
}

// Just past the value that starts at s[at], or npos if it does not end: strings are
// skipped whole (a brace inside one counts for nothing), containers to their close, a
// literal (number, true, false, null) to the whitespace, comma or close after it.
inline std::size_t value_end(std::string_view s, std::size_t at) {
  int depth = 0;
  for (std::size_t i = at; i < s.size();) {
    const char c = s[i];
    if (c == '"') {
      i = string_end(s, i);
      if (i == std::string_view::npos || depth == 0) return i;
      continue;
    }
    if (c == '{' || c == '[') {
      ++depth;
    } else if (c == '}' || c == ']') {
      if (depth == 0) return i;  // a literal's end, at its container's close
      if (--depth == 0) return i + 1;
    } else if (depth == 0 && (c == ',' || is_ws(c))) {
      return i;
    }
    ++i;
  }
  return depth == 0 && at < s.size() ? s.size() : std::string_view::npos;
}

}  // namespace tp::json
