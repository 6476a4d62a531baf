#include "http/http1.h"

#include <fmt/format.h>

#include <array>
#include <cctype>
#include <charconv>
#include <cstring>

namespace tp::http {
namespace {

// RFC 9110 token characters.
constexpr std::array<bool, 256> kTokenChars = [] {
  std::array<bool, 256> t{};
  for (int c = '0'; c <= '9'; ++c) t[c] = true;
  for (int c = 'a'; c <= 'z'; ++c) t[c] = true;
  for (int c = 'A'; c <= 'Z'; ++c) t[c] = true;
  for (char c : std::string_view("!#$%&'*+-.^_`|~")) t[static_cast<unsigned char>(c)] = true;
  return t;
}();

bool is_tchar(char c) { return kTokenChars[static_cast<unsigned char>(c)]; }

bool all_in(std::string_view s, const std::array<bool, 256>& table) {
  bool ok = true;
  for (char c : s) ok &= table[static_cast<unsigned char>(c)];
  return ok;
}

// Field value characters: visible ASCII, space, tab and obs-text; no other control
// characters.
bool valid_value_exact(std::string_view s) {
  unsigned bad = 0;
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    bad |= static_cast<unsigned>((u < 0x20) & (u != '\t')) | static_cast<unsigned>(u == 0x7f);
  }
  return bad == 0;
}

// Values are checked on every request, eight bytes at a time: a word without any byte
// below 0x20 or equal to 0x7f is fine as it is; only a word with one (a tab, or an invalid
// byte) goes through the exact check.
bool valid_value(std::string_view s) {
  constexpr std::uint64_t kOnes = 0x0101010101010101ULL;
  constexpr std::uint64_t kHighs = 0x8080808080808080ULL;
  std::size_t i = 0;
  for (; i + 8 <= s.size(); i += 8) {
    std::uint64_t x;
    std::memcpy(&x, s.data() + i, sizeof x);
    const std::uint64_t below_space = (x - kOnes * 0x20) & ~x & kHighs;
    const std::uint64_t del = x ^ (kOnes * 0x7f);
    const std::uint64_t is_del = (del - kOnes) & ~del & kHighs;
    if ((below_space | is_del) != 0 && !valid_value_exact(s.substr(i, 8))) return false;
  }
  return valid_value_exact(s.substr(i));
}

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c; }

std::string_view trim_ows(std::string_view v) {
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
  return v;
}

// Whether a comma-separated list contains `token` (case-insensitive).
bool list_has(std::string_view list, std::string_view token) {
  while (!list.empty()) {
    const std::size_t comma = list.find(',');
    if (iequals(trim_ows(list.substr(0, comma)), token)) return true;
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return false;
}

// Finds the end of the head: the index just past "\r\n\r\n", or npos.
std::size_t find_head_end(std::string_view data) {
  const std::size_t at = data.find("\r\n\r\n");
  return at == std::string_view::npos ? at : at + 4;
}

bool parse_version(std::string_view v, unsigned& version) {
  if (v == "HTTP/1.1") {
    version = 11;
    return true;
  }
  if (v == "HTTP/1.0") {
    version = 10;
    return true;
  }
  return false;
}

// Parses the field lines of a head (between the start line and the empty line) and the
// framing fields among them. Returns false with `head.error` set.
bool parse_fields(std::string_view lines, MessageHead& head) {
  while (!lines.empty()) {
    const std::size_t eol = lines.find("\r\n");
    const std::string_view line = lines.substr(0, eol);
    lines.remove_prefix(eol == std::string_view::npos ? lines.size() : eol + 2);
    if (line.empty()) break;
    if (line.front() == ' ' || line.front() == '\t') {
      head.error = "obsolete line folding is not allowed";
      return false;
    }
    const std::size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) {
      head.error = "malformed header line";
      return false;
    }
    const std::string_view name = line.substr(0, colon);
    if (!all_in(name, kTokenChars)) {
      head.error = "invalid character in header name";
      return false;
    }
    const std::string_view value = trim_ows(line.substr(colon + 1));
    if (!valid_value(value)) {
      head.error = "invalid character in header value";
      return false;
    }
    if (head.fields.size() >= kHeaderFieldsMax) {
      head.error = fmt::format("more than {} header fields", kHeaderFieldsMax);
      return false;
    }
    head.fields.push_back({name, value});

    // Only three names matter for framing; their lengths (14, 17, 10) tell them apart
    // before any comparison.
    if (name.size() == 14 && iequals(name, "content-length")) {
      std::uint64_t n = 0;
      const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
      if (value.empty() || ec != std::errc{} || end != value.data() + value.size()) {
        head.error = "invalid Content-Length";
        return false;
      }
      if (head.content_length && *head.content_length != n) {
        head.error = "conflicting Content-Length values";
        return false;
      }
      head.content_length = n;
    } else if (name.size() == 17 && iequals(name, "transfer-encoding")) {
      if (head.chunked) {
        head.error = "more than one Transfer-Encoding";
        return false;
      }
      if (!iequals(value, "chunked")) {
        head.error = kUnsupportedTransferCoding;
        return false;
      }
      head.chunked = true;
    } else if (name.size() == 10 && iequals(name, "connection")) {
      head.connection_close = head.connection_close || list_has(value, "close");
      head.connection_keep_alive = head.connection_keep_alive || list_has(value, "keep-alive");
    }
  }
  if (head.chunked && head.content_length) {
    head.error = "both Content-Length and Transfer-Encoding";
    return false;
  }
  return true;
}

void reset(MessageHead& head) {
  constexpr std::size_t kTypicalFields = 16;
  head.version = 11;
  head.fields.clear();
  head.fields.reserve(kTypicalFields);
  head.content_length.reset();
  head.chunked = false;
  head.connection_close = false;
  head.connection_keep_alive = false;
  head.error.clear();
}

}  // namespace

std::string_view origin_form(std::string_view target) {
  const std::size_t scheme_end = target.find("://");
  if (target.empty() || target.front() == '/' || scheme_end == std::string_view::npos ||
      !(iequals(target.substr(0, scheme_end), "http") ||
        iequals(target.substr(0, scheme_end), "https"))) {
    return target;
  }
  const std::size_t path = target.find_first_of("/?#", scheme_end + 3);
  if (path == std::string_view::npos || target[path] != '/') return target;
  return target.substr(path);
}

std::size_t find_line_break(std::string_view text, std::size_t from) {
  for (std::size_t i = from; i < text.size(); ++i) {
    if (text[i] == '\r' || text[i] == '\n') return i;
  }
  return std::string_view::npos;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

std::string_view bearer_token(std::string_view authorization) {
  constexpr std::string_view kScheme = "bearer ";
  if (authorization.size() <= kScheme.size() ||
      !iequals(authorization.substr(0, kScheme.size()), kScheme)) {
    return {};
  }
  // `auth-scheme 1*SP token68`: more than one space is legal.
  const std::string_view token = authorization.substr(kScheme.size());
  return token.substr(std::min(token.find_first_not_of(' '), token.size()));
}

namespace {
void move_view(std::string_view& v, const char* from, const char* to) {
  if (!v.empty()) v = std::string_view(to + (v.data() - from), v.size());
}
void move_fields(MessageHead& head, const char* from, const char* to) {
  for (HeaderField& f : head.fields) {
    move_view(f.name, from, to);
    move_view(f.value, from, to);
  }
}
}  // namespace

void move_views(RequestHead& head, const char* from, const char* to) {
  move_view(head.method, from, to);
  move_view(head.target, from, to);
  move_fields(head, from, to);
}

void move_views(ResponseHead& head, const char* from, const char* to) {
  move_fields(head, from, to);
}

std::string_view MessageHead::header(std::string_view name) const {
  for (const HeaderField& f : fields) {
    if (iequals(f.name, name)) return f.value;
  }
  return {};
}

ParseStatus parse_request_head(std::string_view data, std::size_t head_bytes_max,
                               RequestHead& head, std::size_t& head_bytes) {
  reset(head);
  head.method = {};
  head.target = {};
  head.expect_continue = false;
  // Tolerate empty lines before a request (RFC 9112 §2.2).
  std::size_t skip = 0;
  while (data.substr(skip, 2) == "\r\n") skip += 2;
  const std::size_t end = find_head_end(data.substr(skip));
  if (end == std::string_view::npos) {
    if (data.size() > head_bytes_max) {
      head.error = kRequestHeadTooLarge;
      return ParseStatus::kError;
    }
    // A line ended by a bare LF would never let the head end (or ends it as an error):
    // said now, not when the header timeout cuts the connection.
    for (std::size_t i = data.find('\n'); i != std::string_view::npos; i = data.find('\n', i + 1)) {
      if (i == 0 || data[i - 1] != '\r') {
        head.error = "request head lines must end in CRLF";
        return ParseStatus::kError;
      }
    }
    return ParseStatus::kIncomplete;
  }
  if (skip + end > head_bytes_max) {  // the empty lines before it count too
    head.error = kRequestHeadTooLarge;
    return ParseStatus::kError;
  }
  const std::string_view text = data.substr(skip, end);
  const std::size_t line_end = text.find("\r\n");
  const std::string_view line = text.substr(0, line_end);
  const std::size_t sp1 = line.find(' ');
  const std::size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos) {
    head.error = "malformed request line";
    return ParseStatus::kError;
  }
  head.method = line.substr(0, sp1);
  head.target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  bool method_ok = !head.method.empty();
  for (char c : head.method) method_ok = method_ok && kTokenChars[static_cast<unsigned char>(c)];
  bool target_ok = !head.target.empty();
  // Visible ASCII only: anything else in a URI is percent-encoded (RFC 3986 §2), so a
  // target quoted in an error or a log line is always valid UTF-8.
  for (char c : head.target) {
    target_ok =
        target_ok && static_cast<unsigned char>(c) > 0x20 && static_cast<unsigned char>(c) < 0x7f;
  }
  if (!method_ok || !target_ok || !parse_version(line.substr(sp2 + 1), head.version)) {
    const std::string_view v = line.substr(sp2 + 1);
    const bool other_version = v.size() == 8 && v.starts_with("HTTP/") &&
                               std::isdigit(static_cast<unsigned char>(v[5])) && v[6] == '.' &&
                               std::isdigit(static_cast<unsigned char>(v[7]));
    head.error = method_ok && target_ok && other_version ? kUnsupportedVersion
                                                         : "malformed request line";
    return ParseStatus::kError;
  }
  head.target = origin_form(head.target);
  if (!parse_fields(text.substr(line_end + 2), head)) return ParseStatus::kError;
  head.expect_continue = iequals(head.header("expect"), "100-continue");
  head_bytes = skip + end;
  return ParseStatus::kComplete;
}

ParseStatus parse_response_head(std::string_view data, std::size_t head_bytes_max,
                                ResponseHead& head, std::size_t& head_bytes) {
  reset(head);
  head.status = 0;
  const std::size_t end = find_head_end(data);
  // The limit holds however the head arrived, in pieces or in one read.
  if (end == std::string_view::npos ? data.size() > head_bytes_max : end > head_bytes_max) {
    head.error = "response head too large";
    return ParseStatus::kError;
  }
  if (end == std::string_view::npos) return ParseStatus::kIncomplete;
  const std::string_view text = data.substr(0, end);
  const std::size_t line_end = text.find("\r\n");
  const std::string_view line = text.substr(0, line_end);
  // HTTP/1.x SP 3DIGIT SP reason
  unsigned status = 0;
  if (line.size() < 12 || !parse_version(line.substr(0, 8), head.version) || line[8] != ' ' ||
      std::from_chars(line.data() + 9, line.data() + 12, status).ptr != line.data() + 12 ||
      status < 100 || status > 999 || (line.size() > 12 && line[12] != ' ')) {
    head.error = "malformed status line";
    return ParseStatus::kError;
  }
  head.status = status;
  if (!parse_fields(text.substr(line_end + 2), head)) return ParseStatus::kError;
  head_bytes = end;
  return ParseStatus::kComplete;
}

// Chunk-size lines and trailers are small: past these, framing is taken for malformed.
constexpr int kChunkSizeCharsMax = 64;  // hex digits, leading zeros included
constexpr std::size_t kChunkExtensionBytesMax = 4096;
constexpr std::size_t kTrailerBytesMax = 16 * 1024;

ParseStatus ChunkedDecoder::decode(std::string_view in, std::size_t& consumed, std::string& out,
                                   std::uint64_t body_bytes_max) {
  std::size_t i = 0;
  auto fail = [&] {
    consumed = i;
    return ParseStatus::kError;
  };
  while (i < in.size() && state_ != State::kDone) {
    const char c = in[i];
    switch (state_) {
      case State::kSize: {
        int digit = -1;
        if (c >= '0' && c <= '9') digit = c - '0';
        else if (c >= 'a' && c <= 'f') digit = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') digit = c - 'A' + 10;
        if (digit >= 0) {
          // Leading zeros are legal (1*HEXDIG); the significant digits bound the size.
          if (++size_digits_ > kChunkSizeCharsMax) return fail();
          if ((remaining_ != 0 || digit != 0) && ++significant_digits_ > 15) {
            too_large_ = true;  // keeps the size far below 2^63
            return fail();
          }
          remaining_ = remaining_ * 16 + static_cast<unsigned>(digit);
          ++i;
        } else if (size_digits_ == 0) {
          return fail();
        } else if (c == ';' || c == ' ' || c == '\t') {
          state_ = State::kSizeExtension;
          ++i;
        } else if (c == '\r') {
          state_ = State::kSizeLf;
          ++i;
        } else {
          return fail();
        }
        break;
      }
      case State::kSizeExtension:
        if (c == '\r') state_ = State::kSizeLf;
        else if (c == '\n' || ++extension_bytes_ > kChunkExtensionBytesMax) return fail();
        ++i;
        break;
      case State::kSizeLf:
        if (c != '\n') return fail();
        ++i;
        size_digits_ = 0;
        significant_digits_ = 0;
        extension_bytes_ = 0;
        if (remaining_ == 0) {
          state_ = State::kTrailer;
        } else {
          if (decoded_ + remaining_ > body_bytes_max) {
            too_large_ = true;
            return fail();
          }
          state_ = State::kData;
        }
        break;
      case State::kData: {
        const std::size_t n =
            static_cast<std::size_t>(std::min<std::uint64_t>(remaining_, in.size() - i));
        out.append(in.data() + i, n);
        i += n;
        remaining_ -= n;
        decoded_ += n;
        if (remaining_ == 0) state_ = State::kDataCr;
        break;
      }
      case State::kDataCr:
        if (c != '\r') return fail();
        state_ = State::kDataLf;
        ++i;
        break;
      case State::kDataLf:
        if (c != '\n') return fail();
        state_ = State::kSize;
        ++i;
        break;
      // Trailer fields are skipped, but each must be a field line ending in CRLF, as the
      // head's are: a bare LF or a line without a name would let what follows (the next
      // request of the connection) be read as trailers here and as a request elsewhere.
      case State::kTrailer:  // at the start of a trailer line, or the final empty line
        if (c == '\r') {
          state_ = State::kTrailerLf;
        } else if (c == ':' || !is_tchar(c)) {
          return fail();  // a name is a token: no folding, no empty name
        } else {
          trailer_colon_ = false;
          state_ = State::kTrailerLine;
        }
        ++i;
        break;
      case State::kTrailerLf:
        if (c != '\n') return fail();
        state_ = State::kDone;
        ++i;
        break;
      case State::kTrailerLine:
        if (++trailer_bytes_ > kTrailerBytesMax) return fail();
        if (c == '\r') {
          if (!trailer_colon_) return fail();
          state_ = State::kTrailerLineLf;
        } else if (c == ':') {
          trailer_colon_ = true;
        } else if (!trailer_colon_ ? !is_tchar(c)
                                   : (static_cast<unsigned char>(c) < 0x20 && c != '\t') ||
                                         c == 0x7f) {
          return fail();
        }
        ++i;
        break;
      case State::kTrailerLineLf:
        if (c != '\n') return fail();
        state_ = State::kTrailer;
        ++i;
        break;
      case State::kDone:
        break;
    }
  }
  consumed = i;
  return state_ == State::kDone ? ParseStatus::kComplete : ParseStatus::kIncomplete;
}

}  // namespace tp::http
