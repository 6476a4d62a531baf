#include "core/money.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <limits>
#include <ostream>

#include "core/assert.h"

namespace tp {

std::ostream& operator<<(std::ostream& out, Money money) { return out << money.to_string(); }

Result<Money> Money::parse(std::string_view text) {
  auto invalid = [&](std::string_view why) -> Status {
    return {ErrorKind::kInvalidRequest,
            fmt::format("amount '{}' {}", text.substr(0, 40), why)};
  };
  std::string_view rest = text;
  const bool negative = !rest.empty() && rest.front() == '-';
  if (negative) rest.remove_prefix(1);
  const std::size_t dot = rest.find('.');
  const std::string_view whole = rest.substr(0, dot);
  const std::string_view frac = dot == std::string_view::npos ? "" : rest.substr(dot + 1);
  auto digits = [](std::string_view s) {
    return !s.empty() && s.find_first_not_of("0123456789") == std::string_view::npos;
  };
  if (!digits(whole) || (dot != std::string_view::npos && !digits(frac))) {
    return invalid("is not a decimal number like 12.50");
  }
  if (frac.size() > kDecimalsMax) return invalid("has more than 9 decimals");
  // Accumulate as a negative number so the most negative int64 still parses.
  constexpr std::int64_t kMin = std::numeric_limits<std::int64_t>::min();
  std::int64_t value = 0;
  auto push_digit = [&](char c) {
    const int d = c - '0';
    if (value < (kMin + d) / 10) return false;
    value = value * 10 - d;
    return true;
  };
  for (char c : whole) {
    if (!push_digit(c)) return invalid("is out of range");
  }
  for (std::size_t i = 0; i < static_cast<std::size_t>(kDecimalsMax); ++i) {
    if (!push_digit(i < frac.size() ? frac[i] : '0')) return invalid("is out of range");
  }
  if (!negative) {
    if (value == kMin) return invalid("is out of range");
    value = -value;
  }
  return Money(value);
}

Result<Money> Money::parse_json_number(std::string_view text) {
  const std::size_t e = text.find_first_of("eE");
  if (e == std::string_view::npos) return parse(text);
  auto invalid = [&](std::string_view why) -> Status {
    return {ErrorKind::kInvalidRequest, fmt::format("amount '{}' {}", text.substr(0, 40), why)};
  };
  std::string_view mantissa = text.substr(0, e);
  std::string_view exponent = text.substr(e + 1);
  const bool negative = mantissa.starts_with('-');
  if (negative) mantissa.remove_prefix(1);
  if (exponent.starts_with('+')) exponent.remove_prefix(1);
  int shift = 0;
  const auto [end, ec] = std::from_chars(exponent.data(), exponent.data() + exponent.size(), shift);
  const std::size_t dot = mantissa.find('.');
  const std::string_view whole = mantissa.substr(0, dot);
  const std::string_view frac = dot == std::string_view::npos ? "" : mantissa.substr(dot + 1);
  auto all_digits = [](std::string_view s) {
    return !s.empty() && s.find_first_not_of("0123456789") == std::string_view::npos;
  };
  if (ec != std::errc() || end != exponent.data() + exponent.size() || !all_digits(whole) ||
      (dot != std::string_view::npos && !all_digits(frac))) {
    return invalid("is not a number");
  }
  std::string digits = std::string(whole) + std::string(frac);
  if (digits.find_first_not_of('0') == std::string::npos) return Money();
  // Past these the amount is out of range, or has more than 9 decimals, whatever its digits.
  if (shift > 40) return invalid("is out of range");
  if (shift < -40) return invalid("has more than 9 decimals");
  // The point moves from after `whole` by `shift`; zeros fill either side.
  const long point = static_cast<long>(whole.size()) + shift;
  if (point <= 0) digits.insert(0, static_cast<std::size_t>(1 - point), '0');
  if (point > static_cast<long>(digits.size())) {
    digits.append(static_cast<std::size_t>(point) - digits.size(), '0');
  }
  const std::size_t at = static_cast<std::size_t>(std::max(point, 1L));
  std::string decimal = digits.substr(0, at);
  std::string rest = digits.substr(at);
  while (!rest.empty() && rest.back() == '0') rest.pop_back();
  if (!rest.empty()) decimal += "." + rest;
  auto parsed = parse((negative ? "-" : "") + decimal);
  if (parsed) return parsed;
  // Said of the text as sent, not of the decimal it became.
  const std::string& why = parsed.status().message();
  return invalid(why.substr(std::min(why.size(), why.find("' ") + 2)));
}

std::string Money::to_string() const {
  // Work on the magnitude as unsigned so the most negative value prints correctly.
  const bool negative = nanos_ < 0;
  const std::uint64_t magnitude = negative ? 0 - static_cast<std::uint64_t>(nanos_)
                                           : static_cast<std::uint64_t>(nanos_);
  const std::uint64_t whole = magnitude / kNanosPerUsd;
  std::uint64_t frac = magnitude % kNanosPerUsd;
  int decimals = kDecimalsMax;
  while (decimals > 2 && frac % 10 == 0) {
    frac /= 10;
    --decimals;
  }
  // At most "-" + 11 digits of whole dollars + "." + 9 decimals: no formatting library on
  // the request path (every response's cost header comes through here).
  char out[32];
  char* at = out;
  if (negative) *at++ = '-';
  at = std::to_chars(at, out + sizeof out, whole).ptr;
  *at++ = '.';
  char digits[16];
  const char* end = std::to_chars(digits, digits + sizeof digits, frac).ptr;
  const auto written = static_cast<int>(end - digits);
  for (int pad = decimals - written; pad > 0; --pad) *at++ = '0';
  at = std::copy(static_cast<const char*>(digits), end, at);
  return std::string(out, at);
}

Money Money::operator-() const {
  TP_CHECK(nanos_ != std::numeric_limits<std::int64_t>::min());
  return Money(-nanos_);
}

Money& Money::operator+=(Money other) {
  TP_CHECK(!__builtin_add_overflow(nanos_, other.nanos_, &nanos_));
  return *this;
}

Money& Money::operator-=(Money other) {
  TP_CHECK(!__builtin_sub_overflow(nanos_, other.nanos_, &nanos_));
  return *this;
}

Result<PricePerMtok> PricePerMtok::parse(std::string_view text) {
  auto money = Money::parse(text);
  if (!money) return money.status();
  if (money->is_negative()) {
    return Status{ErrorKind::kInvalidRequest, fmt::format("price '{}' is negative", text)};
  }
  return PricePerMtok(money->nanos());
}

Money cost_of(std::int64_t input_tokens, PricePerMtok input_price, std::int64_t cached_tokens,
              PricePerMtok cached_price, std::int64_t output_tokens, PricePerMtok output_price) {
  return cost_of({{input_tokens, input_price},
                  {cached_tokens, cached_price},
                  {output_tokens, output_price}});
}

Money cost_of(std::initializer_list<PricedTokens> parts) {
  // 128-bit intermediates: tokens × price can pass 2^63 before the division.
  __extension__ using Int128 = __int128;
  Int128 total = 0;
  for (const PricedTokens& p : parts) {
    TP_CHECK(p.tokens >= 0);
    total += static_cast<Int128>(p.tokens) * p.price.nanos();
  }
  constexpr Int128 kPerMillion = 1'000'000;
  const Int128 nanos = (total + kPerMillion - 1) / kPerMillion;
  TP_CHECK(nanos <= std::numeric_limits<std::int64_t>::max());
  return Money::from_nanos(static_cast<std::int64_t>(nanos));
}

}  // namespace tp
