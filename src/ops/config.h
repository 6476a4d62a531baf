#pragma once
// The YAML configuration: parsed and validated once at start-up. Any error names the key,
// the line and what is wrong. Every option and its default is in docs/config.md.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>
#include <string_view>

#include "catalog/catalog.h"
#include "core/money.h"
#include "core/status.h"
#include "http/server.h"
#include "http/upstream.h"
#include "router/breaker.h"
#include "router/rules.h"

namespace tp::ops {

struct RoutingWeights {
  double quality = 0.4;
  double cost = 0.4;
  double latency = 0.2;
};

// routing.breaker_*: a route whose upstream fails this many times in a row is skipped for
// the cooldown, then tried again (one failure reopens it, one success closes it).

// routing.probe_*: background health probes of every provider (api/prober.h).
struct Probe {
  std::uint32_t interval_ms = 15'000;  // 0: no probes
  std::uint32_t timeout_ms = 5'000;    // to the response head
  std::uint32_t failures = 2;          // failed probes in a row that mark a provider down
};

// billing.*: how requests are charged.
struct Billing {
  Money trial_credit = Money::usd(20);  // trial_usd; 0 disables
  // A request's hold lapses by itself after this long (hold_timeout_ms); a request that
  // finishes later is still charged.
  std::uint32_t hold_timeout_ms = limits::kHoldTimeoutMs;
  // After a client leaves mid-stream, how long the upstream is still read for its final
  // usage (disconnect_drain_ms); 0 bills what was relayed at once.
  std::uint32_t disconnect_drain_ms = limits::kDisconnectDrainMs;
  // Scheduled reconciliation: daily at this UTC minute of the day (reconcile_at, "HH:MM",
  // default "03:00"), or every reconcile_every_ms when that is set (> 0).
  int reconcile_at_minute = 3 * 60;
  std::uint64_t reconcile_every_ms = 0;
  // Low-balance notices (low_balance_usd), each raised once per downward crossing; posted
  // to low_balance_webhook when set, first retried after low_balance_retry_ms.
  std::vector<Money> low_balance = {Money::usd(5), Money::usd(1), Money()};
  std::string low_balance_webhook;
  std::string low_balance_webhook_ca_file;
  std::uint32_t low_balance_retry_ms = 1000;

  bool operator==(const Billing&) const = default;
};

struct Config {
  std::string listen_host = "127.0.0.1";
  std::uint16_t listen_port = 8080;
  int threads = 0;  // 0: one per core
  std::string store = "sqlite:turnpike.db";
  std::string redis;
  std::string log_level = "info";
  bool access_log = false;
  http::ServerLimits server;
  http::UpstreamTimeouts upstream;
  // Idle upstream connections kept per I/O thread and provider (upstream.idle_connections_max).
  std::size_t upstream_idle_connections_max = limits::kUpstreamIdleConnectionsMax;
  RoutingWeights weights;
  router::BreakerSettings breaker;  // routing.breaker_*
  Probe probe;
  double auto_quality_floor = 0;  // routing.auto_quality_floor: "auto" skips models below it
  // routing.fallback_deadline_ms: no further route is tried once this long has passed
  // since the first attempt began.
  std::uint32_t fallback_deadline_ms = 30'000;
  // routing.rules, in order: the first that matches a request applies.
  std::vector<router::Rule> rules;
  Billing billing;
  std::shared_ptr<const catalog::Catalog> catalog;
  // cors.allow_origins: browser origins that may call the client API ("*": any); empty:
  // no CORS headers at all. Never the admin API.
  std::vector<std::string> cors_origins;
  // Settings that are valid but likely mistakes: logged at start and reload, printed by
  // check-config.
  std::vector<std::string> warnings;
};

// `source` names the text in error messages (usually the file path).
Result<Config> parse_config(std::string_view yaml, std::string_view source);
Result<Config> load_config(const std::string& path);

// "host:port" as used by `listen`; IPv6 hosts in brackets.
Status parse_listen(std::string_view text, std::string& host, std::uint16_t& port);

}  // namespace tp::ops
