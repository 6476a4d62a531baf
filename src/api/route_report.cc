#include "api/route_report.h"

#include <cmath>

#include "api/prober.h"
#include "catalog/catalog.h"
#include "core/json_writer.h"
#include "router/route_stats.h"

namespace tp::api {

namespace {

// Milliseconds to three decimals: percentiles come from buckets 19% wide anyway.
double shown_ms(double ms) { return std::round(ms * 1000) / 1000; }

void write_percentiles(json::Writer& w, std::string_view name,
                       const std::array<std::uint64_t, router::LatencyBuckets::kCount>& h) {
  w.key(name);
  if (router::RouteSnapshot::quantile_ms(h, 0.5) < 0) {
    w.null();
    return;
  }
  w.begin_object();
  w.field("p50", shown_ms(router::RouteSnapshot::quantile_ms(h, 0.50)));
  w.field("p95", shown_ms(router::RouteSnapshot::quantile_ms(h, 0.95)));
  w.field("p99", shown_ms(router::RouteSnapshot::quantile_ms(h, 0.99)));
  w.end_object();
}

}  // namespace

std::string routes_report(const catalog::Catalog& catalog, const router::RouteStats& stats,
                          const ProviderHealth& probes) {
  const std::vector<router::RouteSnapshot> seen = stats.snapshot(std::chrono::steady_clock::now());
  std::string out;
  json::Writer w(out);
  w.begin_object().field("threads", static_cast<std::int64_t>(stats.threads()));
  w.key("data").begin_array();
  for (const catalog::Model& m : catalog.models()) {
    for (const catalog::Route& r : m.routes) {
      const router::RouteSnapshot& s = seen[r.index];
      const catalog::Provider& p = catalog.provider(r);
      w.begin_object().field("model", m.name).field("provider", p.name);
      w.field("upstream_model", r.upstream_model);
      w.field("privacy_tier", catalog::privacy_tier_name(p.privacy_tier));
      w.field("attempts", static_cast<std::int64_t>(s.attempts));
      w.field("served", static_cast<std::int64_t>(s.served));
      w.field("errors", static_cast<std::int64_t>(s.errors));
      w.field("rate_limited", static_cast<std::int64_t>(s.rate_limited));
      w.field("fallbacks", static_cast<std::int64_t>(s.fallbacks));
      w.key("flex").begin_object().field("offered", r.flex.has_value());
      w.field("attempts", static_cast<std::int64_t>(s.flex_attempts));
      w.field("served", static_cast<std::int64_t>(s.flex_served)).end_object();
      write_percentiles(w, "latency_ms", s.latency);
      write_percentiles(w, "ttfb_ms", s.ttfb);
      w.key("tokens_per_second");
      if (const double tps = s.tokens_per_second(); tps < 0) {
        w.null();
      } else {
        w.value(std::round(tps * 10) / 10);
      }
      w.field("circuit_open_on_threads", static_cast<std::int64_t>(s.open_on_threads));
      w.field("provider_up", !probes.down(p.index));
      w.end_object();
    }
  }
  w.end_array().end_object();
  return out;
}

}  // namespace tp::api
