#include "api/whole_answer.h"

#include <simdjson.h>

#include <algorithm>
#include <array>
#include <optional>
#include <utility>

#include "core/json_writer.h"

namespace tp::api {
namespace {

using Kind = JsonNode::Kind;

// The chunk's own members an answer keeps (the last given of each); "object" is the
// answer's own, and anything else (OpenAI's random "obfuscation" padding) stays behind.
constexpr std::array<std::string_view, 6> kKept = {"id",    "created",      "model",
                                                   "usage", "service_tier", "system_fingerprint"};

JsonNode node_of(simdjson::dom::element e) {
  JsonNode n;
  switch (e.type()) {
    case simdjson::dom::element_type::NULL_VALUE:
      break;
    case simdjson::dom::element_type::STRING:
      n.kind = Kind::kString;
      n.text = std::string(e.get_string().value_unsafe());
      break;
    case simdjson::dom::element_type::ARRAY: {
      n.kind = Kind::kArray;
      const simdjson::dom::array array = e.get_array().value_unsafe();
      for (simdjson::dom::element item : array) n.items.push_back(node_of(item));
      break;
    }
    case simdjson::dom::element_type::OBJECT: {
      n.kind = Kind::kObject;
      const simdjson::dom::object object = e.get_object().value_unsafe();
      for (auto [key, value] : object) {
        n.keys.emplace_back(key);
        n.items.push_back(node_of(value));
      }
      break;
    }
    default:  // a number or a boolean, as sent
      n.kind = Kind::kRaw;
      n.text = simdjson::minify(e);
      break;
  }
  return n;
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
  thread_local simdjson::dom::parser parser;
  simdjson::dom::object chunk;
  if (parser.parse(data.data(), data.size()).get_object().get(chunk)) {
    return failed("sent a stream chunk that is not a JSON object");
  }
  top_.kind = Kind::kObject;
  for (auto [key, value] : chunk) {
    if (key == "choices") {
      simdjson::dom::array list;
      if (value.get_array().get(list)) continue;
      for (simdjson::dom::element c : list) {
        std::int64_t index = 0;
        if (c["index"].error() != simdjson::NO_SUCH_FIELD && c["index"].get_int64().get(index)) {
          return failed("sent a choice without an integer index");
        }
        if (index < 0 || index >= choices_asked_) {
          return failed("sent a choice index the request did not ask for");
        }
        Choice& choice = choices_[index];
        if (simdjson::dom::element delta; !c["delta"].get(delta)) {
          merge(choice.message, node_of(delta), {});
        }
        if (simdjson::dom::element logprobs; !c["logprobs"].get(logprobs)) {
          merge(choice.logprobs, node_of(logprobs), {});
        }
        if (simdjson::dom::element reason; !c["finish_reason"].get(reason) && !reason.is_null()) {
          choice.finish_reason = node_of(reason);
        }
      }
      continue;
    }
    if (value.is_null() || std::find(kKept.begin(), kKept.end(), key) == kKept.end()) continue;
    const std::string name(key);
    if (JsonNode* mine = member(top_, name)) {
      *mine = node_of(value);
    } else {
      top_.keys.push_back(name);
      top_.items.push_back(node_of(value));
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
