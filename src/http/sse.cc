#include "http/sse.h"

namespace tp::http {
namespace {

// Position just past the blank line ending the first event in `s`, or npos.
// A blank line is a line terminator directly after another one.
std::size_t end_of_first_event(std::string_view s) {
  // True at the start of a line; a terminator seen here makes a blank line. A leading blank
  // line is legal and ends an empty event.
  bool at_line_start = true;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (c != '\n' && c != '\r') {
      at_line_start = false;
      continue;
    }
    // A terminator: CRLF counts as one. A lone CR at the end of the data may be the start
    // of a CRLF, so wait for more bytes.
    std::size_t next = i + 1;
    if (c == '\r') {
      if (next == s.size()) return std::string_view::npos;
      if (s[next] == '\n') ++next;
    }
    if (at_line_start) return next;
    at_line_start = true;
    i = next - 1;
  }
  return std::string_view::npos;
}

std::string_view strip_value(std::string_view line, std::size_t colon) {
  std::string_view v = line.substr(colon + 1);
  if (!v.empty() && v.front() == ' ') v.remove_prefix(1);
  return v;
}

}  // namespace

std::size_t sse_complete_prefix(std::string_view data) {
  std::size_t done = 0;
  for (;;) {
    const std::size_t end = end_of_first_event(data.substr(done));
    if (end == std::string_view::npos) return done;
    done += end;
  }
}

bool SseEvents::next(Event& event) {
  if (rest_.empty()) return false;
  std::size_t end = end_of_first_event(rest_);
  if (end == std::string_view::npos) end = rest_.size();  // tolerate a missing blank line
  event = Event{rest_.substr(0, end), {}, {}};
  bool have_data = false;
  std::string_view body = event.raw;
  while (!body.empty()) {
    std::size_t eol = body.find_first_of("\r\n");
    std::string_view line = body.substr(0, eol);
    if (eol == std::string_view::npos) {
      body = {};
    } else {
      std::size_t skip = eol + 1;
      if (body[eol] == '\r' && skip < body.size() && body[skip] == '\n') ++skip;
      body.remove_prefix(skip);
    }
    if (line.empty() || line.front() == ':') continue;
    const std::size_t colon = line.find(':');
    const std::string_view field = line.substr(0, colon);
    const std::string_view value =
        colon == std::string_view::npos ? std::string_view{} : strip_value(line, colon);
    if (field == "event") {
      event.name = value;
    } else if (field == "data" && !have_data) {
      event.data = value;
      have_data = true;
    }
  }
  rest_.remove_prefix(end);
  return true;
}

}  // namespace tp::http
