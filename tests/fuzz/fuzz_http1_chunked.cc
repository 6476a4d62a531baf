// The chunked decoder gives the same result however its input is split, and never decodes
// past its limit.
#include <cstdint>
#include <string>
#include <string_view>

#include "http/http1.h"

namespace {
struct Outcome {
  tp::http::ParseStatus status;
  std::string out;
  std::size_t used;
};

Outcome run(std::string_view text, std::size_t cut) {
  tp::http::ChunkedDecoder d;
  Outcome o{tp::http::ParseStatus::kIncomplete, {}, 0};
  for (std::string_view piece : {text.substr(0, cut), text.substr(cut)}) {
    std::size_t used = 0;
    o.status = d.decode(piece, used, o.out, 1024);
    o.used += used;
    if (o.status != tp::http::ParseStatus::kIncomplete) break;
    if (used != piece.size()) __builtin_trap();  // incomplete means all input was taken
  }
  if (o.out.size() > 1024 || d.decoded_bytes() != o.out.size()) __builtin_trap();
  return o;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
  const Outcome whole = run(text, text.size());
  const Outcome split = run(text, data[0] % (text.size() + 1));
  if (whole.status != split.status) __builtin_trap();
  if (whole.status == tp::http::ParseStatus::kComplete &&
      (whole.out != split.out || whole.used != split.used)) {
    __builtin_trap();
  }
  return 0;
}
