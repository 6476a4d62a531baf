#include "api/usage_api.h"

#include <fmt/format.h>

#include <charconv>

#include "core/json_writer.h"
#include "core/rfc3339.h"

namespace tp::api {
namespace {

constexpr std::string_view kCursorPrefix = "u_";

Status invalid(std::string message) { return {ErrorKind::kInvalidRequest, std::move(message)}; }

std::optional<std::int64_t> positive(std::string_view text) {
  std::int64_t n = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec != std::errc{} || end != text.data() + text.size() || n <= 0) return std::nullopt;
  return n;
}

}  // namespace

Result<store::UsageQuery> parse_usage_query(const http::QueryParams& params,
                                            std::optional<std::int64_t> account) {
  store::UsageQuery q;
  q.account = account;
  q.limit = kUsagePageRowsDefault;
  std::optional<std::string_view> from, to;  // as sent, when sent
  // A name as the client may read it back: its first 64 bytes, if they are UTF-8.
  auto named = [](std::string_view key) {
    const std::string_view shown = json::utf8_prefix(key, 64);
    return shown.size() == std::min<std::size_t>(key.size(), 64)
               ? fmt::format("'{}'", shown)
               : std::string("(a name that is not UTF-8)");
  };
  // Repeats first: which of two values would count is the question, not either value.
  for (std::size_t i = 0; i < params.size(); ++i) {
    for (std::size_t j = 0; j < i; ++j) {
      if (params[j].first == params[i].first) {
        return invalid(
            fmt::format("query parameter {} is given more than once", named(params[i].first)));
      }
    }
  }
  for (const auto& [key, value] : params) {
    if (key == "from" || key == "to") {
      const auto ms = parse_rfc3339(value);
      if (!ms) {
        return invalid(fmt::format("'{}' must be an RFC 3339 time like 2026-11-23T00:00:00Z", key));
      }
      (key == "from" ? q.from_ms : q.to_ms) = *ms;
      (key == "from" ? from : to) = value;
    } else if (key == "limit") {
      const auto n = positive(value);
      if (!n || *n > static_cast<std::int64_t>(kUsagePageRowsMax)) {
        return invalid(fmt::format("'limit' must be between 1 and {}", kUsagePageRowsMax));
      }
      q.limit = static_cast<std::size_t>(*n);
    } else if (key == "cursor") {
      const std::string_view text = value;
      const auto id = text.starts_with(kCursorPrefix) ? positive(text.substr(kCursorPrefix.size()))
                                                      : std::nullopt;
      if (!id) return invalid("'cursor' must be the next_cursor of an earlier page");
      q.after_id = *id;
    } else if (key == "account") {
      if (account) {
        return Status{ErrorKind::kForbidden,
                      "'account' is for admin keys; a customer key sees its own account"};
      }
      const std::string_view text = value;
      const std::string_view digits = text.starts_with("acct_") ? text.substr(5) : text;
      // Written one way only, as the admin API takes it: acct_01 is no account.
      const auto id = digits.starts_with('0') ? std::nullopt : positive(digits);
      if (!id) return invalid("'account' must be an account id like acct_12");
      q.account = *id;
    } else {
      return invalid(fmt::format("unknown query parameter {}; expected from, to, limit, cursor{}",
                                 named(key), account ? "" : ", account"));
    }
  }
  // Only two bounds given can be out of order (either alone may be any time, the epoch or
  // before it included), and they are compared as sent: two times within one millisecond
  // round to the same one, an empty range (from_ms == to_ms) that matches no row.
  if (from && to && compare_rfc3339(*from, *to) != std::strong_ordering::less) {
    return invalid("'from' must be before 'to'");
  }
  return q;
}

std::string usage_page_json(const store::UsagePage& page, std::size_t limit) {
  const std::vector<store::UsageRecord>& rows = page.rows;
  std::string out;
  out.reserve(64 + rows.size() * 360);
  json::Writer w(out);
  w.begin_object().key("data").begin_array();
  const std::size_t shown = std::min(rows.size(), limit);
  for (std::size_t i = 0; i < shown; ++i) {
    const store::UsageRecord& r = rows[i];
    w.begin_object().field("request_id", r.request_id);
    w.field("timestamp", format_rfc3339(r.at_ms, /*millis=*/true));
    w.field("account", fmt::format("acct_{}", r.account_id));
    w.field("key", fmt::format("key_{}", r.key_id));
    w.field("model", r.model).field("provider", r.provider).key("node");
    if (r.node.empty()) w.null(); else w.value(r.node);
    // input_tokens counts every input token; cached_tokens is the part read from cache.
    w.field("input_tokens", r.input_tokens + r.cached_tokens);
    w.field("output_tokens", r.output_tokens).field("cached_tokens", r.cached_tokens);
    w.field("audio_input_tokens", r.audio_input_tokens);
    w.field("audio_output_tokens", r.audio_output_tokens);
    w.field("web_search_requests", r.web_searches);
    // Ten-thousandths as a decimal: 66'000 is "6.60".
    w.field("price_multiplier",
            Money::from_nanos(r.price_multiplier_e4 * (Money::kNanosPerUsd / 10'000)).to_string());
    w.field("cost_usd", r.cost.to_string()).field("input_cost_usd", r.input_cost.to_string());
    w.field("output_cost_usd", r.output_cost.to_string());
    w.field("service_tier", r.flex ? "flex" : "standard");
    w.field("standard_cost_usd", r.standard_cost.to_string());
    w.field("latency_ms", r.latency_ms).field("status", static_cast<std::int64_t>(r.status));
    w.end_object();
  }
  w.end_array().key("next_cursor");
  if (rows.size() > limit) {
    w.value(fmt::format("{}{}", kCursorPrefix, rows[limit - 1].id));
  } else if (page.scanned_to) {
    w.value(fmt::format("{}{}", kCursorPrefix, *page.scanned_to));
  } else {
    w.null();
  }
  w.end_object();
  return out;
}

}  // namespace tp::api
