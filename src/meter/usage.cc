#include "meter/usage.h"

#include <simdjson.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <optional>
#include <string_view>
#include <vector>

#include "core/json_dom.h"

namespace tp::meter {
namespace {

// A token count as reported: a non-negative integer (an integral number like 12.0 too),
// clamped to kTokensMax so that an upstream reporting nonsense cannot overflow the cost
// arithmetic. nullopt when the member is missing or is anything else.
std::optional<std::int64_t> reported(simdjson::dom::element object, const char* key) {
  simdjson::dom::element value;
  if (object[key].get(value)) return std::nullopt;
  std::int64_t n = 0;
  double d = 0;
  if (!value.get_int64().get(n)) {
    if (n < 0) return std::nullopt;
  } else if (!value.get_double().get(d)) {
    if (!(d >= 0) || d != std::floor(d)) return std::nullopt;
    if (d >= static_cast<double>(kTokensMax)) return kTokensMax;
    n = static_cast<std::int64_t>(d);
  } else {
    return std::nullopt;
  }
  return std::min(n, kTokensMax);
}

// An optional count: 0 when missing or malformed.
std::int64_t count(simdjson::dom::element object, const char* key) {
  return reported(object, key).value_or(0);
}

// A count priced apart from text tokens (audio, searches): 0 when missing or null, nullopt
// when it is anything else but a count. Then the usage reports nothing (its caller bills
// the estimate): a malformed count must not make a dearer part free or cheap.
std::optional<std::int64_t> priced_count(simdjson::dom::element object, const char* key) {
  simdjson::dom::element value;
  if (object[key].get(value) || value.is_null()) return 0;
  return reported(object, key);
}

// A count that may be left out: absent (or null), reported, or malformed.
struct MaybeCount {
  std::optional<std::int64_t> value;
  bool malformed = false;
};
MaybeCount maybe_count(simdjson::dom::element object, const char* key) {
  simdjson::dom::element value;
  if (object[key].get(value) || value.is_null()) return {};
  const auto n = reported(object, key);
  return {n, !n.has_value()};
}

// Whether no object in `value` (itself, or nested) names a member twice, and each has at
// most kUsageMembersMax members. A usage object that names one twice is malformed: the
// gateway would read one copy and a client another. One far larger than any provider sends
// is too: its check must stay cheap on the I/O thread.
bool members_unique(simdjson::dom::element value, int depth = 0) {
  constexpr int kDepthMax = 8;  // a usage object is shallow
  if (depth > kDepthMax) return false;
  simdjson::dom::object object;
  if (value.get_object().get(object)) return true;
  if (object.size() > kUsageMembersMax) return false;
  std::array<std::string_view, kUsageMembersMax> keys;
  std::size_t n = 0;
  for (auto [key, member] : object) {
    if (std::find(keys.begin(), keys.begin() + static_cast<std::ptrdiff_t>(n), key) !=
        keys.begin() + static_cast<std::ptrdiff_t>(n)) {
      return false;
    }
    keys[n++] = key;
    if (!members_unique(member, depth + 1)) return false;
  }
  return true;
}

simdjson::dom::parser& parser() {
  thread_local simdjson::dom::parser p;
  return p;
}

// Reads the cache counts `usage` reports into `u`, leaving those it leaves out as they were:
// reads, and writes split by how long they are kept (all of them 5-minute ones when the
// split is missing or does not add up; the split's sum when it comes without a total).
// False when a count is malformed: a dearer part must not become free (see priced_count).
bool take_cache(simdjson::dom::element usage, Usage& u) {
  const MaybeCount read = maybe_count(usage, "cache_read_input_tokens");
  const MaybeCount written = maybe_count(usage, "cache_creation_input_tokens");
  if (read.malformed || written.malformed) return false;
  simdjson::dom::element split;
  const bool has_split = !usage["cache_creation"].get(split) && split.is_object();
  const MaybeCount five =
      has_split ? maybe_count(split, "ephemeral_5m_input_tokens") : MaybeCount{};
  const MaybeCount hour =
      has_split ? maybe_count(split, "ephemeral_1h_input_tokens") : MaybeCount{};
  const bool split_ok = !five.malformed && !hour.malformed && (five.value || hour.value);
  if (!written.value && (five.malformed || hour.malformed)) return false;  // no count to go by
  if (read.value) u.cached_tokens = *read.value;
  const std::int64_t split_sum = five.value.value_or(0) + hour.value.value_or(0);
  const std::optional<std::int64_t> total =
      written.value ? written.value : (split_ok ? std::optional(split_sum) : std::nullopt);
  if (!total) return true;
  // A message_delta repeats the total without the split message_start gave: kept.
  if (!split_ok && *total == u.cache_write_tokens + u.cache_write_1h_tokens) return true;
  u.cache_write_tokens = *total;
  u.cache_write_1h_tokens = 0;
  if (split_ok && split_sum == *total) {
    u.cache_write_tokens = five.value.value_or(0);
    u.cache_write_1h_tokens = hour.value.value_or(0);
  }
  return true;
}

// Reads a well-formed input count, with whatever cache counts are beside it, into `u`;
// false (and `u` untouched) when `usage` has none.
bool take_input(simdjson::dom::element usage, Usage& u) {
  const std::optional<std::int64_t> input = reported(usage, "input_tokens");
  if (!input) return false;
  Usage taken = u;
  taken.input_tokens = *input;
  if (!take_cache(usage, taken)) return false;
  u = taken;
  return true;
}

// Anthropic's server-side tool runs (web searches are charged each), and the speed and
// region it served at. False when the search count is malformed (see priced_count).
bool take_server_tools(simdjson::dom::element usage, Usage& u) {
  std::string_view served;
  if (!usage["speed"].get_string().get(served)) u.speed = std::string(served);
  if (!usage["inference_geo"].get_string().get(served)) u.inference_geo = std::string(served);
  simdjson::dom::element tools;
  if (usage["server_tool_use"].get(tools) || !tools.is_object()) return true;
  if (tools["web_search_requests"].error() == simdjson::NO_SUCH_FIELD) return true;
  const auto searches = priced_count(tools, "web_search_requests");
  if (searches) u.web_searches = *searches;
  return searches.has_value();
}

// nullopt unless both input_tokens and output_tokens are reported as counts.
std::optional<Usage> from_anthropic(simdjson::dom::element usage) {
  const std::optional<std::int64_t> output = reported(usage, "output_tokens");
  Usage u;
  if (!output || !take_input(usage, u)) return std::nullopt;
  u.output_tokens = *output;
  if (!take_server_tools(usage, u)) return std::nullopt;
  return u;
}

// The top-level "usage" object of a JSON document, if it has one (not null); `doc` is the
// document.
std::optional<simdjson::dom::element> usage_object(std::string_view json,
                                                   simdjson::dom::element& doc) {
  simdjson::dom::element usage;
  if (json::parse_dom(parser(), json, doc) || doc["usage"].get(usage) || !usage.is_object() ||
      !members_unique(usage)) {
    return std::nullopt;
  }
  return usage;
}

}  // namespace

std::optional<Usage> openai_usage(std::string_view json, bool embeddings) {
  simdjson::dom::element doc;
  const auto found = usage_object(json, doc);
  if (!found) return std::nullopt;
  const simdjson::dom::element usage = *found;
  // A usage object without a prompt count, or with a malformed completion count, reports
  // nothing: the caller bills its estimate instead of a free answer.
  const std::optional<std::int64_t> prompt_count = reported(usage, "prompt_tokens");
  if (!prompt_count) return std::nullopt;
  if (usage["completion_tokens"].error() != simdjson::NO_SUCH_FIELD &&
      !reported(usage, "completion_tokens")) {
    return std::nullopt;
  }
  Usage u;
  const std::int64_t prompt = *prompt_count;
  simdjson::dom::element details;
  if (!usage["prompt_tokens_details"].get(details) && details.is_object()) {
    u.cached_tokens = std::min(count(details, "cached_tokens"), prompt);
    const auto audio = priced_count(details, "audio_tokens");
    if (!audio) return std::nullopt;
    u.audio_input_tokens = *audio;
  }
  u.input_tokens = prompt - u.cached_tokens;
  // Cached audio is not told apart from cached text: the audio count, up to the uncached
  // input, is priced as audio (the higher price, if anything).
  u.audio_input_tokens = std::min(u.audio_input_tokens, u.input_tokens);
  // Without a completion count (embeddings have none; some compatible servers leave it
  // out), what the total says beyond the prompt; without either, nothing is reported.
  if (const auto completion = reported(usage, "completion_tokens")) {
    u.output_tokens = *completion;
  } else if (const auto total = reported(usage, "total_tokens")) {
    u.output_tokens = std::max<std::int64_t>(*total - prompt, 0);
  } else if (!embeddings) {
    return std::nullopt;
  }
  if (!usage["completion_tokens_details"].get(details) && details.is_object()) {
    const auto audio = priced_count(details, "audio_tokens");
    if (!audio) return std::nullopt;
    u.audio_output_tokens = std::min(*audio, u.output_tokens);
  }
  std::string_view tier;
  if (!doc["service_tier"].get_string().get(tier)) u.service_tier = std::string(tier);
  return u;
}

std::optional<Usage> anthropic_usage(std::string_view json) {
  simdjson::dom::element doc;
  const auto usage = usage_object(json, doc);
  if (!usage) return std::nullopt;
  return from_anthropic(*usage);
}

bool AnthropicStreamUsage::on_event(std::string_view name, std::string_view data) {
  if (name != "message_start" && name != "message_delta") return false;
  simdjson::dom::element doc;
  if (json::parse_dom(parser(), data, doc)) return false;
  simdjson::dom::element usage;
  if (name == "message_start") {
    if (doc["message"]["usage"].get(usage) || !usage.is_object() || !members_unique(usage)) {
      return false;
    }
    if (take_input(usage, usage_)) {
      usage_.output_tokens = count(usage, "output_tokens");
      (void)take_server_tools(usage, usage_);
      input_known_ = true;
    }
    return false;
  }
  if (doc["usage"].get(usage) || !usage.is_object() || !members_unique(usage)) return false;
  // message_delta usage is cumulative: the latest value replaces the earlier one.
  const std::optional<std::int64_t> output = reported(usage, "output_tokens");
  if (!output) return false;
  usage_.output_tokens = *output;
  // A malformed search count keeps the last good one; the output count still stands.
  (void)take_server_tools(usage, usage_);
  final_ = true;
  // Each count it reports replaces the earlier one; one it leaves out keeps its value.
  if (take_input(usage, usage_)) {
    input_known_ = true;
  } else {
    (void)take_cache(usage, usage_);  // a malformed one keeps the counts before
  }
  return true;
}

Money price(const Usage& usage, const catalog::Prices& standard) {
  const catalog::Prices prices =
      catalog::for_input(standard, usage.uncached_input() + usage.cached_tokens);
  return cost_of({{usage.input_tokens - usage.audio_input_tokens, prices.input},
                  {usage.audio_input_tokens, prices.audio_input},
                  {usage.cached_tokens, prices.cached_input},
                  {usage.cache_write_tokens, prices.cache_write},
                  {usage.cache_write_1h_tokens, prices.cache_write_1h},
                  {usage.output_tokens - usage.audio_output_tokens, prices.output},
                  {usage.audio_output_tokens, prices.audio_output},
                  {usage.web_searches * kTokensPerSearch, prices.web_search_per_1k}});
}

}  // namespace tp::meter
