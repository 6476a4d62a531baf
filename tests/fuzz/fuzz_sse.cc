// Relaying whole SSE events gives back exactly the input bytes however they arrive, and the
// incremental framer finds the events a scan of the whole input finds. (Its prefixes may end
// elsewhere: a CR at the end of a piece ends its line at once, and the LF that may follow in
// the next piece then starts the next prefix.)
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "http/sse.h"

namespace {

using Seen = std::vector<std::pair<std::string, std::string>>;  // each event's name and data

// The events of `complete` that carry a name or data (not a comment or a blank line alone).
void events_of(std::string_view complete, Seen& seen) {
  tp::http::SseEvents events(complete);
  std::size_t covered = 0;
  for (tp::http::SseEvents::Event e; events.next(e);) {
    covered += e.raw.size();
    if (!e.name.empty() || !e.data.empty()) seen.emplace_back(e.name, e.data);
  }
  if (covered != complete.size()) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
  const std::size_t cut = data[0] % (text.size() + 1);
  std::string pending;
  std::string relayed;
  Seen seen;
  tp::http::SseFramer framer;
  for (std::string_view piece : {text.substr(0, cut), text.substr(cut)}) {
    pending.append(piece);
    const std::size_t n = framer.complete_prefix(pending);
    if (n > pending.size()) __builtin_trap();
    events_of(std::string_view(pending).substr(0, n), seen);
    relayed.append(pending, 0, n);
    pending.erase(0, n);
    framer.consumed(n);
  }
  if (relayed + pending != text) __builtin_trap();
  Seen whole;
  events_of(text.substr(0, tp::http::sse_complete_prefix(text)), whole);
  if (seen != whole) __builtin_trap();
  return 0;
}
