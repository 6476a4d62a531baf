#include "api/route_report.h"

#include <fmt/format.h>

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

namespace {

// A Prometheus label value: backslash, quote and newline escaped.
std::string label(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (const char c : v) {
    if (c == '\\' || c == '"') out.push_back('\\');
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out.push_back(c);
  }
  return out;
}

// The histogram's `le` bounds in seconds; each internal bucket is counted under the first
// bound at or above its upper edge (so a count may sit one bound high: the internal buckets
// are 25% wide).
constexpr double kLatencyBoundsSeconds[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                            0.5,   1,    2.5,   5,    10,  30, 60};

void histogram(std::string& out, std::string_view name, const std::string& labels,
               const std::array<std::uint64_t, router::LatencyBuckets::kCount>& h,
               std::uint64_t sum_micros) {
  std::uint64_t total = 0;
  std::size_t b = 0;
  for (const double bound : kLatencyBoundsSeconds) {
    while (b < h.size() &&
           static_cast<double>(router::LatencyBuckets::upper_micros(b)) / 1e6 <= bound) {
      total += h[b++];
    }
    out += fmt::format("{}_bucket{{{},le=\"{}\"}} {}\n", name, labels, bound, total);
  }
  while (b < h.size()) total += h[b++];
  out += fmt::format("{}_bucket{{{},le=\"+Inf\"}} {}\n{}_sum{{{}}} {}\n{}_count{{{}}} {}\n", name,
                     labels, total, name, labels, static_cast<double>(sum_micros) / 1e6, name,
                     labels, total);
}

}  // namespace

std::string routes_metrics(const catalog::Catalog& catalog, const router::RouteStats& stats,
                           const ProviderHealth& probes, const GatewayGauges& gauges) {
  const std::vector<router::RouteSnapshot> seen = stats.snapshot(std::chrono::steady_clock::now());
  struct Counter {
    std::string_view name;
    std::string_view help;
    std::uint64_t router::RouteSnapshot::*field;
  };
  static constexpr Counter kCounters[] = {
      {"turnpike_route_attempts_total",
       "Requests sent to the route, fallback and flex attempts included.",
       &router::RouteSnapshot::attempts},
      {"turnpike_route_served_total", "Responses from the route that went to the client.",
       &router::RouteSnapshot::served},
      {"turnpike_route_errors_total", "Refused or failed connections, timeouts and 5xx answers.",
       &router::RouteSnapshot::errors},
      {"turnpike_route_rate_limited_total", "429 answers.", &router::RouteSnapshot::rate_limited},
      {"turnpike_route_fallbacks_total", "Attempts after which the request moved to another route.",
       &router::RouteSnapshot::fallbacks},
      {"turnpike_route_flex_attempts_total", "Flex-tier attempts.",
       &router::RouteSnapshot::flex_attempts},
      {"turnpike_route_flex_served_total", "Responses served on the flex tier.",
       &router::RouteSnapshot::flex_served},
  };
  // Every route once, in catalog order: its labels and what it has seen.
  struct Series {
    std::string labels;
    const router::RouteSnapshot* seen;
  };
  std::vector<Series> routes;
  for (const catalog::Model& m : catalog.models()) {
    for (const catalog::Route& r : m.routes) {
      routes.push_back({fmt::format("model=\"{}\",provider=\"{}\",upstream_model=\"{}\"",
                                    label(m.name), label(catalog.provider(r).name),
                                    label(r.upstream_model)),
                        &seen[r.index]});
    }
  }
  std::string out;
  for (const Counter& c : kCounters) {
    out += fmt::format("# HELP {} {}\n# TYPE {} counter\n", c.name, c.help, c.name);
    for (const Series& s : routes) {
      out += fmt::format("{}{{{}}} {}\n", c.name, s.labels, s.seen->*c.field);
    }
  }
  out += "# HELP turnpike_route_latency_seconds From sending to the response complete, 200s on "
         "the standard tier.\n# TYPE turnpike_route_latency_seconds histogram\n";
  for (const Series& s : routes) {
    histogram(out, "turnpike_route_latency_seconds", s.labels, s.seen->latency,
              s.seen->latency_micros);
  }
  out += "# HELP turnpike_route_circuit_open_threads I/O threads on which the route's breaker "
         "rests.\n# TYPE turnpike_route_circuit_open_threads gauge\n";
  for (const Series& s : routes) {
    out += fmt::format("turnpike_route_circuit_open_threads{{{}}} {}\n", s.labels,
                       s.seen->open_on_threads);
  }
  out += "# HELP turnpike_provider_up 0 while health probes have the provider marked down.\n"
         "# TYPE turnpike_provider_up gauge\n";
  for (const catalog::Provider& p : catalog.providers()) {
    out += fmt::format("turnpike_provider_up{{provider=\"{}\"}} {}\n", label(p.name),
                       probes.down(p.index) ? 0 : 1);
  }
  out += fmt::format("# HELP turnpike_billing_frozen 1 while a failed reconciliation freezes "
                     "billable traffic.\n# TYPE turnpike_billing_frozen gauge\n"
                     "turnpike_billing_frozen {}\n",
                     gauges.billing_frozen ? 1 : 0);
  out += fmt::format("# HELP turnpike_store_commits_total Store transactions (group commits), "
                     "committed or failed.\n"
                     "# TYPE turnpike_store_commits_total counter\n"
                     "turnpike_store_commits_total {}\n"
                     "# HELP turnpike_store_pieces_total Pieces of work (settlements, admin "
                     "changes) those transactions carried; per transaction, the batch size.\n"
                     "# TYPE turnpike_store_pieces_total counter\n"
                     "turnpike_store_pieces_total {}\n",
                     gauges.store_commits, gauges.store_pieces);
  out += fmt::format("# HELP turnpike_store_log_pages Pages in the store's write-ahead log.\n"
                     "# TYPE turnpike_store_log_pages gauge\n"
                     "turnpike_store_log_pages {}\n"
                     "# HELP turnpike_store_checkpoints_total Checkpoints of the store's log: "
                     "by the background thread, and by the writer finishing one so that the "
                     "log starts over.\n"
                     "# TYPE turnpike_store_checkpoints_total counter\n"
                     "turnpike_store_checkpoints_total{{by=\"background\"}} {}\n"
                     "turnpike_store_checkpoints_total{{by=\"writer\"}} {}\n"
                     "# HELP turnpike_store_writer_checkpoint_pages_total Log pages the writer "
                     "copied itself, between two batches.\n"
                     "# TYPE turnpike_store_writer_checkpoint_pages_total counter\n"
                     "turnpike_store_writer_checkpoint_pages_total {}\n"
                     "# HELP turnpike_store_log_restarts_total Times the store's log started "
                     "over.\n"
                     "# TYPE turnpike_store_log_restarts_total counter\n"
                     "turnpike_store_log_restarts_total {}\n",
                     gauges.store_log.pages, gauges.store_log.background_checkpoints,
                     gauges.store_log.writer_checkpoints, gauges.store_log.writer_pages,
                     gauges.store_log.restarts);
  if (gauges.notices != nullptr) {
    out += fmt::format(
        "# HELP turnpike_low_balance_notices_total Low-balance notices handed to the webhook, "
        "by outcome: delivered, failed (every attempt failed), dropped (the queue was full; "
        "recorded, sent after the next start).\n"
        "# TYPE turnpike_low_balance_notices_total counter\n"
        "turnpike_low_balance_notices_total{{outcome=\"delivered\"}} {}\n"
        "turnpike_low_balance_notices_total{{outcome=\"failed\"}} {}\n"
        "turnpike_low_balance_notices_total{{outcome=\"dropped\"}} {}\n",
        gauges.notices->delivered.load(), gauges.notices->failed.load(),
        gauges.notices->dropped.load());
  }
  return out;
}

}  // namespace tp::api
