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

}  // namespace tp::api
