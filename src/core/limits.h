#pragma once
// Every bound in Turnpike, named with its unit last. Values here are defaults or hard caps;
// the configurable ones are documented in docs/config.md under the same names.

#include <cstddef>
#include <cstdint>

namespace tp::limits {

// Client side (server).
inline constexpr std::size_t kHeaderBytesMax = 16 * 1024;
// The Messages API's own limit (32 MB): a request its upstream takes is never refused here.
inline constexpr std::size_t kBodyBytesMax = 32 * 1024 * 1024;
inline constexpr std::uint32_t kHeaderTimeoutMs = 10'000;  // first byte to end of headers
inline constexpr std::uint32_t kBodyTimeoutMs = 60'000;    // end of headers to end of body
inline constexpr std::uint32_t kIdleTimeoutMs = 60'000;    // keep-alive wait between requests
inline constexpr std::uint32_t kWriteTimeoutMs = 30'000;   // one write to a client that stalls
inline constexpr std::uint32_t kDrainTimeoutMs = 30'000;   // SIGTERM: wait for in-flight work
inline constexpr std::size_t kConnectionsPerThreadMax = 10'000;
inline constexpr int kIoSpinMicros = 50;  // an I/O thread polls this long before sleeping

// Upstream side (client and pools).
inline constexpr std::uint32_t kUpstreamConnectTimeoutMs = 5'000;
// Request sent → a stream's response headers. Below the fallback deadline (30 s), so a
// stream route that sends none is followed by the next in time.
inline constexpr std::uint32_t kUpstreamFirstByteTimeoutMs = 20'000;
// A whole (non-stream) answer's headers come with its end: as long as both SDKs wait by
// default (10 minutes), so a long generation is not cut off, then run again by the SDK's
// retry.
inline constexpr std::uint32_t kUpstreamAnswerTimeoutMs = 600'000;
inline constexpr std::uint32_t kUpstreamIdleTimeoutMs = 60'000;       // between body reads
inline constexpr std::size_t kUpstreamIdleConnectionsMax = 512;       // per thread, per provider
inline constexpr std::uint32_t kUpstreamPooledIdleMs = 30'000;        // drop older idle ones
inline constexpr std::size_t kUpstreamResponseBytesMax = 32 * 1024 * 1024;
inline constexpr std::size_t kUpstreamHeaderBytesMax = 64 * 1024;
inline constexpr std::size_t kSseEventBytesMax = 4 * 1024 * 1024;
inline constexpr std::size_t kUpstreamReadChunkBytes = 16 * 1024;
inline constexpr int kUpstreamFreshRetriesMax = 1;  // after a failure before any byte
// A connection that closes without a byte of answer is tried again only when it closed this
// soon after the request was written (a keep-alive connection the server had just closed,
// a server refusing at once): later, the upstream may be working on the request, and a
// second send could run (and charge for) it twice.
inline constexpr std::uint32_t kUpstreamRetryWithinMs = 1'000;
inline constexpr std::size_t kRouteAttemptsMax = 3;  // routes tried per request (fallback)
// The longest flex window a request may ask for (start_within): how long the flex tier
// may take to its first byte before the request goes to the standard tier.
inline constexpr std::int64_t kStartWithinMsMax = 3'600'000;

static_assert(kUpstreamReadChunkBytes <= kSseEventBytesMax);
static_assert(kHeaderBytesMax <= kBodyBytesMax);
static_assert(kUpstreamConnectTimeoutMs < kUpstreamFirstByteTimeoutMs);

// Billing.
// One money-moving admin call (credit, refund, trial) moves at most this much: far above any
// real top-up, and far below the ledger's ±9.2 billion USD range.
inline constexpr std::int64_t kMoneyCallUsdMax = 1'000'000'000;
// A key's rpm and tpm: at most a billion a minute.
inline constexpr std::int64_t kKeyRateMax = 1'000'000'000;
inline constexpr std::uint32_t kHoldTimeoutMs = 15 * 60'000;      // a request's hold lapses
inline constexpr std::uint32_t kDisconnectDrainMs = 30'000;       // read on after a client left
inline constexpr std::size_t kDisconnectDrainBytesMax = 8 * 1024 * 1024;

// Config.
inline constexpr std::size_t kConfigBytesMax = 4 * 1024 * 1024;
inline constexpr int kThreadsMax = 256;

}  // namespace tp::limits
