#include "router/rules.h"

#include <algorithm>
#include <cctype>

namespace tp::router {

bool glob_match(std::string_view pattern, std::string_view text) {
  // Iterative, with one backtrack point for the last `*`: linear in practice, never
  // exponential. `?` and `*` step over whole UTF-8 characters, never into one.
  auto next_char = [&](std::size_t i) {
    ++i;
    while (i < text.size() && (static_cast<unsigned char>(text[i]) & 0xC0) == 0x80) ++i;
    return i;
  };
  std::size_t p = 0;
  std::size_t t = 0;
  std::size_t star = std::string_view::npos;
  std::size_t resume = 0;
  while (t < text.size()) {
    if (p < pattern.size() && pattern[p] == '?') {
      ++p;
      t = next_char(t);
    } else if (p < pattern.size() && pattern[p] == '*') {  // a wildcard, even facing a '*'
      star = p++;
      resume = t;
    } else if (p < pattern.size() && pattern[p] == text[t]) {
      ++p;
      ++t;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      t = resume = next_char(resume);
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

bool valid_tag(std::string_view tag) {
  return !tag.empty() && tag.size() <= kTagBytesMax &&
         std::all_of(tag.begin(), tag.end(), [](char c) {
           return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' ||
                  c == '.';
         });
}

bool matches(const Rule& rule, const RuleSubject& s) {
  if (!rule.model.empty() && !glob_match(rule.model, s.model)) return false;
  if (rule.account && *rule.account != s.account) return false;
  if (!rule.key_tag.empty() &&
      std::find(s.key_tags.begin(), s.key_tags.end(), rule.key_tag) == s.key_tags.end()) {
    return false;
  }
  if (rule.privacy_tier && *rule.privacy_tier != s.tier) return false;
  return true;
}

bool covers(const Rule& earlier, const Rule& later) {
  // A glob that is a literal prefix and one '*' ("*", "gpt-*") matches every name that
  // starts with the prefix, so every name a later glob matches whose own literal start (up
  // to its first wildcard) begins with it.
  const std::size_t wild = earlier.model.find_first_of("*?");
  const bool prefix_glob =
      wild != std::string::npos && wild + 1 == earlier.model.size() && earlier.model.back() == '*';
  const bool model =
      earlier.model.empty() || earlier.model == later.model ||
      (!later.model.empty() && later.model.find_first_of("*?") == std::string::npos &&
       glob_match(earlier.model, later.model)) ||
      (prefix_glob &&
       (wild == 0 || later.model.substr(0, later.model.find_first_of("*?"))
                         .starts_with(std::string_view(earlier.model).substr(0, wild))));
  return model && (!earlier.account || earlier.account == later.account) &&
         (earlier.key_tag.empty() || earlier.key_tag == later.key_tag) &&
         (!earlier.privacy_tier || earlier.privacy_tier == later.privacy_tier);
}

const Rule* first_match(std::span<const Rule> rules, const RuleSubject& subject) {
  for (const Rule& r : rules) {
    if (matches(r, subject)) return &r;
  }
  return nullptr;
}

bool admits(const Rule& rule, std::size_t provider) {
  auto listed = [&](const std::vector<std::size_t>& list) {
    return std::find(list.begin(), list.end(), provider) != list.end();
  };
  if (!rule.pin.empty() && !listed(rule.pin)) return false;
  return !listed(rule.exclude);
}

void order_by_fallback(const Rule& rule, std::vector<std::size_t>& order,
                       const std::function<std::size_t(std::size_t)>& provider_of) {
  if (rule.fallback_order.empty()) return;
  // Unlisted providers all sit at the list's end.
  auto position = [&](std::size_t candidate) {
    const auto& list = rule.fallback_order;
    return std::find(list.begin(), list.end(), provider_of(candidate)) - list.begin();
  };
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return position(a) < position(b); });
}

}  // namespace tp::router
