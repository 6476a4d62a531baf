#include "meter/usage.h"

#include <simdjson.h>

#include <algorithm>

namespace tp::meter {
namespace {

// A token count as reported, clamped to kTokensMax: an upstream that reports nonsense
// cannot overflow the cost arithmetic.
std::int64_t count(simdjson::dom::element object, const char* key) {
  std::int64_t n = 0;
  if (object[key].get_int64().get(n) || n < 0) return 0;
  return std::min(n, kTokensMax);
}

simdjson::dom::parser& parser() {
  thread_local simdjson::dom::parser p;
  return p;
}

Usage from_anthropic(simdjson::dom::element usage) {
  Usage u;
  u.input_tokens = count(usage, "input_tokens") + count(usage, "cache_creation_input_tokens");
  u.cached_tokens = count(usage, "cache_read_input_tokens");
  u.output_tokens = count(usage, "output_tokens");
  return u;
}

// The top-level "usage" object of a JSON document, if it has one (not null).
std::optional<simdjson::dom::element> usage_object(std::string_view json) {
  simdjson::dom::element doc;
  simdjson::dom::element usage;
  if (parser().parse(json.data(), json.size()).get(doc) || doc["usage"].get(usage) ||
      !usage.is_object()) {
    return std::nullopt;
  }
  return usage;
}

}  // namespace

std::optional<Usage> openai_usage(std::string_view json) {
  const auto found = usage_object(json);
  if (!found) return std::nullopt;
  const simdjson::dom::element usage = *found;
  Usage u;
  const std::int64_t prompt = count(usage, "prompt_tokens");
  simdjson::dom::element details;
  if (!usage["prompt_tokens_details"].get(details) && details.is_object()) {
    u.cached_tokens = std::min(count(details, "cached_tokens"), prompt);
  }
  u.input_tokens = prompt - u.cached_tokens;
  u.output_tokens = count(usage, "completion_tokens");
  return u;
}

std::optional<Usage> anthropic_usage(std::string_view json) {
  const auto usage = usage_object(json);
  if (!usage) return std::nullopt;
  return from_anthropic(*usage);
}

void AnthropicStreamUsage::on_event(std::string_view name, std::string_view data) {
  if (name != "message_start" && name != "message_delta") return;
  simdjson::dom::element doc;
  if (parser().parse(data.data(), data.size()).get(doc)) return;
  simdjson::dom::element usage;
  if (name == "message_start") {
    if (doc["message"]["usage"].get(usage) || !usage.is_object()) return;
    usage_ = from_anthropic(usage);
    started_ = true;
    return;
  }
  if (doc["usage"].get(usage) || !usage.is_object()) return;
  // message_delta usage is cumulative: the latest value replaces the earlier one.
  usage_.output_tokens = count(usage, "output_tokens");
  std::int64_t n = 0;
  if (!usage["input_tokens"].get_int64().get(n) && n >= 0) {
    n = std::min(n, kTokensMax);
    usage_.input_tokens = n + count(usage, "cache_creation_input_tokens");
    usage_.cached_tokens = count(usage, "cache_read_input_tokens");
  }
}

Money price(const Usage& usage, const catalog::Prices& prices) {
  return cost_of(usage.input_tokens, prices.input, usage.cached_tokens, prices.cached_input,
                 usage.output_tokens, prices.output);
}

}  // namespace tp::meter
