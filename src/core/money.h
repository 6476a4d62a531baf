#pragma once
// Money is an exact count of nano-USD (1e-9 USD) in an int64: about ±9.2 billion USD. No
// floating point ever touches an amount. Decimal text is parsed and printed exactly.
//
// Arithmetic that would overflow stops the process (TP_CHECK): an amount that wrapped
// around would corrupt the ledger, and no legitimate amount comes near the bound.

#include <compare>
#include <cstdint>
#include <initializer_list>
#include <iosfwd>
#include <string>
#include <string_view>

#include "core/status.h"

namespace tp {

class Money {
 public:
  static constexpr std::int64_t kNanosPerUsd = 1'000'000'000;
  static constexpr int kDecimalsMax = 9;

  constexpr Money() = default;
  static constexpr Money from_nanos(std::int64_t nanos) { return Money(nanos); }
  static constexpr Money usd(std::int64_t whole) { return Money(whole * kNanosPerUsd); }

  // "12", "0.15", "-3.000000001": optional '-', digits, optionally '.' and 1..9 digits.
  // No '+', exponent, spaces or leading '.'; kInvalidRequest (naming the problem) otherwise.
  static Result<Money> parse(std::string_view text);
  // A JSON number's text, exponent forms included ("1e-9", "1.5E2"), parsed exactly: the
  // same rules as parse once the exponent has moved the point.
  static Result<Money> parse_json_number(std::string_view text);

  constexpr std::int64_t nanos() const { return nanos_; }
  constexpr bool is_zero() const { return nanos_ == 0; }
  constexpr bool is_negative() const { return nanos_ < 0; }

  // At least 2 decimals, at most 9, trailing zeros beyond the second trimmed:
  // "5.00", "0.15", "0.00000015", "-1.50".
  std::string to_string() const;

  friend constexpr auto operator<=>(Money, Money) = default;
  Money operator-() const;
  Money& operator+=(Money other);
  Money& operator-=(Money other);
  friend Money operator+(Money a, Money b) { return a += b; }
  friend Money operator-(Money a, Money b) { return a -= b; }

 private:
  constexpr explicit Money(std::int64_t nanos) : nanos_(nanos) {}
  std::int64_t nanos_ = 0;
};

// Prints to_string() (for test failure messages and logs).
std::ostream& operator<<(std::ostream& out, Money money);

// A price in nano-USD per million tokens (USD per million tokens × 1e9), which keeps
// sub-nano per-token prices exact: "0.15" USD/Mtok is 150'000'000.
class PricePerMtok {
 public:
  constexpr PricePerMtok() = default;
  static constexpr PricePerMtok from_nanos(std::int64_t nanos) { return PricePerMtok(nanos); }
  // Same syntax as Money; negative prices are rejected.
  static Result<PricePerMtok> parse(std::string_view text);
  constexpr std::int64_t nanos() const { return nanos_; }
  std::string to_string() const { return Money::from_nanos(nanos_).to_string(); }
  friend constexpr auto operator<=>(PricePerMtok, PricePerMtok) = default;

 private:
  constexpr explicit PricePerMtok(std::int64_t nanos) : nanos_(nanos) {}
  std::int64_t nanos_ = 0;
};

// cost = ceil((input·in + cached·cached_price + output·out) / 1e6), computed in 128 bits.
// Rounding up means a fraction of a nano-USD is never given away. Token counts are
// non-negative.
Money cost_of(std::int64_t input_tokens, PricePerMtok input_price, std::int64_t cached_tokens,
              PricePerMtok cached_price, std::int64_t output_tokens, PricePerMtok output_price);

// The same over any number of (tokens, price) parts, rounded up once.
struct PricedTokens {
  std::int64_t tokens;
  PricePerMtok price;
};
Money cost_of(std::initializer_list<PricedTokens> parts);

}  // namespace tp
