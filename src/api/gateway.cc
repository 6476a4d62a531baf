#include "api/gateway.h"

#include <fmt/format.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <charconv>
#include <cmath>
#include <limits>
#include <chrono>
#include <optional>

#include "api/admin.h"
#include "api/errors.h"
#include "api/request_body.h"
#include "api/stream_meter.h"
#include "api/whole_answer.h"
#include "api/usage_api.h"
#include "api/prober.h"
#include "api/route_report.h"
#include "router/breaker.h"
#include "router/route_stats.h"
#include "router/rules.h"
#include "router/score.h"
#include "core/clock.h"
#include "core/ids.h"
#include "core/json_writer.h"
#include "core/log.h"
#include "core/rfc3339.h"
#include "http/query.h"
#include "http/sse.h"
#include "meter/usage.h"
#include "store/ledger_store.h"
#include "store/usage_store.h"

// GCC 12 inlines the frames of some coroutines here into their callers and then takes the
// frame's release (Asio's awaitable_frame_base::operator delete, which frees what its
// operator new got from aligned_alloc) for a mismatched new and delete. It is not one.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"

namespace tp::api {
namespace {

using http::Header;
using http::Responder;
using http::Task;
using catalog::Api;
namespace asio = boost::asio;

constexpr std::string_view kJson = "application/json";
// CORS: the response headers a browser client may read (the SDKs read these), and the
// request headers a preflight that names none is told it may send.
constexpr std::string_view kCorsExposed =
    "x-request-id, request-id, retry-after, retry-after-ms, x-should-retry, "
    "x-turnpike-cost-usd, x-turnpike-route, x-turnpike-provider, x-turnpike-model, "
    "x-turnpike-fallbacks, x-turnpike-service-tier";
constexpr std::string_view kCorsHeaders =
    "authorization, content-type, x-api-key, anthropic-version, anthropic-beta";
// After a stream's terminator, how long its body's own end is waited for (ms).
constexpr std::uint32_t kBodyEndWaitMs = 20;
constexpr std::string_view kDefaultAnthropicVersion = "2023-06-01";
constexpr std::size_t kErrorBodyDrainBytesMax = 64 * 1024;
constexpr std::size_t kMessagePathBytesMax = 200;
constexpr std::string_view kAutoModel = "auto";  // let the router choose the model too

// kCountTokens: Anthropic's free token count of a Messages request, relayed unbilled.
enum class Operation { kChat, kEmbeddings, kMessages, kCountTokens };

struct OperationInfo {
  std::string_view upstream_suffix;
  Api api;
  Surface surface;
};

OperationInfo info_for(Operation op) {
  switch (op) {
    case Operation::kChat: return {"/chat/completions", Api::kOpenAI, Surface::kOpenAI};
    case Operation::kEmbeddings: return {"/embeddings", Api::kOpenAI, Surface::kOpenAI};
    case Operation::kMessages: return {"/messages", Api::kAnthropic, Surface::kAnthropic};
    case Operation::kCountTokens:
      return {"/messages/count_tokens", Api::kAnthropic, Surface::kAnthropic};
  }
  return {};
}

bool valid_privacy_tier(std::string_view v) {
  return v == "confidential" || v == "cloud" || v == "community";
}

// The tighter of the tiers a request asked for (body field, header); community (any
// provider) when it asked for none.
catalog::PrivacyTier requested_tier(std::string_view body_tier, std::string_view header_tier) {
  catalog::PrivacyTier tier = catalog::PrivacyTier::kCommunity;
  for (const std::string_view t : {body_tier, header_tier}) {
    if (const auto parsed = catalog::parse_privacy_tier(t)) tier = std::min(tier, *parsed);
  }
  return tier;
}

std::string_view weights_source(auth::KeyGrant::WeightsFrom from) {
  switch (from) {
    case auth::KeyGrant::WeightsFrom::kConfig: return "config";
    case auth::KeyGrant::WeightsFrom::kAccount: return "account";
    case auth::KeyGrant::WeightsFrom::kKey: return "key";
  }
  return "config";
}

// start_within values that ask for standard routing.
bool standard_start(std::string_view v) {
  return v == "default" || v == "priority" || v == "auto";
}

// A start_within flex duration `HHh-MMm-SSs` in milliseconds; nullopt when malformed.
std::optional<std::int64_t> flex_duration_ms(std::string_view v) {
  if (v.size() != 11 || v.substr(2, 2) != "h-" || v.substr(6, 2) != "m-" || v[10] != 's') {
    return std::nullopt;
  }
  auto two_digits = [&](std::size_t at) -> int {
    const char a = v[at];
    const char b = v[at + 1];
    if (a < '0' || a > '9' || b < '0' || b > '9') return -1;
    return (a - '0') * 10 + (b - '0');
  };
  const int hours = two_digits(0);
  const int minutes = two_digits(4);
  const int seconds = two_digits(8);
  if (hours < 0 || minutes < 0 || minutes > 59 || seconds < 0 || seconds > 59) {
    return std::nullopt;
  }
  return ((hours * 60 + minutes) * 60 + seconds) * std::int64_t{1000};
}

// Upstream headers worth passing to the client: rate-limit information and the provider's
// own request id (renamed, since x-request-id is Turnpike's).
void forwardable_headers(const std::vector<http::HeaderField>& fields, std::vector<Header>& out) {
  bool request_id = false;  // one x-upstream-request-id, of the first that names one
  for (const auto& f : fields) {
    const std::string_view name = f.name;
    auto starts = [&](std::string_view prefix) {
      return name.size() >= prefix.size() &&
             std::equal(prefix.begin(), prefix.end(), name.begin(),
                        [](char a, char b) { return a == std::tolower(b); });
    };
    // Not the operator's OpenAI organization and project: they identify its account.
    if (starts("openai-organization") || starts("openai-project")) continue;
    // x-should-retry: both SDKs obey the provider's word on retrying over their own rules.
    if (starts("retry-after") || starts("x-ratelimit-") || starts("anthropic-ratelimit-") ||
        starts("openai-") || starts("x-should-retry")) {
      out.push_back({name, f.value});
    } else if (!request_id &&
               (http::iequals(name, "x-request-id") || http::iequals(name, "request-id"))) {
      out.push_back({"x-upstream-request-id", f.value});
      request_id = true;
    }
  }
}

void append_decimal(std::string& out, std::size_t n) {
  char digits[24];
  const auto end = std::to_chars(digits, digits + sizeof digits, n).ptr;
  out.append(digits, end);
}

void append_header(std::string& out, std::string_view name, std::string_view value) {
  out += name;
  out += ": ";
  out += value;
  out += "\r\n";
}

// The request head for one upstream attempt, built by plain appends: this runs for every
// request.
void build_upstream_head(std::string& head, const http::UpstreamEndpoint& endpoint,
                         std::string_view provider_lines, const OperationInfo& info, Api api,
                         const http::Request& req, std::size_t body_bytes, bool stream) {
  head.clear();
  head.reserve(512);
  head += "POST ";
  head += endpoint.url.path;
  head += info.upstream_suffix;
  head += " HTTP/1.1\r\n";
  head += provider_lines;
  head += "Content-Type: application/json\r\nContent-Length: ";
  append_decimal(head, body_bytes);
  head += "\r\n";
  if (api == Api::kAnthropic) {
    const std::string_view version = req["anthropic-version"];
    append_header(head, "anthropic-version", version.empty() ? kDefaultAnthropicVersion : version);
    // Every line of it: repeated lines mean one comma-separated list (RFC 9110 §5.3), and
    // a beta left out may change what the request does and costs.
    for (const http::HeaderField& f : req.headers()) {
      if (http::iequals(f.name, "anthropic-beta") && !f.value.empty()) {
        append_header(head, "anthropic-beta", f.value);
      }
    }
  }
  // Without Accept-Encoding any coding would be acceptable (RFC 9110 §12.5.3): bodies are
  // metered and relayed as they are, so none is.
  head += "Accept-Encoding: identity\r\n";
  head += stream ? "Accept: text/event-stream\r\n\r\n" : "Accept: application/json\r\n\r\n";
}

// An upstream answer that blames the route rather than the request: a server error, the
// operator's key or model refused (401, 403, 404), or a redirect (3xx: a base_url that is
// not the API's; redirects are not followed, and a 304 answers no POST). It counts against
// the route's health, the next route is tried, and the client gets 502 without the
// provider's text (a provider's 401 quotes the operator's key, masked).
bool route_at_fault(unsigned status) {
  return status >= 500 || (status >= 300 && status < 400) || status == 401 || status == 403 ||
         status == 404;
}

// The output every candidate is scored at: the smallest of the candidate models' output
// bounds, an output each of them can give. Without max_tokens each model's own bound would
// make one with a small max_output_tokens look cheap and fast whatever its prices. (Each
// route's hold still covers its own model's bound.) `candidate(i)`: whether models[i] kept
// a route after the constraints; one that did not must not move the others' scores. (With
// none left, the smallest of all, for explain to show.)
std::int64_t scored_output(std::span<const catalog::Model* const> models,
                           const std::function<bool(std::size_t)>& candidate,
                           const std::function<std::int64_t(const catalog::Model&)>& bound) {
  constexpr std::int64_t kNone = std::numeric_limits<std::int64_t>::max();
  std::int64_t of_candidates = kNone;
  std::int64_t of_all = kNone;
  for (std::size_t i = 0; i < models.size(); ++i) {
    const std::int64_t b = bound(*models[i]);
    of_all = std::min(of_all, b);
    if (candidate(i)) of_candidates = std::min(of_candidates, b);
  }
  return of_candidates != kNone ? of_candidates : of_all;
}

// For the client: how each route tried failed, in order, then `last` (how the answer that
// stands failed), if any.
std::string failures_text(std::span<const std::string> failures, std::string_view last) {
  const std::size_t tried = failures.size() + (last.empty() ? 0 : 1);
  std::string out = tried > 1 ? fmt::format("{} routes tried, none served: ", tried) : "";
  for (const std::string& f : failures) {
    if (&f != failures.data()) out += "; ";
    out += f;
  }
  if (!last.empty()) {
    if (!failures.empty()) out += "; ";
    out += last;
  }
  return out;
}

// Whether the first event of a stream that begins with `piece` is an error (Anthropic's
// `error` event, an OpenAI-style `{"error": …}` chunk); keep-alives aside. nullopt while
// `piece` holds no complete event but pings.
std::optional<bool> opens_with_error(std::string_view piece) {
  http::SseEvents events(piece.substr(0, http::sse_complete_prefix(piece)));
  http::SseEvents::Event e;
  while (events.next(e)) {
    if (e.name == "ping" || e.data.empty()) continue;
    if (e.name == "error") return true;
    // `{"error"`, JSON whitespace allowed around the brace.
    std::string_view data = e.data;
    auto skip_space = [&] {
      while (!data.empty() && (data[0] == ' ' || data[0] == '\t' || data[0] == '\r' ||
                               data[0] == '\n')) {
        data.remove_prefix(1);
      }
    };
    skip_space();
    if (!data.starts_with('{')) return false;
    data.remove_prefix(1);
    skip_space();
    return data.starts_with("\"error\"");
  }
  return std::nullopt;
}

// A content coding other than identity, which the upstream was asked not to use: the body
// could be neither metered nor relayed as the client expects it.
bool encoded(const http::UpstreamResponse& response) {
  const std::string_view coding = response.header("content-encoding");
  return !coding.empty() && !http::iequals(coding, "identity");
}

// A request refused before it goes anywhere: status, message and OpenAI error code.
struct Refusal {
  unsigned status;
  std::string message;
  std::string_view code;
  std::uint32_t retry_after_s = 0;  // sent as Retry-After when above 0
};

// What a request's options and its key's policy ask of the router.
struct RouteOptions {
  // The key's or its account's weights, else the configured ones; a preference header
  // replaces them.
  router::Weights weights;
  std::string_view weights_from;  // config, account, key or preference
  // The tighter of the request's tier and its key's policy (which it may only tighten).
  catalog::PrivacyTier tier = catalog::PrivacyTier::kCommunity;
  bool tier_from_policy = false;  // the policy was tighter than what the request asked
  bool tier_asked = false;        // the request named a tier (body or header)
  std::int64_t flex_ms = 0;  // start_within as a flex window; 0: standard routing
};

// Turnpike's option headers as the request sent them (absent: nullopt). Each may come once:
// of two, which one counts would be a guess, and a stricter privacy tier must never be the
// one dropped.
struct OptionHeaders {
  std::optional<std::string_view> tier;        // x-turnpike-privacy-tier
  std::optional<std::string_view> start;       // x-turnpike-start-within
  std::optional<std::string_view> preference;  // x-turnpike-route-preference
};

std::optional<Refusal> read_option_headers(const http::Request& req, OptionHeaders& out) {
  static constexpr std::string_view kPrefix = "x-turnpike-";
  for (const http::HeaderField& f : req.headers()) {
    if (f.name.size() <= kPrefix.size() ||
        !http::iequals(f.name.substr(0, kPrefix.size()), kPrefix)) {
      continue;
    }
    const std::string_view rest = f.name.substr(kPrefix.size());
    std::optional<std::string_view>* slot = nullptr;
    if (http::iequals(rest, "privacy-tier")) slot = &out.tier;
    if (http::iequals(rest, "start-within")) slot = &out.start;
    if (http::iequals(rest, "route-preference")) slot = &out.preference;
    if (slot == nullptr) continue;
    if (*slot) {
      return Refusal{400,
                     fmt::format("x-turnpike-{} appears more than once: send it once",
                                 slot == &out.tier    ? "privacy-tier"
                                 : slot == &out.start ? "start-within"
                                                      : "route-preference"),
                     {}};
    }
    *slot = f.value;
  }
  return std::nullopt;
}

// Checks Turnpike's own request options (privacy tier and start_within, in the body or as
// headers; the route preference header) and reads what they and the key's routing policy
// ask of the router. A start_within in the body wins over the header. A header given
// empty is refused like any other bad value.
std::optional<Refusal> read_options(const RequestBody& body, const http::Request& req,
                                    const ops::RoutingWeights& configured,
                                    const auth::KeyGrant& grant, RouteOptions& out) {
  OptionHeaders headers;
  if (auto refused = read_option_headers(req, headers)) return refused;
  if ((!body.privacy_tier.empty() && !valid_privacy_tier(body.privacy_tier)) ||
      (headers.tier && !valid_privacy_tier(*headers.tier))) {
    return Refusal{400, "privacy_tier must be confidential, cloud or community", {}};
  }
  // The tier an upstream serves on sets its price: Turnpike bills the standard one, the
  // flex one when it ran the flex race itself, and priority where the route prices it (a
  // routing constraint). Any other choice that could change the price would be billed
  // wrong, so it is refused; the neutral values are dropped.
  if (const std::string_view tier = body.service_tier; !tier.empty() && tier != "auto" &&
                                                        tier != "default" &&
                                                        tier != "standard_only" &&
                                                        tier != "priority") {
    return Refusal{400,
                   fmt::format("service_tier '{}' is not accepted: Turnpike routes and bills the "
                               "standard tier (auto, default and standard_only are dropped) and "
                               "priority where a route prices it; ask for the flex tier with "
                               "start_within, e.g. \"00h-00m-30s\"",
                               json::utf8_prefix(tier, 40)),
                   {}};
  }
  out.flex_ms = 0;
  bool start_given = false;
  for (const std::optional<std::string_view> start :
       {body.start_within.empty() ? std::nullopt
                                  : std::optional<std::string_view>(body.start_within),
        headers.start}) {
    if (!start) continue;
    const std::optional<std::int64_t> ms =
        standard_start(*start) ? std::optional<std::int64_t>(0) : flex_duration_ms(*start);
    if (!ms) {
      return Refusal{400,
                     "start_within must be default, priority, auto or a flex duration like "
                     "00h-00m-30s (minutes and seconds below 60)",
                     {}};
    }
    if (start_given) continue;
    start_given = true;
    if (*ms == 0 && !standard_start(*start)) {
      return Refusal{400, "start_within must be a duration of at least 1 second", {}};
    }
    if (*ms > limits::kStartWithinMsMax) {
      return Refusal{400,
                     fmt::format("start_within may be at most {} seconds",
                                 limits::kStartWithinMsMax / 1000),
                     {}};
    }
    out.flex_ms = *ms;
  }
  if (out.flex_ms > 0 && body.service_tier == "priority") {
    return Refusal{400,
                   "service_tier priority and a flex start_within ask for different tiers: "
                   "send one of them",
                   {}};
  }
  const catalog::PrivacyTier asked = requested_tier(body.privacy_tier, headers.tier.value_or(""));
  out.tier_asked = !body.privacy_tier.empty() || headers.tier.has_value();
  out.tier = std::min(asked, grant.privacy_tier);
  out.tier_from_policy = grant.privacy_tier < asked;
  out.weights = grant.weights ? *grant.weights
                              : router::Weights{configured.quality, configured.cost,
                                                configured.latency};
  out.weights_from = weights_source(grant.weights_from);
  if (headers.preference) {
    const auto parsed = router::parse_preference(*headers.preference);
    if (!parsed) {
      return Refusal{400,
                     "x-turnpike-route-preference must be balanced, cost, quality or latency",
                     {}};
    }
    out.weights = router::weights_for(*parsed, out.weights);
    if (*parsed != router::Preference::kBalanced) out.weights_from = "preference";
  }
  return std::nullopt;
}

std::string_view bearer_token(const http::Request& req) {
  return http::bearer_token(req["authorization"]);
}

// Turnpike's response headers about the route that served; the views point into this.
struct RouteHeaders {
  std::string route;
  char fallbacks[8];

  std::vector<Header> of(const catalog::Provider& provider, const catalog::Model& model,
                         double score, const catalog::Route& r, std::size_t failed_attempts,
                         bool flex_asked, bool flex_served) {
    // "provider/model; score=0.8123", formatted by hand: this runs for every response.
    char score_text[32];
    const char* score_end =
        std::to_chars(score_text, score_text + sizeof score_text, score,
                      std::chars_format::fixed, 4).ptr;
    route.clear();
    route.append(provider.name).append("/").append(r.upstream_model).append("; score=");
    route.append(score_text, static_cast<std::size_t>(score_end - score_text));
    const char* end = std::to_chars(fallbacks, fallbacks + sizeof fallbacks, failed_attempts).ptr;
    std::vector<Header> headers;
    headers.reserve(10);
    headers.push_back({"x-turnpike-provider", provider.name});
    headers.push_back({"x-turnpike-model", model.name});  // for "auto", the one chosen
    headers.push_back({"x-turnpike-route", route});
    headers.push_back({"x-turnpike-fallbacks",
                       std::string_view(fallbacks, static_cast<std::size_t>(end - fallbacks))});
    if (flex_asked) {
      headers.push_back({"x-turnpike-service-tier", flex_served ? "flex" : "standard"});
    }
    return headers;
  }
};

// A request's options that change what a provider charges (RequestBody's, which outlives
// these): a route may serve it only if it prices them.
struct PricedOptions {
  std::string_view speed;          // empty: standard
  std::string_view inference_geo;  // empty: global
  bool audio = false;
  bool priority = false;  // OpenAI's service_tier "priority"

  bool none() const { return speed.empty() && inference_geo.empty() && !audio && !priority; }
};

// What `body` asks for that changes a provider's price, on the `api` it was sent to (only
// OpenAI's chat API takes audio: an Anthropic request mentioning "input_audio" does not ask
// for it).
PricedOptions priced_options(const RequestBody& body, Api api) {
  return {body.speed, body.inference_geo, body.wants_audio && api == Api::kOpenAI,
          body.service_tier == "priority"};
}

// A route's prices for one attempt: its flex tier's or its standard ones, times `premium`.
catalog::Prices prices_at(const catalog::Route& route, bool flex, std::uint32_t premium) {
  return catalog::with_premium(flex ? *route.flex : route.prices, premium);
}

// The multiplier `route` charges for `asked`, in catalog::kPremiumOne units; nullopt when
// it does not price one of them.
std::optional<std::uint32_t> premium_for(const catalog::Route& route, const PricedOptions& asked) {
  if (asked.audio && !route.audio_priced) return std::nullopt;
  std::uint32_t premium = catalog::kPremiumOne;
  if (!asked.speed.empty()) {
    if (asked.speed != "fast" || route.fast_premium == 0) return std::nullopt;
    premium = route.fast_premium;
  }
  if (!asked.inference_geo.empty()) {
    const auto it = std::find_if(route.geo_premiums.begin(), route.geo_premiums.end(),
                                 [&](const auto& g) { return g.first == asked.inference_geo; });
    if (it == route.geo_premiums.end()) return std::nullopt;
    premium = catalog::combined_premium(premium, it->second);
  }
  if (asked.priority) {
    if (route.priority_premium == 0) return std::nullopt;
    premium = catalog::combined_premium(premium, route.priority_premium);
  }
  return premium;
}

// Each option of `asked` on its own, kept where `priced` says no to it alone.
template <typename Priced>
PricedOptions each_unpriced(const PricedOptions& asked, const Priced& priced) {
  PricedOptions out;
  if (!asked.speed.empty() && !priced(PricedOptions{asked.speed})) out.speed = asked.speed;
  if (!asked.inference_geo.empty() && !priced(PricedOptions{{}, asked.inference_geo})) {
    out.inference_geo = asked.inference_geo;
  }
  out.audio = asked.audio && !priced(PricedOptions{{}, {}, true});
  out.priority = asked.priority && !priced(PricedOptions{{}, {}, false, true});
  return out;
}

// The options of `asked`, each with the route setting that prices it, for errors and
// explain.
std::string describe(const PricedOptions& asked) {
  std::string out;
  auto add = [&](std::string item) { out += (out.empty() ? "" : ", ") + item; };
  if (!asked.speed.empty()) {
    add(fmt::format("speed \"{}\" ({})", json::utf8_prefix(asked.speed, 40),
                    asked.speed == "fast" ? "a route's fast_multiplier"
                                          : "only \"fast\" can be priced"));
  }
  if (!asked.inference_geo.empty()) {
    add(fmt::format("inference_geo \"{}\" (a route's inference_geo_multipliers)",
                    json::utf8_prefix(asked.inference_geo, 40)));
  }
  if (asked.audio) add("audio (a route's audio_input_per_mtok and audio_output_per_mtok)");
  if (asked.priority) add("service_tier \"priority\" (a route's priority_multiplier)");
  return out;
}

// A request's money from its hold to its usage row.
struct Bill {
  ledger::Bank::Hold hold;  // id 0: nothing held (a free route)
  const catalog::Route* route = nullptr;
  bool flex = false;  // served on the route's flex tier, at its flex prices
  bool embeddings = false;  // an embeddings request: no output, whatever its answer's size
  std::int64_t input_estimate = 0;  // tokens, for when the upstream reports none
  std::int64_t input_max = 0;       // tokens at most (the hold's assumption)
  Money covered;              // what the hold reserves now (cover() may extend it)
  bool may_overdraw = false;  // this response has the account's overdraft licence
  bool lapsed = false;        // the hold lapsed (found at a renewal): cover() takes a new one
  // The response was stopped because the account could not cover it: it is charged what
  // it holds at most (see settle).
  bool capped = false;
  bool over_budget = false;  // what stopped it was the key's budget, not the balance
  // Content events past which a stream is cut: well beyond the max_tokens the client asked
  // for (0: it asked for none). A provider that ignores it would have the client pay for
  // all it sends.
  std::int64_t output_events_max = 0;
  // The most a provider's usage report is believed to say (0: no bound), set once the route
  // that serves is known: output well beyond the max_tokens asked for (else the model's
  // max_output_tokens), for each completion; input well beyond the model's context (not
  // bounded when tools or searches may read more than one context's worth). A report past
  // either is charged what was held at most (see believable). (Output past the model's
  // max_output_tokens but within a max_tokens asked for is believed: a catalog may say less
  // than the model can do, and that shortfall is the account's to pay.)
  std::int64_t output_believed_max = 0;
  std::int64_t input_believed_max = 0;
  std::int64_t searches_believed_max = 0;  // server-side web searches (always checked)
  bool doubted = false;  // a report was past them: warned of, and the charge capped
  std::chrono::steady_clock::time_point started;
  store::UsageRecord record;
  bool closed = false;  // settled or voided
  // What it took of its key's limits: given back when it ends unsettled.
  auth::KeyUse key;
  // Searches the request is by itself (OpenAI's search models, asked with
  // web_search_options, search once per request and report no count).
  std::int64_t search_calls = 0;
  // The price-changing options it asked for, and their multiplier on the route that serves
  // (settle takes what the provider says served, where it says).
  PricedOptions asked;
  std::uint32_t premium = catalog::kPremiumOne;
  // The prices it is charged at: the route's flex tier's when it served there.
  catalog::Prices prices() const { return prices_at(*route, flex, premium); }
  std::chrono::steady_clock::time_point renew_at;  // when keep_hold next extends the hold
  std::chrono::steady_clock::time_point sent_at;     // the serving attempt went upstream
  std::chrono::steady_clock::time_point first_byte;  // upstream response headers arrived
  bool stream = false;  // only streams measure a route's latency (see observe_ttfb)
  // Its client, watched while the upstream works, and the cutoff on every upstream wait
  // that the client's departure sets: the disconnect drain from then on.
  const Responder* client = nullptr;
  std::shared_ptr<http::CoarseClock::time_point> cutoff;
  bool client_gone() const { return client != nullptr && client->client_gone(); }
  // The status of its usage row: what the client got, 499 when it went away.
  int status_for(unsigned sent) const { return client_gone() ? 499 : static_cast<int>(sent); }
};

// How a response the bill cannot cover is refused: for want of the account's balance, or
// of its key's budget.
struct Uncovered {
  std::string_view reason;  // how the message starts
  std::string_view source;  // what does not cover it
  std::string_view code;
};
Uncovered uncovered(const Bill& bill) {
  return bill.over_budget
             ? Uncovered{"budget exceeded", "key's budget", "budget_exceeded"}
             : Uncovered{"insufficient balance", "account's balance", "insufficient_balance"};
}

// From here `bill`'s client is watched: once it has gone, every upstream wait of the
// request ends within `drain`.
void watch_client(Bill& bill, http::Responder& res, std::chrono::milliseconds drain) {
  bill.client = &res;
  bill.cutoff =
      std::make_shared<http::CoarseClock::time_point>(http::CoarseClock::time_point::max());
  res.watch_client([cutoff = bill.cutoff, drain] { *cutoff = http::CoarseClock::now() + drain; });
}

// A flex attempt whose provider says it served another tier (OpenAI's `service_tier`:
// "default" where flex was asked) is billed and recorded as standard: charged flex prices,
// the customer would pay less than the operator and the row would claim a saving never made.
void take_served_tier(Bill& bill, const meter::Usage& usage) {
  if (!bill.flex || usage.service_tier.empty() || usage.service_tier == "flex") return;
  bill.flex = false;
  log::warn("upstream served a flex attempt at another tier; billed at standard prices",
            {{"request_id", bill.record.request_id},
             {"provider", bill.record.provider},
             {"service_tier", json::utf8_prefix(usage.service_tier, 40)}});
}

// The multiplier of what served `bill`, where the provider says (Anthropic reports the speed
// and region it served at: fast mode may fall back to standard, and a workspace's default
// region applies to a request that names none); else that of what was asked. Each is taken
// on its own, where the route prices it; one it does not is charged as asked, and with
// `warn` logged.
std::uint32_t served_premium(const Bill& bill, const meter::Usage& usage, bool warn) {
  PricedOptions served = bill.asked;  // priced: the route was admitted for it
  served.audio = false;               // priced per token, not by a multiplier
  const std::string_view speed = usage.speed;  // views into `usage`, not into temporaries
  const std::string_view geo = usage.inference_geo;
  bool unpriced = false;
  // `served` with one part as reported, where the route prices it.
  auto take = [&](auto&& reported) {
    PricedOptions next = served;
    reported(next);
    if (premium_for(*bill.route, next)) served = next; else unpriced = true;
  };
  if (!speed.empty()) {
    take([&](PricedOptions& o) { o.speed = speed == "standard" ? std::string_view() : speed; });
  }
  if (!geo.empty()) {
    take([&](PricedOptions& o) { o.inference_geo = geo == "global" ? std::string_view() : geo; });
  }
  // OpenAI's tier (a project's default may be priority); a flex answer is priced as flex.
  if (const std::string_view tier = usage.service_tier; !tier.empty() && !bill.flex) {
    take([&](PricedOptions& o) { o.priority = tier == "priority"; });
  }
  if (unpriced && warn) {
    log::warn("upstream served at a speed, region or tier its route does not price; charged "
              "that part as asked",
              {{"request_id", bill.record.request_id},
               {"provider", bill.record.provider},
               {"speed", json::utf8_prefix(speed, 40)},
               {"inference_geo", json::utf8_prefix(geo, 40)},
               {"service_tier", json::utf8_prefix(usage.service_tier, 40)}});
  }
  return premium_for(*bill.route, served).value_or(bill.premium);
}

// `usage` with the searches `bill`'s request is by itself, where the provider reports none.
meter::Usage with_search_calls(const Bill& bill, meter::Usage usage) {
  usage.web_searches = std::max(usage.web_searches, bill.search_calls);
  return usage;
}

// A request's bill before its hold: who pays, for what, first on `route`.
Bill open_bill(const catalog::Route& route, const catalog::Model& model,
               const auth::KeyGrant& grant, bool stream, std::int64_t input_estimate,
               std::string_view request_id, std::chrono::steady_clock::time_point started) {
  Bill bill;
  bill.route = &route;
  bill.started = started;
  bill.stream = stream;
  bill.input_estimate = input_estimate;
  bill.record.request_id = request_id;
  bill.record.account_id = grant.account_id;
  bill.record.key_id = grant.key_id;
  bill.record.at_ms = SystemClock::instance().unix_millis();
  bill.record.model = model.name;
  return bill;
}

// The output a request may produce on `model`, for its hold: min(max_tokens, the model's
// max_output_tokens) for each of its `n` completions.
std::int64_t output_bound(const RequestBody& body, const catalog::Model& model) {
  const std::int64_t each = std::min<std::int64_t>(
      body.max_tokens.value_or(model.max_output_tokens), model.max_output_tokens);
  return each * body.choices;
}

// The input a provider adds to a request that declares tools: its tool-use system prompt
// (Anthropic documents 159 to 530 tokens, by model).
constexpr std::int64_t kToolPromptTokensMax = 1000;

// An upper bound of a request's input tokens: a token is at least one byte of the text,
// and the JSON around the text is longer than the tokens that frame the messages, plus the
// tool-use prompt a provider adds when the request declares tools; base64 media at their
// bounds (RequestBody::media_tokens_max). (Images and documents by reference and what
// server tools fetch are not counted: what they add is charged as a shortfall over the
// hold.)
std::int64_t input_tokens_max(const RequestBody& body) {
  return static_cast<std::int64_t>(body.text.size() - body.media_bytes) +
         body.media_tokens_max + (body.has_tools ? kToolPromptTokensMax : 0);
}

// `tokens` and a margin: the larger of 64 and an eighth more. Usage past a bound by less is
// a provider counting differently (events that are no tokens, another tokenizer); past it
// by more, a provider that ignores the bound, or miscounts.
std::int64_t with_margin(std::int64_t tokens) {
  return tokens + std::max<std::int64_t>(64, tokens / 8);
}

// Whether a usage report is within what the request can have used (Bill::output_believed_max,
// input_believed_max). One that is not caps the charge at what was held (the hold is not
// extended for it), and is warned of once: without a bound, the one response licensed to
// overdraw could take whatever a provider claimed.
bool believable(Bill& bill, const meter::Usage& reported) {
  if (bill.doubted) return false;
  const std::int64_t input = reported.uncached_input() + reported.cached_tokens;
  std::string_view past;  // what the report claims more of than the request can have
  if (bill.output_believed_max > 0 && reported.output_tokens > bill.output_believed_max) {
    past =
        "far more output than the request's max_tokens (else its model's max_output_tokens) "
        "allows";
  } else if (bill.input_believed_max > 0 && input > bill.input_believed_max) {
    past = bill.embeddings ? "far more input than the embeddings request holds"
                           : "far more input than its model's context_tokens allows";
  } else if (reported.web_searches > bill.searches_believed_max) {
    past = "more web searches than the request allows (its tools' max_uses)";
  } else {
    return true;
  }
  bill.doubted = true;
  bill.capped = true;
  log::warn(fmt::format("upstream reported {}; charging what was held at most", past),
            {{"request_id", bill.record.request_id},
             {"provider", bill.record.provider},
             {"output_tokens", reported.output_tokens},
             {"input_tokens", input},
             {"web_searches", reported.web_searches}});
  return false;
}

// A typical count rather than a bound: the text a quarter of its bytes, base64 payloads as
// RequestBody counts them (an image is no 4 bytes a token).
std::int64_t input_tokens_estimate(const RequestBody& body) {
  return static_cast<std::int64_t>((body.text.size() - body.media_bytes + 3) / 4) +
         body.media_tokens;
}

// What `usage` costs without its output tokens.
Money cost_before_output(meter::Usage u, const catalog::Prices& prices) {
  u.output_tokens = u.audio_output_tokens = 0;
  return meter::price(u, prices);
}

// What the input part of a cost is; the output part is the rest (output tokens and
// server-side searches), so the two always sum to the cost.
Money input_cost(meter::Usage u, const catalog::Prices& prices) {
  u.web_searches = 0;
  return cost_before_output(u, prices);
}

// How many output tokens fit in `covered` after the rest of `usage` (its output is
// ignored) at `prices`, each at the higher of the text and audio output prices.
std::int64_t output_room(Money covered, const meter::Usage& usage,
                         const catalog::Prices& prices) {
  const Money left = covered - cost_before_output(usage, prices);
  if (left < Money()) return 0;
  const catalog::Prices paid =
      catalog::for_input(prices, usage.uncached_input() + usage.cached_tokens);
  const PricePerMtok per_token = std::max(paid.output, paid.audio_output);
  if (per_token.nanos() == 0) return std::numeric_limits<std::int64_t>::max();
  __extension__ using Int128 = __int128;
  const Int128 room = static_cast<Int128>(left.nanos()) * 1'000'000 / per_token.nanos();
  // The input part was rounded up on its own, so `room` tokens always fit (one more may).
  return room >= meter::kTokensMax ? std::numeric_limits<std::int64_t>::max()
                                   : static_cast<std::int64_t>(room);
}

// Milliseconds since the request arrived, for its usage row.
std::int64_t elapsed_ms(const Bill& bill) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                               bill.started)
      .count();
}

// Gives the hold back (the request failed or was refused upstream) and returns the work
// that records the request at no cost, to run as a hand-over piece: through the batch's
// UsageBuffer, so a failed commit cannot lose the row (not even one whose transaction
// never opened). Nothing when the bill was closed already.
std::optional<store::Writer::Work> close_unpaid(const Services& services, Bill& bill, int status) {
  if (bill.closed) return std::nullopt;
  bill.closed = true;
  const std::int64_t now = SystemClock::instance().unix_millis();
  if (bill.hold.id != 0) services.bank->void_hold(bill.hold, now);
  bill.record.status = status;
  bill.record.hold = bill.hold.id;
  bill.record.latency_ms = elapsed_ms(bill);
  return [usage = services.usage, record = std::move(bill.record)](store::Database&) mutable {
    usage->record(std::move(record));
    return Status::ok();
  };
}

// close_unpaid, where nobody waits for the row: a request that ends without an answer of
// its own (its client left). Needs only the services, so it may run while a coroutine
// frame is destroyed after its Gateway.
void void_bill(const Services& services, Bill& bill, int status) {
  if (auto work = close_unpaid(services, bill, status)) {
    services.writer->submit(std::move(*work), {}, store::Writer::Isolation::kHandOver);
  }
}

// Runs `renew` every `every` for as long as it lives, on `ioc`'s thread. A stream renews its
// hold after each upstream read (keep_hold), and a client that reads slowly holds the relay
// in its writes, where no read comes: the timer renews it there too.
class HoldKeeper {
 public:
  HoldKeeper(asio::io_context& ioc, std::chrono::milliseconds every, std::function<void()> renew)
      : timer_(ioc.get_executor()), every_(every), renew_(std::move(renew)) {
    arm();
  }
  ~HoldKeeper() { *alive_ = false; }
  HoldKeeper(const HoldKeeper&) = delete;
  HoldKeeper& operator=(const HoldKeeper&) = delete;

 private:
  void arm() {
    timer_.expires_after(every_);
    // A wait that was due when the keeper went runs all the same, with no error: only
    // `alive` says `this` is gone.
    timer_.async_wait([this, alive = alive_](const boost::system::error_code& ec) {
      if (ec || !*alive) return;
      renew_();
      arm();
    });
  }

  http::Timer timer_;
  std::chrono::milliseconds every_;
  std::function<void()> renew_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

class Gateway final : public http::Handler {
 public:
  Gateway(asio::io_context& ioc, http::Inbox& inbox, std::shared_ptr<const GatewayState> state)
      : ioc_(ioc),
        state_(std::move(state)),
        pool_(ioc, state_->provider_count(), state_->config().upstream_idle_connections_max),
        admin_(state_->services(), inbox, ioc,
               [state = state_] {
                 return routes_report(state->catalog(), state->route_stats(),
                                      state->provider_health());
               }),
        link_(*state_->services().writer, inbox, ioc),
        latency_(state_->catalog().route_count()),
        health_(state_->catalog().route_count()),
        stats_(state_->route_stats().add_thread()) {}
  // After a reload: each route that is the same upstream in `before`'s catalog starts with
  // what this thread had learnt of it there (its latency averages, circuit breaker and
  // statistics). What requests still running on `before` report later is not carried.
  void carry_from(const Gateway& before);

  Task<void> handle(http::Request& req, Responder& res) override;
  Task<void> reject(unsigned status, std::string_view message, std::string_view target,
                    Responder& res) override;
  // A request on a /v1/ path whose key is refused (missing, unknown, revoked, expired, or
  // its account suspended), or on an admin path without the admin key, is answered without
  // its body: authentication comes first there.
  bool wants_body(const http::Request& req) override;
  // No request is running on this Gateway (a replaced one may then be destroyed).
  bool idle() const { return *in_flight_ == 0; }

 private:
  Task<void> proxy(Operation op, http::Request& req, Responder& res,
                   std::string_view request_id, std::chrono::steady_clock::time_point started);
  // `choices`: how many the request asked for (OpenAI's `n`).
  Task<void> relay_stream(http::UpstreamResponse& upstream, std::string first_piece,
                          Surface surface, Responder& res,
                          std::span<const Header> headers, Bill& bill, bool drop_usage_chunk,
                          std::int64_t choices);
  // A whole answer built from the stream asked for in its place (gather), with what the
  // stream's meter made of its usage.
  struct Gathered {
    std::string body;
    meter::Usage usage;
    bool reported = false;  // the final usage came; else a running count, as for streams
  };
  // A whole (non-stream) response: read, settled from its usage, then sent with its cost.
  // `gathered`: the answer built from the stream asked for instead; `read`: its body, read
  // already (send_with_fallback reads it where a failure could still fall back).
  Task<void> answer_whole(http::UpstreamResponse& upstream, Surface surface, Responder& res,
                          std::vector<Header>& headers, Bill& bill,
                          std::optional<Gathered> gathered = std::nullopt,
                          std::optional<std::string> read = std::nullopt);
  // Reads to its end a stream asked for in place of a whole answer (a flex attempt, whose
  // start must be seen) and builds that answer: `choices` of them, within the answer
  // timeout from `sent_at`. Fails as the stream does (an error chunk, a cut, an end before
  // the answer's), before anything reached the client. An answer that ended is not lost to
  // a terminator that does not come.
  Task<Result<Gathered>> gather(http::UpstreamResponse& upstream, std::string_view provider,
                                std::int64_t choices,
                                std::chrono::steady_clock::time_point sent_at, Bill& bill);

  // Settles `bill` at `usage`: the charge, the usage row and the ledger transfers commit in
  // one store transaction, and this resumes after it. False if the store failed.
  Task<bool> settle(Bill& bill, const meter::Usage& usage, int status);
  // Sends a whole upstream answer on; an error whose body is not JSON goes in the client's
  // error shape instead.
  Task<void> relay_answer(Responder& res, Surface surface, std::string_view provider,
                          const http::UpstreamResponse& upstream, std::string_view body,
                          std::span<const Header> headers);
  // Extends the hold of a request still running, so it never lapses under it.
  void keep_hold(Bill& bill);
  // A response that costs, or may cost, `needed`: more than its hold covers (or its hold
  // lapsed), the bank is asked for the difference (Bank::cover), and first, without
  // overdrawing, for `ahead` (more than needed, so a running stream asks again less
  // often). False when the account cannot give `needed`: the response must not go on, and
  // bill.covered says what it holds.
  bool cover(Bill& bill, Money needed, Money ahead = Money());
  // The same from the key's budget, if it has one: what it has set aside grows to `ahead`,
  // else to `needed`; false when the budget covers neither (no overdraft: a budget is
  // passed by no response's shortfall the gateway sees coming).
  bool budget_covers(Bill& bill, Money needed, Money ahead);

  // The route the composite score picks among `model`'s routes on `api` (nullptr when it
  // has none there), with its score. Latency comes from this thread's measurements,
  // seeded from the config.
  struct Ranked {
    const catalog::Route* route;
    double score;
    const catalog::Model* model;  // the route's model (several with "auto")
    std::int64_t output_tokens;   // the request's output bound on that model
    bool flex = false;            // the flex race's first attempt, on the route's flex tier
    // The route's multiplier for the request's price-changing options (premium_for).
    std::uint32_t premium = catalog::kPremiumOne;

    catalog::Prices prices() const { return prices_at(*route, flex, premium); }
  };
  // What a route must meet to be a candidate for a request, in the order checked: the
  // API the client called; the privacy tier (confidential admits confidential providers,
  // cloud admits confidential and cloud, community any); the routing rule that matched,
  // if any; then health. Prices for the options the request asks for come right after the
  // API (see admission).
  struct Constraints {
    Api api = Api::kOpenAI;
    catalog::PrivacyTier tier = catalog::PrivacyTier::kCommunity;
    const router::Rule* rule = nullptr;  // the first rule the request matches, if any
    PricedOptions priced;
    // For "auto": the first rule each candidate model matches under its own name (nullptr:
    // none). Its pin and exclude hold as well, so choosing a model never reaches a route
    // that naming the model could not.
    std::vector<std::pair<const catalog::Model*, const router::Rule*>> model_rules;
    // The rule that keeps `provider`'s routes of `model` out, or nullptr.
    const router::Rule* excluding(const catalog::Model& model, std::size_t provider) const {
      if (rule != nullptr && !router::admits(*rule, provider)) return rule;
      for (const auto& [m, r] : model_rules) {
        if (m == &model && r != nullptr && !router::admits(*r, provider)) return r;
      }
      return nullptr;
    }
  };
  // Whether a route may serve a request now, and if not, the first constraint it fails.
  // Ordered by how far a route got, so the furthest over a model's routes says why none
  // qualified.
  enum class Admission {
    kOtherApi, kUnpriced, kLooserTier, kExcludedByRule, kResting, kAdmitted };
  struct RouteChoice {
    std::vector<Ranked> ranked;  // best first (or the rule's fallback order); may be empty
    Admission furthest = Admission::kOtherApi;  // the best admission any route reached
    const router::Rule* excluded_by = nullptr;  // a rule that removed a route, if any
    // The soonest a resting route may be tried again (its circuit's cooldown, else the
    // next health probe), for a Retry-After.
    std::chrono::steady_clock::duration rests_for = std::chrono::steady_clock::duration::max();
    std::int64_t scored_output = 0;  // the output every route was scored at (scored_output)
  };
  // `output_tokens(model)`: the request's output bound on that model.
  RouteChoice choose_route(std::span<const catalog::Model* const> models, const Constraints& c,
                           const router::Weights& weights, std::int64_t input_tokens,
                           const std::function<std::int64_t(const catalog::Model&)>& output_tokens);
  // The flex race's first attempt: among `ranked` (a request's admitted routes) those
  // with flex prices, scored at those prices for `output_tokens`; the best. Under a rule
  // whose fallback order lists the first of them (`rule`), that one instead, as the
  // operator ordered the routes. nullopt when none has a flex tier.
  std::optional<Ranked> flex_choice(std::span<const Ranked> ranked, const router::Weights& weights,
                                    std::int64_t input_tokens, std::int64_t output_tokens,
                                    const router::Rule* rule) const;
  // The models a request may be served by: the one it names, or for "auto" every model
  // the key may use whose quality reaches routing.auto_quality_floor and whose context
  // fits the request. Empty `why` when some qualify.
  std::vector<const catalog::Model*> models_for(Operation op, const RequestBody& body,
                                                const auth::KeyGrant& grant,
                                                std::int64_t input_tokens) const;
  // Holds the worst case of `body` on the dearest of `routes` (each input token at the
  // dearest of its input prices) until `wait_ms` plus the hold timeout from now, and sets
  // as much aside from the key's budget. A refusal (402) names what is available and what
  // was needed.
  std::optional<Refusal> take_hold(Bill& bill, std::span<const Ranked> routes,
                                   const RequestBody& body, std::int64_t wait_ms);

  // What the fallback loop ended with: the response that stands (null when every route
  // failed before answering, then `failure` says how), and which route gave it.
  struct Answered {
    std::unique_ptr<http::UpstreamResponse> response;
    Status failure;
    std::size_t attempt = 0;  // index into the routes tried
    std::size_t skipped = 0;  // routes before it found resting when their turn came
    const catalog::Route* last_tried = nullptr;  // the last route a request went to
    const catalog::Model* last_model = nullptr;  // ...and its model (for "auto", one of many)
    std::string first_piece;  // a stream's first body bytes, read to judge it (not relayed)
    // How each attempt that did not serve failed, in order (for the client's error).
    std::vector<std::string> failures;
    // A whole answer built from the stream its flex attempt was asked for as (gather).
    std::optional<Gathered> gathered;
    // A whole answer's body, read before it was taken as the answer (a route after it could
    // still be tried).
    std::optional<std::string> body;
  };
  // Down the ranking until a route answers: a refused or failed connection, a timeout
  // before the response headers, a 5xx or a 429, a stream that fails before its first
  // event moves on to the next, while nothing has reached the client yet. The last route's
  // answer stands. A flex attempt (first, if any) is sent with `service_tier: flex` and
  // given `flex_ms` to its response headers.
  Task<Answered> send_with_fallback(const OperationInfo& info, const http::Request& req,
                                    const RequestBody& body, bool stream, bool ask_for_usage,
                                    std::span<const Ranked> routes, std::int64_t flex_ms,
                                    Bill& bill);
  // Everything decided about a request before anything is held or sent.
  struct Plan {
    RequestBody body;
    RouteOptions options;
    const catalog::Model* model = nullptr;  // the named one; for "auto" the first candidate's
    RouteChoice choice;                     // ranked routes (a flex attempt first, if raced)
    std::size_t attempts = 0;               // how many of them may be tried
    bool flex_raced = false;
    bool stream = false;
    std::int64_t input_estimate = 0;
  };
  // POST /v1/messages/count_tokens: routed as a Messages request is (the same constraints:
  // the text goes to the provider) and relayed as the provider answers. Nothing is held,
  // charged or logged as usage: providers count tokens for free.
  Task<void> count_tokens(const OperationInfo& info, const http::Request& req, Responder& res,
                          const Plan& plan, std::span<const Ranked> routes, Bill& bill);
  // Parses and checks the request and chooses its routes; a Refusal says why it can go
  // nowhere (bad body or options, unknown or disallowed model, too long, no route).
  std::optional<Refusal> plan_request(Operation op, const OperationInfo& info,
                                      const http::Request& req, const auth::KeyGrant& grant,
                                      Plan& plan);
  // Why `models` (what the request may be served by) cannot serve it, if they cannot.
  std::optional<Refusal> refuse_model(Operation op, const RequestBody& body,
                                      const auth::KeyGrant& grant,
                                      std::span<const catalog::Model* const> models,
                                      std::int64_t input_estimate) const;
  // The refusal when no route of `model` qualified, from how far the best got. `asked`:
  // the model the request named ("auto", or `model`'s name).
  Refusal no_route(const catalog::Model& model, std::string_view asked, const Constraints& c,
                   const RouteChoice& choice, bool tier_from_policy) const;
  // The first routing rule that matches the request (nullptr: none). Its weights replace
  // the key's, account's or config's in `options`, unless a preference header chose them.
  const router::Rule* match_rule(const RequestBody& body, const auth::KeyGrant& grant,
                                 RouteOptions& options) const;
  // The constraints on a request's routes: its API, tier and rule, and for "auto" the rule
  // of each candidate model.
  Constraints constraints_for(Api api, const RequestBody& body, const auth::KeyGrant& grant,
                              const RouteOptions& options, const router::Rule* rule,
                              std::span<const catalog::Model* const> models) const;
  // Why `route` is not a candidate ("" when it is).
  std::string exclusion(const catalog::Model& model, const catalog::Route& route,
                        const Constraints& c) const;
  router::Candidate candidate_for(const catalog::Model& model, const catalog::Route& route,
                                  const catalog::Prices& prices, std::int64_t input_tokens,
                                  std::int64_t output_tokens) const;
  // POST /v1/route/explain: what the router would do with a chat-completions body, without
  // calling upstream.
  Task<void> explain(http::Request& req, Responder& res);
  void observe_ttfb(const catalog::Route& route, std::chrono::steady_clock::duration ttfb);
  void observe_speed(const catalog::Route& route, std::int64_t output_tokens,
                     std::chrono::steady_clock::duration decoding);
  Admission admission(const catalog::Model& model, const catalog::Route& route,
                      const Constraints& c, std::chrono::steady_clock::time_point now) const;
  void upstream_failed(const catalog::Route& route);
  // close_unpaid, and waits until the row has committed: the answer that follows (an
  // error, a refusal relayed) is the request's last word, and its row must outlast a crash
  // as a settled request's does.
  Task<void> void_recorded(Bill& bill, int status);
  void upstream_answered(const catalog::Route& route);
  // Whether `route` may not be tried now: its circuit rests, or the probes have its
  // provider marked down.
  bool rests_now(const catalog::Route& route, std::chrono::steady_clock::time_point now) const {
    return health_[route.index].resting(now) ||
           state_->provider_health().down(state_->catalog().provider(route).index);
  }
  struct RouteLatency {
    double ttfb_ms = -1;            // < 0: not measured yet
    double tokens_per_second = -1;
  };
  // `headers`: the route's and the provider's (retry-after), when an upstream's answer is
  // what failed.
  Task<void> send_error(Responder& res, Surface surface, unsigned status,
                        std::string_view message, std::string_view code = {},
                        std::span<const Header> headers = {});

  // GET /readyz's answer: ok (status 200), or not_ready (503) with the reasons (billing
  // frozen; every provider marked down by the probes).
  std::string readiness_json(unsigned& status) const;
  // GET /api/balance: the calling key's own account.
  Task<void> own_balance(http::Request& req, Responder& res);
  // GET /v1/models: the models the calling key may use; GET /v1/models/{id} (`id`
  // percent-encoded, as the SDKs send it): one of them. In Anthropic's shapes for a request
  // with `anthropic-version` (the Anthropic SDK's), else in OpenAI's.
  Task<void> list_models(http::Request& req, Responder& res);
  Task<void> retrieve_model(std::string_view id, http::Request& req, Responder& res);
  // GET /api/usage: the calling key's account, or any with the admin key.
  Task<void> usage_log(http::Request& req, Responder& res);
  // The key a request presents, checked against this thread's copy of the key table.
  // Returns the grant, or sends the error and returns nullptr.
  Task<const auth::KeyGrant*> authenticate(std::string_view key, Surface surface,
                                           Responder& res);
  // Why `key` is refused, or nullopt with `grant` set (authenticate, without answering).
  struct KeyRefusal {
    unsigned status;
    std::string_view message;
    std::string_view code;
  };
  std::optional<KeyRefusal> check_key(std::string_view key, Surface surface,
                                      const auth::KeyGrant*& grant);

  asio::io_context& ioc_;
  std::shared_ptr<const GatewayState> state_;
  http::UpstreamPool pool_;
  AdminApi admin_;
  StoreLink link_;
  std::vector<RouteLatency> latency_;  // per route (Route::index), this thread's averages
  std::vector<router::Breaker> health_;  // per route, this thread's breakers
  std::shared_ptr<router::RouteStats::Thread> stats_;  // this thread's block of the stats
  std::shared_ptr<const auth::KeyTable> keys_;  // refreshed when the directory's version moves
  std::uint64_t keys_version_ = 0;
  // Counts a request on this Gateway for as long as it runs (see idle()). The count is
  // shared: at shutdown a request's frame may be destroyed after its Gateway.
  class InFlight {
   public:
    explicit InFlight(std::shared_ptr<int> count) : count_(std::move(count)) { ++*count_; }
    ~InFlight() { --*count_; }
    InFlight(const InFlight&) = delete;
    InFlight& operator=(const InFlight&) = delete;

   private:
    std::shared_ptr<int> count_;
  };
  // Requests (and rejections) still running on this Gateway.
  std::shared_ptr<int> in_flight_ = std::make_shared<int>(0);
};

// One per I/O thread: serves each request with the Gateway of the hub's current state.
// After a reload the old Gateway is kept until its last request has finished.
class GatewayHandler final : public http::Handler {
 public:
  GatewayHandler(asio::io_context& ioc, http::Inbox& inbox, std::shared_ptr<StateHub> hub)
      : ioc_(ioc), inbox_(inbox), hub_(std::move(hub)) {
    refresh();
  }

  Task<void> handle(http::Request& req, Responder& res) override {
    catch_up();
    return current_->handle(req, res);
  }
  // An idle thread takes the new state at once too: its statistics count in the route
  // report, and the old state (its catalog, its connections) is let go.
  void reloaded() override { catch_up(); }
  bool wants_body(const http::Request& req) override {
    catch_up();
    return current_->wants_body(req);
  }
  Task<void> reject(unsigned status, std::string_view message, std::string_view target,
                    Responder& res) override {
    if (hub_->version() != version_) refresh();
    return current_->reject(status, message, target, res);
  }

 private:
  // Takes the hub's state if it changed, and frees retired Gateways that are done.
  void catch_up() {
    if (hub_->version() != version_) refresh();
    if (!retired_.empty()) prune();
  }
  void refresh() {
    version_ = hub_->version();
    auto next = std::make_unique<Gateway>(ioc_, inbox_, hub_->current());
    if (current_) next->carry_from(*current_);
    if (current_ && !current_->idle()) {
      retired_.push_back(std::move(current_));
      if (!sweeping_) {
        sweeping_ = true;
        asio::co_spawn(ioc_, sweep(), asio::detached);
      }
    }
    current_ = std::move(next);
  }
  // Frees retired Gateways within a second of their last request, on a thread that serves
  // nothing more too (their pools hold upstream connections).
  Task<void> sweep() {
    http::Timer timer(ioc_.get_executor());
    while (!retired_.empty()) {
      timer.expires_after(std::chrono::seconds(1));
      co_await timer.async_wait(http::use_nothrow);
      prune();
    }
    sweeping_ = false;
  }
  // Frees replaced Gateways whose last request has ended (with their catalog and pools).
  void prune() {
    std::erase_if(retired_, [](const std::unique_ptr<Gateway>& g) { return g->idle(); });
  }

  asio::io_context& ioc_;
  http::Inbox& inbox_;
  std::shared_ptr<StateHub> hub_;
  std::uint64_t version_ = 0;
  std::unique_ptr<Gateway> current_;
  std::vector<std::unique_ptr<Gateway>> retired_;  // replaced, with requests still running
  bool sweeping_ = false;                          // sweep() runs
};

Task<void> Gateway::void_recorded(Bill& bill, int status) {
  std::optional<store::Writer::Work> work = close_unpaid(state_->services(), bill, status);
  if (!work) co_return;
  // A failed commit leaves the row with the next batch; the answer goes out all the same.
  (void)co_await link_.commit(*work, store::Writer::Isolation::kHandOver);
}

void Gateway::carry_from(const Gateway& before) {
  const std::vector<std::size_t> same =
      catalog::same_routes(before.state_->catalog(), state_->catalog());
  for (std::size_t i = 0; i < same.size(); ++i) {
    if (same[i] == catalog::kNone) continue;
    latency_[i] = before.latency_[same[i]];
    health_[i] = before.health_[same[i]];
    stats_->carry(i, *before.stats_, same[i]);
  }
}

std::string Gateway::readiness_json(unsigned& status) const {
  std::vector<std::string> reasons;
  if (const ledger::Freeze& freeze = *state_->services().freeze; freeze.frozen()) {
    reasons.push_back(fmt::format("billing is frozen: {}", freeze.summary()));
  }
  const catalog::Catalog& cat = state_->catalog();
  const bool any_up = std::any_of(
      cat.providers().begin(), cat.providers().end(),
      [&](const catalog::Provider& p) { return !state_->provider_health().down(p.index); });
  if (!any_up) reasons.push_back("every provider is marked down by the health probes");
  status = reasons.empty() ? 200 : 503;
  std::string out;
  json::Writer w(out);
  w.begin_object().field("status", reasons.empty() ? "ok" : "not_ready");
  if (!reasons.empty()) {
    w.key("reasons").begin_array();
    for (const std::string& r : reasons) w.value(r);
    w.end_array();
  }
  w.end_object();
  return out;
}

namespace {

// Whether a models call shows `m`: only what the key may ask for, and only what the
// calling SDK's API can be sent: to the OpenAI SDK a model with a route on OpenAI's API
// (chat completions or embeddings), to the Anthropic SDK a chat model with a route on
// Anthropic's (messages).
bool listed(const catalog::Model& m, const auth::KeyGrant& grant, Surface surface,
            const catalog::Catalog& catalog) {
  if (!grant.may_use(m.name)) return false;
  const Api api = surface == Surface::kOpenAI ? Api::kOpenAI : Api::kAnthropic;
  if (api == Api::kAnthropic && m.kind != catalog::ModelKind::kChat) return false;
  return std::any_of(m.routes.begin(), m.routes.end(),
                     [&](const catalog::Route& r) { return catalog.provider(r).api == api; });
}

// The API whose shapes a models call answers in: the Anthropic SDK always sends
// `anthropic-version`.
Surface models_surface(const http::Request& req) {
  return req["anthropic-version"].empty() ? Surface::kOpenAI : Surface::kAnthropic;
}

// The key a request authenticates with: a bearer token (the OpenAI SDK's way), or
// x-api-key (the Anthropic SDK's) where `x_api_key` allows it. The Anthropic SDK sends both
// when its environment also sets an auth token for another service: then the one shaped
// as a Turnpike key counts (the bearer token when both or neither are).
std::string_view client_key(const http::Request& req, bool x_api_key) {
  const std::string_view bearer = bearer_token(req);
  if (!x_api_key) return bearer;
  const std::string_view api_key = req["x-api-key"];
  if (bearer.empty()) return api_key;
  if (!api_key.empty() && api_key.starts_with(auth::kKeyPrefix) &&
      !bearer.starts_with(auth::kKeyPrefix)) {
    return api_key;
  }
  return bearer;
}

// A page of an Anthropic-shaped models list: [begin, end) of `models`, and whether more
// lie beyond it in the direction asked (after_id: later; before_id: earlier).
struct ModelPage {
  std::size_t begin;
  std::size_t end;
  bool more;
};
Result<ModelPage> anthropic_page(std::string_view target,
                                 std::span<const catalog::Model* const> models) {
  auto params = http::parse_query(target);
  if (!params) return params.status();
  std::size_t limit = 20;
  std::optional<std::string> after, before;
  bool limit_given = false;
  for (const auto& [key, value] : *params) {
    if ((key == "limit" && std::exchange(limit_given, true)) || (key == "after_id" && after) ||
        (key == "before_id" && before)) {
      return Status{ErrorKind::kInvalidRequest, fmt::format("'{}' is given twice", key)};
    }
    if (key == "limit") {
      std::size_t n = 0;
      const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
      if (ec != std::errc{} || end != value.data() + value.size() || n < 1 || n > 1000) {
        return Status{ErrorKind::kInvalidRequest, "'limit' must be an integer from 1 to 1000"};
      }
      limit = n;
    } else if (key == "after_id" || key == "before_id") {
      (key == "after_id" ? after : before) = value;
    }
  }
  if (after && before) {
    return Status{ErrorKind::kInvalidRequest, "give 'after_id' or 'before_id', not both"};
  }
  auto position = [&](const std::string& id) -> std::optional<std::size_t> {
    for (std::size_t i = 0; i < models.size(); ++i) {
      if (models[i]->name == id) return i;
    }
    return std::nullopt;
  };
  // An id no longer listed (a reload, a narrower allowlist) ends the paging: an empty page.
  if (before) {
    auto at = position(*before);
    if (!at) return ModelPage{0, 0, false};
    const std::size_t begin = *at > limit ? *at - limit : 0;
    return ModelPage{begin, *at, begin > 0};
  }
  std::size_t begin = 0;
  if (after) {
    auto at = position(*after);
    if (!at) return ModelPage{0, 0, false};
    begin = *at + 1;
  }
  const std::size_t end = std::min(models.size(), begin + limit);
  return ModelPage{begin, end, end < models.size()};
}

// A model object: OpenAI's `{"id","object","created","owned_by"}`, or Anthropic's
// `{"type","id","display_name","created_at"}`.
void write_model(json::Writer& w, const catalog::Model& m, Surface surface,
                 std::int64_t created) {
  if (surface == Surface::kAnthropic) {
    w.begin_object().field("type", "model").field("id", m.name).field("display_name", m.name);
    w.field("created_at", format_rfc3339(created * 1000)).end_object();
    return;
  }
  w.begin_object().field("id", m.name).field("object", "model");
  w.field("created", created).field("owned_by", "turnpike").end_object();
}

}  // namespace

Task<void> Gateway::list_models(http::Request& req, Responder& res) {
  const Surface surface = models_surface(req);
  const auth::KeyGrant* grant =
      co_await authenticate(client_key(req, /*x_api_key=*/true), surface, res);
  if (grant == nullptr) co_return;
  std::vector<const catalog::Model*> models;
  for (const catalog::Model& m : state_->catalog().models()) {
    if (listed(m, *grant, surface, state_->catalog())) models.push_back(&m);
  }
  std::string out;
  json::Writer w(out);
  if (surface == Surface::kOpenAI) {  // one list, as OpenAI's
    w.begin_object().field("object", "list").key("data").begin_array();
    for (const catalog::Model* m : models) write_model(w, *m, surface, state_->models_created());
    w.end_array().end_object();
    co_await res.send(200, kJson, out);
    co_return;
  }
  // Anthropic's pages: `limit` (1 to 1000, 20 by default) models after `after_id`, or
  // before `before_id`, with `has_more` in that direction.
  auto page = anthropic_page(req.target(), models);
  if (!page) {
    co_await send_error(res, surface, 400, page.status().message());
    co_return;
  }
  const auto [begin, end, more] = *page;
  w.begin_object().key("data").begin_array();
  for (std::size_t i = begin; i < end; ++i) {
    write_model(w, *models[i], surface, state_->models_created());
  }
  w.end_array().field("has_more", more).key("first_id");
  if (begin < end) w.value(models[begin]->name); else w.null();
  w.key("last_id");
  if (begin < end) w.value(models[end - 1]->name); else w.null();
  w.end_object();
  co_await res.send(200, kJson, out);
}

Task<void> Gateway::retrieve_model(std::string_view id, http::Request& req, Responder& res) {
  const Surface surface = models_surface(req);
  const auth::KeyGrant* grant =
      co_await authenticate(client_key(req, /*x_api_key=*/true), surface, res);
  if (grant == nullptr) co_return;
  std::string name;
  const bool decoded = http::percent_decode(id, name, /*plus_is_space=*/false);
  if (!decoded) name = id;  // quoted as sent
  const catalog::Model* model = decoded ? state_->catalog().find_model(name) : nullptr;
  if (model == nullptr || !listed(*model, *grant, surface, state_->catalog())) {
    // A model the key may not use is not shown to exist, as in the list.
    co_await send_error(res, surface, 404,
                        fmt::format("model '{}' does not exist", json::utf8_prefix(name, 100)),
                        "model_not_found");
    co_return;
  }
  std::string out;
  json::Writer w(out);
  write_model(w, *model, surface, state_->models_created());
  co_await res.send(200, kJson, out);
}

Task<void> Gateway::own_balance(http::Request& req, Responder& res) {
  if (is_admin_key(bearer_token(req), state_->services())) {
    // Not unknown, as the generic answer would say: it has no account of its own.
    co_await send_error(res, Surface::kOpenAI, 400,
                        "the admin key has no balance of its own: ask GET "
                        "/admin/v1/accounts/{id}/balance, or this call with a customer key");
    co_return;
  }
  const auth::KeyGrant* grant = co_await authenticate(bearer_token(req), Surface::kOpenAI, res);
  if (grant == nullptr) co_return;
  auto balance = state_->services().bank->balance(grant->account_id,
                                                  SystemClock::instance().unix_millis());
  if (!balance) {
    co_await send_error(res, Surface::kOpenAI, 404, "this key's account has no wallet");
    co_return;
  }
  std::string out;
  json::Writer w(out);
  w.begin_object().field("account", ledger::customer_name(grant->account_id));
  w.field("paid_usd", balance->paid.to_string()).field("trial_usd", balance->trial.to_string());
  w.field("promo_usd", balance->promo.to_string()).field("held_usd", balance->held.to_string());
  w.field("available_usd", balance->available.to_string()).end_object();
  co_await res.send(200, kJson, out);
}

Task<void> Gateway::usage_log(http::Request& req, Responder& res) {
  const std::string_view token = bearer_token(req);
  const bool admin = is_admin_key(token, state_->services());
  std::optional<std::int64_t> account;
  if (!admin) {
    const auth::KeyGrant* grant = co_await authenticate(token, Surface::kOpenAI, res);
    if (grant == nullptr) co_return;
    account = grant->account_id;
  }
  auto params = http::parse_query(req.target());
  if (!params) {
    co_await send_error(res, Surface::kOpenAI, 400, params.status().message());
    co_return;
  }
  auto query = parse_usage_query(*params, account);
  if (!query) {
    co_await send_error(res, Surface::kOpenAI, http_status(query.status().kind()),
                        query.status().message());
    co_return;
  }
  const std::size_t limit = query->limit;
  auto fetch = [q = *query, limit](store::Database& db) {
    store::UsageQuery one_more = q;
    one_more.limit = limit + 1;  // the extra row tells whether a next page exists
    return store::query_usage(db, one_more);
  };
  auto page = co_await link_.call<store::UsagePage>(fetch);
  if (!page) {
    co_await send_error(res, Surface::kOpenAI, 503, "the usage log is unavailable");
    co_return;
  }
  co_await res.send(200, kJson, usage_page_json(*page, limit));
}

std::optional<Gateway::KeyRefusal> Gateway::check_key(std::string_view key, Surface surface,
                                                      const auth::KeyGrant*& grant) {
  const auth::Directory& directory = *state_->services().directory;
  if (const std::uint64_t v = directory.version(); v != keys_version_) {
    keys_ = directory.keys();
    keys_version_ = v;
  }
  grant = nullptr;
  if (key.empty()) {
    return KeyRefusal{401,
                      surface == Surface::kAnthropic
                          ? "missing API key: send it in the x-api-key header or as a bearer token"
                          : "missing API key: send it as 'Authorization: Bearer KEY'",
                      {}};
  }
  const auth::KeyGrant* found =
      auth::looks_like_key(key) ? keys_->find(state_->services().hasher->digest(key)) : nullptr;
  if (found == nullptr) return KeyRefusal{401, "invalid API key (unknown or revoked)", {}};
  if (found->expires_ms && *found->expires_ms <= SystemClock::instance().unix_millis()) {
    return KeyRefusal{401, "API key expired", {}};
  }
  if (found->account_suspended) return KeyRefusal{403, "account suspended", "account_suspended"};
  grant = found;
  return std::nullopt;
}

Task<const auth::KeyGrant*> Gateway::authenticate(std::string_view key, Surface surface,
                                                  Responder& res) {
  const auth::KeyGrant* grant = nullptr;
  if (const auto refused = check_key(key, surface, grant)) {
    co_await send_error(res, surface, refused->status, refused->message, refused->code);
    co_return nullptr;
  }
  co_return grant;
}

Task<void> Gateway::send_error(Responder& res, Surface surface, unsigned status,
                               std::string_view message, std::string_view code,
                               std::span<const Header> headers) {
  // Anthropic's errors carry the request's id in the body too, where its SDK reads it.
  const std::string body = error_body(surface, status, message, code,
                                      surface == Surface::kAnthropic
                                          ? res.added_header("request-id")
                                          : std::string_view());
  co_await res.send(status, kJson, body, headers);
}

// The error shape a path's clients read: Anthropic's for /v1/messages and what lies under
// it (the Anthropic SDK's count_tokens and batches), OpenAI's elsewhere.
Surface surface_of(std::string_view path) {
  return path == "/v1/messages" || path.starts_with("/v1/messages/") ||
                 path.starts_with("/v1/messages?")
             ? Surface::kAnthropic
             : Surface::kOpenAI;
}

bool Gateway::wants_body(const http::Request& req) {
  const std::string_view target = req.target();
  const std::string_view path = target.substr(0, target.find('?'));
  if (path.starts_with("/admin/v1/")) {
    const Services& services = state_->services();
    const std::string_view token = http::bearer_token(req["authorization"]);
    return !services.admin_key.empty() && !token.empty() && is_admin_key(token, services);
  }
  if (!path.starts_with("/v1/")) return true;
  const Surface surface = surface_of(path);
  const auth::KeyGrant* grant = nullptr;
  return !check_key(client_key(req, surface == Surface::kAnthropic), surface, grant);
}

Task<void> Gateway::reject(unsigned status, std::string_view message, std::string_view target,
                           Responder& res) {
  const InFlight counted(in_flight_);
  // Refused before it was whole (too large, late, malformed), it is still a request with an
  // id, where the client's SDK looks for one.
  const std::string request_id = random_id("req_");
  res.add_header("x-request-id", request_id);
  const Surface surface = surface_of(target);
  if (surface == Surface::kAnthropic) res.add_header("request-id", request_id);
  co_await send_error(res, surface, status, message);
  if (state_->config().access_log) {
    // Its method may be what was malformed: the path as far as it was read, and why.
    const std::string_view path = target.substr(0, target.find('?'));
    log::info("request", {{"request_id", request_id},
                          {"path", path.substr(0, kMessagePathBytesMax)},
                          {"status", res.status()},
                          {"finished", res.finished() && !res.failed()},
                          {"refused", "before the request was whole"}});
  }
}

// The method a known non-proxy path takes ("" for an unknown path): another one is 405.
std::string_view methods_of(std::string_view path) {
  if (path == "/v1/route/explain") return "POST";
  if (path == "/api/balance" || path == "/api/usage" || path == "/v1/models" ||
      path.starts_with("/v1/models/") || path == "/metrics" || path == "/healthz" ||
      path == "/readyz") {
    return "GET, HEAD";
  }
  return "";
}

Task<void> Gateway::handle(http::Request& req, Responder& res) {
  const InFlight counted(in_flight_);
  const auto started = std::chrono::steady_clock::now();
  const std::string request_id = random_id("req_");
  res.add_header("x-request-id", request_id);

  const std::string_view target = req.target();
  const std::string_view path = target.substr(0, target.find('?'));
  // HEAD is answered as GET is, without the body (the Responder drops it).
  const std::string_view method = req.method() == "HEAD" ? "GET" : req.method();

  // The Anthropic SDK reads its request id from `request-id` (as Anthropic sends it): on its
  // paths, and on the models list and lookup it asks for with its anthropic-version.
  const bool anthropic_models = (path == "/v1/models" || path.starts_with("/v1/models/")) &&
                                models_surface(req) == Surface::kAnthropic;
  if (surface_of(path) == Surface::kAnthropic || anthropic_models) {
    res.add_header("request-id", request_id);
  }

  // CORS where configured: the client API (never the admin API) answers the browser origins
  // it allows, with the headers the SDKs read exposed, and their preflights.
  // (Without it, the request's headers are not even looked at.)
  const std::vector<std::string>& allowed = state_->config().cors_origins;
  const std::string_view origin = allowed.empty() ? std::string_view() : req["origin"];
  const bool cors = !origin.empty() && !path.starts_with("/admin/") &&
                    std::any_of(allowed.begin(), allowed.end(),
                                [&](const std::string& o) { return o == "*" || o == origin; });
  if (cors) {
    res.add_header("access-control-allow-origin", origin);
    res.add_header("vary", "Origin");
    res.add_header("access-control-expose-headers", kCorsExposed);
  }
  const bool preflight =
      cors && req.method() == "OPTIONS" && !req["access-control-request-method"].empty();

  std::optional<Operation> op;
  if (path == "/v1/chat/completions") {
    op = Operation::kChat;
  } else if (path == "/v1/messages" || path == "/v1/messages/count_tokens") {
    op = path == "/v1/messages" ? Operation::kMessages : Operation::kCountTokens;
  } else if (path == "/v1/embeddings") {
    op = Operation::kEmbeddings;
  }

  if (preflight) {
    res.add_header("access-control-allow-methods", "GET, POST, OPTIONS");
    const std::string_view asked = req["access-control-request-headers"];
    res.add_header("access-control-allow-headers", asked.empty() ? kCorsHeaders : asked);
    res.add_header("access-control-max-age", "600");
    co_await res.send(204, {}, {});
  } else if (op && method == "POST") {
    co_await proxy(*op, req, res, request_id, started);
  } else if (op) {
    res.add_header("allow", "POST");
    co_await send_error(res, info_for(*op).surface, 405, fmt::format("{} accepts POST only", path));
  } else if (path.starts_with("/admin/v1/")) {
    co_await admin_.handle(req, res);
  } else if (path == "/api/balance" && method == "GET") {
    co_await own_balance(req, res);
  } else if (path == "/api/usage" && method == "GET") {
    co_await usage_log(req, res);
  } else if (path == "/v1/route/explain" && method == "POST") {
    co_await explain(req, res);
  } else if (path == "/v1/models" && method == "GET") {
    co_await list_models(req, res);
  } else if (path.starts_with("/v1/models/") && method == "GET") {
    co_await retrieve_model(path.substr(11), req, res);
  } else if (path == "/metrics" && method == "GET") {
    const Services& services = state_->services();
    const store::Writer::Stats store = services.writer->stats();
    const std::string metrics =
        routes_metrics(state_->catalog(), state_->route_stats(), state_->provider_health(),
                       {.billing_frozen = services.freeze->frozen(),
                        .store_commits = store.commits,
                        .store_pieces = store.pieces,
                        .store_log = store.log,
                        .notices = services.notice_counts.get()});
    co_await res.send(200, "text/plain; version=0.0.4", metrics);
  } else if (path == "/healthz" && method == "GET") {
    co_await res.send(200, kJson, R"({"status":"ok"})");
  } else if (path == "/readyz" && method == "GET") {
    unsigned status = 200;
    const std::string readiness = readiness_json(status);
    co_await res.send(status, kJson, readiness);
  } else if (const std::string_view allowed = methods_of(path); !allowed.empty()) {
    res.add_header("allow", allowed);
    // The models' paths answer in the shape their caller reads (models_surface).
    co_await send_error(res,
                        path.starts_with("/v1/models") ? models_surface(req) : Surface::kOpenAI,
                        405, fmt::format("{} accepts {} only", path, allowed));
  } else {
    co_await send_error(res, surface_of(path), 404,
                        fmt::format("unknown path: {} {}", req.method(),
                                    path.substr(0, kMessagePathBytesMax)),
                        "unknown_path");
  }

  if (state_->config().access_log) {
    const auto elapsed = std::chrono::steady_clock::now() - started;
    log::info("request",
              {{"request_id", request_id},
               {"method", req.method()},
               {"path", path.substr(0, kMessagePathBytesMax)},
               {"status", res.status()},
               // A stream's head says 200 before it ends: whether it reached the client
               // whole (a write that failed or was cut off did not), and whether its
               // client was seen to leave (the usage row then says 499).
               {"finished", res.finished() && !res.failed()},
               {"client_gone", res.client_gone()},
               {"duration_us",
                static_cast<std::int64_t>(
                    std::chrono::duration_cast<std::chrono::microseconds>(elapsed).count())}});
  }
}

Task<void> Gateway::proxy(Operation op, http::Request& req, Responder& res,
                          std::string_view request_id,
                          std::chrono::steady_clock::time_point started) {
  const OperationInfo info = info_for(op);
  const Surface surface = info.surface;

  const std::string_view key = client_key(req, surface == Surface::kAnthropic);
  // Who is asking comes before anything about the request: an unauthenticated client learns
  // nothing, not even which models exist.
  const auth::KeyGrant* grant = co_await authenticate(key, surface, res);
  if (grant == nullptr) co_return;

  Plan plan;
  if (const auto refused = plan_request(op, info, req, *grant, plan)) {
    // Clients that retry (the SDKs do on 503) wait until a route may be tried again.
    const std::string retry_after = std::to_string(refused->retry_after_s);
    if (refused->retry_after_s > 0) res.add_header("retry-after", retry_after);
    co_await send_error(res, surface, refused->status, refused->message, refused->code);
    co_return;
  }
  const RequestBody& body = plan.body;
  const std::span<const Ranked> routes = std::span(plan.choice.ranked).first(plan.attempts);
  // The grant may not outlive the next suspension (a key-table refresh replaces it).
  Bill bill = open_bill(*routes.front().route, *plan.model, *grant, plan.stream,
                        plan.input_estimate, request_id, started);
  if (op == Operation::kCountTokens) {  // free, and not limited: no model runs
    co_await count_tokens(info, req, res, plan, routes, bill);
    co_return;
  }
  if (body.max_tokens) {
    // A content event carries a token at least, but not every one is a token (Anthropic's
    // signature and citation deltas): the margin leaves an answer that keeps to its limit
    // alone.
    bill.output_events_max =
        with_margin(std::min(*body.max_tokens, meter::kTokensMax) * body.choices);
  }
  if (grant->meter) {
    // The key's rates: this request and its tokens as far as known now (its estimated
    // input and the output it asks for), corrected to what it used once it is done.
    const std::int64_t tokens =
        plan.input_estimate +
        (op == Operation::kEmbeddings
             ? 0
             : std::min(body.max_tokens.value_or(0), meter::kTokensMax) * body.choices);
    if (const auto refused = grant->meter->admit(tokens, std::chrono::steady_clock::now())) {
      // The responder keeps views: the values live until the answer is sent.
      const std::string seconds = std::to_string((refused->retry_after_ms + 999) / 1000);
      const std::string millis = std::to_string(refused->retry_after_ms);
      if (refused->retry_after_ms > 0) {
        res.add_header("retry-after", seconds);
        res.add_header("retry-after-ms", millis);
      } else {
        // Larger than the limit: waiting would not help, which the SDKs' header says. Every
        // 429 still carries a Retry-After (CONTRACT): the limit's window, after which the
        // same request is refused the same way.
        res.add_header("x-should-retry", "false");
        res.add_header("retry-after", "60");
      }
      co_await send_error(res, surface, 429, refused->message, "rate_limit_exceeded");
      co_return;
    }
    bill.key.admitted(grant->meter, tokens);
  }
  bill.asked = priced_options(body, info.api);
  bill.search_calls = body.web_search_options && surface == Surface::kOpenAI ? 1 : 0;
  bill.embeddings = op == Operation::kEmbeddings;

  if (const ledger::Freeze& freeze = *state_->services().freeze; freeze.frozen()) {
    const std::string message = fmt::format(
        "billing is frozen: {}. Billable requests are refused until an admin investigates and "
        "clears the freeze",
        freeze.summary());
    co_await send_error(res, surface, 503, message, "billing_frozen");
    co_return;
  }
  if (const auto refused =
          take_hold(bill, routes, body, plan.flex_raced ? plan.options.flex_ms : 0)) {
    co_await send_error(res, surface, refused->status, refused->message, refused->code);
    co_return;
  }
  // However this coroutine ends, an unsettled hold goes back.
  struct VoidOnExit {
    std::shared_ptr<const GatewayState> state;  // outlives the Gateway if need be
    Bill& bill;
    ~VoidOnExit() { void_bill(state->services(), bill, 499); }
  } void_on_exit{state_, bill};
  // From here the client is watched: once it has gone, every upstream wait of this request
  // ends within billing.disconnect_drain_ms. What comes in time is still billed (status
  // 499); a request still without an answer then is voided.
  watch_client(bill, res, std::chrono::milliseconds(state_->config().billing.disconnect_drain_ms));

  const bool ask_for_usage = plan.stream && surface == Surface::kOpenAI && !body.include_usage;
  Answered sent = co_await send_with_fallback(info, req, body, plan.stream, ask_for_usage, routes,
                                              plan.options.flex_ms, bill);
  std::unique_ptr<http::UpstreamResponse>& answered = sent.response;
  const Status& failure = sent.failure;
  const std::size_t attempt = sent.attempt;
  if (!answered) {
    const unsigned status = http_status(failure.kind());
    // The usage row names the route that failed last.
    if (sent.last_tried != nullptr) {
      bill.record.provider = state_->catalog().provider(*sent.last_tried).name;
      bill.record.model = sent.last_model->name;
    }
    co_await void_recorded(bill, bill.status_for(status));
    const std::string fallbacks =
        std::to_string(sent.failures.empty() ? 0 : sent.failures.size() - 1);
    res.add_header("x-turnpike-fallbacks", fallbacks);
    co_await send_error(res, surface, status, failure.message());
    co_return;
  }
  const Ranked& served = routes[attempt];
  const catalog::Route& route = *served.route;
  const catalog::Provider& provider = state_->catalog().provider(route);
  bill.route = &route;
  bill.flex = served.flex;
  bill.premium = served.premium;
  bill.record.provider = provider.name;
  bill.record.model = served.model->name;
  bill.searches_believed_max = body.web_searches_believed;
  if (bill.embeddings) {
    // No output; input past the model's context in a batch (each input is embedded on its
    // own), never past the body's bytes.
    bill.output_believed_max = with_margin(0);
    bill.input_believed_max = with_margin(input_tokens_max(body));
  } else {
    bill.output_believed_max = with_margin(
        std::min(body.max_tokens.value_or(served.model->max_output_tokens), meter::kTokensMax) *
        body.choices);
    if (!body.has_tools && bill.search_calls == 0) {
      bill.input_believed_max = with_margin(served.model->context_tokens);
    }
  }
  if (log::enabled(log::Level::kDebug)) {
    log::debug("routed", {{"request_id", bill.record.request_id},
                          {"model", served.model->name},
                          {"provider", provider.name},
                          {"upstream_model", route.upstream_model},
                          {"score", served.score},
                          {"candidates", plan.choice.ranked.size()},
                          {"attempt", attempt + 1},
                          {"flex", bill.flex},
                          {"status", answered->status()}});
  }
  http::UpstreamResponse& upstream = *answered;

  RouteHeaders route_headers;
  std::vector<Header> headers =
      route_headers.of(provider, *served.model, served.score, route, attempt - sent.skipped,
                       plan.options.flex_ms > 0, bill.flex);
  forwardable_headers(upstream.headers(), headers);

  if (route_at_fault(upstream.status())) {
    // The provider's own error text stays with the provider; the client learns which
    // provider failed and how, with its retry-after and request id.
    (void)co_await upstream.read_all(kErrorBodyDrainBytesMax);
    log::warn("upstream error status", {{"request_id", bill.record.request_id},
                                        {"provider", provider.name},
                                        {"status", upstream.status()}});
    // 502 on both surfaces, Anthropic's 529 (overloaded) too: CONTRACT's status for an
    // upstream that failed.
    co_await void_recorded(bill, bill.status_for(502));
    co_await send_error(res, surface, 502,
                        failures_text(sent.failures,
                                      fmt::format("upstream '{}' answered HTTP {}",
                                                  provider.name, upstream.status())),
                        {}, headers);
    co_return;
  }
  if (plan.stream && upstream.status() == 200 && upstream.is_event_stream()) {
    stats_->served(route.index, bill.flex);  // its head and first event go to the client
    co_await relay_stream(upstream, std::move(sent.first_piece), surface, res, headers, bill,
                          ask_for_usage, plan.body.choices);
    co_return;
  }
  co_await answer_whole(upstream, surface, res, headers, bill, std::move(sent.gathered),
                        std::move(sent.body));
}

std::optional<Refusal> Gateway::plan_request(Operation op, const OperationInfo& info,
                                             const http::Request& req,
                                             const auth::KeyGrant& grant, Plan& plan) {
  auto parsed = parse_request_body(req.body());
  if (!parsed) return Refusal{400, parsed.status().message(), {}};
  plan.body = std::move(parsed.value());
  // The Messages API has no `n`: one answer, whatever the body says (the upstream refuses
  // the member, at no cost), so it holds for one.
  if (info.surface == Surface::kAnthropic) plan.body.choices = 1;
  const RequestBody& body = plan.body;
  if (!body.has_model || body.model.empty()) return Refusal{400, "'model' is required", {}};
  RouteOptions& options = plan.options;
  if (auto refused = read_options(body, req, state_->config().weights, grant, options)) {
    return refused;
  }
  plan.stream = body.stream && op != Operation::kEmbeddings;
  plan.input_estimate = input_tokens_estimate(body);
  const std::vector<const catalog::Model*> models =
      models_for(op, body, grant, plan.input_estimate);
  if (auto refused = refuse_model(op, body, grant, models, plan.input_estimate)) return refused;
  plan.model = models.front();  // the named one; for "auto", see the pick
  auto output_for = [&](const catalog::Model& m) -> std::int64_t {
    if (op == Operation::kEmbeddings) return 0;
    return output_bound(body, m);
  };
  const router::Rule* rule = match_rule(body, grant, options);
  const Constraints constraints = constraints_for(info.api, body, grant, options, rule, models);
  plan.choice = choose_route(models, constraints, options.weights, plan.input_estimate, output_for);
  if (plan.choice.ranked.empty()) {
    return no_route(*plan.model, body.model, constraints, plan.choice, options.tier_from_policy);
  }
  // Fallback goes down this list; the hold covers the dearest route that may serve. A
  // flex race puts its flex attempt in front of the standard routes.
  plan.attempts = std::min(plan.choice.ranked.size(), limits::kRouteAttemptsMax);
  // Flex is a chat-completions tier: embeddings go to standard routing whatever they ask.
  if (options.flex_ms > 0 && op == Operation::kChat) {
    if (auto flex = flex_choice(plan.choice.ranked, options.weights, plan.input_estimate,
                                plan.choice.scored_output, rule)) {
      plan.choice.ranked.insert(plan.choice.ranked.begin(), *flex);
      ++plan.attempts;
      plan.flex_raced = true;
    }
  }
  return std::nullopt;
}

std::optional<Refusal> Gateway::refuse_model(Operation op, const RequestBody& body,
                                             const auth::KeyGrant& grant,
                                             std::span<const catalog::Model* const> models,
                                             std::int64_t input_estimate) const {
  if (models.empty()) {
    if (body.model == kAutoModel) {
      return Refusal{403,
                     fmt::format("no {} model served through the {} API that this key may "
                                 "use meets routing.auto_quality_floor and fits this request's "
                                 "length",
                                 op == Operation::kEmbeddings ? "embeddings" : "chat",
                                 catalog::api_name(info_for(op).api)),
                     "no_model_available"};
    }
    return Refusal{404,
                   fmt::format("model '{}' does not exist", json::utf8_prefix(body.model, 200)),
                   "model_not_found"};
  }
  const catalog::Model& model = *models.front();
  if (models.size() == 1 && !grant.may_use(model.name)) {
    return Refusal{403,
                   fmt::format("this key (or its account) may not use model '{}'",
                               json::utf8_prefix(body.model, 200)),
                   "model_not_allowed"};
  }
  // An embeddings model cannot answer a chat. (An embeddings request may name a model of
  // either kind: configurations from before `kind` existed name theirs as chat models.)
  if (model.kind == catalog::ModelKind::kEmbeddings && op != Operation::kEmbeddings) {
    return Refusal{400,
                   fmt::format("model '{}' is an embeddings model: send it to /v1/embeddings",
                               model.name),
                   "model_not_supported"};
  }
  // Checked against the typical estimate, not the upper bound: a long prompt should not be
  // refused on a guess four times its size. ("auto" only offers models it fits.) Not an
  // embeddings batch: its limit is each input's, which the provider checks.
  if (op != Operation::kEmbeddings &&
      input_estimate > static_cast<std::int64_t>(model.context_tokens)) {
    return Refusal{400,
                   fmt::format("this request is about {} tokens; model '{}' takes at most {}",
                               input_estimate, model.name, model.context_tokens),
                   "context_length_exceeded"};
  }
  return std::nullopt;
}

Refusal Gateway::no_route(const catalog::Model& model, std::string_view asked, const Constraints& c,
                          const RouteChoice& choice, bool tier_from_policy) const {
  switch (choice.furthest) {
    case Admission::kResting:
    case Admission::kAdmitted:
      return Refusal{
          503,
          fmt::format("no healthy route for model '{}': every upstream that may "
                      "serve it is resting, after failed requests or failed health "
                      "probes",
                      asked),
          "no_healthy_route",
          choice.rests_for == std::chrono::steady_clock::duration::max()
              ? 1u
              : static_cast<std::uint32_t>(std::max<std::int64_t>(
                    1, std::chrono::ceil<std::chrono::seconds>(choice.rests_for).count()))};
    case Admission::kExcludedByRule:
    {
      // The tier is named only when it narrowed the routes the rule had to choose from.
      const bool narrowed =
          std::any_of(model.routes.begin(), model.routes.end(), [&](const catalog::Route& r) {
            return state_->catalog().provider(r).privacy_tier > c.tier;
          });
      return Refusal{403,
                     fmt::format("routing rule '{}' leaves no route for model '{}'{}",
                                 choice.excluded_by->name, asked,
                                 narrowed
                                     ? fmt::format(" among those at privacy tier '{}' or tighter",
                                                   catalog::privacy_tier_name(c.tier))
                                     : std::string()),
                     "excluded_by_routing_rule"};
    }
    case Admission::kLooserTier:
      // Never a silent downgrade: the request's tier is a constraint, not a preference.
      return Refusal{403,
                     fmt::format("no route for model '{}' runs on a provider at privacy tier "
                                 "'{}' or tighter{}",
                                 asked, catalog::privacy_tier_name(c.tier),
                                 tier_from_policy
                                     ? " (the routing policy of this key or its account)"
                                     : ""),
                     "privacy_tier_not_met"};
    case Admission::kUnpriced: {
      // Named: the options no route of the API prices; else (each has a route, but no route
      // has all) every one of them.
      const PricedOptions alone = each_unpriced(c.priced, [&](const PricedOptions& one) {
        return std::any_of(model.routes.begin(), model.routes.end(), [&](const auto& r) {
          return state_->catalog().provider(r).api == c.api && premium_for(r, one).has_value();
        });
      });
      const bool combined = alone.none();
      return Refusal{400,
                     fmt::format("model '{}' has no route that prices {}{}", asked,
                                 combined ? "all of " : "",
                                 describe(combined ? c.priced : alone)),
                     "option_not_priced"};
    }
    case Admission::kOtherApi: break;
  }
  const catalog::Provider& first = state_->catalog().provider(model.routes.front());
  return Refusal{400,
                 fmt::format("model '{}' is served through the {} API; call {}", model.name,
                             catalog::api_name(first.api),
                             first.api == Api::kOpenAI ? "/v1/chat/completions" : "/v1/messages"),
                 "wrong_api"};
}

constexpr double kLatencyEwmaWeight = 0.2;  // of each new measurement

Gateway::Admission Gateway::admission(const catalog::Model& model, const catalog::Route& route,
                                       const Constraints& c,
                                       std::chrono::steady_clock::time_point now) const {
  const catalog::Provider& p = state_->catalog().provider(route);
  if (p.api != c.api) return Admission::kOtherApi;
  // Before the policy checks, so that a route that prices the request but policy keeps out
  // is refused for the policy, never for a price.
  if (!premium_for(route, c.priced)) return Admission::kUnpriced;
  if (p.privacy_tier > c.tier) return Admission::kLooserTier;
  if (c.excluding(model, p.index) != nullptr) return Admission::kExcludedByRule;
  // Closed, or half-open after the cooldown, and its provider not marked down: may be tried.
  return rests_now(route, now) ? Admission::kResting : Admission::kAdmitted;
}

std::string Gateway::exclusion(const catalog::Model& model, const catalog::Route& route,
                               const Constraints& c) const {
  const auto now = std::chrono::steady_clock::now();
  const catalog::Provider& p = state_->catalog().provider(route);
  switch (admission(model, route, c, now)) {
    case Admission::kAdmitted: return {};
    case Admission::kOtherApi:
      return fmt::format("served through the {} API", catalog::api_name(p.api));
    case Admission::kLooserTier:
      return fmt::format("provider tier '{}' is looser than the required '{}'",
                         catalog::privacy_tier_name(p.privacy_tier),
                         catalog::privacy_tier_name(c.tier));
    case Admission::kExcludedByRule: {
      const router::Rule& rule = *c.excluding(model, p.index);
      return fmt::format("routing rule '{}' {} provider '{}'", rule.name,
                         rule.pin.empty() ? "excludes" : "does not pin", p.name);
    }
    case Admission::kUnpriced:
      return fmt::format("no price for {}",
                         describe(each_unpriced(c.priced, [&](const PricedOptions& one) {
                           return premium_for(route, one).has_value();
                         })));
    case Admission::kResting: {
      const ProviderHealth& probes = state_->provider_health();
      if (probes.down(p.index)) {
        return fmt::format("provider '{}' failed its last {} health probes (down since {}); "
                           "skipped until a probe answers",
                           p.name, probes.failures(p.index),
                           format_rfc3339(probes.down_since_ms(p.index)));
      }
      const router::Breaker& h = health_[route.index];
      const router::BreakerSettings& b = state_->config().breaker;
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(h.open_until() - now);
      return h.failures_in_a_row() >= b.failures
                 ? fmt::format("circuit open after {} failures in a row; retried in {} ms",
                               h.failures_in_a_row(), left.count())
                 : fmt::format("circuit open: {} of the last {} attempts failed; retried in {} ms",
                               h.recent_failures(b.window), std::min(b.window, h.attempts_seen()),
                               left.count());
    }
  }
  return {};
}

void Gateway::upstream_failed(const catalog::Route& route) {
  stats_->error(route.index);
  router::Breaker& h = health_[route.index];
  const router::Breaker::Change change =
      h.failed(state_->config().breaker, std::chrono::steady_clock::now());
  if (change == router::Breaker::Change::kNone) return;
  stats_->circuit_open_until(route.index, h.open_until());
  if (change == router::Breaker::Change::kOpened) {
    log::warn("route circuit opened", {{"provider", state_->catalog().provider(route).name},
                                        {"upstream_model", route.upstream_model},
                                        {"failures_in_a_row", h.failures_in_a_row()}});
  } else if (change == router::Breaker::Change::kReopened) {
    log::warn("route circuit reopened: its probe failed",
              {{"provider", state_->catalog().provider(route).name},
               {"upstream_model", route.upstream_model},
               {"failures_in_a_row", h.failures_in_a_row()}});
  }
}

void Gateway::upstream_answered(const catalog::Route& route) {
  if (health_[route.index].succeeded() == router::Breaker::Change::kClosed) {
    log::info("route circuit closed", {{"provider", state_->catalog().provider(route).name},
                                        {"upstream_model", route.upstream_model}});
    stats_->circuit_open_until(route.index, {});
  }
}

router::Candidate Gateway::candidate_for(const catalog::Model& model, const catalog::Route& r,
                                         const catalog::Prices& route_prices,
                                         std::int64_t input_tokens,
                                         std::int64_t output_tokens) const {
  const RouteLatency& seen = latency_[r.index];
  const catalog::Prices prices = catalog::for_input(route_prices, input_tokens);
  router::Candidate c{
      model.quality,
      cost_of(input_tokens, prices.input, 0, prices.cached_input, output_tokens, prices.output),
      seen.ttfb_ms >= 0 ? seen.ttfb_ms : r.ttfb_ms,
      seen.tokens_per_second >= 0 ? seen.tokens_per_second : r.tokens_per_second,
      static_cast<double>(output_tokens), state_->catalog().provider(r).rebate_percent};
  c.exact_cost_nanos = (static_cast<double>(input_tokens) * prices.input.nanos() +
                        static_cast<double>(output_tokens) * prices.output.nanos()) /
                       1e6;
  return c;
}

Task<void> Gateway::explain(http::Request& req, Responder& res) {
  const auth::KeyGrant* grant = co_await authenticate(bearer_token(req), Surface::kOpenAI, res);
  if (grant == nullptr) co_return;
  auto parsed = parse_request_body(req.body());
  if (!parsed) {
    co_await send_error(res, Surface::kOpenAI, 400, parsed.status().message());
    co_return;
  }
  const RequestBody& body = parsed.value();
  // Refused as the same request on /v1/chat/completions would be, with the same answer.
  if (!body.has_model || body.model.empty()) {
    co_await send_error(res, Surface::kOpenAI, 400, "'model' is required");
    co_return;
  }
  RouteOptions options;
  if (const auto refused = read_options(body, req, state_->config().weights, *grant, options)) {
    co_await send_error(res, Surface::kOpenAI, refused->status, refused->message, refused->code);
    co_return;
  }
  const router::Rule* rule = match_rule(body, *grant, options);
  const router::Weights& weights = options.weights;
  const std::int64_t input_tokens = input_tokens_estimate(body);
  const std::vector<const catalog::Model*> models =
      models_for(Operation::kChat, body, *grant, input_tokens);
  if (const auto refused = refuse_model(Operation::kChat, body, *grant, models, input_tokens)) {
    co_await send_error(res, Surface::kOpenAI, refused->status, refused->message, refused->code);
    co_return;
  }
  std::string_view preference = req["x-turnpike-route-preference"];
  if (preference.empty()) preference = "balanced";
  // The same estimate and constraints as a real request on /v1/chat/completions.
  const catalog::PrivacyTier tier = options.tier;
  const Constraints constraints =
      constraints_for(Api::kOpenAI, body, *grant, options, rule, models);
  struct Listed {
    const catalog::Model* model;
    const catalog::Route* route;
    std::string excluded;
    std::optional<std::size_t> scored;  // index into candidates
  };
  std::vector<Listed> listed;
  std::vector<bool> kept(models.size(), false);  // a model with a candidate route
  for (std::size_t i = 0; i < models.size(); ++i) {
    for (const catalog::Route& r : models[i]->routes) {
      listed.push_back({models[i], &r, exclusion(*models[i], r, constraints), std::nullopt});
      if (listed.back().excluded.empty()) kept[i] = true;
    }
  }
  // Every candidate scored at one output, as choose_route does.
  const std::int64_t output = scored_output(
      models, [&](std::size_t i) { return kept[i]; },
      [&](const catalog::Model& m) { return output_bound(body, m); });
  std::vector<router::Candidate> candidates;
  std::vector<std::size_t> candidate_provider;  // each candidate's provider
  for (Listed& l : listed) {
    if (!l.excluded.empty()) continue;
    l.scored = candidates.size();
    candidates.push_back(
        candidate_for(*l.model, *l.route,
                      prices_at(*l.route, false, premium_for(*l.route, constraints.priced).value()),
                      input_tokens, output));
    candidate_provider.push_back(l.route->provider);
  }
  const std::vector<router::Terms> terms = router::score(candidates, weights);
  std::vector<std::size_t> order = router::rank(terms);
  if (rule != nullptr) {
    router::order_by_fallback(*rule, order, [&](std::size_t i) { return candidate_provider[i]; });
  }
  // Six decimals are plenty to read and compare; the shortest exact form of a double is not.
  auto shown = [](double x) { return std::round(x * 1e6) / 1e6; };
  std::string out;
  json::Writer w(out);
  // Always true by now: a model the key may not use was refused above, and "auto" only
  // offers models it may use. Kept for the clients that read it.
  w.begin_object().field("model", body.model).field("allowed_for_key", true);
  w.field("privacy_tier", catalog::privacy_tier_name(tier));
  w.field("privacy_tier_from", options.tier_from_policy ? "policy"
                               : options.tier_asked    ? "request"
                                                       : "default");
  w.field("preference", preference).field("weights_from", options.weights_from).key("rule");
  if (rule == nullptr) w.null(); else w.value(rule->name);
  w.key("weights").begin_object().field("quality", shown(weights.quality));
  w.field("cost", shown(weights.cost)).field("latency", shown(weights.latency)).end_object();
  w.key("estimate").begin_object().field("input_tokens", input_tokens);
  w.field("output_tokens", output).end_object();
  w.key("candidates").begin_array();
  for (const Listed& l : listed) {
    const catalog::Provider& p = state_->catalog().provider(*l.route);
    w.begin_object();
    // Named whenever the router chose the model ("auto"), even with one to choose from.
    if (models.size() > 1 || models.front()->name != body.model) w.field("model", l.model->name);
    w.field("provider", p.name).field("upstream_model", l.route->upstream_model);
    w.field("privacy_tier", catalog::privacy_tier_name(p.privacy_tier));
    w.field("verdict", l.excluded.empty() ? "candidate" : "excluded: " + l.excluded);
    if (l.scored) {
      const router::Candidate& c = candidates[*l.scored];
      const router::Terms& t = terms[*l.scored];
      const RouteLatency& seen = latency_[l.route->index];
      w.field("cost_usd", c.cost.to_string());
      if (l.route->flex) {
        const catalog::Prices flex =
            prices_at(*l.route, true, premium_for(*l.route, constraints.priced).value());
        w.field("flex_cost_usd",
                candidate_for(*l.model, *l.route, flex, input_tokens, output)
                    .cost.to_string());
      }
      w.field("ttfb_ms", c.ttfb_ms);
      w.field("tokens_per_second", c.tokens_per_second);
      w.field("measured", seen.ttfb_ms >= 0 || seen.tokens_per_second >= 0);
      w.field("rebate_percent", c.rebate_percent);
      w.key("terms").begin_object().field("quality", shown(t.quality));
      w.field("cost", shown(t.cost)).field("latency", shown(t.latency));
      w.field("base", shown(t.base)).field("rebate", shown(t.rebate));
      w.field("total", shown(t.total)).end_object();
      const auto at = std::find(order.begin(), order.end(), *l.scored);
      w.field("rank", static_cast<std::int64_t>(at - order.begin()) + 1);
    }
    w.end_object();
  }
  w.end_array().key("pick");
  const auto picked = order.empty() ? listed.end()
                                    : std::find_if(listed.begin(), listed.end(),
                                                   [&](const Listed& l) {
                                                     return l.scored == order.front();
                                                   });
  if (picked == listed.end()) {
    w.null();
    // What the real request would be answered: the same refusal, from the same choice.
    const RouteChoice none =
        choose_route(models, constraints, weights, input_tokens,
                     [&](const catalog::Model& m) { return output_bound(body, m); });
    const Refusal refusal =
        no_route(*models.front(), body.model, constraints, none, options.tier_from_policy);
    w.key("refusal").begin_object().field("status", static_cast<std::int64_t>(refusal.status));
    w.field("code", refusal.code).field("message", refusal.message).end_object();
  } else {
    w.begin_object().field("model", picked->model->name);
    w.field("provider", state_->catalog().provider(*picked->route).name);
    w.field("upstream_model", picked->route->upstream_model);
    w.field("score", shown(terms[order.front()].total)).end_object();
  }
  if (options.flex_ms > 0) {
    // The flex race: its first attempt, scored among the candidates with a flex tier at
    // their flex prices; the pick above is where it goes when flex is late or refused.
    // In ranked order, as the real request offers them (ties go the same way).
    std::vector<const Listed*> by_candidate(candidates.size());
    for (const Listed& l : listed) {
      if (l.scored) by_candidate[*l.scored] = &l;
    }
    std::vector<Ranked> admitted;
    for (const std::size_t i : order) {
      const Listed& l = *by_candidate[i];
      admitted.push_back({l.route, 0, l.model, output_bound(body, *l.model), false,
                          premium_for(*l.route, constraints.priced).value()});
    }
    w.field("start_within_ms", options.flex_ms).key("flex_pick");
    if (const auto flex = flex_choice(admitted, weights, input_tokens, output, rule)) {
      w.begin_object().field("model", flex->model->name);
      w.field("provider", state_->catalog().provider(*flex->route).name);
      w.field("upstream_model", flex->route->upstream_model);
      w.field("score", shown(flex->score)).end_object();
    } else {
      w.null();
    }
  }
  w.end_object();
  co_await res.send(200, kJson, out);
}

Gateway::RouteChoice Gateway::choose_route(
    std::span<const catalog::Model* const> models, const Constraints& c,
    const router::Weights& weights, std::int64_t input_tokens,
    const std::function<std::int64_t(const catalog::Model&)>& output_tokens) {
  const auto now = std::chrono::steady_clock::now();
  RouteChoice choice;
  auto admitted = [&](const catalog::Model& m, const catalog::Route& r) {
    const Admission a = admission(m, r, c, now);
    choice.furthest = std::max(choice.furthest, a);
    if (a == Admission::kExcludedByRule && choice.excluded_by == nullptr) {
      choice.excluded_by = c.excluding(m, state_->catalog().provider(r).index);
    }
    if (a == Admission::kResting) {
      // Until its circuit lets a probe through, and (if the probes found its provider
      // down) at least until the next probe.
      const router::Breaker& b = health_[r.index];
      std::chrono::steady_clock::duration rests{0};
      if (b.resting(now)) rests = b.open_until() - now;
      if (state_->provider_health().down(state_->catalog().provider(r).index)) {
        rests = std::max<std::chrono::steady_clock::duration>(
            rests, std::chrono::milliseconds(
                       std::max<std::uint32_t>(state_->config().probe.interval_ms, 1000)));
      }
      choice.rests_for = std::min(choice.rests_for, rests);
    }
    return a == Admission::kAdmitted;
  };
  // The common case, one model with one route: its score needs no comparison.
  if (models.size() == 1 && models.front()->routes.size() == 1) {
    const catalog::Model& m = *models.front();
    choice.scored_output = output_tokens(m);
    if (admitted(m, m.routes.front())) {
      choice.ranked.push_back({&m.routes.front(),
                               weights.quality * m.quality + weights.cost + weights.latency, &m,
                               choice.scored_output, false,
                               premium_for(m.routes.front(), c.priced).value()});
    }
    return choice;
  }
  std::vector<Ranked> routes;
  std::vector<bool> kept(models.size(), false);  // a model with an admitted route
  for (std::size_t i = 0; i < models.size(); ++i) {
    const catalog::Model* m = models[i];
    const std::int64_t output = output_tokens(*m);
    for (const catalog::Route& r : m->routes) {
      if (!admitted(*m, r)) continue;
      routes.push_back({&r, 0, m, output, false, premium_for(r, c.priced).value()});
      kept[i] = true;
    }
  }
  choice.scored_output = scored_output(
      models, [&](std::size_t i) { return kept[i]; }, output_tokens);
  std::vector<router::Candidate> candidates;
  candidates.reserve(routes.size());
  for (const Ranked& r : routes) {
    candidates.push_back(
        candidate_for(*r.model, *r.route, r.prices(), input_tokens, choice.scored_output));
  }
  const std::vector<router::Terms> terms = router::score(candidates, weights);
  std::vector<std::size_t> order = router::rank(terms);
  if (c.rule != nullptr) {
    router::order_by_fallback(*c.rule, order,
                              [&](std::size_t i) { return routes[i].route->provider; });
  }
  choice.ranked.reserve(routes.size());
  for (const std::size_t i : order) {
    routes[i].score = terms[i].total;
    choice.ranked.push_back(routes[i]);
  }
  return choice;
}

const router::Rule* Gateway::match_rule(const RequestBody& body, const auth::KeyGrant& grant,
                                        RouteOptions& options) const {
  const std::vector<router::Rule>& rules = state_->config().rules;
  if (rules.empty()) return nullptr;
  const router::Rule* rule =
      router::first_match(rules, {body.model, grant.account_id, grant.tags, options.tier});
  if (rule != nullptr && rule->weights && options.weights_from != "preference") {
    options.weights = *rule->weights;
    options.weights_from = "rule";
  }
  return rule;
}

Gateway::Constraints Gateway::constraints_for(Api api, const RequestBody& body,
                                              const auth::KeyGrant& grant,
                                              const RouteOptions& options,
                                              const router::Rule* rule,
                                              std::span<const catalog::Model* const> models) const {
  Constraints c{api, options.tier, rule, priced_options(body, api), {}};
  const std::vector<router::Rule>& rules = state_->config().rules;
  // A model asked for by name matched its rule above; "auto" matched on "auto".
  if (rules.empty() || models.empty() || models.front()->name == body.model) return c;
  c.model_rules.reserve(models.size());
  for (const catalog::Model* m : models) {
    c.model_rules.emplace_back(
        m, router::first_match(rules, {m->name, grant.account_id, grant.tags, options.tier}));
  }
  return c;
}

std::optional<Gateway::Ranked> Gateway::flex_choice(std::span<const Ranked> ranked,
                                                    const router::Weights& weights,
                                                    std::int64_t input_tokens,
                                                    std::int64_t output_tokens,
                                                    const router::Rule* rule) const {
  std::vector<Ranked> routes;
  std::vector<router::Candidate> candidates;
  for (const Ranked& r : ranked) {
    if (!r.route->flex) continue;
    routes.push_back(r);
    routes.back().flex = true;
    candidates.push_back(candidate_for(*r.model, *r.route, routes.back().prices(), input_tokens,
                                       output_tokens));
  }
  const std::vector<router::Terms> terms = router::score(candidates, weights);
  // `ranked` is in the rule's fallback order already: its first flex route leads when the
  // order lists its provider (the unlisted ones follow by standard score, not flex).
  const bool ordered =
      rule != nullptr && !routes.empty() &&
      std::find(rule->fallback_order.begin(), rule->fallback_order.end(),
                routes.front().route->provider) != rule->fallback_order.end();
  const std::optional<std::size_t> best =
      ordered ? std::optional<std::size_t>(0) : router::pick(terms);
  if (!best) return std::nullopt;
  routes[*best].score = terms[*best].total;
  return routes[*best];
}

std::vector<const catalog::Model*> Gateway::models_for(Operation op, const RequestBody& body,
                                                       const auth::KeyGrant& grant,
                                                       std::int64_t input_tokens) const {
  const catalog::Catalog& cat = state_->catalog();
  std::vector<const catalog::Model*> models;
  if (const catalog::Model* named = cat.find_model(body.model)) {
    models.push_back(named);  // a model may be called "auto"; then it is that model
  } else if (body.model == kAutoModel) {
    // Only models of the request's kind with a route on its API: a chat never lands on an
    // embeddings model, nor on a model only the other API serves.
    const catalog::ModelKind kind = op == Operation::kEmbeddings ? catalog::ModelKind::kEmbeddings
                                                                 : catalog::ModelKind::kChat;
    const Api api = info_for(op).api;
    const auto on_api = [&](const catalog::Route& r) { return cat.provider(r).api == api; };
    for (const catalog::Model& m : cat.models()) {
      if (m.kind == kind && std::any_of(m.routes.begin(), m.routes.end(), on_api) &&
          grant.may_use(m.name) &&
          m.quality >= state_->config().auto_quality_floor &&
          (op == Operation::kEmbeddings ||
           input_tokens <= static_cast<std::int64_t>(m.context_tokens))) {
        models.push_back(&m);
      }
    }
  }
  return models;
}

void Gateway::observe_ttfb(const catalog::Route& route, std::chrono::steady_clock::duration ttfb) {
  const double ms = std::chrono::duration<double, std::milli>(ttfb).count();
  double& avg = latency_[route.index].ttfb_ms;
  avg = avg < 0 ? ms : avg + kLatencyEwmaWeight * (ms - avg);
}

void Gateway::observe_speed(const catalog::Route& route, std::int64_t output_tokens,
                            std::chrono::steady_clock::duration decoding) {
  const double seconds = std::chrono::duration<double>(decoding).count();
  if (output_tokens < 2 || seconds <= 0) return;
  const double speed = static_cast<double>(output_tokens) / seconds;
  double& avg = latency_[route.index].tokens_per_second;
  avg = avg < 0 ? speed : avg + kLatencyEwmaWeight * (speed - avg);
}

void Gateway::keep_hold(Bill& bill) {
  // A bill being settled has its hold pinned until the post (settle): renewing it would
  // shorten that, and a stalled thread could then let it lapse before the charge is posted.
  if (bill.hold.id == 0 || bill.lapsed || bill.closed) return;
  const auto now = std::chrono::steady_clock::now();
  if (now < bill.renew_at) return;
  const std::uint32_t timeout = state_->config().billing.hold_timeout_ms;
  bill.lapsed = !state_->services().bank->renew(
      bill.hold, SystemClock::instance().monotonic_millis() + timeout);
  bill.renew_at = now + std::chrono::milliseconds(timeout / 2);
}

bool Gateway::budget_covers(Bill& bill, Money needed, Money ahead) {
  if (!bill.key.has_budget() || needed <= bill.key.set_aside()) return true;
  for (const Money want : {std::max(needed, ahead), needed}) {
    if (!bill.key.meter()->reserve(want - bill.key.set_aside())) {
      bill.key.set_aside(want);
      return true;
    }
  }
  return false;
}

bool Gateway::cover(Bill& bill, Money needed, Money ahead) {
  // The key's budget first: a response it does not cover stops as one the balance does not.
  if (!budget_covers(bill, needed, ahead)) {
    bill.over_budget = true;
    return false;
  }
  // No more headroom from the account than from the budget: what the hold covers is what
  // a stopped response may be charged.
  if (bill.key.has_budget()) ahead = std::min(ahead, bill.key.set_aside());
  if (bill.hold.id == 0) {
    if (needed <= Money()) return true;  // free, and still costing nothing
    // A free route's answer that costs after all (a provider's search fee): held now, as
    // for a lapsed hold, or the response stops. Nothing is charged without a hold.
    bill.lapsed = true;
  }
  if (!bill.lapsed && (bill.may_overdraw || needed <= bill.covered)) return true;
  ledger::Bank& bank = *state_->services().bank;
  const std::int64_t now = SystemClock::instance().unix_millis();
  if (bill.lapsed) {
    // Nothing is reserved any more: a new hold for all of it, or the response stops.
    const std::int64_t until =
        SystemClock::instance().monotonic_millis() + state_->config().billing.hold_timeout_ms;
    const std::int64_t account = bill.hold.account;
    auto fresh = bank.hold(account, std::max(needed, ahead), until, now);
    if (!fresh) fresh = bank.hold(account, needed, until, now);
    const bool enough = fresh.is_ok();
    if (!fresh) {  // what there is, for the charge of a response that stops here
      const auto balance = bank.balance(account, now);
      if (balance && balance->available > Money()) {
        fresh = bank.hold(account, balance->available, until, now);
      }
    }
    if (!fresh) {
      bill.covered = Money();
      return false;
    }
    bill.hold = *fresh;
    bill.covered = fresh->amount;
    bill.may_overdraw = false;
    bill.lapsed = false;
    bill.renew_at = std::chrono::steady_clock::now() +
                    std::chrono::milliseconds(state_->config().billing.hold_timeout_ms / 2);
    return enough;
  }
  if (ahead > needed) {
    auto got = bank.cover(bill.hold, ahead, now, /*may_overdraw=*/false);
    if (got && got->kind != ledger::Wallet::Cover::kRefused) {
      bill.covered = got->reserved;
      bill.may_overdraw = got->kind == ledger::Wallet::Cover::kOverdraft;
      return true;
    }
  }
  auto got = bank.cover(bill.hold, needed, now);
  if (!got) {  // it lapsed since the last renewal
    bill.lapsed = true;
    return cover(bill, needed, ahead);
  }
  bill.covered = got->reserved;
  bill.may_overdraw = got->kind == ledger::Wallet::Cover::kOverdraft;
  return got->kind != ledger::Wallet::Cover::kRefused;
}

std::optional<Refusal> Gateway::take_hold(Bill& bill, std::span<const Ranked> routes,
                                          const RequestBody& body, std::int64_t wait_ms) {
  Money worst;
  // Input is written to a provider's cache only where the request marks it (Anthropic's
  // cache_control): then it may cost the cache-write prices. The body is searched for the
  // mark only when a route's writes cost more than its input.
  const bool writes_cost_more = std::any_of(routes.begin(), routes.end(), [](const Ranked& r) {
    const catalog::Prices p = r.prices();
    return std::max(p.cache_write, p.cache_write_1h) > std::max(p.input, p.cached_input);
  });
  const bool caches =
      writes_cost_more && body.text.find("\"cache_control\"") != std::string_view::npos;
  const std::int64_t input_max_tokens = input_tokens_max(body);
  std::int64_t input_held = 0;  // the input the hold assumes, on the route assuming most
  for (const Ranked& ranked : routes) {
    // No provider takes more input than the model's context (more is refused, at no
    // cost): a bound past it holds nothing real.
    const std::int64_t input_tokens =
        std::min<std::int64_t>(input_max_tokens, ranked.model->context_tokens);
    input_held = std::max(input_held, input_tokens);
    const catalog::Prices p = catalog::for_input(ranked.prices(), input_tokens);
    PricePerMtok input_max = std::max(p.input, p.cached_input);
    if (caches) input_max = std::max({input_max, p.cache_write, p.cache_write_1h});
    PricePerMtok output_max = p.output;
    if (body.wants_audio) {
      input_max = std::max(input_max, p.audio_input);
      output_max = std::max(output_max, p.audio_output);
    }
    worst = std::max(worst, cost_of({{input_tokens, input_max},
                                     {ranked.output_tokens, output_max},
                                     {body.web_searches_max * meter::kTokensPerSearch,
                                      p.web_search_per_1k}}));
  }
  bill.hold.account = bill.record.account_id;
  bill.input_max = input_held;
  if (worst <= Money()) return std::nullopt;  // free: nothing to hold
  if (auth::KeyMeter* meter = bill.key.meter(); meter != nullptr) {
    if (auto refused = meter->reserve(worst)) {
      return Refusal{402, std::move(*refused), "budget_exceeded"};
    }
    bill.key.set_aside(worst);
  }
  const std::int64_t now = bill.record.at_ms;
  const std::uint32_t timeout = state_->config().billing.hold_timeout_ms;
  auto hold = state_->services().bank->hold(
      bill.record.account_id, worst,
      SystemClock::instance().monotonic_millis() + wait_ms + timeout, now);
  if (!hold) {
    return Refusal{402,
                   hold.status().kind() == ErrorKind::kPaymentRequired
                       ? hold.status().message()
                       : std::string("this account has no credit"),
                   "insufficient_balance"};
  }
  bill.hold = *hold;
  bill.covered = hold->amount;
  bill.renew_at = std::chrono::steady_clock::now() + std::chrono::milliseconds(wait_ms) +
                  std::chrono::milliseconds(timeout / 2);
  return std::nullopt;
}

Task<Gateway::Answered> Gateway::send_with_fallback(const OperationInfo& info,
                                                    const http::Request& req,
                                                    const RequestBody& body, bool stream,
                                                    bool ask_for_usage,
                                                    std::span<const Ranked> routes,
                                                    std::int64_t flex_ms, Bill& bill) {
  Answered out;
  std::string rewritten;
  std::string head;
  // The fallback deadline counts from the first standard attempt: a flex wait is the
  // client's own choice. The attempts after that one must answer within it.
  std::optional<std::chrono::steady_clock::time_point> deadline;
  auto deadline_passed = [&](std::string_view provider) {
    return Status{ErrorKind::kUpstreamTimeout,
                  fmt::format("upstream '{}' had not answered when routing.fallback_deadline_ms "
                              "({} ms) passed",
                              provider, state_->config().fallback_deadline_ms)};
  };
  auto attempt_failed = [&](Status why) {
    out.failures.push_back(why.message());
    out.failure = std::move(why);
  };
  bool deadline_stopped = false;  // a route was left untried because the deadline passed
  // Whether a standard route after `attempt` would still be tried: a fallback attempt skips
  // one that rests now (below). When none would, this answer stands.
  auto another_would_be_tried = [&](std::size_t attempt,
                                    std::chrono::steady_clock::time_point now) {
    return std::any_of(routes.begin() + static_cast<std::ptrdiff_t>(attempt) + 1, routes.end(),
                       [&](const Ranked& later) { return !rests_now(*later.route, now); });
  };
  for (; out.attempt < routes.size(); ++out.attempt) {
    if (bill.client_gone()) {
      // Nobody to answer: no further route is tried.
      if (out.failure.is_ok()) {
        out.failure = Status{ErrorKind::kUpstreamTimeout, "the client went away"};
      }
      break;
    }
    const bool flex = routes[out.attempt].flex;
    // A whole answer's flex attempt goes as a stream: its start must be seen within the
    // flex window, and a whole answer's head would come only with its end.
    const bool gathering = flex && !stream;
    const auto sent_at = std::chrono::steady_clock::now();
    const bool falling_back = !flex && deadline.has_value();
    if (!flex && !deadline) {
      deadline = sent_at + std::chrono::milliseconds(state_->config().fallback_deadline_ms);
    } else if (!flex && sent_at >= *deadline) {
      deadline_stopped = true;
      break;
    }
    const catalog::Route& r = *routes[out.attempt].route;
    const catalog::Provider& p = state_->catalog().provider(r);
    // The first standard attempt after a flex one is a fallback too: the flex wait may have
    // been long enough for its circuit to open or its provider to be found down. (Not the
    // flex attempt's own route: that attempt may have been its half-open probe.)
    const bool flex_route_again =
        out.attempt > 0 && routes[out.attempt - 1].flex && routes[out.attempt - 1].route == &r;
    if ((falling_back || (!flex && out.attempt > 0 && !flex_route_again)) &&
        rests_now(r, sent_at)) {
      // Its circuit opened (or a probe of it went out), or the probes found its provider
      // down, since the request was ranked: not tried, as a new request would not be.
      ++out.skipped;
      continue;
    }
    // The client's bytes go as they came unless the model name or Turnpike's own options
    // must change, or an OpenAI stream must be asked for its usage.
    std::string_view upstream_body = req.body();
    if (r.upstream_model != body.model || body.has_options() || ask_for_usage || flex) {
      rewritten = rewrite_request_body(
          body, r.upstream_model, ask_for_usage || gathering,
          flex ? "flex" : (bill.asked.priority ? "priority" : std::string_view()), gathering);
      upstream_body = rewritten;
    }
    const http::UpstreamEndpoint& endpoint = state_->endpoint(p.index);
    build_upstream_head(head, endpoint, state_->head_lines(p.index), info, p.api, req,
                        upstream_body.size(), stream || gathering);

    http::UpstreamTimeouts timeouts = state_->config().upstream;
    timeouts.cutoff = bill.cutoff;
    // A whole answer's headers come with its end.
    if (!stream) timeouts.first_byte_timeout_ms = timeouts.answer_timeout_ms;
    if (flex) {
      // The flex tier has start_within to answer, retries on a fresh connection included.
      timeouts.first_byte_timeout_ms = static_cast<std::uint32_t>(flex_ms);
      timeouts.head_by = sent_at + std::chrono::milliseconds(flex_ms);
    }
    // A fallback attempt starts within the deadline. A stream's must also send its head
    // (and, below, its first piece) within it; a whole answer's head comes with its end, so
    // once connected it has its whole answer timeout, as the first route had.
    if (falling_back) (stream ? timeouts.head_by : timeouts.start_by) = *deadline;
    // Whether a timeout of this attempt was the deadline's, not the route's own: it fired
    // at the deadline (timers run on a coarse clock, so up to a tick either side of it). A
    // stream's wait ends there at the latest; a whole answer's only while connecting, so its
    // own answer timeout, firing later, is the route's.
    auto cut_by_deadline = [&] {
      const auto now = std::chrono::steady_clock::now();
      if (!falling_back || now + http::kDeadlineTick < *deadline) return false;
      return stream || now <= *deadline + 2 * http::kDeadlineTick;
    };
    stats_->attempt(r.index, flex);
    router::Breaker& breaker = health_[r.index];
    breaker.attempting(state_->config().breaker, sent_at);
    // Half-open, this attempt is the probe and the route rests while it runs: say so.
    if (breaker.open()) stats_->circuit_open_until(r.index, breaker.open_until());
    out.last_tried = &r;
    out.last_model = routes[out.attempt].model;
    auto sent = co_await pool_.send(endpoint, head, upstream_body, timeouts);
    if (sent && flex && (stream || gathering) && (*sent)->status() == 200) {
      // A stream's headers may come before its first token: flex must start within the
      // window, so its first body bytes count.
      const auto waited = std::chrono::steady_clock::now() - sent_at;
      const auto left = std::chrono::milliseconds(flex_ms) -
                        std::chrono::duration_cast<std::chrono::milliseconds>(waited);
      const Status started =
          co_await (*sent)->await_body(static_cast<std::uint32_t>(std::max<std::int64_t>(
              1, left.count())));
      if (!started) sent = started;
    }
    // Whether a route is left to follow this one should it fail now: after a flex attempt
    // the first standard one always is; after a standard one, one that a fallback would not
    // skip. Asked when needed: a stream's first event or a whole answer's body may take long.
    auto routes_left = [&] {
      if (flex) return out.attempt + 1 < routes.size();
      return another_would_be_tried(out.attempt, std::chrono::steady_clock::now());
    };
    // Whether this one failing now is a fallback: a route is left, and the deadline has not
    // passed (else the request ends 504 naming it, having moved on nowhere).
    auto moving_on = [&] {
      return routes_left() && (flex || std::chrono::steady_clock::now() < *deadline);
    };
    if (!sent && flex && sent.status().kind() == ErrorKind::kUpstreamTimeout) {
      // Late is what flex may be: no mark against the route's health.
      log::info("flex tier did not start within start_within; trying the standard tier",
                {{"provider", p.name}, {"start_within_ms", flex_ms}});
      attempt_failed(sent.status());
      if (!bill.client_gone()) stats_->fallback(r.index);  // else nobody to answer (above)
      continue;
    }
    if (!sent && sent.status().kind() == ErrorKind::kUpstreamTimeout && cut_by_deadline()) {
      // Cut short by the deadline, not found slow by its own timeouts: no health mark.
      attempt_failed(deadline_passed(p.name));
      break;
    }
    if (!sent) {
      // Cut short at the cutoff because the client left, the route was not found failing:
      // no mark against it. Anything else is the route's own failure, even then.
      const bool cut = bill.client_gone() &&
                       sent.status().kind() == ErrorKind::kUpstreamTimeout &&
                       http::CoarseClock::now() >= *bill.cutoff;
      attempt_failed(sent.status());
      if (!cut) {
        log::warn("upstream failed", {{"request_id", bill.record.request_id},
                                      {"provider", p.name},
                                      {"error", sent.status().message()}});
        upstream_failed(r);
      }
      if (bill.client_gone()) break;  // nobody to answer: no fallback
      if (moving_on()) stats_->fallback(r.index);
      continue;
    }
    const unsigned status = (*sent)->status();
    // (A compressed stream is judged below, by its head: its bytes never make an event.)
    if (stream && status == 200 && (*sent)->is_event_stream() && !encoded(**sent)) {
      // The client's head waits for the stream's first piece: a stream that fails before
      // it (a reset, an end, an error event where the first event belongs, as Anthropic's
      // overloaded_error comes) has given the client nothing yet, and the next route may
      // still answer.
      // A model that reasons before it answers may send nothing for minutes after its head:
      // the first event may take as long as a whole answer would (answer_timeout_ms from
      // the request), and at least the idle timeout between events. A fallback attempt's wait
      // is cut at the deadline, as its head's was.
      const auto now = std::chrono::steady_clock::now();
      auto until = std::max(sent_at + std::chrono::milliseconds(timeouts.answer_timeout_ms),
                            now + std::chrono::milliseconds(timeouts.idle_timeout_ms));
      if (falling_back) until = std::min(until, *deadline);
      // Read until the first event is whole, however the upstream's bytes were split (a
      // piece with half an event decides nothing; keep-alives alone are passed on, below).
      std::string opening;
      Status read_failed;
      std::string_view failed;
      bool bom_looked_for = false;  // a byte order mark that starts it is dropped (drop_bom)
      for (;;) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            until - std::chrono::steady_clock::now());
        (*sent)->set_read_timeout(
            static_cast<std::uint32_t>(std::max<std::int64_t>(1, left.count())));
        auto piece = co_await (*sent)->read_some();
        if (!piece) {
          read_failed = piece.status();
          failed = "failed its stream before the first event";
          break;
        }
        if (piece->empty()) {
          failed = "ended its stream before the first event";
          break;
        }
        opening.append(*piece);
        if (!bom_looked_for && !(bom_looked_for = http::drop_bom(opening))) continue;
        const std::optional<bool> error_first = opens_with_error(opening);
        if (error_first.value_or(false)) {
          failed = "sent an error event where its stream's first event belongs";
        }
        // Keep-alives alone, with no event begun after them, go to the client at once (a
        // model that works for minutes before its first event keeps every hop alive with
        // them); an event begun is read whole. Past the limit of one event it is relayed
        // as it is: the relay refuses it there.
        const bool pings_only =
            !error_first && !opening.empty() && http::sse_complete_prefix(opening) == opening.size();
        if (error_first || pings_only || opening.size() > limits::kSseEventBytesMax) break;
      }
      (*sent)->set_read_timeout(timeouts.idle_timeout_ms);
      if (!failed.empty()) {
        // Cut short because the client left: no mark against the route, and nobody to
        // answer.
        if (!read_failed && read_failed.kind() == ErrorKind::kUpstreamTimeout &&
            !bill.client_gone() && cut_by_deadline()) {
          attempt_failed(deadline_passed(p.name));
          break;
        }
        attempt_failed(Status{ErrorKind::kUpstreamFailed,
                              fmt::format("upstream '{}' {}", p.name, failed)});
        if (bill.client_gone()) break;
        log::warn("upstream stream failed at its start",
                  {{"request_id", bill.record.request_id}, {"provider", p.name}, {"what", failed}});
        upstream_failed(r);
        if (moving_on()) stats_->fallback(r.index);
        continue;
      }
      out.first_piece = std::move(opening);
    }
    if (encoded(**sent)) {
      // Not what was asked for: the route is broken, like one that sends garbage.
      (void)co_await (*sent)->read_all(kErrorBodyDrainBytesMax);
      const std::string coding((*sent)->header("content-encoding"));
      log::warn("upstream sent an encoded body",
                {{"request_id", bill.record.request_id}, {"provider", p.name}, {"coding", coding}});
      upstream_failed(r);
      attempt_failed(Status{ErrorKind::kUpstreamFailed,
                            fmt::format("upstream '{}' sent its answer compressed (content "
                                        "coding) though asked not to",
                                        p.name)});
      if (moving_on()) stats_->fallback(r.index);
      continue;
    }
    // A whole 2xx answer is judged by its body (answer_whole, count_tokens): garbage under
    // a 200 is the route's failure, and must not count as its success first.
    if (route_at_fault(status)) {
      upstream_failed(r);
    } else if (status == 429 || status / 100 != 2 || (stream && (*sent)->is_event_stream())) {
      if (status == 429) stats_->rate_limited(r.index);
      upstream_answered(r);  // a 429 is the provider's limit, not its health
    }
    // A flex tier refusing in any way (it may not offer flex for this model at all) leaves
    // the standard tier to answer.
    const bool refused = route_at_fault(status) || status == 429 || (flex && status >= 300);
    if (refused && routes_left()) {
      (void)co_await (*sent)->read_all(kErrorBodyDrainBytesMax);
      const bool fallback = moving_on();
      log::warn(fallback ? "upstream refused; falling back"
                         : "upstream refused after the fallback deadline passed",
                {{"request_id", bill.record.request_id}, {"provider", p.name}, {"status", status}});
      if (fallback) stats_->fallback(r.index);
      // What the request ends with should the routes after this one all be skipped after
      // all (their circuits may open while this answer is drained).
      attempt_failed(Status{ErrorKind::kUpstreamFailed,
                            fmt::format("upstream '{}' answered HTTP {}", p.name, status)});
      continue;
    }
    if (gathering && status == 200 && (*sent)->is_event_stream()) {
      auto whole = co_await gather(**sent, p.name, body.choices, sent_at, bill);
      if (!whole) {
        // Started, then failed before its end: nothing reached the client, so the standard
        // tier still may serve. A route that breaks its streams is not healthy.
        attempt_failed(whole.status());
        if (bill.client_gone()) break;  // nobody to answer
        log::warn("flex stream failed before its end; trying the standard tier",
                  {{"request_id", bill.record.request_id},
                   {"provider", p.name},
                   {"error", whole.status().message()}});
        upstream_failed(r);
        stats_->fallback(r.index);
        continue;
      }
      out.gathered = std::move(whole.value());
    }
    // What the client gets as a whole answer: anything 2xx but the event stream it asked for
    // (relayed), or one asked for in its place (gathered, above). A server may answer a
    // stream request whole.
    const bool answers_whole = status / 100 == 2 && !((stream || gathering) && status == 200 &&
                                                      (*sent)->is_event_stream());
    if (answers_whole && routes_left()) {
      // A whole answer's body comes after its head, and nothing has reached the client yet:
      // one that fails (a reset, cut short, not ended within answer_timeout_ms) moves on to
      // the next route, as a failed head does. (The last route's is read where it is
      // answered.)
      auto whole = co_await (*sent)->read_all(
          limits::kUpstreamResponseBytesMax,
          sent_at + std::chrono::milliseconds(timeouts.answer_timeout_ms));
      if (!whole) {
        attempt_failed(whole.status());
        if (bill.client_gone()) break;  // nobody to answer, and no mark against the route
        log::warn("upstream failed its answer's body", {{"request_id", bill.record.request_id},
                                                        {"provider", p.name},
                                                        {"error", whole.status().message()}});
        upstream_failed(r);
        if (moving_on()) stats_->fallback(r.index);
        continue;
      }
      // So does a body that is no answer (an HTML page, an error object under 200), which
      // the client would get as 502. (A look for usage first: an answer has one, and then
      // is not parsed twice.)
      if (whole->find("\"usage\"") == std::string::npos &&
          answer_shape(*whole) != AnswerShape::kObject) {
        attempt_failed(Status{ErrorKind::kUpstreamFailed,
                              fmt::format("upstream '{}' sent a malformed response", p.name)});
        log::warn("upstream sent a malformed answer",
                  {{"request_id", bill.record.request_id}, {"provider", p.name}});
        upstream_failed(r);
        if (moving_on()) stats_->fallback(r.index);
        continue;
      }
      out.body = std::move(whole.value());
    }
    bill.sent_at = sent_at;
    // A stream's headers come with its first token; a whole response's only at its end,
    // which says nothing about time to first token. Observed when the stream completes
    // (settle): an error's quick head would make a failing route look fast.
    if (stream) bill.first_byte = std::chrono::steady_clock::now();
    out.response = std::move(sent.value());
    break;
  }
  if (!out.response && deadline_stopped) {
    const std::string tried = failures_text(out.failures, {});
    out.failure = Status{
        ErrorKind::kUpstreamTimeout,
        fmt::format("{}{}o further route was tried: routing.fallback_deadline_ms ({} ms) had "
                    "passed",
                    tried, tried.empty() ? "N" : "; n", state_->config().fallback_deadline_ms)};
  } else if (!out.response && out.failures.size() > 1) {
    out.failure = Status{out.failure.kind(), failures_text(out.failures, {})};
  }
  co_return out;
}

Task<void> Gateway::count_tokens(const OperationInfo& info, const http::Request& req,
                                 Responder& res, const Plan& plan,
                                 std::span<const Ranked> routes, Bill& bill) {
  watch_client(bill, res, std::chrono::milliseconds(0));  // nothing to bill: cut at once
  Answered sent = co_await send_with_fallback(info, req, plan.body, /*stream=*/false,
                                              /*ask_for_usage=*/false, routes, 0, bill);
  if (!sent.response) {
    co_await send_error(res, info.surface, http_status(sent.failure.kind()),
                        sent.failure.message());
    co_return;
  }
  http::UpstreamResponse& upstream = *sent.response;
  const Ranked& served = routes[sent.attempt];
  const catalog::Provider& provider = state_->catalog().provider(*served.route);
  if (!route_at_fault(upstream.status())) stats_->served(served.route->index, false);
  RouteHeaders route_headers;
  std::vector<Header> headers =
      route_headers.of(provider, *served.model, served.score, *served.route,
                       sent.attempt - sent.skipped, false, false);
  forwardable_headers(upstream.headers(), headers);
  if (route_at_fault(upstream.status())) {
    (void)co_await upstream.read_all(kErrorBodyDrainBytesMax);
    co_await send_error(res, info.surface, 502,
                        fmt::format("upstream '{}' answered HTTP {}", provider.name,
                                    upstream.status()),
                        {}, headers);
    co_return;
  }
  auto whole = co_await upstream.read_all(kErrorBodyDrainBytesMax);
  if (upstream.status() / 100 == 2 && !bill.client_gone()) {
    // Its health, judged by the body (send_with_fallback left a 2xx to this).
    const bool answered = whole && answer_shape(*whole) == AnswerShape::kObject;
    if (answered) upstream_answered(*served.route); else upstream_failed(*served.route);
  }
  if (!whole) {
    co_await send_error(res, info.surface, http_status(whole.status().kind()),
                        whole.status().message());
    co_return;
  }
  co_await relay_answer(res, info.surface, provider.name, upstream, whole.value(), headers);
}

Task<void> Gateway::answer_whole(http::UpstreamResponse& upstream, Surface surface, Responder& res,
                                 std::vector<Header>& headers, Bill& bill,
                                 std::optional<Gathered> gathered,
                                 std::optional<std::string> read) {
  const bool built = gathered.has_value();
  // Kept apart: closing an unpaid bill takes its record (the provider's name with it).
  const std::string provider = bill.record.provider;
  Result<std::string> whole = std::string();
  if (built) {
    whole = std::move(gathered->body);
  } else if (read) {
    whole = std::move(*read);
  } else {
    // The whole answer within the answer timeout from the request, as its head was: a body
    // dripping in just within the idle timeout is not waited for past it.
    whole = co_await upstream.read_all(
        limits::kUpstreamResponseBytesMax,
        bill.sent_at + std::chrono::milliseconds(state_->config().upstream.answer_timeout_ms));
  }
  keep_hold(bill);
  if (!whole) {
    // A 2xx whose body failed: the route's failure, unless the client's leaving cut it.
    if (upstream.status() / 100 == 2 && !bill.client_gone()) upstream_failed(*bill.route);
    const unsigned status = http_status(whole.status().kind());
    co_await void_recorded(bill, bill.status_for(status));
    co_await send_error(res, surface, status, whole.status().message(), {}, headers);
    co_return;
  }
  std::string cost;
  if (upstream.status() >= 200 && upstream.status() < 300) {
    std::optional<meter::Usage> usage;
    if (built) {
      usage = gathered->usage;
    } else {
      usage = surface == Surface::kAnthropic
                  ? meter::anthropic_usage(whole.value())
                  : meter::openai_usage(whole.value(), bill.embeddings);
    }
    // A gathered answer without its final usage is billed its running count, which never
    // reaches past the hold either.
    const bool estimated = built ? !gathered->reported : !usage;
    if (!usage && answer_shape(whole.value()) != AnswerShape::kObject) {
      // An HTML page, a body cut short, an error object under 200: not an answer, and
      // nothing to pay for. (Named before void_recorded takes the record.)
      const std::string message =
          fmt::format("upstream '{}' sent a malformed response", bill.record.provider);
      log::warn("upstream sent a malformed answer",
                {{"request_id", bill.record.request_id}, {"provider", bill.record.provider}});
      upstream_failed(*bill.route);
      co_await void_recorded(bill, bill.status_for(502));
      co_await send_error(res, surface, 502, message, {}, headers);
      co_return;
    }
    upstream_answered(*bill.route);
    // Served once its body is known to be an answer: one that failed, or is none (above),
    // reached the client as Turnpike's error.
    stats_->served(bill.route->index, bill.flex);
    if (estimated) {
      log::warn("upstream reported no usage; billing an estimate",
                {{"request_id", bill.record.request_id}, {"provider", bill.record.provider}});
      if (!usage) {
        usage = meter::Usage{bill.input_estimate, 0,
                             bill.embeddings
                                 ? 0
                                 : static_cast<std::int64_t>((whole.value().size() + 3) / 4)};
      }
      // A guess never refuses an answer, nor reaches past its hold: it is charged what was
      // held at most (the hold is not extended for it).
      bill.capped = true;
    }
    // Usage reported past what the request can have used: a provider that ignored its
    // max_tokens, or miscounted. The answer goes out, charged what was held at most, as a
    // guess is.
    const bool overrun = !estimated && !believable(bill, *usage);
    take_served_tier(bill, *usage);
    if (!bill.flex) {
      // Said before the report came (RouteHeaders): a whole answer's head is still unsent.
      for (Header& h : headers) {
        if (h.name == "x-turnpike-service-tier") h.value = "standard";
      }
    }
    bill.premium = served_premium(bill, *usage, /*warn=*/false);
    const Money owed = meter::price(with_search_calls(bill, *usage), bill.prices());
    if (!estimated && !overrun && !cover(bill, owed)) {
      // Delivered, it would overdraw the account past one response's shortfall (or pass
      // the key's budget). Nothing is charged, but the provider did the work: its tokens
      // count against the key's tpm, as a stream stopped so does.
      bill.key.settle(usage->uncached_input() + usage->cached_tokens + usage->output_tokens,
                      Money());
      co_await void_recorded(bill, bill.status_for(402));
      const Uncovered why = uncovered(bill);
      co_await send_error(res, surface, 402,
                          fmt::format("{}: this response cost {} USD, more than the {} covers; "
                                      "it was not delivered and nothing was charged",
                                      why.reason, owed.to_string(), why.source),
                          why.code);
      co_return;
    }
    if (!co_await settle(bill, *usage, bill.status_for(upstream.status()))) {
      co_await send_error(res, surface, 503, "billing is unavailable: the store failed");
      co_return;
    }
    cost = bill.record.cost.to_string();
    headers.push_back({"x-turnpike-cost-usd", cost});
  } else {
    // Refused upstream (the client's fault, relayed): nothing to pay.
    stats_->served(bill.route->index, bill.flex);
    co_await void_recorded(bill, bill.status_for(upstream.status()));
  }
  if (built) {
    co_await res.send(200, kJson, whole.value(), headers);  // JSON, though streamed upstream
    co_return;
  }
  co_await relay_answer(res, surface, provider, upstream, whole.value(), headers);
}

Task<Result<Gateway::Gathered>> Gateway::gather(http::UpstreamResponse& upstream,
                                                std::string_view provider, std::int64_t choices,
                                                std::chrono::steady_clock::time_point sent_at,
                                                Bill& bill) {
  const http::UpstreamTimeouts& timeouts = state_->config().upstream;
  const auto until = sent_at + std::chrono::milliseconds(timeouts.answer_timeout_ms);
  auto failed = [&](ErrorKind kind, std::string_view what) {
    return Status{kind, fmt::format("upstream '{}' {}", provider, what)};
  };
  // What ended the answer, its usage and an error inside it, as a relayed stream is read.
  StreamMeter meter(Surface::kOpenAI, /*drop_usage_chunk=*/false, choices);
  WholeAnswer whole(choices);
  http::SseFramer framer;
  std::string pending;
  std::size_t read = 0;
  bool bom_looked_for = false;  // a byte order mark that starts it is dropped (drop_bom)
  for (bool done = false; !done;) {
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(
        until - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      if (meter.finished()) break;  // its terminator is all that did not come
      co_return failed(ErrorKind::kUpstreamTimeout,
                       "did not end its answer within upstream.answer_timeout_ms");
    }
    upstream.set_read_timeout(static_cast<std::uint32_t>(
        std::min<std::int64_t>(left.count(), timeouts.idle_timeout_ms)));
    auto piece = co_await upstream.read_some();
    keep_hold(bill);
    if (!piece) {
      if (meter.finished()) break;  // likewise
      co_return piece.status();
    }
    if (piece->empty()) {  // the body ended: a last event without its blank line still counts
      pending += "\n\n";
      done = true;
    } else {
      read += piece->size();
      if (read > limits::kUpstreamResponseBytesMax) {
        co_return failed(ErrorKind::kUpstreamFailed,
                         fmt::format("sent a stream over {} bytes",
                                     limits::kUpstreamResponseBytesMax));
      }
      pending.append(*piece);
    }
    if (!bom_looked_for && !(bom_looked_for = http::drop_bom(pending)) && !done) continue;
    const std::size_t complete = framer.complete_prefix(pending);
    http::SseEvents events(std::string_view(pending).substr(0, complete));
    for (http::SseEvents::Event e; events.next(e);) {
      if (e.raw.size() > limits::kSseEventBytesMax) {
        co_return failed(
            ErrorKind::kUpstreamFailed,
            fmt::format("sent a stream event over {} bytes", limits::kSseEventBytesMax));
      }
      if (meter.on_event(e.name, e.data) == StreamMeter::Verdict::kFinal) {
        done = true;
        break;
      }
      if (meter.upstream_failed()) {
        co_return failed(ErrorKind::kUpstreamFailed, "sent an error in its stream");
      }
      if (e.data.empty()) continue;  // a keep-alive comment
      if (Status added = whole.add(e.data); !added) {
        co_return failed(added.kind(), added.message());
      }
    }
    pending.erase(0, complete);
    framer.consumed(complete);
    if (pending.size() > limits::kSseEventBytesMax) {
      co_return failed(ErrorKind::kUpstreamFailed,
                       fmt::format("sent a stream event over {} bytes", limits::kSseEventBytesMax));
    }
  }
  // As for a relayed stream: without its final usage and before it said its answer was
  // done, the stream was cut short.
  if (!meter.reported() && !meter.finished()) {
    co_return failed(ErrorKind::kUpstreamFailed, "ended its stream before its answer's end");
  }
  co_return Gathered{whole.build(), meter.usage(bill.input_estimate, meter.content_events()),
                     meter.reported()};
}

Task<void> Gateway::relay_answer(Responder& res, Surface surface, std::string_view provider,
                                 const http::UpstreamResponse& upstream, std::string_view body,
                                 std::span<const Header> headers) {
  const std::string_view type = upstream.header("content-type");
  if (upstream.status() >= 400 && answer_shape(body) == AnswerShape::kNotAnObject) {
    // A proxy's HTML page, say: the client's SDK reads errors in its own shape only.
    co_await send_error(res, surface, upstream.status(),
                        fmt::format("upstream '{}' answered HTTP {} without a JSON error body",
                                    provider, upstream.status()),
                        {}, headers);
    co_return;
  }
  co_await res.send(upstream.status(), type.empty() ? kJson : type, body, headers);
}

Task<bool> Gateway::settle(Bill& bill, const meter::Usage& reported, int status) {
  bill.closed = true;
  const meter::Usage usage = with_search_calls(bill, reported);
  take_served_tier(bill, usage);
  bill.premium = served_premium(bill, usage, /*warn=*/true);
  const auto now = std::chrono::steady_clock::now();
  if (status == 200 && !bill.flex) stats_->latency(bill.route->index, now - bill.sent_at);
  if (status == 200 && !bill.flex && bill.first_byte != std::chrono::steady_clock::time_point{}) {
    // A flex tier's queueing says nothing about the route's standard latency.
    observe_ttfb(*bill.route, bill.first_byte - bill.sent_at);
    stats_->ttfb(bill.route->index, bill.first_byte - bill.sent_at);
    observe_speed(*bill.route, usage.output_tokens, now - bill.first_byte);
    stats_->decoding(bill.route->index, usage.output_tokens, now - bill.first_byte);
  } else if (status == 200 && !bill.flex) {
    // A whole answer's head came with its end: its time to first byte is what is left of
    // the whole once its output is taken at the route's speed (as measured, else as
    // configured). A route that answers slowly must not keep its seeded estimate for ever.
    const double tps = latency_[bill.route->index].tokens_per_second >= 0
                           ? latency_[bill.route->index].tokens_per_second
                           : bill.route->tokens_per_second;
    const auto decoding = std::chrono::duration_cast<std::chrono::steady_clock::duration>(
        std::chrono::duration<double>(tps > 0 ? static_cast<double>(usage.output_tokens) / tps
                                              : 0.0));
    // An answer quicker than its output at that speed teaches 0: learning nothing from it
    // kept a route that once answered slowly at its slow estimate however fast it became.
    observe_ttfb(*bill.route, std::max(now - bill.sent_at - decoding,
                                       std::chrono::steady_clock::duration::zero()));
  }
  store::UsageRecord& r = bill.record;
  r.input_tokens = usage.uncached_input();  // the row: every input token not read from cache
  r.cached_tokens = usage.cached_tokens;
  r.output_tokens = usage.output_tokens;
  r.audio_input_tokens = usage.audio_input_tokens;
  r.audio_output_tokens = usage.audio_output_tokens;
  r.web_searches = usage.web_searches;
  r.price_multiplier_e4 = bill.premium;
  const catalog::Prices prices = bill.prices();
  r.cost = meter::price(usage, prices);
  r.input_cost = input_cost(usage, prices);
  std::shared_ptr<ledger::Bank> bank = state_->services().bank;
  // From here the hold does not lapse: the writer posts it (or a failed commit voids it),
  // however long the store takes. A lapse meanwhile would free the money, and the post
  // would then overdraw the account with no licence to. One that lapsed already (found only
  // now) is taken again for the cost, or for what the account has, and the charge is capped
  // at that: nothing is charged without a hold.
  if (!bank->renew(bill.hold, std::numeric_limits<std::int64_t>::max()) || bill.lapsed) {
    // A charge already capped (an estimate, a stopped response) is not raised by this.
    const Money wanted = bill.capped ? std::min(r.cost, bill.covered) : r.cost;
    bill.lapsed = true;
    bill.capped = true;
    bill.covered = Money();
    if (wanted > Money()) (void)cover(bill, wanted);
    (void)bank->renew(bill.hold, std::numeric_limits<std::int64_t>::max());
  }
  // Stopped for want of balance or budget: charged what it holds, and no more than its
  // key's budget set aside (the tokens stay as counted, so the row shows what the answer
  // would have cost). Without a hold, nothing (a free route whose cost never reached
  // cover()). A stream that held the account's licence to overdraw went past its hold by
  // right until its budget stopped it: what it relayed is charged, up to the budget.
  Money chargeable = bill.covered;
  if (bill.over_budget && bill.may_overdraw && !bill.doubted && !bill.lapsed) {
    chargeable = r.cost;
  }
  if (bill.key.has_budget()) chargeable = std::min(chargeable, bill.key.set_aside());
  if ((bill.capped || bill.hold.id == 0) && r.cost > chargeable) {
    r.cost = chargeable;
    r.input_cost = std::min(r.input_cost, r.cost);
  }
  r.output_cost = r.cost - r.input_cost;
  // The key's limits count what the request used and cost from now (should the commit
  // fail, the charge is reversed but stays counted here: a limit errs towards refusing).
  bill.key.settle(usage.uncached_input() + usage.cached_tokens + usage.output_tokens, r.cost);
  r.flex = bill.flex;
  r.standard_cost =
      bill.flex ? meter::price(usage, prices_at(*bill.route, false, bill.premium)) : r.cost;
  r.status = status;
  r.hold = bill.hold.id;
  r.latency_ms = elapsed_ms(bill);
  if (log::enabled(log::Level::kDebug)) {
    log::debug("settling", {{"request_id", r.request_id},
                            {"status", status},
                            {"cost_usd", r.cost.to_string()},
                            {"held_usd", bill.covered.to_string()},
                            {"input_tokens", r.input_tokens},
                            {"cached_tokens", r.cached_tokens},
                            {"output_tokens", r.output_tokens},
                            {"capped", bill.capped}});
  }
  // The charge is taken on the writer, in the batch whose transaction stores it: the row
  // and the transfers become durable together or not at all (see store::UsageBuffer).
  store::Writer::Work work = [bank, usage = state_->services().usage, hold = bill.hold,
                              record = r](store::Database&) mutable {
    usage->settle(*bank, hold, std::move(record), SystemClock::instance().unix_millis());
    return Status::ok();
  };
  const Status committed = co_await link_.commit(work, store::Writer::Isolation::kHandOver);
  if (!committed) {
    // The charge was taken back (UsageBuffer::reverse_unstored; its row goes with the next
    // batch that commits, as a 503 at no cost): stop billing until an admin has looked at
    // the store. The freeze is recorded there too, by the next batch that commits, so that
    // a restart does not lift it.
    const std::string reason = fmt::format("the store failed to record a settlement: {}",
                                           committed.message());
    ledger::Freeze& freeze = *state_->services().freeze;
    if (!freeze.frozen()) {
      freeze.set(reason, /*record=*/true);
      link_.submit(store::write_nothing);  // a batch to record it
    } else {
      freeze.count_again();  // an unfreeze decided before this failure must not lift it
    }
    log::error("billing frozen", {{"request_id", r.request_id}, {"reason", reason}});
    bank->void_hold(bill.hold, SystemClock::instance().unix_millis());
  }
  co_return committed.is_ok();
}

Task<void> Gateway::relay_stream(http::UpstreamResponse& upstream, std::string first_piece,
                                 Surface surface, Responder& res,
                                 std::span<const Header> headers, Bill& bill,
                                 bool drop_usage_chunk, std::int64_t choices) {
  StreamMeter meter(surface, drop_usage_chunk, choices);
  // Renewed every quarter hold timeout while the relay runs: keep_hold renews it when half
  // a timeout has passed since the last renewal, so it never comes near lapsing.
  const HoldKeeper keeper(ioc_,
                          std::chrono::milliseconds(std::max<std::uint32_t>(
                              1, state_->config().billing.hold_timeout_ms / 4)),
                          [this, &bill] { keep_hold(bill); });
  // The client's head goes out with the first events, in one write.
  bool client_here = co_await res.begin_stream(200, "text/event-stream", headers,
                                               first_piece.empty() && !upstream.body_buffered());
  bool first_unread = !first_piece.empty();
  // After the client left: how long and how much more is read for the final usage.
  std::optional<std::chrono::steady_clock::time_point> drain_until;
  std::size_t drained_bytes = 0;
  std::int64_t relayed = 0;  // content events the client got
  // The client is gone, having got `got` content events.
  auto client_left = [&](std::int64_t got) {
    client_here = false;
    relayed = got;
    drain_until = std::chrono::steady_clock::now() +
                  std::chrono::milliseconds(state_->config().billing.disconnect_drain_ms);
  };
  if (!client_here) client_left(0);
  // Whether the client is still there, as far as anything tells: a failed write, or the
  // watch on its connection (which sees it go while the upstream is silent).
  auto still_here = [&] {
    if (client_here && bill.client_gone()) client_left(meter.content_events());
    return client_here;
  };
  auto bill_usage = [&] { return meter.usage(bill.input_estimate, relayed); };
  // The status a stream that reached its end is logged with: an error the upstream sent
  // inside it (which the client saw) makes it a failure, though the stream ended well.
  auto ended_status = [&] { return !client_here ? 499 : meter.upstream_failed() ? 502 : 200; };

  // A stream that cannot end well: what was relayed is billed, the client gets one error
  // event in the surface's stream shape (an unfinished event is dropped: glued to the
  // error it would hide it), and the connection is cut without ending the chunked body, so
  // no client can take the stream for complete.
  // A stream the upstream broke after its head (a reset, an event over the limit, an end
  // before the answer's, an error event) counts against the route's health as a failure
  // before the head does; not when the client's leaving cut the reading short.
  auto route_broke = [&] {
    if (!client_here) return;
    log::warn("upstream stream broke after its head",
              {{"request_id", bill.record.request_id}, {"provider", bill.record.provider}});
    upstream_failed(*bill.route);
  };
  auto fail_stream = [&](std::string_view message, unsigned status = 502,
                         std::string_view code = {}) -> Task<void> {
    const meter::Usage usage = bill_usage();  // named: see StoreLink::commit on temporaries
    (void)co_await settle(bill, usage, client_here ? static_cast<int>(status) : 499);
    if (client_here) {
      const std::string body = error_body(surface, status, message, code);
      const std::string event = surface == Surface::kAnthropic
                                    ? fmt::format("event: error\ndata: {}\n\n", body)
                                    : fmt::format("data: {}\n\n", body);
      co_await res.write_chunk(event);
    }
    res.close_after();
  };

  // The stream's cost is bounded as it runs: its input as reported (else the hold's bound),
  // its output as reported or counted (a content event a token), whichever is more. Past
  // what the hold covers, the bank is asked for more, and an account that has no more
  // stops the stream before the event that needs it (a final usage too, before the
  // terminator). A stopped stream is charged what it holds at most.
  catalog::Prices prices = bill.prices();  // at what served, once the usage says (reach_further)
  auto running = [&](std::int64_t more_output) {
    meter::Usage u = meter.usage(bill.input_max, meter.content_events());
    u.output_tokens = std::max(u.output_tokens, meter.content_events()) + more_output;
    return with_search_calls(bill, u);  // the search the request is by itself, too
  };
  // How many content events may come before the next look: output_room counts tokens, and
  // reported output beyond the events counted uses some of them. An account's licence to
  // overdraw lifts what its hold covers, never a key's budget (which has no overdraft).
  auto events_covered = [&] {
    std::optional<Money> limit;
    if (!bill.may_overdraw) limit = bill.covered;
    if (bill.key.has_budget()) {
      limit = std::min(limit.value_or(bill.key.set_aside()), bill.key.set_aside());
    }
    if (bill.hold.id == 0 || !limit) return std::numeric_limits<std::int64_t>::max();
    const meter::Usage u = running(0);
    return output_room(*limit, u, prices) - (u.output_tokens - meter.content_events());
  };
  std::int64_t room = events_covered();
  std::int64_t usage_seen = 0;  // meter.usage_reports() at the last look
  // Whether what the stream may cost changed since the last look: more events than its
  // room, a usage report, its hold found lapsed, or more output counted than the request
  // can have (which a report would not be believed for either).
  auto look_again = [&] {
    return meter.content_events() > room || meter.usage_reports() != usage_seen || bill.lapsed ||
           (!bill.doubted && meter.content_events() > bill.output_believed_max);
  };
  auto reach_further = [&] {
    usage_seen = meter.usage_reports();
    meter::Usage told = meter.usage(0, 0);  // as reported, its output as counted if more
    told.output_tokens = std::max(told.output_tokens, meter.content_events());
    if (!believable(bill, told)) {
      // Charged what it holds at most from here: the hold is not extended for it.
      room = std::numeric_limits<std::int64_t>::max();
      return true;
    }
    const meter::Usage now = running(0);
    take_served_tier(bill, now);
    bill.premium = served_premium(bill, now, /*warn=*/false);
    prices = bill.prices();
    const meter::Usage ahead = running(std::max<std::int64_t>(64, now.output_tokens / 4));
    if (!cover(bill, meter::price(now, prices), meter::price(ahead, prices))) return false;
    room = events_covered();
    return true;
  };
  // The response stops here: the client is told why, and the stream is charged what its
  // hold holds at most. `relayed_events` is what the client got.
  auto stop_unpaid = [&](std::int64_t relayed_events) -> Task<void> {
    bill.capped = true;
    if (client_here) relayed = relayed_events;
    // The count its usage row shows: what the upstream reported, if more than the events.
    const Uncovered why = uncovered(bill);
    log::warn(bill.over_budget ? "stream stopped: the key's budget covers no more"
                               : "stream stopped: the account's balance covers no more",
              {{"request_id", bill.record.request_id}});
    const std::string message = fmt::format(
        "{}: the {} does not cover a longer response; it was stopped after {} output tokens",
        why.reason, why.source, bill_usage().output_tokens);
    co_await fail_stream(message, 402, why.code);
  };

  // An upstream event past kSseEventBytesMax (one being read, or one a read completed) ends
  // the stream with an error after what went before it.
  auto event_over_limit = [&]() -> Task<void> {
    if (client_here) relayed = meter.content_events();
    log::warn("upstream event over limit", {{"request_id", bill.record.request_id},
                                            {"provider", bill.record.provider},
                                            {"bytes_max", limits::kSseEventBytesMax}});
    route_broke();
    co_await fail_stream(fmt::format("upstream '{}' sent a stream event over {} bytes",
                                     bill.record.provider, limits::kSseEventBytesMax));
  };

  // Whole events only go to the client; `pending` holds the tail of an unfinished one.
  std::string pending;
  http::SseFramer framer;  // where the complete events of `pending` + the next piece end
  // The run of events to write next, without the usage Turnpike asked for on the client's
  // behalf (`drop_usage_chunk`): every chunk then carries a `usage` the client did not ask
  // for. Its capacity is kept from run to run.
  std::string edited;
  for (;;) {
    if (!still_here()) {
      const auto now = std::chrono::steady_clock::now();
      if (now >= *drain_until || drained_bytes > limits::kDisconnectDrainBytesMax ||
          meter.reported()) {
        break;
      }
      // A silent upstream may not hold the drain past its deadline.
      upstream.set_read_timeout(static_cast<std::uint32_t>(std::max<std::int64_t>(
          1, std::chrono::duration_cast<std::chrono::milliseconds>(*drain_until - now).count())));
    }
    Result<std::string_view> piece = std::string_view(first_piece);
    if (first_unread) {
      first_unread = false;
    } else {
      piece = co_await upstream.read_some();
    }
    keep_hold(bill);
    // Gone while the read waited (the watch saw it): nothing of this piece reached it.
    const bool here = still_here();
    if (!piece) {
      if (here) relayed = meter.content_events();
      route_broke();
      co_await fail_stream(piece.status().message());  // headers are gone already
      co_return;
    }
    if (piece->empty()) break;  // the upstream ended without a terminator
    if (!client_here) drained_bytes += piece->size();

    std::string_view buffer;
    if (pending.empty()) {
      buffer = *piece;
    } else {
      pending.append(*piece);
      buffer = pending;
    }
    const std::size_t complete = framer.complete_prefix(buffer);
    // Forward runs of events as one write; stop a run at an event to drop or at the end. A
    // run whose write fails reached the client in part at most: none of it is billed.
    std::size_t run_begin = 0;
    std::int64_t run_events = meter.content_events();  // the content events before the run
    // Writes the run up to `to`: the buffer's bytes, or (the usage asked for on the
    // client's behalf taken out) the copy made as its events came.
    auto write_run = [&](std::size_t to) -> Task<void> {
      const std::string_view text =
          drop_usage_chunk ? std::string_view(edited) : buffer.substr(run_begin, to - run_begin);
      if (client_here && !text.empty() && !co_await res.write_chunk(text)) {
        client_left(run_events);
      }
      edited.clear();
    };
    std::size_t at = 0;
    std::optional<std::size_t> final_at;  // where the terminator begins, and ends
    std::size_t final_end = 0;
    http::SseEvents events(buffer.substr(0, complete));
    http::SseEvents::Event e;
    while (events.next(e)) {
      const std::size_t begin = at;
      at += e.raw.size();
      if (e.raw.size() > limits::kSseEventBytesMax) {  // whole within one read, or nearly
        co_await write_run(begin);
        co_await event_over_limit();
        co_return;
      }
      const std::int64_t events_before = meter.content_events();
      const StreamMeter::Verdict verdict = meter.on_event(e.name, e.data);
      if (bill.output_events_max > 0 && meter.content_events() > bill.output_events_max) {
        // Far past the max_tokens asked for: the provider ignores it. Stopped before this
        // event, and charged what its hold holds at most.
        co_await write_run(begin);
        bill.capped = true;
        if (client_here) relayed = events_before;
        route_broke();
        co_await fail_stream(fmt::format(
            "upstream '{}' sent far more output than the max_tokens asked for; the stream was "
            "stopped after {} content events",
            bill.record.provider, events_before));
        co_return;
      }
      if (look_again() && !reach_further()) {
        co_await write_run(begin);
        co_await stop_unpaid(events_before);  // not this event
        co_return;
      }
      if (verdict == StreamMeter::Verdict::kForward) {
        if (drop_usage_chunk) append_without_usage(edited, e.raw, e.data);
        continue;
      }
      co_await write_run(begin);
      run_begin = at;
      run_events = meter.content_events();
      if (verdict == StreamMeter::Verdict::kFinal) {
        final_at = begin;
        final_end = at;
        break;
      }
    }
    if (final_at) {
      // The terminator waits for the settlement to be durable: a client that saw the end
      // of the stream was billed exactly once.
      if (still_here()) relayed = meter.content_events();
      if (meter.upstream_failed()) route_broke();
      const meter::Usage usage = bill_usage();
      const bool stored = co_await settle(bill, usage, ended_status());
      if (client_here && stored) {
        // The terminator ends the stream: what a server sends after it is not relayed.
        co_await res.end_stream(buffer.substr(*final_at, final_end - *final_at));
        // The body's own end (a chunked body's last chunk) often comes in a write of its
        // own just after the terminator: read, the connection goes back to the pool rather
        // than closed, and the next stream needs no new handshake. Briefly (the deadline
        // ticks every 50 ms, so up to a tick more), and only for a connection that could
        // be pooled: the client's next request on its connection waits for this to end.
        if (!upstream.done() && upstream.poolable()) {
          upstream.set_read_timeout(kBodyEndWaitMs);
          for (int i = 0; i < 4; ++i) {
            auto rest = co_await upstream.read_some();
            if (!rest || rest->empty()) break;
          }
        }
      } else {
        res.close_after();
      }
      co_return;
    }
    co_await write_run(complete);
    if (buffer.data() == pending.data()) {
      pending.erase(0, complete);
    } else {
      pending.assign(buffer.substr(complete));
    }
    framer.consumed(complete);
    if (pending.size() > limits::kSseEventBytesMax) {
      co_await event_over_limit();
      co_return;
    }
  }
  // The upstream ended without a terminator, or the client is gone and reading on is over.
  // A last event without its blank line still counts: metered like the others, and a
  // usage chunk Turnpike asked for still kept from the client.
  std::string tail;
  const std::int64_t events_before_tail = meter.content_events();
  http::SseEvents events(pending);
  for (http::SseEvents::Event e; events.next(e);) {
    if (meter.on_event(e.name, e.data) == StreamMeter::Verdict::kDrop) continue;
    if (drop_usage_chunk) {
      append_without_usage(tail, e.raw, e.data);
    } else {
      tail.append(e.raw);
    }
  }
  // Ended without its terminator, without its final usage and before the upstream said
  // its answer was done, the stream was cut short (a connection closed early looks the
  // same): the client must not take it for complete.
  if (look_again() && !reach_further()) {
    co_await stop_unpaid(events_before_tail);
    co_return;
  }
  // Not when the upstream said why itself (an error event): the client has its words, which
  // a second error of Turnpike's would misstate; the stream ends as the upstream ended it.
  if (client_here && !meter.reported() && !meter.finished() && !meter.upstream_failed()) {
    relayed = meter.content_events();
    route_broke();
    co_await fail_stream(fmt::format("upstream '{}' ended the stream before its end",
                                     bill.record.provider));
    co_return;
  }
  if (still_here()) relayed = meter.content_events();
  if (meter.upstream_failed()) route_broke();
  const meter::Usage usage = bill_usage();
  const bool stored = co_await settle(bill, usage, ended_status());
  if (!client_here || !stored) {
    res.close_after();
    co_return;
  }
  co_await res.end_stream(tail);
}

}  // namespace

Status check_trust_stores(const ops::Config& config) {
  for (const catalog::Provider& p : config.catalog->providers()) {
    auto url = http::parse_base_url(p.base_url);
    if (!url || !url->tls) continue;
    if (auto tls = http::make_tls_client_context(p.ca_file); !tls) {
      return Status{ErrorKind::kInvalidRequest,
                    fmt::format("provider '{}': {}", p.name, tls.status().message())};
    }
  }
  if (const std::string& hook = config.billing.low_balance_webhook; !hook.empty()) {
    auto url = http::parse_base_url(hook);
    if (url && url->tls) {
      if (auto tls = http::make_tls_client_context(config.billing.low_balance_webhook_ca_file);
          !tls) {
        return Status{ErrorKind::kInvalidRequest,
                      fmt::format("low-balance webhook: {}", tls.status().message())};
      }
    }
  }
  return Status::ok();
}

Result<std::shared_ptr<const GatewayState>> GatewayState::create(const ops::Config& config,
                                                                 Services services) {
  std::shared_ptr<GatewayState> state(new GatewayState(config, std::move(services)));
  state->route_stats_ = std::make_shared<router::RouteStats>(config.catalog->route_count());
  state->provider_health_ = std::make_shared<ProviderHealth>(config.catalog->providers().size());
  state->resolver_ = std::make_unique<http::HostResolver>();
  const catalog::Catalog& cat = *config.catalog;
  for (const catalog::Provider& p : cat.providers()) {
    auto url = http::parse_base_url(p.base_url);
    if (!url) return url.status();
    http::UpstreamEndpoint ep{p.name, std::move(url.value()), p.index, nullptr, nullptr};
    ep.addresses = state->resolver_->add(ep.url.host, ep.url.port);
    if (ep.url.tls) {
      auto tls = http::make_tls_client_context(p.ca_file);
      if (!tls) {
        return Status{ErrorKind::kInvalidRequest,
                      fmt::format("provider '{}': {}", p.name, tls.status().message())};
      }
      ep.tls = std::move(tls.value());
    }
    std::string lines = fmt::format("Host: {}\r\n", ep.url.host_header);
    if (!p.api_key.empty()) {
      lines += p.api == Api::kAnthropic ? fmt::format("x-api-key: {}\r\n", p.api_key)
                                        : fmt::format("Authorization: Bearer {}\r\n", p.api_key);
    }
    state->endpoints_.push_back(std::move(ep));
    state->head_lines_.push_back(std::move(lines));
  }

  state->models_created_ = std::chrono::duration_cast<std::chrono::seconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count();
  return std::shared_ptr<const GatewayState>(std::move(state));
}

Result<std::shared_ptr<const GatewayState>> reload_state(const GatewayState& running,
                                                         const ops::Config& fresh) {
  ops::Config config = running.config();
  config.catalog = fresh.catalog;
  config.weights = fresh.weights;
  config.breaker = fresh.breaker;
  config.probe = fresh.probe;
  config.rules = fresh.rules;
  config.auto_quality_floor = fresh.auto_quality_floor;
  config.fallback_deadline_ms = fresh.fallback_deadline_ms;
  config.upstream = fresh.upstream;
  // With the upstream waits it must outlast (the fresh file was checked for that): a hold
  // timeout kept from before could lapse the hold of a request that waits within them.
  // Requests already running keep the state, and so the timeout, they started with.
  config.billing.hold_timeout_ms = fresh.billing.hold_timeout_ms;
  auto state = GatewayState::create(config, running.services());
  // A provider that is the same upstream keeps the probes' marks, while probes still run
  // to clear them.
  if (state && config.probe.interval_ms != 0) {
    const std::vector<std::size_t> same =
        catalog::same_providers(running.catalog(), (*state)->catalog());
    for (std::size_t i = 0; i < same.size(); ++i) {
      if (same[i] != catalog::kNone) {
        (*state)->provider_health().carry(i, running.provider_health(), same[i]);
      }
    }
  }
  return state;
}

http::HandlerFactory make_gateway_factory(std::shared_ptr<StateHub> hub) {
  return [hub](boost::asio::io_context& ioc,
               http::Inbox& inbox) -> std::unique_ptr<http::Handler> {
    return std::make_unique<GatewayHandler>(ioc, inbox, hub);
  };
}

}  // namespace tp::api
