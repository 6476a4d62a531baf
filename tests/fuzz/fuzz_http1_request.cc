// parse_request_head never crashes, and what it accepts is consistent with its input.
#include <cstdint>
#include <string_view>

#include "http/http1.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  tp::http::RequestHead head;
  std::size_t used = 0;
  if (tp::http::parse_request_head(text, 2048, head, used) == tp::http::ParseStatus::kComplete) {
    if (used > text.size() || used > 2048) __builtin_trap();
    auto inside = [&](std::string_view v) {
      return v.empty() || (v.data() >= text.data() && v.data() + v.size() <= text.data() + used);
    };
    if (!inside(head.method) || !inside(head.target)) __builtin_trap();
    for (const auto& f : head.fields) {
      if (!inside(f.name) || !inside(f.value) || f.name.empty()) __builtin_trap();
    }
    if (head.chunked && head.content_length) __builtin_trap();
  }
  return 0;
}
