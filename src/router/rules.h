#pragma once
// Routing rules: an ordered list from config (routing.rules). The first rule whose every
// condition matches a request applies; its actions narrow the candidates (pin, exclude),
// replace the weights, or put some providers first in the fallback order. A rule never
// widens what the request's own constraints allow.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "catalog/catalog.h"
#include "router/score.h"

namespace tp::router {

struct Rule {
  std::string name;  // for explain, errors and logs

  // Conditions; an unset one matches anything.
  std::string model;                     // glob (`*`, `?`) over the model the request names
  std::optional<std::int64_t> account;   // the key's account id
  std::string key_tag;                   // one of the key's tags
  std::optional<catalog::PrivacyTier> privacy_tier;  // the request's effective tier

  // Actions, by provider index (catalog::Provider::index).
  std::vector<std::size_t> pin;             // non-empty: only these providers' routes
  std::vector<std::size_t> exclude;         // never these providers' routes
  std::optional<Weights> weights;           // replaces the key's, account's or config's
  std::vector<std::size_t> fallback_order;  // these first, in this order; the rest by score
};

// `*` matches any run of characters, `?` any one; everything else itself.
bool glob_match(std::string_view pattern, std::string_view text);

// A tag a key may carry, and a rule match on: 1 to 64 letters, digits, '-', '_' or '.'.
inline constexpr std::size_t kTagBytesMax = 64;
bool valid_tag(std::string_view tag);

// What a rule is matched against.
struct RuleSubject {
  std::string_view model;
  std::int64_t account = 0;
  std::span<const std::string> key_tags;
  catalog::PrivacyTier tier = catalog::PrivacyTier::kCommunity;
};

bool matches(const Rule& rule, const RuleSubject& subject);
// Whether `earlier` matches every request `later` matches (so `later`, after it, never
// applies). Conservative: a glob is taken to cover another only when they are equal, or the
// other has no wildcard and matches it.
bool covers(const Rule& earlier, const Rule& later);
// The first rule that matches, or nullptr.
const Rule* first_match(std::span<const Rule> rules, const RuleSubject& subject);
// Whether `rule` lets routes of `provider` be candidates.
bool admits(const Rule& rule, std::size_t provider);
// Puts `order` (candidate indices, best first) in the rule's fallback order: candidates of
// the providers it lists first, in the list's order; the others after them, keeping their
// order. `provider_of(i)`: candidate i's provider.
void order_by_fallback(const Rule& rule, std::vector<std::size_t>& order,
                       const std::function<std::size_t(std::size_t)>& provider_of);

}  // namespace tp::router
