#include "core/rfc3339.h"

#include <fmt/format.h>

#include <ctime>

namespace tp {
namespace {

// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
  const auto yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

bool is_leap(std::int64_t y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

}  // namespace

std::string format_rfc3339(std::int64_t unix_ms, bool millis) {
  const std::int64_t secs = unix_ms >= 0 ? unix_ms / 1000 : (unix_ms - 999) / 1000;
  const auto t = static_cast<std::time_t>(secs);
  std::tm tm{};
  gmtime_r(&t, &tm);
  std::string out = fmt::format("{:04d}-{:02d}-{:02d}T{:02d}:{:02d}:{:02d}", tm.tm_year + 1900,
                                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
  if (millis) out += fmt::format(".{:03d}", unix_ms - secs * 1000);
  out += 'Z';
  return out;
}

namespace {

// A time as written, to the last digit: `whole_ms` truncated to milliseconds, and the
// fraction's digits past them without trailing zeros (empty when none are non-zero).
struct ExactTime {
  std::int64_t whole_ms = 0;
  std::string_view beyond_ms;
};

std::optional<ExactTime> parse_exact(std::string_view s) {
  std::size_t i = 0;
  auto number = [&](std::size_t digits, int& out) {
    if (i + digits > s.size()) return false;
    out = 0;
    for (std::size_t k = 0; k < digits; ++k, ++i) {
      if (s[i] < '0' || s[i] > '9') return false;
      out = out * 10 + (s[i] - '0');
    }
    return true;
  };
  auto expect = [&](char a, char b = 0) {
    if (i >= s.size() || (s[i] != a && (b == 0 || s[i] != b))) return false;
    ++i;
    return true;
  };
  int year, month, day, hour, minute, second;
  if (!number(4, year) || !expect('-') || !number(2, month) || !expect('-') ||
      !number(2, day) || !expect('T', 't') || !number(2, hour) || !expect(':') ||
      !number(2, minute) || !expect(':') || !number(2, second)) {
    return std::nullopt;
  }
  static constexpr int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (month < 1 || month > 12 || day < 1 ||
      day > kDays[month - 1] + (month == 2 && is_leap(year) ? 1 : 0) || hour > 23 ||
      minute > 59 || second > 60) {
    return std::nullopt;
  }
  int millis = 0;
  std::string_view beyond_ms;
  if (i < s.size() && s[i] == '.') {
    ++i;
    const std::size_t first = i;
    int scale = 100;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
      millis += (s[i] - '0') * scale;
      scale /= 10;
      ++i;
    }
    if (i == first) return std::nullopt;
    if (i - first > 3) beyond_ms = s.substr(first + 3, i - first - 3);
    while (beyond_ms.ends_with('0')) beyond_ms.remove_suffix(1);
  }
  std::int64_t offset_minutes = 0;
  if (i < s.size() && (s[i] == 'Z' || s[i] == 'z')) {
    ++i;
  } else if (i < s.size() && (s[i] == '+' || s[i] == '-')) {
    const int sign = s[i] == '-' ? -1 : 1;
    ++i;
    int oh, om;
    if (!number(2, oh) || !expect(':') || !number(2, om) || oh > 23 || om > 59) {
      return std::nullopt;
    }
    offset_minutes = sign * (oh * 60 + om);
  } else {
    return std::nullopt;
  }
  if (i != s.size()) return std::nullopt;
  const std::int64_t secs = days_from_civil(year, static_cast<unsigned>(month),
                                            static_cast<unsigned>(day)) * 86400 +
                            hour * 3600 + minute * 60 + second - offset_minutes * 60;
  return ExactTime{secs * 1000 + millis, beyond_ms};
}

}  // namespace

std::optional<std::int64_t> parse_rfc3339(std::string_view text) {
  const auto t = parse_exact(text);
  if (!t) return std::nullopt;
  // Rounded up: times are stored in whole milliseconds, so "at or after" and "before" a
  // bound between two of them mean the same as against the next one.
  return t->whole_ms + (t->beyond_ms.empty() ? 0 : 1);
}

std::optional<std::strong_ordering> compare_rfc3339(std::string_view a, std::string_view b) {
  const auto x = parse_exact(a);
  const auto y = parse_exact(b);
  if (!x || !y) return std::nullopt;
  if (x->whole_ms != y->whole_ms) return x->whole_ms <=> y->whole_ms;
  // Digit strings without trailing zeros compare as the fractions they write ("5" > "49").
  return x->beyond_ms.compare(y->beyond_ms) <=> 0;
}

}  // namespace tp
