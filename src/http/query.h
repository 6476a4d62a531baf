#pragma once
// The query string of a request target, percent-decoded ("+" is a space).

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/status.h"

namespace tp::http {

using QueryParams = std::vector<std::pair<std::string, std::string>>;

// "x%3Ay" → "x:y" into `out`, and with `plus_is_space` (a query string's form) "+" → " ";
// false for a malformed escape.
bool percent_decode(std::string_view in, std::string& out, bool plus_is_space);

// "a=1&b=x%3Ay" → {{"a","1"},{"b","x:y"}}. `target` may be a whole request target; the
// part after '?' is read. kInvalidRequest for a malformed percent escape.
Result<QueryParams> parse_query(std::string_view target);

}  // namespace tp::http
