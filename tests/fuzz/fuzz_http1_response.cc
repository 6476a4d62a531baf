// parse_response_head never crashes, and an accepted status is a three-digit code.
#include <cstdint>
#include <string_view>

#include "http/http1.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  tp::http::ResponseHead head;
  std::size_t used = 0;
  if (tp::http::parse_response_head(text, 2048, head, used) == tp::http::ParseStatus::kComplete) {
    if (used > text.size() || head.status < 100 || head.status > 999) __builtin_trap();
  }
  return 0;
}
