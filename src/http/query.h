#pragma once
// The query string of a request target, percent-decoded ("+" is a space).

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/status.h"

namespace tp::http {

using QueryParams = std::vector<std::pair<std::string, std::string>>;

// "a=1&b=x%3Ay" → {{"a","1"},{"b","x:y"}}. `target` may be a whole request target; the
// part after '?' is read. kInvalidRequest for a malformed percent escape.
Result<QueryParams> parse_query(std::string_view target);

}  // namespace tp::http
