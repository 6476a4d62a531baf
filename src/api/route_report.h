#pragma once
// GET /admin/v1/routes: every route of the catalog with what it has seen since start.

#include <string>

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

// GET /metrics: the same statistics in the Prometheus text format (0.0.4), plus whether
// billing is frozen. No customer data: routes, providers and counts only.
std::string routes_metrics(const catalog::Catalog& catalog, const router::RouteStats& stats,
                           const ProviderHealth& probes, bool billing_frozen);

}  // namespace tp::api
