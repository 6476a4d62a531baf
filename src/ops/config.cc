#include "ops/config.h"

#include <arpa/inet.h>

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdlib>
#include <fstream>
#include <initializer_list>
#include <optional>
#include <set>
#include <sstream>

#include "core/limits.h"
#include "core/log.h"
#include "http/url.h"

namespace tp::ops {
namespace {

bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// redis://[[USER]:PASSWORD@]HOST[:PORT][/DB], HOST a name, an IPv4 address or [IPv6], PORT
// 1..65535, DB a number.
bool valid_redis_url(std::string_view url) {
  constexpr std::string_view kScheme = "redis://";
  if (!url.starts_with(kScheme)) return false;
  url.remove_prefix(kScheme.size());
  if (const std::size_t at = url.rfind('@'); at != std::string_view::npos)
    url.remove_prefix(at + 1);
  if (const std::size_t slash = url.find('/'); slash != std::string_view::npos) {
    if (!all_digits(url.substr(slash + 1))) return false;
    url = url.substr(0, slash);
  }
  std::string_view host = url;
  std::optional<std::string_view> port;
  if (url.starts_with('[')) {
    const std::size_t close = url.find(']');
    if (close == std::string_view::npos || close == 1) return false;
    host = url.substr(0, close + 1);
    const std::string_view rest = url.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return false;
      port = rest.substr(1);
    }
  } else if (const std::size_t colon = url.rfind(':'); colon != std::string_view::npos) {
    host = url.substr(0, colon);
    port = url.substr(colon + 1);
  }
  if (host.empty() || host.find_first_of(" \t/?#") != std::string_view::npos) return false;
  if (!port) return true;
  if (!all_digits(*port) || port->size() > 5) return false;
  const int number = std::stoi(std::string(*port));
  return number >= 1 && number <= 65535;
}

constexpr std::uint64_t kHour = 3'600'000;  // ms
constexpr std::uint64_t kDay = 24 * kHour;

// Whether `text` has a control character: one would end the line a name or key goes in.
bool has_controls(std::string_view text) {
  return std::any_of(text.begin(), text.end(), [](char c) {
    return static_cast<unsigned char>(c) < 0x20 || c == 0x7f;
  });
}

using catalog::Api;
using catalog::PrivacyTier;

// Thrown only inside parse_config and turned into a Status there: exceptions are allowed
// while loading config, nowhere else.
struct ConfigError {
  std::string message;
};

class Reader {
 public:
  explicit Reader(std::string_view source) : source_(source) {}

  [[noreturn]] void fail(const YAML::Node& at, std::string_view path, std::string_view what) const {
    if (path.empty()) path = "the file";  // the document itself
    const int line = at.IsDefined() ? at.Mark().line + 1 : 0;
    throw ConfigError{line > 0 ? fmt::format("{}:{}: {}: {}", source_, line, path, what)
                               : fmt::format("{}: {}: {}", source_, path, what)};
  }

  void expect_map(const YAML::Node& n, std::string_view path) const {
    if (!n.IsMap()) fail(n, path, "must be a mapping");
  }

  void check_keys(const YAML::Node& n, std::string_view path,
                  std::initializer_list<std::string_view> allowed) const {
    expect_map(n, path);
    std::vector<std::string> seen;
    for (const auto& kv : n) {
      const std::string key = kv.first.as<std::string>();
      bool known = false;
      for (auto a : allowed) known = known || a == key;
      if (!known) {
        std::string list;
        for (auto a : allowed) list += fmt::format("{}{}", list.empty() ? "" : ", ", a);
        fail(kv.first, join(path, key), fmt::format("unknown key (expected one of: {})", list));
      }
      // YAML keeps both copies of a repeated key and lookups see the first: the second,
      // perhaps the one meant (a tier appended to a copied block), would be ignored.
      if (std::find(seen.begin(), seen.end(), key) != seen.end()) {
        fail(kv.first, join(path, key), "appears more than once");
      }
      seen.push_back(key);
    }
  }

  static std::string join(std::string_view path, std::string_view key) {
    return path.empty() ? std::string(key) : fmt::format("{}.{}", path, key);
  }

  std::string scalar(const YAML::Node& n, std::string_view path) const {
    if (!n.IsScalar()) fail(n, path, "must be a single value");
    return n.Scalar();
  }

  std::string string(const YAML::Node& parent, std::string_view key, std::string_view path,
                     const std::string& fallback, bool required = false) const {
    const YAML::Node n = parent[std::string(key)];
    if (!n.IsDefined() || n.IsNull()) {
      if (required) fail(parent, join(path, key), "is required");
      return fallback;
    }
    return scalar(n, join(path, key));
  }

  // A name: a string that is not empty or blank (a provider shown as "", a model no request
  // can name, "model": "" sent upstream).
  std::string name(const YAML::Node& parent, std::string_view key, std::string_view path,
                   const std::string& fallback, bool required = false) const {
    std::string value = string(parent, key, path, fallback, required);
    if (value.find_first_not_of(" \t") == std::string::npos) {
      fail(parent[std::string(key)], join(path, key), "must not be empty");
    }
    no_controls(parent[std::string(key)], join(path, key), value);
    return value;
  }

  // Names go into logs, response headers and upstream bodies: no control characters.
  void no_controls(const YAML::Node& n, std::string_view path, std::string_view value) const {
    if (has_controls(value)) fail(n, path, "must not contain control characters");
  }

  std::uint64_t integer(const YAML::Node& parent, std::string_view key, std::string_view path,
                        std::uint64_t fallback, std::uint64_t min, std::uint64_t max) const {
    const YAML::Node n = parent[std::string(key)];
    if (!n.IsDefined() || n.IsNull()) return fallback;
    const std::string p = join(path, key);
    const std::string text = scalar(n, p);
    std::uint64_t value = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc{} || end != text.data() + text.size()) {
      fail(n, p, fmt::format("must be a whole number, got '{}'", text));
    }
    if (value < min || value > max) {
      fail(n, p, fmt::format("must be between {} and {}, got {}", min, max, value));
    }
    return value;
  }

  double number(const YAML::Node& parent, std::string_view key, std::string_view path,
                double fallback, double min, double max) const {
    const YAML::Node n = parent[std::string(key)];
    if (!n.IsDefined() || n.IsNull()) return fallback;
    const std::string p = join(path, key);
    const std::string text = scalar(n, p);
    // Decimal only: strtod would also take hex ("0x10"), "inf" and "nan".
    double value = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value,
                                           std::chars_format::general);
    if (text.empty() || ec != std::errc{} || end != text.data() + text.size()) {
      fail(n, p, fmt::format("must be a number, got '{}'", text));
    }
    if (!(value >= min && value <= max)) {
      fail(n, p, fmt::format("must be between {} and {}, got {}", min, max, text));
    }
    return value;
  }

  bool boolean(const YAML::Node& parent, std::string_view key, std::string_view path,
               bool fallback) const {
    const YAML::Node n = parent[std::string(key)];
    if (!n.IsDefined() || n.IsNull()) return fallback;
    const std::string text = scalar(n, join(path, key));
    if (text == "true") return true;
    if (text == "false") return false;
    fail(n, join(path, key), fmt::format("must be true or false, got '{}'", text));
  }

  // USD per million tokens as an exact decimal (Money syntax, not negative).
  // `per`: what the price is for, in its errors; `most` its cap in USD.
  std::optional<PricePerMtok> price(const YAML::Node& parent, std::string_view key,
                                    std::string_view path, bool required,
                                    std::string_view per = "per million tokens",
                                    std::string_view most = "100000") const {
    const std::string text = string(parent, key, path, "", required);
    if (text.empty() && !required) return std::nullopt;
    auto price = PricePerMtok::parse(text);
    // Capped so that no request's cost can overflow (see kTokenPriceMost).
    if (price && *price > PricePerMtok::parse(most).value()) {
      fail(parent[std::string(key)], join(path, key),
           fmt::format("must be at most {} USD {}, got '{}'", most, per, text));
    }
    if (!price) {
      fail(parent[std::string(key)], join(path, key),
           fmt::format("must be a decimal USD amount {} like \"0.15\" (at most "
                       "9 decimals, not negative), got '{}'",
                       per, text));
    }
    return price.value();
  }

  // A price multiplier from 1 to 10 with at most 4 decimals ("6", "1.1"), in
  // catalog::kPremiumOne units.
  std::uint32_t premium(const YAML::Node& n, std::string_view path) const {
    const std::string text = scalar(n, path);
    constexpr std::int64_t kNanosPerUnit = Money::kNanosPerUsd / catalog::kPremiumOne;
    const auto value = Money::parse(text);
    if (!value || value->nanos() % kNanosPerUnit != 0 || value->nanos() < Money::kNanosPerUsd ||
        value->nanos() > 10 * Money::kNanosPerUsd) {
      fail(n, path,
           fmt::format("must be a multiplier from 1 to 10 with at most 4 decimals, like \"1.1\", "
                       "got '{}'",
                       text));
    }
    return static_cast<std::uint32_t>(value->nanos() / kNanosPerUnit);
  }

 private:
  std::string source_;
};

// The dearest a token price may get with every multiplier, in nano-USD per million tokens
// (1.2 million USD). With each usage count clamped to a billion (meter::kTokensMax), the five
// token counts of a usage (plain input including audio, cache reads, 5-minute and 1-hour
// cache writes, output including audio) cost at most 6e18 nano-USD, the stream's look-ahead
// adds a quarter of the output, and a billion searches at 1000 USD per 1000 another 1e18:
// inside int64.
constexpr std::int64_t kTokenPriceMost = 1'200'000 * Money::kNanosPerUsd;

// The largest multiplier a request may bring `route`, combined in the gateway's order (see
// premium_for in api/gateway.cc): fast, then the region, then priority.
std::uint32_t dearest_premium(const catalog::Route& route, std::uint32_t geo_max) {
  const std::uint32_t fast = std::max(route.fast_premium, catalog::kPremiumOne);
  const std::uint32_t priority = std::max(route.priority_premium, catalog::kPremiumOne);
  return catalog::combined_premium(catalog::combined_premium(fast, geo_max), priority);
}

PrivacyTier parse_tier(const Reader& r, const YAML::Node& parent, std::string_view path) {
  const std::string text = r.string(parent, "privacy_tier", path, "cloud");
  if (const auto tier = catalog::parse_privacy_tier(text)) return *tier;
  r.fail(parent["privacy_tier"], Reader::join(path, "privacy_tier"),
         fmt::format("must be confidential, cloud or community, got '{}'", text));
}

std::vector<catalog::Provider> parse_providers(const Reader& r, const YAML::Node& root) {
  const YAML::Node list = root["providers"];
  if (!list.IsDefined() || !list.IsSequence() || list.size() == 0) {
    r.fail(list.IsDefined() ? list : root, "providers", "must be a non-empty list");
  }
  std::vector<catalog::Provider> providers;
  std::set<std::string> names;
  for (std::size_t i = 0; i < list.size(); ++i) {
    const YAML::Node n = list[i];
    const std::string path = fmt::format("providers[{}]", i);
    r.check_keys(n, path, {"name", "api", "base_url", "api_key_env", "privacy_tier",
                           "rebate_percent", "ca_file"});
    catalog::Provider p;
    p.index = i;
    p.name = r.name(n, "name", path, "", true);
    if (!names.insert(p.name).second) {
      r.fail(n["name"], path + ".name", fmt::format("duplicate provider name '{}'", p.name));
    }
    const std::string api = r.string(n, "api", path, "openai");
    if (api == "openai") {
      p.api = Api::kOpenAI;
    } else if (api == "anthropic") {
      p.api = Api::kAnthropic;
    } else {
      r.fail(n["api"], path + ".api", fmt::format("must be openai or anthropic, got '{}'", api));
    }
    p.base_url = r.string(n, "base_url", path, "", true);
    if (auto url = http::parse_base_url(p.base_url); !url) {
      std::string problem = url.status().message();
      if (problem.find("credentials") != std::string::npos) {
        problem += ": give the provider's key with api_key_env";
      }
      r.fail(n["base_url"], path + ".base_url", problem);
    }
    p.api_key_env = r.string(n, "api_key_env", path, "");
    // The name of a variable, never the key itself: a key pasted here is not quoted back.
    const bool a_name =
        !p.api_key_env.empty() && p.api_key_env.size() <= 128 &&
        !std::isdigit(static_cast<unsigned char>(p.api_key_env.front())) &&
        std::all_of(p.api_key_env.begin(), p.api_key_env.end(), [](char c) {
          return std::isalnum(static_cast<unsigned char>(c)) || c == '_';
        });
    if (!p.api_key_env.empty() && !a_name) {
      r.fail(n["api_key_env"], path + ".api_key_env",
             "must name an environment variable (letters, digits and _, not starting with a "
             "digit), not hold the key; its value is not shown");
    }
    if (!p.api_key_env.empty()) {
      const char* value = std::getenv(p.api_key_env.c_str());
      // A key read from a file often ends in a newline: that is cut. Any other control
      // character would end the header line it goes in (not shown: it is a secret).
      std::string key = value == nullptr ? std::string() : std::string(value);
      while (!key.empty() && (key.back() == '\n' || key.back() == '\r' || key.back() == ' ' ||
                              key.back() == '\t')) {
        key.pop_back();
      }
      if (has_controls(key)) {
        r.fail(n["api_key_env"], path + ".api_key_env",
               fmt::format("the value of {} has control characters (its value is not shown)",
                           p.api_key_env));
      }
      if (key.empty()) {
        r.fail(n["api_key_env"], path + ".api_key_env",
               fmt::format("environment variable {} is {}", p.api_key_env,
                           value == nullptr ? "not set" : "empty"));
      }
      p.api_key = std::move(key);
    }
    p.ca_file = r.string(n, "ca_file", path, "");
    p.privacy_tier = parse_tier(r, n, path);
    p.rebate_percent = r.number(n, "rebate_percent", path, 0, 0, 100);
    providers.push_back(std::move(p));
  }
  return providers;
}

std::vector<catalog::Model> parse_models(const Reader& r, const YAML::Node& root,
                                         const std::vector<catalog::Provider>& providers) {
  const YAML::Node list = root["models"];
  if (!list.IsDefined() || !list.IsSequence() || list.size() == 0) {
    r.fail(list.IsDefined() ? list : root, "models", "must be a non-empty list");
  }
  std::vector<catalog::Model> models;
  std::set<std::string> names;
  for (std::size_t i = 0; i < list.size(); ++i) {
    const YAML::Node n = list[i];
    const std::string path = fmt::format("models[{}]", i);
    r.check_keys(n, path, {"name", "kind", "quality", "tier", "max_output_tokens",
                           "context_tokens", "routes"});
    catalog::Model m;
    m.name = r.name(n, "name", path, "", true);
    if (m.name == "auto") {
      r.fail(n["name"], path + ".name",
             "'auto' is reserved: a request for model \"auto\" chooses among all models");
    }
    if (!names.insert(m.name).second) {
      r.fail(n["name"], path + ".name", fmt::format("duplicate model name '{}'", m.name));
    }
    const std::string kind = r.string(n, "kind", path, "chat");
    if (kind == "embeddings") {
      m.kind = catalog::ModelKind::kEmbeddings;
    } else if (kind != "chat") {
      r.fail(n["kind"], path + ".kind", fmt::format("must be chat or embeddings, got '{}'", kind));
    }
    m.quality = r.number(n, "quality", path, 0.5, 0, 1);
    m.tier = r.string(n, "tier", path, "medium");
    if (m.tier != "small" && m.tier != "medium" && m.tier != "large" && m.tier != "premium") {
      r.fail(n["tier"], path + ".tier",
             fmt::format("must be small, medium, large or premium, got '{}'", m.tier));
    }
    m.max_output_tokens =
        static_cast<std::uint32_t>(r.integer(n, "max_output_tokens", path, 4096, 1, 10'000'000));
    m.context_tokens =
        static_cast<std::uint32_t>(r.integer(n, "context_tokens", path, 128'000, 1, 100'000'000));
    // The output is part of the context: a default bound is cut to it, a given one refused.
    if (m.max_output_tokens > m.context_tokens) {
      if (!n["max_output_tokens"].IsDefined() || n["max_output_tokens"].IsNull()) {
        m.max_output_tokens = m.context_tokens;
      } else {
        r.fail(n["max_output_tokens"], path + ".max_output_tokens",
               fmt::format("{} is more than context_tokens ({}): the output is part of the "
                           "context",
                           m.max_output_tokens, m.context_tokens));
      }
    }
    const YAML::Node routes = n["routes"];
    if (!routes.IsDefined() || !routes.IsSequence() || routes.size() == 0) {
      r.fail(routes.IsDefined() ? routes : n, path + ".routes", "must be a non-empty list");
    }
    for (std::size_t j = 0; j < routes.size(); ++j) {
      const YAML::Node rn = routes[j];
      const std::string rpath = fmt::format("{}.routes[{}]", path, j);
      r.check_keys(rn, rpath,
                   {"provider", "upstream_model", "input_per_mtok", "output_per_mtok",
                    "cached_input_per_mtok", "cache_write_per_mtok", "cache_write_1h_per_mtok",
                    "flex_input_per_mtok", "flex_output_per_mtok", "flex_cached_input_per_mtok",
                    "audio_input_per_mtok", "audio_output_per_mtok", "web_search_per_1k",
                    "fast_multiplier", "inference_geo_multipliers", "priority_multiplier",
                    "long_context", "ttfb_ms", "tokens_per_second"});
      catalog::Route route;
      const std::string provider = r.string(rn, "provider", rpath, "", true);
      const auto it = std::find_if(providers.begin(), providers.end(),
                                   [&](const auto& p) { return p.name == provider; });
      if (it == providers.end()) {
        r.fail(rn["provider"], rpath + ".provider",
               fmt::format("no provider named '{}'", provider));
      }
      route.provider = it->index;
      route.upstream_model = r.name(rn, "upstream_model", rpath, m.name);
      for (std::size_t k = 0; k < m.routes.size(); ++k) {
        if (m.routes[k].provider == route.provider &&
            m.routes[k].upstream_model == route.upstream_model) {
          r.fail(rn, rpath,
                 fmt::format("repeats routes[{}]: provider '{}' already serves '{}' for this "
                             "model (one route per provider and upstream model)",
                             k, provider, route.upstream_model));
        }
      }
      route.prices.input = *r.price(rn, "input_per_mtok", rpath, true);
      route.prices.output = *r.price(rn, "output_per_mtok", rpath, true);
      route.prices.cached_input =
          r.price(rn, "cached_input_per_mtok", rpath, false).value_or(route.prices.input);
      // Cache writes: Anthropic charges 1.25× the input price for 5 minutes, 2× for 1 hour.
      const bool anthropic = it->api == catalog::Api::kAnthropic;
      auto times = [&](std::int64_t num, std::int64_t den) {  // rounded up: never under
        return PricePerMtok::from_nanos((route.prices.input.nanos() * num + den - 1) / den);
      };
      route.prices.cache_write = r.price(rn, "cache_write_per_mtok", rpath, false)
                                     .value_or(anthropic ? times(5, 4) : route.prices.input);
      route.prices.cache_write_1h = r.price(rn, "cache_write_1h_per_mtok", rpath, false)
                                        .value_or(anthropic ? times(2, 1) : route.prices.input);
      // Audio: both prices or neither (a request for audio needs a route that has them).
      const auto audio_input = r.price(rn, "audio_input_per_mtok", rpath, false);
      const auto audio_output = r.price(rn, "audio_output_per_mtok", rpath, false);
      if (audio_input.has_value() != audio_output.has_value()) {
        r.fail(rn, rpath, "audio prices need both audio_input_per_mtok and audio_output_per_mtok");
      }
      route.audio_priced = audio_input.has_value();
      route.prices.audio_input = audio_input.value_or(route.prices.input);
      route.prices.audio_output = audio_output.value_or(route.prices.output);
      // Server-side web searches: Anthropic's $10 per 1000 unless configured; on OpenAI's
      // chat completions, a search model's one search per request (web_search_options),
      // whose price depends on the model: none unless configured.
      route.prices.web_search_per_1k =
          r.price(rn, "web_search_per_1k", rpath, false, "per 1000 searches", "1000")
              .value_or(anthropic ? PricePerMtok::from_nanos(10 * Money::kNanosPerUsd)
                                  : PricePerMtok());
      // An optional key that is there and not null.
      auto given = [&](const char* key) { return rn[key].IsDefined() && !rn[key].IsNull(); };
      if ((given("fast_multiplier") || given("inference_geo_multipliers")) && !anthropic) {
        r.fail(rn, rpath,
               "fast_multiplier and inference_geo_multipliers price Anthropic's speed and "
               "inference_geo options: they need a provider with api: anthropic");
      }
      if (given("priority_multiplier")) {
        if (it->api != catalog::Api::kOpenAI) {
          r.fail(rn, rpath,
                 "priority_multiplier prices OpenAI's priority processing: it needs a provider "
                 "with api: openai");
        }
        route.priority_premium =
            r.premium(rn["priority_multiplier"], rpath + ".priority_multiplier");
      }
      if (given("fast_multiplier")) {
        route.fast_premium = r.premium(rn["fast_multiplier"], rpath + ".fast_multiplier");
      }
      if (given("inference_geo_multipliers")) {
        const YAML::Node geo = rn["inference_geo_multipliers"];
        const std::string gpath = rpath + ".inference_geo_multipliers";
        if (!geo.IsMap()) {
          r.fail(geo, gpath, "must be a mapping of inference_geo values to multipliers");
        }
        for (const auto& kv : geo) {
          const std::string where = Reader::join(gpath, kv.first.Scalar());
          std::string region = r.scalar(kv.first, where);
          if (region.find_first_not_of(" \t") == std::string::npos || region == "global") {
            r.fail(kv.first, where,
                   "must name a region other than global (global is the standard price)");
          }
          if (std::any_of(route.geo_premiums.begin(), route.geo_premiums.end(),
                          [&](const auto& g) { return g.first == region; })) {
            r.fail(kv.first, where, "appears more than once");
          }
          route.geo_premiums.emplace_back(std::move(region), r.premium(kv.second, where));
        }
      }
      if (given("long_context")) {
        const YAML::Node lc = rn["long_context"];
        const std::string lpath = rpath + ".long_context";
        r.check_keys(lc, lpath, {"above_input_tokens", "input_multiplier", "output_multiplier"});
        for (const char* key : {"above_input_tokens", "input_multiplier", "output_multiplier"}) {
          if (!lc[key].IsDefined() || lc[key].IsNull()) {
            r.fail(lc, Reader::join(lpath, key), "is required");
          }
        }
        route.prices.long_above = static_cast<std::int64_t>(
            r.integer(lc, "above_input_tokens", lpath, 0, 1, 100'000'000));
        route.prices.long_input = r.premium(lc["input_multiplier"], lpath + ".input_multiplier");
        route.prices.long_output = r.premium(lc["output_multiplier"], lpath + ".output_multiplier");
      }
      // The costs of one request stay inside int64 nano-USD: see kTokenPriceMost.
      std::uint32_t geo_max = catalog::kPremiumOne;
      for (const auto& [geo, premium] : route.geo_premiums) geo_max = std::max(geo_max, premium);
      const catalog::Prices dearest = catalog::with_premium(
          catalog::for_input(route.prices, route.prices.long_above + 1),
          dearest_premium(route, geo_max));
      for (const PricePerMtok p : {dearest.input, dearest.output, dearest.cached_input,
                                   dearest.cache_write, dearest.cache_write_1h,
                                   dearest.audio_input, dearest.audio_output}) {
        if (p.nanos() > kTokenPriceMost) {
          r.fail(rn, rpath,
                 fmt::format("with all its multipliers a token price here reaches {} USD per "
                             "million tokens; at most {} is allowed",
                             p.to_string(), PricePerMtok::from_nanos(kTokenPriceMost).to_string()));
        }
      }
      // A flex tier needs both its prices, and a provider that knows `service_tier`.
      if (rn["flex_input_per_mtok"].IsDefined() || rn["flex_output_per_mtok"].IsDefined() ||
          rn["flex_cached_input_per_mtok"].IsDefined()) {
        if (it->api != catalog::Api::kOpenAI) {
          r.fail(rn, rpath, "flex prices need a provider with api: openai (service_tier: flex)");
        }
        catalog::Prices flex;
        flex.input = *r.price(rn, "flex_input_per_mtok", rpath, true);
        flex.output = *r.price(rn, "flex_output_per_mtok", rpath, true);
        // Unless given, cached input costs on the flex tier what it costs at most anywhere:
        // the flex input price, or the standard cached price where that is lower.
        flex.cached_input = r.price(rn, "flex_cached_input_per_mtok", rpath, false)
                                .value_or(std::min(flex.input, route.prices.cached_input));
        flex.cache_write = flex.cache_write_1h = flex.input;  // OpenAI writes no cache
        flex.audio_input = route.prices.audio_input;  // no flex discount is known for audio
        flex.audio_output = route.prices.audio_output;
        flex.web_search_per_1k = route.prices.web_search_per_1k;
        flex.long_above = route.prices.long_above;
        flex.long_input = route.prices.long_input;
        flex.long_output = route.prices.long_output;
        // Flex is the cheaper tier: the race waits for it, and its saving is billed.
        if (flex.input > route.prices.input || flex.output > route.prices.output ||
            flex.cached_input > route.prices.cached_input) {
          r.fail(rn, rpath,
                 "flex prices must not be above the standard ones (flex is the cheaper tier the "
                 "race waits for)");
        }
        route.flex = flex;
      }
      // The router's latency estimate until the route has been measured.
      route.ttfb_ms = r.number(rn, "ttfb_ms", rpath, route.ttfb_ms, 0, 600'000);
      route.tokens_per_second =
          r.number(rn, "tokens_per_second", rpath, route.tokens_per_second, 0.001, 1'000'000);
      m.routes.push_back(std::move(route));
    }
    models.push_back(std::move(m));
  }
  return models;
}

constexpr std::size_t kCorsOriginsMax = 100;

// cors.allow_origins: the browser origins that may call the client API ("*" for any), as
// a browser sends them: scheme://host[:port], nothing after.
std::vector<std::string> parse_cors(const Reader& r, const YAML::Node& root) {
  const YAML::Node cors = root["cors"];
  if (!cors.IsDefined() || cors.IsNull()) return {};
  r.check_keys(cors, "cors", {"allow_origins"});
  const YAML::Node list = cors["allow_origins"];
  if (!list.IsDefined() || list.IsNull()) return {};
  if (!list.IsSequence() || list.size() > kCorsOriginsMax) {
    r.fail(list, "cors.allow_origins",
           fmt::format("must be a list of at most {} origins", kCorsOriginsMax));
  }
  std::vector<std::string> origins;
  for (std::size_t i = 0; i < list.size(); ++i) {
    const std::string path = fmt::format("cors.allow_origins[{}]", i);
    std::string origin = r.scalar(list[i], path);
    const std::size_t scheme = origin.find("://");
    const bool web = origin.starts_with("http://") || origin.starts_with("https://");
    const bool bare = scheme != std::string::npos &&
                      origin.find_first_of("/?#", scheme + 3) == std::string::npos &&
                      origin.size() > scheme + 3;
    if (origin != "*" && !(web && bare)) {
      r.fail(list[i], path,
             fmt::format("'{}' is no origin: \"*\", or scheme://host[:port] as a browser sends "
                         "it (http or https, no path)",
                         origin));
    }
    origins.push_back(std::move(origin));
  }
  return origins;
}

void parse_limits(const Reader& r, const YAML::Node& root, Config& c) {
  const YAML::Node n = root["limits"];
  if (!n.IsDefined() || n.IsNull()) return;
  r.check_keys(n, "limits", {"header_bytes_max", "body_bytes_max", "header_timeout_ms",
                             "body_timeout_ms", "idle_timeout_ms", "write_timeout_ms",
                             "drain_timeout_ms", "connections_per_thread_max", "io_spin_us"});
  auto& s = c.server;
  s.header_bytes_max = r.integer(n, "header_bytes_max", "limits", s.header_bytes_max, 1024, 1 << 20);
  s.body_bytes_max = r.integer(n, "body_bytes_max", "limits", s.body_bytes_max, 1024, 1ULL << 30);
  s.header_timeout_ms = static_cast<std::uint32_t>(
      r.integer(n, "header_timeout_ms", "limits", s.header_timeout_ms, 100, kHour));
  s.body_timeout_ms = static_cast<std::uint32_t>(
      r.integer(n, "body_timeout_ms", "limits", s.body_timeout_ms, 100, kHour));
  s.idle_timeout_ms = static_cast<std::uint32_t>(
      r.integer(n, "idle_timeout_ms", "limits", s.idle_timeout_ms, 100, kHour));
  s.write_timeout_ms = static_cast<std::uint32_t>(
      r.integer(n, "write_timeout_ms", "limits", s.write_timeout_ms, 100, kHour));
  s.drain_timeout_ms = static_cast<std::uint32_t>(
      r.integer(n, "drain_timeout_ms", "limits", s.drain_timeout_ms, 0, kHour));
  s.connections_per_thread_max = r.integer(n, "connections_per_thread_max", "limits",
                                           s.connections_per_thread_max, 1, 1'000'000);
  s.io_spin_us =
      static_cast<std::uint32_t>(r.integer(n, "io_spin_us", "limits", s.io_spin_us, 0, 10'000));
}

void parse_upstream(const Reader& r, const YAML::Node& root, Config& c) {
  const YAML::Node n = root["upstream"];
  if (!n.IsDefined() || n.IsNull()) return;
  r.check_keys(n, "upstream", {"connect_timeout_ms", "first_byte_timeout_ms",
                               "answer_timeout_ms", "idle_timeout_ms", "idle_connections_max"});
  auto& u = c.upstream;
  u.connect_timeout_ms = static_cast<std::uint32_t>(
      r.integer(n, "connect_timeout_ms", "upstream", u.connect_timeout_ms, 1, kHour));
  u.first_byte_timeout_ms = static_cast<std::uint32_t>(
      r.integer(n, "first_byte_timeout_ms", "upstream", u.first_byte_timeout_ms, 1, kHour));
  u.answer_timeout_ms = static_cast<std::uint32_t>(
      r.integer(n, "answer_timeout_ms", "upstream", u.answer_timeout_ms, 1, kHour));
  u.idle_timeout_ms = static_cast<std::uint32_t>(
      r.integer(n, "idle_timeout_ms", "upstream", u.idle_timeout_ms, 1, kHour));
  c.upstream_idle_connections_max = r.integer(n, "idle_connections_max", "upstream",
                                              c.upstream_idle_connections_max, 0, 100'000);
}

void parse_routing(const Reader& r, const YAML::Node& root, Config& c) {
  const YAML::Node n = root["routing"];
  if (!n.IsDefined() || n.IsNull()) return;
  r.check_keys(n, "routing",
               {"weights", "breaker_failures", "breaker_cooldown_ms", "breaker_error_rate",
                "breaker_window", "auto_quality_floor", "fallback_deadline_ms", "rules",
                "probe_interval_ms", "probe_timeout_ms", "probe_failures"});
  c.probe.interval_ms = static_cast<std::uint32_t>(
      r.integer(n, "probe_interval_ms", "routing", c.probe.interval_ms, 0, kHour));
  if (c.probe.interval_ms != 0 && c.probe.interval_ms < 100) {
    r.fail(n["probe_interval_ms"], "routing.probe_interval_ms",
           "must be 0 (no probes) or at least 100");
  }
  c.probe.timeout_ms = static_cast<std::uint32_t>(
      r.integer(n, "probe_timeout_ms", "routing", c.probe.timeout_ms, 100, 60'000));
  c.probe.failures = static_cast<std::uint32_t>(
      r.integer(n, "probe_failures", "routing", c.probe.failures, 1, 100));
  c.fallback_deadline_ms = static_cast<std::uint32_t>(r.integer(
      n, "fallback_deadline_ms", "routing", c.fallback_deadline_ms, 100, 10 * 60'000));
  c.auto_quality_floor =
      r.number(n, "auto_quality_floor", "routing", c.auto_quality_floor, 0, 1);
  c.breaker.failures = static_cast<std::uint32_t>(
      r.integer(n, "breaker_failures", "routing", c.breaker.failures, 1, 1000));
  c.breaker.cooldown = std::chrono::milliseconds(r.integer(
      n, "breaker_cooldown_ms", "routing",
      static_cast<std::uint64_t>(c.breaker.cooldown.count()), 10, kHour));
  c.breaker.error_rate =
      r.number(n, "breaker_error_rate", "routing", c.breaker.error_rate, 0, 1);
  c.breaker.window = static_cast<std::uint32_t>(
      r.integer(n, "breaker_window", "routing", c.breaker.window, 2, 64));
  const YAML::Node w = n["weights"];
  if (!w.IsDefined() || w.IsNull()) return;
  r.check_keys(w, "routing.weights", {"quality", "cost", "latency"});
  c.weights.quality = r.number(w, "quality", "routing.weights", c.weights.quality, 0, 1);
  c.weights.cost = r.number(w, "cost", "routing.weights", c.weights.cost, 0, 1);
  c.weights.latency = r.number(w, "latency", "routing.weights", c.weights.latency, 0, 1);
  if (c.weights.quality + c.weights.cost + c.weights.latency <= 0) {
    r.fail(w, "routing.weights", "at least one weight must be above 0");
  }
}

constexpr std::size_t kRulesMax = 1000;

// Weights {quality, cost, latency}, each 0..1, not all 0.
router::Weights parse_weights(const Reader& r, const YAML::Node& w, const std::string& path,
                              const router::Weights& fallback) {
  r.check_keys(w, path, {"quality", "cost", "latency"});
  router::Weights out;
  out.quality = r.number(w, "quality", path, fallback.quality, 0, 1);
  out.cost = r.number(w, "cost", path, fallback.cost, 0, 1);
  out.latency = r.number(w, "latency", path, fallback.latency, 0, 1);
  if (out.quality + out.cost + out.latency <= 0) {
    r.fail(w, path, "at least one weight must be above 0");
  }
  return out;
}

// routing.rules: validated against the providers and models, so a typo fails at start-up
// rather than silently matching nothing.
std::vector<router::Rule> parse_rules(const Reader& r, const YAML::Node& root,
                                      const std::vector<catalog::Provider>& providers,
                                      const std::vector<catalog::Model>& models,
                                      std::vector<std::string>& warnings) {
  const YAML::Node routing = root["routing"];
  if (!routing.IsDefined() || routing.IsNull()) return {};
  const YAML::Node list = routing["rules"];
  if (!list.IsDefined() || list.IsNull()) return {};
  if (!list.IsSequence() || list.size() > kRulesMax) {
    r.fail(list, "routing.rules", fmt::format("must be a list of at most {} rules", kRulesMax));
  }
  std::vector<router::Rule> rules;
  for (std::size_t i = 0; i < list.size(); ++i) {
    const YAML::Node n = list[i];
    const std::string path = fmt::format("routing.rules[{}]", i);
    r.check_keys(n, path, {"name", "match", "pin", "exclude", "weights", "fallback_order"});
    router::Rule rule;
    rule.name = r.string(n, "name", path, fmt::format("rules[{}]", i));
    if (rule.name.find_first_not_of(" \t") == std::string::npos) {
      r.fail(n["name"], path + ".name",
             fmt::format("must not be blank (leave it out to be called rules[{}])", i));
    }
    r.no_controls(n["name"], path + ".name", rule.name);
    for (const router::Rule& earlier : rules) {
      if (earlier.name == rule.name) {
        r.fail(n["name"], path + ".name", fmt::format("'{}' names an earlier rule", rule.name));
      }
    }
    if (const YAML::Node m = n["match"]; m.IsDefined() && !m.IsNull()) {
      const std::string mpath = path + ".match";
      r.check_keys(m, mpath, {"model", "account", "key_tag", "privacy_tier"});
      rule.model = r.string(m, "model", mpath, "");
      rule.key_tag = r.string(m, "key_tag", mpath, "");
      // An empty condition would match everything: leaving the key out says that.
      for (const char* key : {"model", "key_tag"}) {
        if (m[key].IsDefined() && !m[key].IsNull() && r.string(m, key, mpath, "").empty()) {
          r.fail(m[key], Reader::join(mpath, key),
                 "must not be empty (leave it out to match any)");
        }
      }
      // (`auto` requests match on "auto", a name no model has.)
      if (!rule.model.empty() && !router::glob_match(rule.model, "auto") &&
          std::none_of(models.begin(), models.end(), [&](const catalog::Model& model) {
            return router::glob_match(rule.model, model.name);
          })) {
        r.fail(m["model"], mpath + ".model",
               fmt::format("'{}' matches no model of the catalog", rule.model));
      }
      // A tag as keys carry them: any other could never match.
      if (!rule.key_tag.empty() && !router::valid_tag(rule.key_tag)) {
        r.fail(m["key_tag"], mpath + ".key_tag",
               fmt::format("'{}' is no tag a key can carry (1 to 64 letters, digits, '-', '_' "
                           "or '.')",
                           rule.key_tag));
      }
      if (m["account"].IsDefined() && !m["account"].IsNull()) {
        const std::string copy = r.string(m, "account", mpath, "");
        std::string_view text = copy;
        // As the admin API names accounts: a bare number could be mistaken for something
        // else (an index, a count) and is refused like any other malformed id.
        const bool prefixed = text.starts_with("acct_");
        if (prefixed) text.remove_prefix(5);
        std::int64_t id = 0;
        const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), id);
        if (!prefixed || ec != std::errc{} || end != text.data() + text.size() || id <= 0 ||
            text.starts_with('0')) {
          r.fail(m["account"], mpath + ".account",
                 fmt::format("must be an account id like acct_3, got '{}'", copy));
        }
        rule.account = id;
      }
      if (m["privacy_tier"].IsDefined() && !m["privacy_tier"].IsNull()) {
        rule.privacy_tier = parse_tier(r, m, mpath);
      }
    }
    auto provider_list = [&](std::string_view key) {
      std::vector<std::size_t> out;
      const YAML::Node l = n[std::string(key)];
      if (!l.IsDefined() || l.IsNull()) return out;
      const std::string lpath = Reader::join(path, key);
      if (!l.IsSequence() || l.size() == 0) r.fail(l, lpath, "must be a non-empty list of providers");
      for (std::size_t j = 0; j < l.size(); ++j) {
        const std::string name = r.scalar(l[j], fmt::format("{}[{}]", lpath, j));
        const auto it = std::find_if(providers.begin(), providers.end(),
                                     [&](const catalog::Provider& p) { return p.name == name; });
        if (it == providers.end()) {
          r.fail(l[j], fmt::format("{}[{}]", lpath, j), fmt::format("no provider named '{}'", name));
        }
        if (std::find(out.begin(), out.end(), it->index) != out.end()) {
          r.fail(l[j], fmt::format("{}[{}]", lpath, j), fmt::format("'{}' is listed twice", name));
        }
        out.push_back(it->index);
      }
      return out;
    };
    rule.pin = provider_list("pin");
    rule.exclude = provider_list("exclude");
    rule.fallback_order = provider_list("fallback_order");
    if (const YAML::Node w = n["weights"]; w.IsDefined() && !w.IsNull()) {
      // A rule's weights replace the others whole, so each is said, none inherited.
      for (const char* key : {"quality", "cost", "latency"}) {
        if (!w.IsMap() || !w[key].IsDefined() || w[key].IsNull()) {
          r.fail(w, path + ".weights",
                 "must give quality, cost and latency (a rule's weights replace the others whole)");
        }
      }
      rule.weights = parse_weights(r, w, path + ".weights", router::Weights{});
    }
    for (const std::size_t p : rule.exclude) {
      if (std::find(rule.pin.begin(), rule.pin.end(), p) != rule.pin.end()) {
        r.fail(n["exclude"], path + ".exclude",
               fmt::format("'{}' is both pinned and excluded", providers[p].name));
      }
    }
    for (const std::size_t p : rule.fallback_order) {
      if (!router::admits(rule, p)) {
        r.fail(n["fallback_order"], path + ".fallback_order",
               fmt::format("'{}' is not a candidate under this rule's pin and exclude",
                           providers[p].name));
      }
    }
    if (rule.pin.empty() && rule.exclude.empty() && !rule.weights && rule.fallback_order.empty()) {
      r.fail(n, path, "a rule needs at least one action: pin, exclude, weights or fallback_order");
    }
    // The first rule that matches applies: one that an earlier rule always beats is dead.
    for (const router::Rule& earlier : rules) {
      if (router::covers(earlier, rule)) {
        r.fail(n, path,
               fmt::format("rule '{}' never applies: rule '{}' before it matches every request "
                           "it matches (the first rule that matches applies)",
                           rule.name, earlier.name));
      }
    }
    // A rule that leaves no route for any model it matches refuses every request it
    // matches (403): a policy that fails closed, but more likely a mistake.
    if (!rule.pin.empty() || !rule.exclude.empty()) {
      const bool leaves_a_route =
          std::any_of(models.begin(), models.end(), [&](const catalog::Model& model) {
            if (!rule.model.empty() && !router::glob_match(rule.model, model.name) &&
                !router::glob_match(rule.model, "auto")) {
              return false;
            }
            return std::any_of(model.routes.begin(), model.routes.end(),
                               [&](const catalog::Route& route) {
                                 const catalog::Provider& p = providers[route.provider];
                                 return router::admits(rule, p.index) &&
                                        (!rule.privacy_tier || p.privacy_tier <= *rule.privacy_tier);
                               });
          });
      if (!leaves_a_route) {
        warnings.push_back(
            fmt::format("{}: rule '{}' leaves no route for any model it matches{}: every "
                        "request it matches is refused (403)",
                        path, rule.name,
                        rule.privacy_tier
                            ? fmt::format(" at privacy tier {}",
                                          catalog::privacy_tier_name(*rule.privacy_tier))
                            : std::string()));
      }
    }
    rules.push_back(std::move(rule));
  }
  return rules;
}

}  // namespace

Status parse_listen(std::string_view text, std::string& host, std::uint16_t& port) {
  const std::size_t colon = text.rfind(':');
  if (colon == std::string_view::npos || colon == 0) {
    return {ErrorKind::kInvalidRequest, fmt::format("'{}' is not HOST:PORT", text)};
  }
  std::string_view h = text.substr(0, colon);
  if (h.starts_with('[') && h.ends_with(']')) h = h.substr(1, h.size() - 2);
  const std::string_view p = text.substr(colon + 1);
  unsigned value = 0;
  const auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), value);
  if (ec != std::errc{} || end != p.data() + p.size() || value > 65535) {
    return {ErrorKind::kInvalidRequest, fmt::format("'{}' has a bad port", text)};
  }
  // An address, as the listener binds it: a name would need resolving.
  unsigned char address[sizeof(in6_addr)];
  const std::string literal(h);
  if (inet_pton(AF_INET, literal.c_str(), address) != 1 &&
      inet_pton(AF_INET6, literal.c_str(), address) != 1) {
    return {ErrorKind::kInvalidRequest,
            fmt::format("'{}' is not an IP address (such as 127.0.0.1, 0.0.0.0 or [::1])", h)};
  }
  host = literal;
  port = static_cast<std::uint16_t>(value);
  return Status::ok();
}

Result<Config> parse_config(std::string_view yaml, std::string_view source) {
  const Reader r(source);
  try {
    const YAML::Node root = YAML::Load(std::string(yaml));
    r.check_keys(root, "", {"listen", "threads", "store", "redis", "log", "limits", "upstream",
                            "providers", "models", "routing", "billing", "cors"});
    Config c;
    const std::string listen = r.string(root, "listen", "", "127.0.0.1:8080");
    if (auto s = parse_listen(listen, c.listen_host, c.listen_port); !s) {
      r.fail(root["listen"], "listen", s.message());
    }
    c.threads = static_cast<int>(r.integer(root, "threads", "", 0, 0, limits::kThreadsMax));
    c.store = r.string(root, "store", "", c.store);
    if ((!c.store.starts_with("sqlite:") && !c.store.starts_with("postgres://") &&
         !c.store.starts_with("postgresql://")) ||
        c.store == "sqlite:" || c.store.ends_with('/')) {
      r.fail(root["store"], "store", "must be sqlite:FILE or postgres://...");
    }
    c.redis = r.string(root, "redis", "", "");
    if (!c.redis.empty() && !valid_redis_url(c.redis)) {
      // (Not quoted: it may carry a password.)
      r.fail(root["redis"], "redis", "must be redis://[USER:PASSWORD@]HOST[:PORT][/DB]");
    }
    if (const YAML::Node log = root["log"]; log.IsDefined() && !log.IsNull()) {
      r.check_keys(log, "log", {"level", "access"});
      c.log_level = r.string(log, "level", "log", c.log_level);
      bool ok = false;
      log::parse_level(c.log_level, &ok);
      if (!ok) r.fail(log["level"], "log.level", "must be debug, info, warn or error");
      c.access_log = r.boolean(log, "access", "log", c.access_log);
    }
    if (const YAML::Node billing = root["billing"]; billing.IsDefined() && !billing.IsNull()) {
      r.check_keys(billing, "billing", {"trial_usd", "hold_timeout_ms", "disconnect_drain_ms",
                                        "reconcile_at", "reconcile_every_ms", "low_balance_usd",
                                        "low_balance_webhook", "low_balance_webhook_ca_file",
                                        "low_balance_retry_ms"});
      const std::string trial = r.string(billing, "trial_usd", "billing", "20");
      auto amount = Money::parse(trial);
      if (!amount || amount->is_negative() || *amount > Money::usd(limits::kMoneyCallUsdMax)) {
        r.fail(billing["trial_usd"], "billing.trial_usd",
               fmt::format("must be a non-negative USD amount like \"20\" (at most {}), got '{}'",
                           limits::kMoneyCallUsdMax, trial));
      }
      c.billing.trial_credit = *amount;
      c.billing.hold_timeout_ms = static_cast<std::uint32_t>(
          r.integer(billing, "hold_timeout_ms", "billing", c.billing.hold_timeout_ms, 1000, kDay));
      c.billing.disconnect_drain_ms = static_cast<std::uint32_t>(r.integer(
          billing, "disconnect_drain_ms", "billing", c.billing.disconnect_drain_ms, 0, kHour));
      const std::string at = r.string(billing, "reconcile_at", "billing", "03:00");
      const bool at_ok = at.size() == 5 && at[2] == ':' && std::isdigit(at[0]) &&
                         std::isdigit(at[1]) && std::isdigit(at[3]) && std::isdigit(at[4]) &&
                         std::stoi(at.substr(0, 2)) < 24 && std::stoi(at.substr(3)) < 60;
      if (!at_ok) {
        r.fail(billing["reconcile_at"], "billing.reconcile_at",
               fmt::format("must be a UTC time of day like \"03:00\", got '{}'", at));
      }
      c.billing.reconcile_at_minute = std::stoi(at.substr(0, 2)) * 60 + std::stoi(at.substr(3));
      c.billing.reconcile_every_ms =
          r.integer(billing, "reconcile_every_ms", "billing", 0, 0, 7 * kDay);
      if (const YAML::Node list = billing["low_balance_usd"]; list.IsDefined() && !list.IsNull()) {
        if (!list.IsSequence() || list.size() > 32) {
          r.fail(list, "billing.low_balance_usd", "must be a list of at most 32 USD amounts");
        }
        c.billing.low_balance.clear();
        for (std::size_t i = 0; i < list.size(); ++i) {
          const std::string text = list[i].IsScalar() ? list[i].Scalar() : "";
          auto amount = Money::parse(text);
          if (!amount || amount->is_negative() || *amount > Money::usd(limits::kMoneyCallUsdMax)) {
            r.fail(list[i], fmt::format("billing.low_balance_usd[{}]", i),
                   fmt::format("must be a non-negative USD amount like \"5\" (at most {}), got "
                               "'{}'",
                               limits::kMoneyCallUsdMax, text));
          }
          c.billing.low_balance.push_back(*amount);
        }
      }
      c.billing.low_balance_webhook = r.string(billing, "low_balance_webhook", "billing", "");
      if (!c.billing.low_balance_webhook.empty()) {
        if (auto url = http::parse_base_url(c.billing.low_balance_webhook); !url) {
          r.fail(billing["low_balance_webhook"], "billing.low_balance_webhook",
                 url.status().message());
        }
      }
      c.billing.low_balance_webhook_ca_file =
          r.string(billing, "low_balance_webhook_ca_file", "billing", "");
      c.billing.low_balance_retry_ms = static_cast<std::uint32_t>(
          r.integer(billing, "low_balance_retry_ms", "billing", 1000, 10, kHour));
    }
    parse_limits(r, root, c);
    c.cors_origins = parse_cors(r, root);
    parse_upstream(r, root, c);
    parse_routing(r, root, c);
    if (c.upstream.first_byte_timeout_ms >= c.fallback_deadline_ms) {
      c.warnings.push_back(fmt::format(
          "upstream.first_byte_timeout_ms ({} ms) is not below routing.fallback_deadline_ms "
          "({} ms): a stream route that sends no response headers is never followed by another",
          c.upstream.first_byte_timeout_ms, c.fallback_deadline_ms));
    }
    // A hold is renewed as a response arrives, not while a request waits for one: it must
    // outlast the longest wait for response headers, fallback included, or the money it
    // reserves could be spent twice. And a running response renews it as its bytes arrive,
    // at most half a timeout apart: an upstream may pause for at most its idle timeout, so
    // the hold must last twice that. The error points at hold_timeout_ms when it was set,
    // else at the setting that outgrew its default.
    // (A default-constructed YAML::Node counts as defined: only lookups can be undefined.)
    const YAML::Node billing = root["billing"];
    const YAML::Node upstream = root["upstream"];
    const bool hold_set = billing.IsDefined() && billing["hold_timeout_ms"].IsDefined();
    auto hold_too_short = [&](const YAML::Node& cause, std::string_view bound, std::uint64_t ms) {
      r.fail(hold_set ? billing["hold_timeout_ms"] : cause.IsDefined() ? cause : root,
             "billing.hold_timeout_ms",
             fmt::format("must be above {} ({} ms), got {}{}: raise it or lower those", bound, ms,
                         c.billing.hold_timeout_ms, hold_set ? "" : " (the default)"));
    };
    if (const std::uint64_t wait =
            std::uint64_t{c.upstream.connect_timeout_ms} +
            std::max(c.upstream.first_byte_timeout_ms, c.upstream.answer_timeout_ms) +
            c.fallback_deadline_ms;
        c.billing.hold_timeout_ms <= wait) {
      hold_too_short(upstream.IsDefined() ? upstream : root["routing"],
                     "upstream.connect_timeout_ms + the longer of upstream.first_byte_timeout_ms "
                     "and upstream.answer_timeout_ms + routing.fallback_deadline_ms",
                     wait);
    }
    if (const std::uint64_t pause = std::uint64_t{c.upstream.idle_timeout_ms} * 2;
        c.billing.hold_timeout_ms <= pause) {
      hold_too_short(upstream.IsDefined() ? upstream["idle_timeout_ms"] : upstream,
                     "twice upstream.idle_timeout_ms", pause);
    }
    auto providers = parse_providers(r, root);
    for (const catalog::Provider& p : providers) {
      if (!p.ca_file.empty() && p.base_url.starts_with("http://")) {
        c.warnings.push_back(
            fmt::format("providers[{}].ca_file is not used: provider '{}' is "
                        "reached over http://, without TLS",
                        p.index, p.name));
      }
    }
    if (!c.billing.low_balance_webhook_ca_file.empty() &&
        c.billing.low_balance_webhook.starts_with("http://")) {
      c.warnings.push_back(
          "billing.low_balance_webhook_ca_file is not used: the webhook is reached over "
          "http://, without TLS");
    }
    auto models = parse_models(r, root, providers);
    c.rules = parse_rules(r, root, providers, models, c.warnings);
    c.catalog = std::make_shared<const catalog::Catalog>(std::move(providers), std::move(models));
    return c;
  } catch (const ConfigError& e) {
    return Status{ErrorKind::kInvalidRequest, e.message};
  } catch (const YAML::Exception& e) {
    return Status{ErrorKind::kInvalidRequest,
                  fmt::format("{}:{}: YAML: {}", source, e.mark.line + 1, e.msg)};
  }
}

Result<Config> load_config(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status{ErrorKind::kNotFound, fmt::format("{}: cannot open config file", path)};
  std::ostringstream text;
  text << in.rdbuf();
  if (text.str().size() > limits::kConfigBytesMax) {
    return Status{ErrorKind::kInvalidRequest,
                  fmt::format("{}: larger than {} bytes", path, limits::kConfigBytesMax)};
  }
  return parse_config(text.str(), path);
}

}  // namespace tp::ops
