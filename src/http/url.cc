#include "http/url.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <charconv>

namespace tp::http {

Result<Url> parse_base_url(std::string_view text) {
  Url url;
  std::string_view rest = text;
  if (rest.starts_with("https://")) {
    url.tls = true;
    rest.remove_prefix(8);
  } else if (rest.starts_with("http://")) {
    rest.remove_prefix(7);
  } else {
    return Status{ErrorKind::kInvalidRequest, "must start with http:// or https://"};
  }
  const std::size_t slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  std::string_view path = slash == std::string_view::npos ? "" : rest.substr(slash);
  if (authority.find('@') != std::string_view::npos) {
    return Status{ErrorKind::kInvalidRequest, "must not carry credentials (user:password@)"};
  }
  // The path goes into request lines: visible ASCII only (anything else is percent-encoded).
  if (std::any_of(path.begin(), path.end(), [](char c) {
        return static_cast<unsigned char>(c) <= 0x20 || static_cast<unsigned char>(c) >= 0x7f;
      })) {
    return Status{ErrorKind::kInvalidRequest,
                  "has a space, control or non-ASCII character in its path (percent-encode it)"};
  }
  if (rest.find_first_of("?#") != std::string_view::npos) {  // after the host or the path
    return Status{ErrorKind::kInvalidRequest, "must not have a query or fragment"};
  }
  std::string_view host = authority;
  std::string_view port;
  if (authority.starts_with("[")) {
    const std::size_t close = authority.find(']');
    if (close == std::string_view::npos) return Status{ErrorKind::kInvalidRequest, "bad IPv6 host"};
    host = authority.substr(1, close - 1);
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return Status{ErrorKind::kInvalidRequest, "bad port"};
      port = after.substr(1);
    }
  } else if (const std::size_t colon = authority.rfind(':'); colon != std::string_view::npos) {
    host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
  }
  if (host.empty()) return Status{ErrorKind::kInvalidRequest, "has no host"};
  // A host name's or address's characters only: anything else would never resolve.
  if (!std::all_of(host.begin(), host.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == ':' ||
               c == '_';
      })) {
    return Status{ErrorKind::kInvalidRequest, "has characters a host cannot have"};
  }
  if (!port.empty()) {
    unsigned value = 0;
    const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (ec != std::errc{} || end != port.data() + port.size() || value == 0 || value > 65535) {
      return Status{ErrorKind::kInvalidRequest, fmt::format("bad port '{}'", port)};
    }
  }
  url.host = std::string(host);
  url.port = port.empty() ? (url.tls ? "443" : "80") : std::string(port);
  while (path.ends_with('/')) path.remove_suffix(1);
  url.path = std::string(path);
  url.host_header = std::string(authority);
  return url;
}

}  // namespace tp::http
