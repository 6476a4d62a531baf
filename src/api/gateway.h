#pragma once
// The client-facing API: the OpenAI surface (/v1/chat/completions, /v1/embeddings,
// /v1/models) and the Anthropic surface (/v1/messages), health endpoints, and the path
// from a client request to an upstream and back.
//
// GatewayState is built once from config and shared read-only by every I/O thread; each
// thread has its own Gateway (a Handler) with its own upstream connection pools.

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <utility>
#include <string>
#include <vector>

#include "api/services.h"
#include "catalog/catalog.h"
#include "http/server.h"
#include "http/upstream.h"
#include "ops/config.h"

namespace tp::router {
class RouteStats;
}

namespace tp::api {

class ProviderHealth;

class GatewayState {
 public:
  // Resolves provider URLs and TLS trust; fails on an unreadable CA file.
  static Result<std::shared_ptr<const GatewayState>> create(const ops::Config& config,
                                                            Services services);

  const ops::Config& config() const { return config_; }
  const catalog::Catalog& catalog() const { return *config_.catalog; }
  const http::UpstreamEndpoint& endpoint(std::size_t provider) const { return endpoints_[provider]; }
  // Per provider: the Host and credential header lines, preformatted once.
  const std::string& head_lines(std::size_t provider) const { return head_lines_[provider]; }
  // When the catalog was loaded (the models' "created").
  std::int64_t models_created() const { return models_created_; }
  std::size_t provider_count() const { return endpoints_.size(); }
  const Services& services() const { return services_; }
  // Every route's statistics; each thread writes its own block of it.
  router::RouteStats& route_stats() const { return *route_stats_; }
  // What the background probes found about each provider.
  ProviderHealth& provider_health() const { return *provider_health_; }

 private:
  GatewayState(const ops::Config& config, Services services)
      : config_(config), services_(std::move(services)) {}
  ops::Config config_;
  Services services_;
  std::unique_ptr<http::HostResolver> resolver_;
  std::vector<http::UpstreamEndpoint> endpoints_;
  std::vector<std::string> head_lines_;
  std::int64_t models_created_ = 0;
  std::shared_ptr<router::RouteStats> route_stats_;
  std::shared_ptr<ProviderHealth> provider_health_;
};

// The GatewayState requests are served with, replaced whole by a reload. Any thread may
// read it; each I/O thread notices a new version at its next request.
class StateHub {
 public:
  explicit StateHub(std::shared_ptr<const GatewayState> state) : state_(std::move(state)) {}
  std::shared_ptr<const GatewayState> current() const {
    std::lock_guard lock(mu_);
    return state_;
  }
  std::uint64_t version() const { return version_.load(std::memory_order_acquire); }
  // Called by the thread that reloads (the main thread), never by an I/O thread.
  void publish(std::shared_ptr<const GatewayState> state) {
    std::shared_ptr<const GatewayState> replaced;
    {
      std::lock_guard lock(mu_);
      replaced = std::exchange(state_, std::move(state));
    }
    version_.fetch_add(1, std::memory_order_acq_rel);
    // Replaced states are freed here once nothing else holds them, not on an I/O thread
    // dropping the last reference: freeing one stops its resolver thread, which may be in
    // the middle of a DNS lookup.
    retired_.push_back(std::move(replaced));
    prune();
  }
  // Frees the replaced states nothing serves with any more. Called by the reloading thread
  // at each reload and now and then between, so one goes soon after its last request.
  void prune() {
    std::erase_if(retired_, [](const auto& s) { return s.use_count() == 1; });
  }

 private:
  mutable std::mutex mu_;
  std::shared_ptr<const GatewayState> state_;
  std::atomic<std::uint64_t> version_{1};
  std::vector<std::shared_ptr<const GatewayState>> retired_;  // the reloading thread's only
};

// A new state for a reloaded config: its providers, models and routing settings, with
// everything else (listen, store, limits, billing) as `running` has it, and the same
// services. Fails, changing nothing, when the new catalog cannot be set up.
Result<std::shared_ptr<const GatewayState>> reload_state(const GatewayState& running,
                                                         const ops::Config& fresh);

// Loads the TLS trust store of every https upstream the config names (providers, the
// low-balance webhook), as serving would: what `check-config` checks beyond the file.
Status check_trust_stores(const ops::Config& config);

// Makes one handler per I/O thread. Each serves with a Gateway built from the hub's state;
// after a reload, new requests go to a new Gateway while requests in flight finish on the
// one they started on.
http::HandlerFactory make_gateway_factory(std::shared_ptr<StateHub> hub);

}  // namespace tp::api
