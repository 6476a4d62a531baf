#pragma once
// Reads what the gateway needs from a JSON request body without building a DOM of it, and
// rewrites only the top-level members that must change. The rest of the body (messages,
// tools, unknown fields) is forwarded byte for byte.

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace tp::api {

// The most completions one request may ask for (`n`), as OpenAI allows.
inline constexpr std::int64_t kChoicesMax = 128;
// Searches held for a web_search tool without max_uses (the provider sets no bound; more
// are charged as a shortfall over the hold).
inline constexpr std::int64_t kWebSearchesHeld = 10;
// Searches a provider's count is believed up to for a web_search tool without max_uses: past
// them (or past max_uses, or with no search asked for) the charge is capped at the hold, as
// for a report past max_tokens.
inline constexpr std::int64_t kWebSearchesBelievedMax = 100;

// Top-level members Turnpike consumes itself and removes before forwarding (CONTRACT.md).
inline constexpr std::string_view kOptionPrivacyTier = "privacy_tier";
inline constexpr std::string_view kOptionStartWithin = "start_within";

struct JsonMember {
  std::string_view key;    // raw key text between the quotes (not unescaped)
  std::string_view value;  // raw JSON text of the value
};

// The top-level members of a JSON object already validated, in document order, as views
// into `text`.
std::vector<JsonMember> top_level_members(std::string_view text);

struct RequestBody {
  std::string_view text;  // the body as received

  std::string model;
  bool has_model = false;
  bool stream = false;
  std::optional<std::int64_t> max_tokens;  // the larger of max_tokens, max_completion_tokens
  std::int64_t choices = 1;                // n: how many completions the output bound is for
  std::string privacy_tier;                // empty when absent
  std::string start_within;                // empty when absent
  bool include_usage = false;              // stream_options.include_usage is true
  bool has_tools = false;  // a top-level "tools" member: a provider adds its tool-use prompt
  // The client's `service_tier` (empty when absent or null). Never forwarded: the tier a
  // route is served on decides its price, so Turnpike alone sets it (the flex race).
  std::string service_tier;
  // Options a provider charges more for, forwarded as given; a route must price them
  // (Anthropic's fast mode and regional inference). Empty when absent, null, or at the
  // standard value ("standard", "global").
  std::string speed;
  std::string inference_geo;
  // Asks for audio: output audio (`modalities` with "audio", or an `audio` member), an
  // `input_audio` content part, or an earlier audio answer (an assistant message's `audio`).
  // A route of OpenAI's chat API must have audio prices.
  bool wants_audio = false;
  // A non-null `web_search_options`: OpenAI's search models search once for the request.
  bool web_search_options = false;
  // The most server-side web searches the request may run (Anthropic's web_search tool: its
  // max_uses, else kWebSearchesHeld; one for web_search_options), for the hold.
  std::int64_t web_searches_max = 0;
  // The most a provider's count of them is believed (max_uses, else kWebSearchesBelievedMax).
  std::int64_t web_searches_believed = 0;
  // Base64 payloads in the messages (images, documents, audio: see find_media), which are
  // not text and are counted apart: their bytes, and the input tokens they are taken to
  // be, typically and at most. Looked for only in bodies of kMediaScanFromBytes or more.
  std::size_t media_bytes = 0;
  std::int64_t media_tokens = 0;
  std::int64_t media_tokens_max = 0;

  bool has_options() const {
    return !privacy_tier.empty() || !start_within.empty() || !service_tier.empty();
  }
};

// A body smaller than this holds no payload worth counting apart (at most a quarter of it
// in tokens would be misjudged).
inline constexpr std::size_t kMediaScanFromBytes = 4096;
// A base64 payload of a content block (an image, a document, audio; see find_media) of at
// least this many bytes, all of it base64 (after a data URL's "...;base64," prefix).
inline constexpr std::size_t kMediaBytesMin = 1024;
// An image is typically ~1,600 input tokens (Anthropic scales one down to about 1.15
// megapixels; OpenAI's high detail tiles cost about as much) and at most 6,400 here.
inline constexpr std::int64_t kImageTokens = 1600;
inline constexpr std::int64_t kImageTokensMax = 6400;
// Other payloads (a PDF, audio), typically: a token per 64 bytes of base64, about what a
// PDF page costs. Their bound stays a token a byte, as text's.
inline constexpr std::int64_t kMediaBytesPerToken = 64;

// Parses and validates `body` (UTF-8 JSON object). Errors (kInvalidRequest) say what is
// wrong without quoting the body.
Result<RequestBody> parse_request_body(std::string_view body);

// The body to forward: `model` replaced by `upstream_model`, Turnpike's options and the
// client's `service_tier` removed. With `ask_for_usage`, `stream_options.include_usage` is
// set to true, keeping any other stream option the client gave. A non-empty `service_tier`
// is sent instead (the flex race sends "flex"). With `as_stream`, `"stream": true` replaces
// the client's `stream` (a whole answer asked for as a stream, so that its start is seen).
// `body.text` must still be alive.
std::string rewrite_request_body(const RequestBody& body, std::string_view upstream_model,
                                 bool ask_for_usage = false, std::string_view service_tier = {},
                                 bool as_stream = false);

}  // namespace tp::api
