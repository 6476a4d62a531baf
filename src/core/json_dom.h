#pragma once
// simdjson's DOM parse, tolerant of numbers it cannot hold (json_numbers.h). For the
// documents Turnpike only reads (request bodies, answers, stream events), never for one it
// writes out again from the parse: there such a number would come out as ±1e300.

#include <simdjson.h>

#include <string_view>

#include "core/json_numbers.h"

namespace tp::json {

inline simdjson::error_code parse_dom(simdjson::dom::parser& parser, std::string_view text,
                                      simdjson::dom::element& doc) {
  const simdjson::error_code error = parser.parse(text.data(), text.size()).get(doc);
  if (error != simdjson::NUMBER_ERROR && error != simdjson::NUMBER_OUT_OF_RANGE) return error;
  const std::optional<std::string> tamed = tame_large_numbers(text);
  if (!tamed) return error;
  // The DOM keeps its own copy of strings and numbers: `tamed` may go.
  return parser.parse(tamed->data(), tamed->size()).get(doc);
}

}  // namespace tp::json
