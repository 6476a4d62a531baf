#pragma once
// Background health probes of every provider. Every routing.probe_interval_ms each
// provider's model list is fetched (GET {base_url}/models, with its credentials): any answer
// below 500 means it is reachable; a refused or failed connection, a timeout or a 5xx is a
// failed probe. After routing.probe_failures failed probes in a row the provider is marked
// down, and every I/O thread skips its routes until a probe answers again. Runs its own
// thread and event loop; request threads only read the marks.

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "http/loop_thread.h"
#include "http/upstream.h"

namespace tp::api {

class GatewayState;

// What the probes found, per provider; written by the prober, read by any thread.
class ProviderHealth {
 public:
  explicit ProviderHealth(std::size_t providers) : providers_(providers) {}

  // When the provider was marked down (Unix ms), or 0 while it is up.
  std::int64_t down_since_ms(std::size_t provider) const {
    return providers_[provider].down_since_ms.load(std::memory_order_relaxed);
  }
  bool down(std::size_t provider) const { return down_since_ms(provider) != 0; }
  // Failed probes in a row.
  std::uint32_t failures(std::size_t provider) const {
    return providers_[provider].failures.load(std::memory_order_relaxed);
  }
  std::uint64_t probes() const { return probes_.load(std::memory_order_relaxed); }

  // Across a reload: provider `provider` starts with the marks of `from`'s `from_provider`
  // (the same upstream in the catalog before). Before the new state's prober starts.
  void carry(std::size_t provider, const ProviderHealth& from, std::size_t from_provider);

  // The prober's writes. Returns true when the provider's mark changed.
  bool record(std::size_t provider, bool answered, std::uint32_t failures_to_mark_down,
              std::int64_t now_ms);

 private:
  struct Provider {
    std::atomic<std::int64_t> down_since_ms{0};
    std::atomic<std::uint32_t> failures{0};
  };
  std::vector<Provider> providers_;
  std::atomic<std::uint64_t> probes_{0};
};

class Prober {
 public:
  // Nothing to run (and nullptr) when routing.probe_interval_ms is 0.
  static std::unique_ptr<Prober> start(std::shared_ptr<const GatewayState> state);
  // Stops the probes, abandoning those in progress (their frames go with the loop).
  // Idempotent.
  void stop();
  ~Prober();

 private:
  explicit Prober(std::shared_ptr<const GatewayState> state);
  http::Task<void> run();
  // Probes provider `i` every interval, until stopped.
  http::Task<void> watch(std::size_t i);
  // One probe: ok when the provider answered below 500.
  http::Task<Status> probe(std::size_t provider);

  std::shared_ptr<const GatewayState> state_;
  http::LoopThread loop_;
  std::unique_ptr<http::UpstreamPool> pool_;
  std::vector<std::unique_ptr<http::Timer>> sleeps_;  // one per provider
  bool stopping_ = false;  // on the loop thread
};

}  // namespace tp::api
