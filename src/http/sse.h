#pragma once
// Server-sent events framing (WHATWG HTML, "Server-sent events"): events are separated by a
// blank line; lines end in LF, CRLF or CR. Turnpike relays whole events, so it must know
// where each one ends while bytes arrive in arbitrary pieces.

#include <cstddef>
#include <string>
#include <string_view>

namespace tp::http {

// Length of the prefix of `data` that holds only complete events (0 if none is complete).
// `data` may end in the middle of an event or of a line terminator.
std::size_t sse_complete_prefix(std::string_view data);

// The same for a buffer that grows at its end and is consumed from its front, reading each
// byte once: an event that arrives in many pieces is not scanned again from its start at
// every piece.
class SseFramer {
 public:
  // `data`: the buffer, which holds what it held at the last call (less what was consumed)
  // and maybe more after it.
  std::size_t complete_prefix(std::string_view data);
  // The first `n` bytes of the buffer, at most its complete prefix, were dropped.
  void consumed(std::size_t n);

 private:
  std::size_t scanned_ = 0;     // bytes scanned so far
  bool at_line_start_ = true;   // the scan's state there
  bool after_cr_ = false;       // ...and whether the last byte scanned was a CR
  std::size_t complete_ = 0;    // the complete prefix found so far
};

// The SSE standard ignores one byte order mark (U+FEFF) at the start of a stream: drops it
// from `start`, a stream's first bytes. False while they may still be the start of one
// (fewer than its three bytes, each of them its own), for the caller to ask again with more.
bool drop_bom(std::string& start);

// Walks the complete events of a prefix returned above, one at a time.
class SseEvents {
 public:
  explicit SseEvents(std::string_view complete) : rest_(complete) {}

  struct Event {
    std::string_view raw;    // the event's bytes including its terminating blank line
    std::string_view name;   // value of the last "event:" field, empty if none
    std::string_view data;   // the values of its "data:" fields, joined by LF as the
                             // SSE standard reads them (OpenAI and Anthropic send one)
  };
  // False when no event is left. An event of several data lines has its `data` in a buffer
  // of this walker, valid until the next call.
  bool next(Event& event);

 private:
  std::string_view rest_;
  std::string joined_;  // the data of an event with more than one data line
};

}  // namespace tp::http
