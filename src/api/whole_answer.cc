#include "api/whole_answer.h"

#include <simdjson.h>

#include <algorithm>
#include <array>
#include <optional>
#include <utility>

#include "core/json_dom.h"
#include "core/json_writer.h"

namespace tp::api {
namespace {

using Kind = JsonNode::Kind;

// The chunk's own members an answer keeps (the last given of each); "object" is the
// answer's own, and anything else (OpenAI's random "obfuscation" padding) stays behind.
constexpr std::array<std::string_view, 6> kKept = {"id",    "created",      "model",
                                                   "usage", "service_tier", "system_fingerprint"};

namespace od = simdjson::ondemand;

// `v` as a node. Numbers and booleans keep their own text: one past 64 bits or a double's
// range is valid JSON, and goes to the client as sent.
simdjson::error_code node_of(od::value v, JsonNode& n) {
  od::json_type type;
  if (const auto error = v.type().get(type)) return error;
  switch (type) {
    case od::json_type::null:
      n.kind = Kind::kNull;
      return simdjson::SUCCESS;
    case od::json_type::string: {
      std::string_view text;
      if (const auto error = v.get_string().get(text)) return error;
      n.kind = Kind::kString;
      n.text = std::string(text);
      return simdjson::SUCCESS;
    }
    case od::json_type::array: {
      od::array array;
      if (const auto error = v.get_array().get(array)) return error;
      n.kind = Kind::kArray;
      for (auto element : array) {
        od::value item;
        if (const auto error = element.get(item)) return error;
        if (const auto error = node_of(item, n.items.emplace_back())) return error;
      }
      return simdjson::SUCCESS;
    }
    case od::json_type::object: {
      od::object object;
      if (const auto error = v.get_object().get(object)) return error;
      n.kind = Kind::kObject;
      for (auto field : object) {
        std::string_view key;
        if (const auto error = field.unescaped_key().get(key)) return error;
        n.keys.emplace_back(key);
        if (const auto error = node_of(field.value(), n.items.emplace_back())) return error;
      }
      return simdjson::SUCCESS;
    }
    default: {  // a number or a boolean
      std::string_view raw = v.raw_json_token();
      while (!raw.empty() && (raw.back() == ' ' || raw.back() == '\t' || raw.back() == '\n' ||
                              raw.back() == '\r')) {
        raw.remove_suffix(1);
      }
      n.kind = Kind::kRaw;
      n.text = std::string(raw);
      return simdjson::SUCCESS;
    }
  }
}

JsonNode* member(JsonNode& n, std::string_view key) {
  return const_cast<JsonNode*>(std::as_const(n).find(key));
}

// An array element's "index" (tool calls carry one), as its JSON text.
std::optional<std::string_view> index_of(const JsonNode& n) {
  if (n.kind != Kind::kObject) return std::nullopt;
  const JsonNode* index = n.find("index");
  if (index == nullptr || index->kind != Kind::kRaw) return std::nullopt;
  return index->text;
}

// Folds `delta` (the value of member `key`, or an array element) into `into`.
void merge(JsonNode& into, const JsonNode& delta, std::string_view key) {
  if (delta.kind == Kind::kNull) return;
  if (into.kind == Kind::kNull) {
    into = delta;
    return;
  }
  if (into.kind == Kind::kString && delta.kind == Kind::kString) {
    if (key == "id" || key == "type" || key == "role") {
      if (into.text.empty()) into.text = delta.text;
    } else if (key != "name" || into.text != delta.text) {
      into.text += delta.text;
    }
    return;
  }
  if (into.kind == Kind::kObject && delta.kind == Kind::kObject) {
    for (std::size_t i = 0; i < delta.keys.size(); ++i) {
      if (JsonNode* mine = member(into, delta.keys[i])) {
        merge(*mine, delta.items[i], delta.keys[i]);
      } else {
        into.keys.push_back(delta.keys[i]);
        into.items.push_back(delta.items[i]);
      }
    }
    return;
  }
  if (into.kind == Kind::kArray && delta.kind == Kind::kArray) {
    for (const JsonNode& item : delta.items) {
      const std::optional<std::string_view> index = index_of(item);
      const auto same =
          !index ? into.items.end()
                 : std::find_if(into.items.begin(), into.items.end(),
                                [&](const JsonNode& mine) { return index_of(mine) == index; });
      if (same != into.items.end()) {
        merge(*same, item, {});
      } else {
        into.items.push_back(item);
      }
    }
    return;
  }
  into = delta;
}

void write(json::Writer& w, const JsonNode& n, bool without_index = false) {
  switch (n.kind) {
    case Kind::kNull: w.null(); break;
    case Kind::kRaw: w.raw(n.text); break;
    case Kind::kString: w.value(n.text); break;
    case Kind::kArray:
      w.begin_array();
      for (const JsonNode& item : n.items) write(w, item, without_index);
      w.end_array();
      break;
    case Kind::kObject:
      w.begin_object();
      for (std::size_t i = 0; i < n.keys.size(); ++i) {
        if (without_index && n.keys[i] == "index") continue;
        w.key(n.keys[i]);
        write(w, n.items[i]);
      }
      w.end_object();
      break;
  }
}

// A whole answer's message: role, content and refusal first (null when none came), then
// the rest as streamed; tool calls without the "index" only streams give them.
void write_message(json::Writer& w, const JsonNode& message) {
  w.begin_object().key("role");
  const JsonNode* role = message.find("role");
  if (role != nullptr && role->kind == Kind::kString) w.value(role->text); else w.value("assistant");
  for (const std::string_view key : {"content", "refusal"}) {
    w.key(key);
    if (const JsonNode* v = message.find(key)) write(w, *v); else w.null();
  }
  for (std::size_t i = 0; i < message.keys.size(); ++i) {
    const std::string& key = message.keys[i];
    if (key == "role" || key == "content" || key == "refusal") continue;
    w.key(key);
    write(w, message.items[i], /*without_index=*/key == "tool_calls");
  }
  w.end_object();
}

Status failed(std::string_view what) {
  return {ErrorKind::kUpstreamFailed, std::string(what)};
}

}  // namespace

const JsonNode* JsonNode::find(std::string_view key) const {
  for (std::size_t i = 0; i < keys.size(); ++i) {
    if (keys[i] == key) return &items[i];
  }
  return nullptr;
}

Status WholeAnswer::add(std::string_view data) {
  // Checked whole first: the walk below reads only what it keeps, and on demand.
  thread_local simdjson::dom::parser checker;
  simdjson::dom::element checked;
  if (json::parse_dom(checker, data, checked) != simdjson::SUCCESS || !checked.is_object()) {
    return failed("sent a stream chunk that is not a JSON object");
  }
  thread_local od::parser parser;
  const simdjson::padded_string padded(data);
  od::document doc;
  od::object chunk;
  if (parser.iterate(padded).get(doc) || doc.get_object().get(chunk)) {
    return failed("sent a stream chunk that is not a JSON object");
  }
  const Status unreadable = failed("sent a stream chunk that could not be read");
  top_.kind = Kind::kObject;
  for (auto field : chunk) {
    std::string_view key_view;
    od::value value;
    if (field.unescaped_key().get(key_view) || field.value().get(value)) return unreadable;
    const std::string key(key_view);
    if (key == "choices") {
      od::array list;
      if (value.get_array().get(list)) continue;
      for (auto element : list) {
        od::object c;
        if (element.get_object().get(c)) return failed("sent a choice without an integer index");
        std::int64_t index = 0;
        std::optional<JsonNode> delta;
        std::optional<JsonNode> logprobs;
        std::optional<JsonNode> reason;
        for (auto member : c) {
          std::string_view name;
          od::value v;
          if (member.unescaped_key().get(name) || member.value().get(v)) return unreadable;
          if (name == "index") {
            if (v.get_int64().get(index)) return failed("sent a choice without an integer index");
          } else if (name == "delta" || name == "logprobs" || name == "finish_reason") {
            std::optional<JsonNode>& node =
                name == "delta" ? delta : (name == "logprobs" ? logprobs : reason);
            if (node_of(v, node.emplace())) return unreadable;
          }
        }
        if (index < 0 || index >= choices_asked_) {
          return failed("sent a choice index the request did not ask for");
        }
        Choice& choice = choices_[index];
        if (delta) merge(choice.message, *delta, {});
        if (logprobs) merge(choice.logprobs, *logprobs, {});
        if (reason && reason->kind != Kind::kNull) choice.finish_reason = std::move(*reason);
      }
      continue;
    }
    if (std::find(kKept.begin(), kKept.end(), key) == kKept.end()) continue;
    JsonNode node;
    if (node_of(value, node)) return unreadable;
    if (node.kind == Kind::kNull) continue;
    if (JsonNode* mine = member(top_, key)) {
      *mine = std::move(node);
    } else {
      top_.keys.push_back(key);
      top_.items.push_back(std::move(node));
    }
  }
  return Status::ok();
}

std::string WholeAnswer::build() const {
  std::string out;
  json::Writer w(out);
  auto kept = [&](std::string_view key) {
    if (const JsonNode* v = top_.find(key)) {
      w.key(key);
      write(w, *v);
    }
  };
  w.begin_object();
  kept("id");
  w.field("object", "chat.completion");
  kept("created");
  kept("model");
  w.key("choices").begin_array();
  for (const auto& [index, choice] : choices_) {
    w.begin_object().field("index", index).key("message");
    write_message(w, choice.message);
    w.key("logprobs");
    write(w, choice.logprobs);
    w.key("finish_reason");
    write(w, choice.finish_reason);
    w.end_object();
  }
  w.end_array();
  kept("usage");
  kept("service_tier");
  kept("system_fingerprint");
  w.end_object();
  return out;
}

}  // namespace tp::api
