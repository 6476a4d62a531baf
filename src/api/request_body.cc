#include "api/request_body.h"

#include <fmt/format.h>
#include <simdjson.h>

#include <algorithm>
#include <array>

#include "core/json_dom.h"
#include "core/json_scan.h"
#include "core/json_writer.h"

namespace tp::api {

std::vector<JsonMember> top_level_members(std::string_view s) {
  std::vector<JsonMember> out;
  std::size_t i = json::skip_ws(s, 0);
  TP_ASSERT(s[i] == '{');
  i = json::skip_ws(s, i + 1);
  while (i < s.size() && s[i] != '}') {
    const std::size_t key_end = json::string_end(s, i);
    const std::string_view key = s.substr(i + 1, key_end - i - 2);
    i = json::skip_ws(s, key_end);
    i = json::skip_ws(s, i + 1);  // ':'
    const std::size_t value_end = json::value_end(s, i);
    out.push_back({key, s.substr(i, value_end - i)});
    i = json::skip_ws(s, value_end);
    if (i < s.size() && s[i] == ',') i = json::skip_ws(s, i + 1);
  }
  return out;
}

namespace {

Status invalid(std::string message) { return {ErrorKind::kInvalidRequest, std::move(message)}; }

// Whether the messages carry audio, which the provider bills as audio input: a content part
// of type "input_audio", or an earlier audio answer (an assistant message's "audio").
bool has_audio(simdjson::dom::element messages) {
  simdjson::dom::array list;
  if (messages.get_array().get(list)) return false;
  for (simdjson::dom::element message : list) {
    simdjson::dom::element audio;
    if (!message["audio"].get(audio) && !audio.is_null()) return true;
    simdjson::dom::array parts;
    if (message["content"].get_array().get(parts)) continue;
    for (simdjson::dom::element part : parts) {
      std::string_view type;
      if (!part["type"].get_string().get(type) && type == "input_audio") return true;
    }
  }
  return false;
}

bool is_base64(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '+' || c == '/' || c == '=' || c == '-' || c == '_';
  });
}

// A payload's bytes of base64 (after a data URL's "...;base64," prefix), or nullopt when `s`
// is not one worth counting apart.
std::optional<std::string_view> base64_payload(std::string_view s, bool data_url) {
  if (s.size() < kMediaBytesMin) return std::nullopt;
  if (data_url) {
    const std::size_t comma = s.find(',');
    if (!s.starts_with("data:") || comma == std::string_view::npos) return std::nullopt;
    s.remove_prefix(comma + 1);
  }
  if (!is_base64(s)) return std::nullopt;
  return s;
}

// Adds the base64 payloads of content blocks under `e` to the body's media counts: an
// Anthropic `image` or `document` block with a base64 `source`, an OpenAI `image_url` data
// URL, `input_audio` data and `file` data. Only there: a base64-looking string anywhere
// else (a tool's input, say) is text to the model, and counted as text. An image is
// typically kImageTokens and at most kImageTokensMax (both no more than its size as text);
// anything else typically a token per kMediaBytesPerToken bytes and at most a token a byte,
// as text. Bounded in depth, as the parser is.
void find_media(simdjson::dom::element e, RequestBody& body, int depth = 0) {
  if (depth > 64) return;
  simdjson::dom::array array;
  if (!e.get_array().get(array)) {
    for (simdjson::dom::element item : array) find_media(item, body, depth + 1);
    return;
  }
  simdjson::dom::object block;
  if (e.get_object().get(block)) return;
  std::string_view type;
  std::string_view s;
  std::optional<std::string_view> payload;
  bool image = false;
  if (block["type"].get_string().get(type)) {
    // not a content block: its members may hold some
  } else if (type == "image" || type == "document") {
    std::string_view source_type;
    if (!block["source"]["type"].get_string().get(source_type) && source_type == "base64" &&
        !block["source"]["data"].get_string().get(s)) {
      payload = base64_payload(s, false);
      image = type == "image";
    }
  } else if (type == "image_url") {
    if (!block["image_url"]["url"].get_string().get(s)) payload = base64_payload(s, true);
    image = true;
  } else if (type == "input_audio") {
    if (!block["input_audio"]["data"].get_string().get(s)) payload = base64_payload(s, false);
  } else if (type == "file") {
    if (!block["file"]["file_data"].get_string().get(s)) payload = base64_payload(s, true);
  }
  if (payload) {
    const auto bytes = static_cast<std::int64_t>(payload->size());
    body.media_bytes += s.size();
    body.media_tokens += image ? std::min(bytes / 4, kImageTokens) : bytes / kMediaBytesPerToken;
    body.media_tokens_max += image ? std::min(bytes, kImageTokensMax) : bytes;
    return;
  }
  for (auto [key, value] : block) {
    if (value.is_array() || value.is_object()) find_media(value, body, depth + 1);
  }
}

// The searches a `tools` list may run on the provider's side, as held (each web_search
// tool's max_uses, or kWebSearchesHeld without one) and as believed (max_uses, or
// kWebSearchesBelievedMax). (A malformed list is the upstream's to refuse.)
struct Searches {
  std::int64_t held = 0;
  std::int64_t believed = 0;
};
Searches web_searches_of(simdjson::dom::element tools) {
  constexpr std::int64_t kWebSearchesMax = 1'000'000;  // keeps the hold's arithmetic small
  simdjson::dom::array list;
  if (tools.get_array().get(list)) return {};
  Searches searches;
  for (simdjson::dom::element tool : list) {
    std::string_view type;
    if (tool["type"].get_string().get(type) || !type.starts_with("web_search")) continue;
    std::int64_t uses = 0;
    const bool bounded = !tool["max_uses"].get_int64().get(uses) && uses >= 0;
    uses = std::min<std::int64_t>(uses, kWebSearchesMax);
    searches.held += bounded ? uses : kWebSearchesHeld;
    searches.believed += bounded ? uses : kWebSearchesBelievedMax;
  }
  searches.held = std::min(searches.held, kWebSearchesMax);
  searches.believed = std::min(searches.believed, kWebSearchesMax);
  return searches;
}

}  // namespace

Result<RequestBody> parse_request_body(std::string_view text) {
  thread_local simdjson::dom::parser parser;
  simdjson::dom::element doc;
  if (auto error = json::parse_dom(parser, text, doc); error) {
    return invalid(fmt::format("request body is not valid JSON: {}",
                               simdjson::error_message(error)));
  }
  simdjson::dom::object object;
  if (doc.get_object().get(object)) return invalid("request body must be a JSON object");

  RequestBody body;
  std::optional<simdjson::dom::element> messages;  // for has_audio
  // The members Turnpike reads must say one thing: a second "model" (or one spelled with
  // escapes, which the rewrite and some upstreams would not see as "model") could route
  // and bill one model while the upstream serves another.
  constexpr std::array<std::string_view, 14> kRead = {
      "model", "stream", "max_tokens", "max_completion_tokens", "n", "stream_options",
      "service_tier", kOptionPrivacyTier, kOptionStartWithin, "speed", "inference_geo",
      "modalities", "audio", "messages"};
  std::uint32_t seen = 0;
  std::size_t read_members = 0;
  std::size_t include_usage_members = 0;  // in stream_options, once unescaped
  for (auto [key, value] : object) {
    if (const auto it = std::find(kRead.begin(), kRead.end(), key); it != kRead.end()) {
      const std::uint32_t bit = 1U << (it - kRead.begin());
      if (seen & bit) return invalid(fmt::format("'{}' appears more than once", key));
      seen |= bit;
      ++read_members;
    }
    if (key == "messages") {
      if (!value.is_array()) return invalid("'messages' must be an array");
      messages = value;
    } else if (key == "tools") {
      body.has_tools = true;
      // A second "tools" (which one the upstream keeps is its own) is held for too.
      const Searches searches = web_searches_of(value);
      body.web_searches_max = std::max(body.web_searches_max, searches.held);
      body.web_searches_believed = std::max(body.web_searches_believed, searches.believed);
    } else if (key == "speed" || key == "inference_geo") {
      if (value.is_null()) continue;
      std::string_view option;
      if (value.get_string().get(option) || option.empty()) {
        return invalid(fmt::format("'{}' must be a non-empty string", key));
      }
      if (option != (key == "speed" ? "standard" : "global")) {
        (key == "speed" ? body.speed : body.inference_geo) = std::string(option);
      }
    } else if (key == "modalities") {
      simdjson::dom::array modalities;
      if (value.get_array().get(modalities)) continue;  // the upstream judges its shape
      for (simdjson::dom::element m : modalities) {
        std::string_view name;
        body.wants_audio |= !m.get_string().get(name) && name == "audio";
      }
    } else if (key == "audio") {
      body.wants_audio |= !value.is_null();
    } else if (key == "web_search_options") {
      body.web_search_options |= !value.is_null();
    } else if (key == "model") {
      std::string_view model;
      if (value.get_string().get(model)) return invalid("'model' must be a string");
      body.model = std::string(model);
      body.has_model = true;
    } else if (key == "stream") {
      if (!value.is_null() && value.get_bool().get(body.stream)) {
        return invalid("'stream' must be true or false");
      }
    } else if (key == "max_tokens" || key == "max_completion_tokens") {
      std::int64_t n = 0;
      if (value.is_null()) continue;
      // At least 1, as OpenAI and Anthropic require: a bound of 0 would hold nothing for an
      // upstream that answers anyway.
      if (value.get_int64().get(n) || n < 1) {
        return invalid(fmt::format("'{}' must be a positive integer", key));
      }
      // Both may be given, and upstreams differ in which one they honour: the hold covers
      // the larger.
      body.max_tokens = std::max(body.max_tokens.value_or(0), n);
    } else if (key == "n") {
      if (value.is_null()) continue;
      if (value.get_int64().get(body.choices) || body.choices < 1 ||
          body.choices > kChoicesMax) {
        return invalid(fmt::format("'n' must be an integer from 1 to {}", kChoicesMax));
      }
    } else if (key == "stream_options") {
      if (value.is_null()) continue;
      simdjson::dom::object options;
      if (value.get_object().get(options)) return invalid("'stream_options' must be an object");
      // Read once, like the top-level members: upstreams that keep the last of two would
      // not send the usage Turnpike counts on.
      bool include = false;
      for (auto [option, v] : options) {
        if (option != "include_usage") continue;
        if (++include_usage_members > 1) {
          return invalid("'stream_options.include_usage' appears more than once");
        }
        if (!v.is_null() && v.get_bool().get(include)) {
          return invalid("'stream_options.include_usage' must be true or false");
        }
      }
      body.include_usage = include;
    } else if (key == "service_tier") {
      if (value.is_null()) continue;
      std::string_view tier;
      if (value.get_string().get(tier) || tier.empty()) {
        return invalid("'service_tier' must be a non-empty string");
      }
      body.service_tier = std::string(tier);
    } else if (key == kOptionPrivacyTier || key == kOptionStartWithin) {
      if (value.is_null()) continue;  // as absent, like the other options
      std::string_view option;
      if (value.get_string().get(option) || option.empty()) {
        return invalid(fmt::format("'{}' must be a non-empty string", key));
      }
      (key == kOptionPrivacyTier ? body.privacy_tier : body.start_within) = std::string(option);
    }
  }
  if (read_members > 0 && text.find('\\') != std::string_view::npos) {
    std::size_t plain = 0;
    std::size_t plain_include_usage = 0;
    for (const JsonMember& m : top_level_members(text)) {
      plain += std::find(kRead.begin(), kRead.end(), m.key) != kRead.end();
      if (m.key == "stream_options" && m.value.front() == '{') {
        for (const JsonMember& option : top_level_members(m.value)) {
          plain_include_usage += option.key == "include_usage";
        }
      }
    }
    if (plain != read_members || plain_include_usage != include_usage_members) {
      return invalid("write the members Turnpike reads (model, stream, max_tokens, "
                     "max_completion_tokens, n, stream_options and its include_usage, "
                     "service_tier, privacy_tier, start_within, speed, inference_geo, "
                     "modalities, audio, messages) without escapes in their names");
    }
  }
  body.wants_audio |= messages && has_audio(*messages);
  if (messages && text.size() >= kMediaScanFromBytes) find_media(*messages, body);
  body.web_searches_max += body.web_search_options ? 1 : 0;
  body.web_searches_believed += body.web_search_options ? 1 : 0;
  body.text = text;
  return body;
}

std::string rewrite_request_body(const RequestBody& body, std::string_view upstream_model,
                                 bool ask_for_usage, std::string_view service_tier,
                                 bool as_stream) {
  constexpr std::string_view kIncludeUsage = "\"include_usage\":true";
  const std::vector<JsonMember> members = top_level_members(body.text);
  std::string out;
  out.reserve(body.text.size() + upstream_model.size() + 64);
  out.push_back('{');
  bool first = true;
  auto append_key = [&](std::string_view key) {
    if (!first) out.push_back(',');
    first = false;
    out.push_back('"');
    out.append(key);
    out += "\":";
  };
  std::string_view stream_options;  // the client's, when usage must be asked for
  for (const auto& m : members) {
    if (m.key == kOptionPrivacyTier || m.key == kOptionStartWithin) continue;
    if (m.key == "service_tier" || (as_stream && m.key == "stream")) continue;
    if (ask_for_usage && m.key == "stream_options") {
      if (m.value.front() == '{') stream_options = m.value;
      continue;
    }
    append_key(m.key);
    if (m.key == "model") {
      json::append_quoted(out, upstream_model);
    } else {
      out.append(m.value);
    }
  }
  if (ask_for_usage) {
    append_key("stream_options");
    out.push_back('{');
    if (!stream_options.empty()) {
      for (const auto& option : top_level_members(stream_options)) {
        if (option.key == "include_usage") continue;
        out.push_back('"');
        out.append(option.key);
        out += "\":";
        out.append(option.value);
        out.push_back(',');
      }
    }
    out += kIncludeUsage;
    out.push_back('}');
  }
  if (!service_tier.empty()) {
    append_key("service_tier");
    json::append_quoted(out, service_tier);
  }
  if (as_stream) {
    append_key("stream");
    out += "true";
  }
  out.push_back('}');
  return out;
}

}  // namespace tp::api
