#pragma once
// TP_ASSERT guards programmer errors: on in debug builds and tests, compiled out in Release.
// TP_CHECK guards invariants whose violation could corrupt money: it is on in every build
// and stops the process. Neither is ever used on outside input.

#include <cstdio>
#include <cstdlib>

namespace tp::detail {
[[noreturn]] inline void assert_failed(const char* expr, const char* file, int line) {
  std::fprintf(stderr, "{\"level\":\"fatal\",\"msg\":\"assertion failed\",\"expr\":\"%s\","
               "\"file\":\"%s\",\"line\":%d}\n", expr, file, line);
  std::abort();
}
}  // namespace tp::detail

#define TP_CHECK(cond) \
  ((cond) ? static_cast<void>(0) : ::tp::detail::assert_failed(#cond, __FILE__, __LINE__))

#if defined(NDEBUG) && !defined(TP_ASSERTS_ON)
#define TP_ASSERT(cond) static_cast<void>(sizeof(cond))  // names stay "used"
#else
#define TP_ASSERT(cond) TP_CHECK(cond)
#endif
