#include "core/json_writer.h"

#include <fmt/format.h>

namespace tp::json {

void append_quoted(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out.push_back('"');
  std::size_t run_start = 0;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    out.append(s.data() + run_start, i - run_start);
    run_start = i + 1;
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        out += "\\u00";
        out.push_back(kHex[c >> 4]);
        out.push_back(kHex[c & 0xf]);
    }
  }
  out.append(s.data() + run_start, s.size() - run_start);
  out.push_back('"');
}

std::string quoted(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  append_quoted(out, s);
  return out;
}

std::string_view utf8_prefix(std::string_view s, std::size_t max_bytes) {
  if (s.size() <= max_bytes) return s;
  std::size_t end = max_bytes;
  // Back off the continuation bytes (10xxxxxx) of a sequence the cut would split, and its
  // lead byte.
  while (end > 0 && (static_cast<unsigned char>(s[end]) & 0xC0) == 0x80) --end;
  return s.substr(0, end);
}

void Writer::comma() {
  if (need_comma_) out_.push_back(',');
  need_comma_ = true;
}

Writer& Writer::begin_object() {
  comma();
  out_.push_back('{');
  need_comma_ = false;
  return *this;
}
Writer& Writer::end_object() {
  out_.push_back('}');
  need_comma_ = true;
  return *this;
}
Writer& Writer::begin_array() {
  comma();
  out_.push_back('[');
  need_comma_ = false;
  return *this;
}
Writer& Writer::end_array() {
  out_.push_back(']');
  need_comma_ = true;
  return *this;
}
Writer& Writer::key(std::string_view k) {
  comma();
  append_quoted(out_, k);
  out_.push_back(':');
  need_comma_ = false;
  return *this;
}
Writer& Writer::value(std::string_view v) {
  comma();
  append_quoted(out_, v);
  return *this;
}
Writer& Writer::value(std::int64_t v) {
  comma();
  fmt::format_to(std::back_inserter(out_), "{}", v);
  return *this;
}
Writer& Writer::value(double v) {
  comma();
  fmt::format_to(std::back_inserter(out_), "{}", v);
  return *this;
}
Writer& Writer::value(bool v) {
  comma();
  out_ += v ? "true" : "false";
  return *this;
}
Writer& Writer::null() {
  comma();
  out_ += "null";
  return *this;
}
Writer& Writer::raw(std::string_view json) {
  comma();
  out_ += json;
  return *this;
}

}  // namespace tp::json
