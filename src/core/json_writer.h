#pragma once
// Appending JSON text to a std::string without a DOM. Used for error bodies, logs, admin
// answers and the simulator; request bodies are never re-serialised through it.

#include <cstdint>
#include <string>
#include <string_view>

namespace tp::json {

// Appends `s` as a quoted JSON string, escaping as RFC 8259 requires.
void append_quoted(std::string& out, std::string_view s);
std::string quoted(std::string_view s);

// The longest prefix of `s` of at most `max_bytes` that is well-formed UTF-8 (it ends
// before a sequence the cut would split, or the first byte that is not UTF-8): for quoting
// a piece of a client's text in a message that must stay valid UTF-8.
std::string_view utf8_prefix(std::string_view s, std::size_t max_bytes);

// A small builder that tracks commas. Keys are written quoted and escaped.
class Writer {
 public:
  explicit Writer(std::string& out) : out_(out) {}

  Writer& begin_object();
  Writer& end_object();
  Writer& begin_array();
  Writer& end_array();
  Writer& key(std::string_view k);
  Writer& value(std::string_view v);
  Writer& value(const char* v) { return value(std::string_view(v)); }
  Writer& value(std::int64_t v);
  Writer& value(int v) { return value(static_cast<std::int64_t>(v)); }
  Writer& value(double v);
  Writer& value(bool v);
  Writer& null();
  Writer& raw(std::string_view json);  // an already-encoded JSON value

  template <typename T>
  Writer& field(std::string_view k, T v) {
    key(k);
    return value(v);
  }

 private:
  void comma();
  std::string& out_;
  bool need_comma_ = false;
};

}  // namespace tp::json
