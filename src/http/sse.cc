#include "http/sse.h"

#include "core/assert.h"
#include "http/http1.h"

namespace tp::http {
namespace {

// Scans `s` from `at` (where the scan is at the start of a line when `at_line_start`) to
// just past the first blank line, a line terminator directly after another one, and returns
// that position; or to where the bytes run out, returning npos. A leading blank line is
// legal and ends an empty event. Either way `at` and `at_line_start` are left where the
// scan goes on. A CR ends its line at once, as the SSE standard reads it; when it is the
// last byte, `after_cr` says so, and an LF that comes first in the next bytes is its CRLF's.
std::size_t next_event_end(std::string_view s, std::size_t& at, bool& at_line_start,
                           bool& after_cr) {
  for (std::size_t i = at; i < s.size(); ++i) {
    const char c = s[i];
    if (after_cr) {
      after_cr = false;
      if (c == '\n') continue;
    }
    if (c != '\n' && c != '\r') {
      at_line_start = false;
      continue;
    }
    // A terminator: CRLF counts as one.
    std::size_t next = i + 1;
    if (c == '\r') {
      if (next == s.size()) {
        after_cr = true;
      } else if (s[next] == '\n') {
        ++next;
      }
    }
    if (at_line_start) {
      at = next;  // the next event starts on a line of its own
      return next;
    }
    at_line_start = true;
    i = next - 1;
  }
  at = s.size();
  return std::string_view::npos;
}

// Position just past the blank line ending the first event in `s`, or npos.
std::size_t end_of_first_event(std::string_view s) {
  std::size_t at = 0;
  bool at_line_start = true;
  bool after_cr = false;
  return next_event_end(s, at, at_line_start, after_cr);
}

std::string_view strip_value(std::string_view line, std::size_t colon) {
  std::string_view v = line.substr(colon + 1);
  if (!v.empty() && v.front() == ' ') v.remove_prefix(1);
  return v;
}

}  // namespace

std::size_t sse_complete_prefix(std::string_view data) {
  return SseFramer().complete_prefix(data);
}

std::size_t SseFramer::complete_prefix(std::string_view data) {
  for (std::size_t end; (end = next_event_end(data, scanned_, at_line_start_, after_cr_)) !=
                        std::string_view::npos;) {
    complete_ = end;
  }
  return complete_;
}

void SseFramer::consumed(std::size_t n) {
  TP_ASSERT(n <= complete_);
  scanned_ -= n;
  complete_ -= n;
}

bool drop_bom(std::string& start) {
  constexpr std::string_view kBom = "\xEF\xBB\xBF";
  if (start.size() < kBom.size()) return !kBom.starts_with(start);
  if (start.starts_with(kBom)) start.erase(0, kBom.size());
  return true;
}

bool SseEvents::next(Event& event) {
  if (rest_.empty()) return false;
  std::size_t end = end_of_first_event(rest_);
  if (end == std::string_view::npos) end = rest_.size();  // tolerate a missing blank line
  event = Event{rest_.substr(0, end), {}, {}};
  bool have_data = false;
  std::string_view body = event.raw;
  while (!body.empty()) {
    std::size_t eol = find_line_break(body);
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
    } else if (field == "data") {  // rare: copied only then
      if (event.data.data() != joined_.data()) joined_.assign(event.data);
      joined_.append(1, '\n').append(value);
      event.data = joined_;
    }
  }
  rest_.remove_prefix(end);
  return true;
}

}  // namespace tp::http
