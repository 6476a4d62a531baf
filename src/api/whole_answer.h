#pragma once
// The whole chat completion a non-stream request gets, built from the chunks of the stream
// Turnpike asked the upstream for instead: a flex attempt must be seen to start within its
// window, and a whole answer's head comes only with its end.
//
// Deltas merge as the OpenAI SDKs accumulate them: strings are appended; objects merge
// member by member; in arrays, an object with an integer "index" merges into the element
// with the same index (tool calls) and anything else is appended (logprobs); `id`, `type`
// and `role` keep their first non-empty value, and a `name` given again whole (as some
// servers repeat a tool's name) is not doubled; null never overwrites; other values are
// replaced.
//
// Only the answer's text is built here: whether it ended, its final usage and an error
// inside it are the StreamMeter's to tell, as for a relayed stream.

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace tp::api {

// A JSON value as the chunks build it up.
struct JsonNode {
  enum class Kind : std::uint8_t { kNull, kRaw, kString, kArray, kObject };
  Kind kind = Kind::kNull;
  std::string text;               // kRaw: the JSON text (a number, true, false); kString: the value
  std::vector<JsonNode> items;    // kArray; kObject: the members' values
  std::vector<std::string> keys;  // kObject: the members' names, in order of first appearance

  const JsonNode* find(std::string_view key) const;
};

class WholeAnswer {
 public:
  // `choices`: how many the request asked for (its `n`); no other index is taken.
  explicit WholeAnswer(std::int64_t choices = 1) : choices_asked_(choices) {}

  // One chunk's data (not the `[DONE]` terminator). kUpstreamFailed for a chunk that is not
  // a JSON object, or whose choice index is not one the request asked for.
  Status add(std::string_view data);
  // The `chat.completion` object: id, created, model, the choices (message, logprobs,
  // finish_reason), usage, service_tier and system_fingerprint as the chunks gave them.
  std::string build() const;

 private:
  struct Choice {
    JsonNode message;
    JsonNode logprobs;
    JsonNode finish_reason;
  };
  std::int64_t choices_asked_;
  JsonNode top_;  // the chunks' own members (id, created, model, ...), the last given of each
  std::map<std::int64_t, Choice> choices_;  // by index
};

}  // namespace tp::api
