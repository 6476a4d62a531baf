#pragma once
// GET /admin/v1/routes: every route of the catalog with what it has seen since start.

#include <cstdint>
#include <string>

#include "api/notice_counts.h"
#include "store/database.h"

namespace tp::catalog {
class Catalog;
}
namespace tp::router {
class RouteStats;
}

namespace tp::api {

class ProviderHealth;

std::string routes_report(const catalog::Catalog& catalog, const router::RouteStats& stats,
                          const ProviderHealth& probes);

// What /metrics shows beside the routes.
struct GatewayGauges {
  bool billing_frozen = false;
  std::uint64_t store_commits = 0;  // store transactions ended (Writer::Stats)
  std::uint64_t store_pieces = 0;   // pieces of work they carried
  store::Database::LogStats store_log;  // the store's write-ahead log
  // Low-balance notices handed to the webhook: delivered, failed (every attempt), dropped
  // (the queue full); all 0 without a webhook. Null: not shown.
  const NoticeCounts* notices = nullptr;
};

// GET /metrics: the same statistics in the Prometheus text format (0.0.4), plus whether
// billing is frozen and the store writer's group commits. No customer data: routes,
// providers and counts only.
std::string routes_metrics(const catalog::Catalog& catalog, const router::RouteStats& stats,
                           const ProviderHealth& probes, const GatewayGauges& gauges);

}  // namespace tp::api
