#pragma once
// What became of the low-balance notices handed to the webhook, for /metrics (kept apart
// from notifier.h, which brings the HTTP client with it).

#include <atomic>
#include <cstdint>

namespace tp::api {

// Thread-safe.
struct NoticeCounts {
  std::atomic<std::uint64_t> delivered{0};  // a 2xx answer
  std::atomic<std::uint64_t> failed{0};     // every attempt failed
  std::atomic<std::uint64_t> dropped{0};    // the queue was full: recorded, not sent
};

}  // namespace tp::api
