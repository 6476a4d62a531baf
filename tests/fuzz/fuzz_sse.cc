// Relaying whole SSE events gives back exactly the input bytes however they arrive, and the
// incremental framer finds the same complete prefixes as a scan of the whole buffer.
#include <cstdint>
#include <string>
#include <string_view>

#include "http/sse.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
  const std::size_t cut = data[0] % (text.size() + 1);
  std::string pending;
  std::string relayed;
  tp::http::SseFramer framer;
  for (std::string_view piece : {text.substr(0, cut), text.substr(cut)}) {
    pending.append(piece);
    const std::size_t n = tp::http::sse_complete_prefix(pending);
    if (n > pending.size()) __builtin_trap();
    if (framer.complete_prefix(pending) != n) __builtin_trap();
    tp::http::SseEvents events(std::string_view(pending).substr(0, n));
    tp::http::SseEvents::Event e;
    std::size_t seen = 0;
    while (events.next(e)) seen += e.raw.size();
    if (seen != n) __builtin_trap();
    relayed.append(pending, 0, n);
    pending.erase(0, n);
    framer.consumed(n);
  }
  if (relayed + pending != text) __builtin_trap();
  return 0;
}
