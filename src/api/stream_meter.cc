#include "api/stream_meter.h"

#include <simdjson.h>

#include <algorithm>

#include "core/json_dom.h"
#include "core/json_scan.h"
#include "http/http1.h"

namespace tp::api {
namespace {

// Whether `test` holds for the value text (from its first byte on) of some member
// `quoted_key` of `data`. Inside a JSON string every quote is escaped, so an unescaped
// `"key"` followed by a colon is a real member.
template <typename Test>
bool any_member_value(std::string_view data, std::string_view quoted_key, Test test) {
  for (std::size_t at = data.find(quoted_key); at != std::string_view::npos;
       at = data.find(quoted_key, at + 1)) {
    std::size_t i = json::skip_ws(data, at + quoted_key.size());
    if (i >= data.size() || data[i] != ':') continue;
    i = json::skip_ws(data, i + 1);
    if (test(data.substr(i))) return true;
  }
  return false;
}

// Whether `data` has a member `quoted_key` whose value starts with one of `starts`.
bool member_starts_with(std::string_view data, std::string_view quoted_key,
                        std::string_view starts) {
  return any_member_value(data, quoted_key, [&](std::string_view v) {
    return !v.empty() && starts.find(v.front()) != std::string_view::npos;
  });
}

// Whether the chunk has a "choices" array with at least one element (the usage-only chunk
// has none: `[]`, null, or no member at all, as some OpenAI-compatible servers send it).
bool has_a_choice(std::string_view data) {
  return any_member_value(data, "\"choices\"", [](std::string_view v) {
    if (v.empty() || v.front() != '[') return false;
    const std::size_t i = json::skip_ws(v, 1);
    return i < v.size() && v[i] != ']';
  });
}

// A choice ended (a non-null "finish_reason"), or an Anthropic message did ("stop_reason").
bool says_finished(std::string_view data) {
  auto a_string = [](std::string_view v) { return !v.empty() && v.front() == '"'; };
  return any_member_value(data, "\"finish_reason\"", a_string) ||
         any_member_value(data, "\"stop_reason\"", a_string);
}

// A non-empty string value for `"content"`, `"arguments"` (tool calls), `"refusal"`, the
// reasoning that OpenAI-compatible servers stream beside the content (`"reasoning_content"`:
// vLLM, DeepSeek; `"reasoning"`: Ollama, OpenRouter), or audio (`delta.audio`'s
// `"transcript"` and `"data"`): all output tokens the client got.
bool has_text(std::string_view data) {
  auto non_empty_string = [](std::string_view v) {
    return v.size() >= 2 && v[0] == '"' && v[1] != '"';
  };
  for (const std::string_view key : {"\"content\"", "\"arguments\"", "\"refusal\"",
                                     "\"reasoning_content\"", "\"reasoning\"",
                                     "\"transcript\"", "\"data\""}) {
    if (any_member_value(data, key, non_empty_string)) return true;
  }
  return false;
}

}  // namespace

StreamMeter::Verdict StreamMeter::on_event(std::string_view name, std::string_view data) {
  return surface_ == Surface::kAnthropic ? on_anthropic(name, data) : on_openai(data);
}

StreamMeter::Verdict StreamMeter::on_openai(std::string_view data) {
  if (data == "[DONE]") return Verdict::kFinal;
  if (member_starts_with(data, "\"usage\"", "{")) {
    if (auto usage = meter::openai_usage(data)) {
      openai_ = *usage;
      ++usage_reports_;
      // The usage chunk carries no choices. Usage on a chunk with choices is a running count
      // (vLLM's continuous_usage_stats puts it on every chunk), even beside a finish_reason:
      // with n > 1 the other choices may go on. Upstreams that put their final usage on the
      // finish chunk are billed the same by its count, as their stream ends at its finish.
      const bool choices = has_a_choice(data);
      if (!choices) openai_final_ = true;
      // The chunk Turnpike asked for goes no further; anything else goes through.
      if (drop_usage_chunk_ && !choices) return Verdict::kDrop;
    }
  }
  if (has_text(data)) {
    ++content_events_;
    // A usage chunk the answer went on after was not the final one (a misbehaving upstream
    // would have the rest free): its count is a running one again.
    openai_final_ = false;
  }
  if (!finished_ && says_finished(data)) note_finish(data);
  if (!upstream_failed_ && member_starts_with(data, "\"error\"", "{")) upstream_failed_ = true;
  return Verdict::kForward;
}

void StreamMeter::note_finish(std::string_view data) {
  if (choices_ <= 1) {
    finished_ = true;
    return;
  }
  // Rare (once per choice): parsed, to see which choices this chunk ends.
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  simdjson::dom::array choices;
  if (json::parse_dom(parser, data, doc) || doc["choices"].get_array().get(choices)) {
    return;
  }
  choice_finished_.resize(static_cast<std::size_t>(choices_));
  for (simdjson::dom::element choice : choices) {
    std::string_view reason;
    std::int64_t index = 0;
    if (choice["finish_reason"].get_string().get(reason)) continue;
    if (choice["index"].error() != simdjson::NO_SUCH_FIELD &&
        choice["index"].get_int64().get(index)) {
      continue;
    }
    if (index >= 0 && index < choices_) choice_finished_[static_cast<std::size_t>(index)] = true;
  }
  finished_ = std::all_of(choice_finished_.begin(), choice_finished_.end(),
                          [](bool done) { return done; });
}

StreamMeter::Verdict StreamMeter::on_anthropic(std::string_view name, std::string_view data) {
  if (name == "message_stop") return Verdict::kFinal;
  if (name == "error") upstream_failed_ = true;
  if (name == "content_block_delta") {
    ++content_events_;
    // A message_delta the answer went on after did not end it: its count is a running one
    // again, as an OpenAI usage chunk more content follows.
    anthropic_final_ = false;
  } else if (name == "message_start" || name == "message_delta") {
    const bool counted = anthropic_.on_event(name, data);
    ++usage_reports_;
    if (name == "message_delta") {
      // The final usage is the message_delta that ends the answer (its stop_reason) with its
      // output count, as Anthropic sends it just before message_stop; one before it is a
      // running count, and so is an earlier count when the ending one carries none.
      const bool ends = says_finished(data);
      if (ends) finished_ = true;
      anthropic_final_ = ends && counted && anthropic_.seen();
    }
  }
  return Verdict::kForward;
}

bool StreamMeter::reported() const {
  return surface_ == Surface::kAnthropic ? anthropic_final_ : openai_final_;
}

meter::Usage StreamMeter::usage(std::int64_t input_estimate, std::int64_t output_relayed) const {
  if (reported()) return surface_ == Surface::kAnthropic ? anthropic_.usage() : *openai_;
  meter::Usage u;
  if (surface_ == Surface::kAnthropic) {
    u = anthropic_.usage();  // what the upstream reported so far
    if (!anthropic_.seen()) {  // no well-formed input count
      u.input_tokens = input_estimate;
      u.cached_tokens = u.cache_write_tokens = u.cache_write_1h_tokens = 0;
    }
  } else if (openai_) {
    u = *openai_;  // a running count: its input, and its output so far
  } else {
    u.input_tokens = input_estimate;
  }
  u.output_tokens = std::max(u.output_tokens, output_relayed);
  return u;
}

namespace {

// [begin, end) of the top-level member "usage" of the object `s` (from its '{'), with one
// of the commas around it; nullopt when there is none, or it is the only member.
std::optional<std::pair<std::size_t, std::size_t>> top_level_usage(std::string_view s) {
  std::size_t i = 1;
  std::size_t comma = std::string_view::npos;  // the top-level comma before this member
  while (i < s.size()) {
    i = json::skip_ws(s, i);
    if (i >= s.size() || s[i] != '"') return std::nullopt;
    const std::size_t key_begin = i;
    const std::size_t key_end = json::string_end(s, i);
    if (key_end == std::string_view::npos) return std::nullopt;
    i = json::skip_ws(s, key_end);
    if (i >= s.size() || s[i] != ':') return std::nullopt;
    i = json::skip_ws(s, i + 1);
    const std::size_t end = json::value_end(s, i);
    if (end == std::string_view::npos) return std::nullopt;
    const std::size_t after = json::skip_ws(s, end);
    if (s.substr(key_begin, key_end - key_begin) == "\"usage\"") {
      // A literal (null) goes with the space after it, up to the comma or close.
      const bool literal = s[i] != '"' && s[i] != '{' && s[i] != '[';
      if (comma != std::string_view::npos) return std::make_pair(comma, literal ? after : end);
      if (after < s.size() && s[after] == ',') return std::make_pair(key_begin, after + 1);
      return std::nullopt;
    }
    if (after >= s.size() || s[after] != ',') return std::nullopt;  // the last member, or bad
    comma = after;
    i = after + 1;
  }
  return std::nullopt;
}

}  // namespace

void append_without_usage(std::string& out, std::string_view raw, std::string_view data) {
  // Only where a usage may be (a cheap look), and only a top-level member of the chunk.
  if (raw.find("\"usage\"") == std::string_view::npos) {
    out.append(raw);
    return;
  }
  // One data: line: `data` lies within `raw` (a comment line before it may hold a brace).
  const auto inside = [&](const char* p) {
    return std::less_equal<const char*>()(raw.data(), p) &&
           std::less_equal<const char*>()(p, raw.data() + raw.size());
  };
  if (!data.empty() && inside(data.data()) && inside(data.data() + data.size())) {
    const std::size_t object = data.find('{');
    const std::size_t offset = static_cast<std::size_t>(data.data() - raw.data()) + object;
    if (const auto usage =
            object == std::string_view::npos ? std::nullopt : top_level_usage(raw.substr(offset))) {
      out.append(raw.substr(0, offset + usage->first));
      out.append(raw.substr(offset + usage->second));
    } else {
      out.append(raw);  // none at the top, or not what it seemed: left alone
    }
    return;
  }
  // A chunk spread over several data: lines, which SSE reads joined by line breaks: its
  // other lines kept, it goes out as one data: line (JSON has a line break only between
  // tokens, where a space does as well).
  const std::size_t object = data.find('{');
  const auto usage = data.find('\n') == std::string_view::npos || object == std::string_view::npos
                         ? std::nullopt
                         : top_level_usage(data.substr(object));
  if (!usage) {
    out.append(raw);  // none at the top, or not what it seemed: left alone
    return;
  }
  for (std::size_t at = 0; at < raw.size();) {
    std::size_t eol = http::find_line_break(raw, at);
    if (eol == std::string_view::npos) eol = raw.size();
    const std::string_view line = raw.substr(at, eol - at);
    if (!line.empty() && !line.starts_with("data:") && line != "data") {
      out.append(line).append(1, '\n');
    }
    at = eol + (raw.substr(eol).starts_with("\r\n") ? 2 : 1);
  }
  const std::size_t begin = out.size();
  out.append("data: ");
  out.append(data.substr(0, object + usage->first));
  out.append(data.substr(object + usage->second));
  std::replace(out.begin() + static_cast<std::ptrdiff_t>(begin), out.end(), '\n', ' ');
  out.append("\n\n");
}

}  // namespace tp::api
