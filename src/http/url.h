#pragma once
// Parses the base URLs of providers: http or https, host, optional port, optional path.

#include <string>
#include <string_view>

#include "core/status.h"

namespace tp::http {

struct Url {
  bool tls = false;
  std::string host;        // without brackets for IPv6 literals
  std::string port;        // always set: explicit, or 80 / 443
  std::string path;        // without a trailing slash; "" for the root
  std::string host_header; // what the Host header carries ("host" or "host:port")
};

Result<Url> parse_base_url(std::string_view text);

}  // namespace tp::http
