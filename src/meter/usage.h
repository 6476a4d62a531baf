#pragma once
// Token usage as the upstream reports it, normalised across the two APIs, and its price.
//
// OpenAI reports prompt_tokens including cached ones (prompt_tokens_details.cached_tokens);
// Anthropic reports input_tokens without cache reads (cache_read_input_tokens) and cache
// writes (cache_creation_input_tokens, split by how long they are kept in cache_creation's
// ephemeral_5m_input_tokens and ephemeral_1h_input_tokens). Usage keeps them apart, each
// at its own price: `input_tokens` is plain input only. OpenAI's audio tokens
// (prompt_tokens_details / completion_tokens_details `audio_tokens`) are part of its plain
// input and output counts, priced at the audio prices; Anthropic's server-side web searches
// (server_tool_use.web_search_requests) cost a fee each.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "catalog/catalog.h"
#include "core/money.h"

namespace tp::meter {

// The most tokens one count may report (a billion): more is clamped.
// Members a usage object (or one nested in it) may have: providers send about a dozen. One
// with more is malformed (its answer is billed an estimate).
inline constexpr std::size_t kUsageMembersMax = 64;
inline constexpr std::int64_t kTokensMax = 1'000'000'000;
// A search priced per thousand as tokens are per million: one search is a thousand tokens.
inline constexpr std::int64_t kTokensPerSearch = 1'000'000 / 1'000;

struct Usage {
  std::int64_t input_tokens = 0;   // plain input: neither read from nor written to a cache
  std::int64_t cached_tokens = 0;  // input read from the provider's cache
  std::int64_t output_tokens = 0;
  std::int64_t cache_write_tokens = 0;     // input written to the cache for 5 minutes
  std::int64_t cache_write_1h_tokens = 0;  // ... for 1 hour
  std::int64_t audio_input_tokens = 0;     // the part of input_tokens that is audio
  std::int64_t audio_output_tokens = 0;    // the part of output_tokens that is audio
  std::int64_t web_searches = 0;           // server-side web searches run for the answer
  // What the provider says served it (Anthropic's usage `speed` and `inference_geo`,
  // OpenAI's `service_tier` beside the usage): it may differ from what was asked. Empty when
  // not reported.
  std::string speed;
  std::string inference_geo;
  std::string service_tier;  // OpenAI's response `service_tier` ("default", "priority", …)
  // Every input token but those read from a cache.
  std::int64_t uncached_input() const {
    return input_tokens + cache_write_tokens + cache_write_1h_tokens;
  }
};

// The "usage" object of an OpenAI response body or stream chunk; nullopt when absent or null.
// `embeddings`: an embeddings answer, whose usage may give the prompt count alone (it has
// no output); any other without a completion or total count reports nothing.
std::optional<Usage> openai_usage(std::string_view json, bool embeddings = false);

// The "usage" object of an Anthropic message (non-stream body).
std::optional<Usage> anthropic_usage(std::string_view json);

// Folds an Anthropic stream: message_start carries input usage, each message_delta the
// cumulative output so far.
class AnthropicStreamUsage {
 public:
  // Whether this event reported a well-formed output count (a message_delta's).
  bool on_event(std::string_view name, std::string_view data);
  // The input is known: message_start (or a message_delta) reported it well-formed.
  bool seen() const { return input_known_; }
  // The usage is final: a message_delta reported a well-formed output count, and the input
  // is known. (Without the input a final output would bill the input as nothing.)
  bool final() const { return final_ && input_known_; }
  const Usage& usage() const { return usage_; }

 private:
  // Each input count as the latest event that reported it: a message_delta may report some
  // and leave the others out (or null).
  Usage usage_;
  bool input_known_ = false;
  bool final_ = false;
};

// cost_of() at a route's prices (standard or flex).
Money price(const Usage& usage, const catalog::Prices& prices);

}  // namespace tp::meter
