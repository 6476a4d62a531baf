// A body the gateway accepts is rewritten into valid JSON with the new model and without
// Turnpike's own options, and asks for stream usage when told to.
#include <simdjson.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "api/request_body.h"
#include "core/json_dom.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto body = tp::api::parse_request_body(text);
  if (!body) return 0;
  const bool ask_for_usage = size % 2 == 1;
  const std::string out = tp::api::rewrite_request_body(*body, "m\"x", ask_for_usage);
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  // Valid JSON, numbers past 64 bits included (the gateway reads those too).
  if (tp::json::parse_dom(parser, out, doc)) __builtin_trap();
  simdjson::dom::object object;
  if (doc.get_object().get(object)) __builtin_trap();
  for (auto [key, value] : object) {
    if (key == "privacy_tier" || key == "start_within") __builtin_trap();
    std::string_view model;
    if (key == "model" && (value.get_string().get(model) || model != "m\"x")) __builtin_trap();
  }
  bool include_usage = false;
  if (ask_for_usage &&
      (object["stream_options"]["include_usage"].get_bool().get(include_usage) || !include_usage)) {
    __builtin_trap();
  }
  return 0;
}
