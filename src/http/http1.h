#pragma once
// HTTP/1.1 message heads and bodies (RFC 9112), parsed without allocating per header: a
// head is parsed in place and its fields are views into the bytes it was parsed from.
//
// Strict where leniency enables request smuggling: CRLF line ends only, no obsolete line
// folding, no Content-Length together with Transfer-Encoding, conflicting Content-Length
// values rejected, only the "chunked" transfer coding.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tp::http {

inline constexpr std::size_t kHeaderFieldsMax = 100;

struct HeaderField {
  std::string_view name;
  std::string_view value;
};

enum class ParseStatus { kComplete, kIncomplete, kError };

// What both requests and responses carry in their heads.
struct MessageHead {
  unsigned version = 11;  // 10 or 11
  std::vector<HeaderField> fields;
  std::optional<std::uint64_t> content_length;
  bool chunked = false;
  bool connection_close = false;
  bool connection_keep_alive = false;
  std::string error;  // why parsing failed (kError)

  // The first field named `name` (case-insensitive), or "" if none.
  std::string_view header(std::string_view name) const;
  // Keep-alive per RFC 9112 §9.3: HTTP/1.1 unless "close"; HTTP/1.0 only with "keep-alive".
  bool keep_alive() const {
    return version == 11 ? !connection_close : connection_keep_alive && !connection_close;
  }
};

struct RequestHead : MessageHead {
  std::string_view method;
  std::string_view target;
  bool expect_continue = false;
};

struct ResponseHead : MessageHead {
  unsigned status = 0;
};

// Errors of a request head that have a status of their own, as `head.error` says them:
// a head past its byte limit (431), a transfer coding other than chunked (501), an HTTP
// version other than 1.0 and 1.1 (505). Any other error is 400.
inline constexpr std::string_view kRequestHeadTooLarge = "request head too large";
inline constexpr std::string_view kUnsupportedTransferCoding =
    "unsupported Transfer-Encoding: only chunked is implemented";
inline constexpr std::string_view kUnsupportedVersion =
    "unsupported HTTP version: HTTP/1.1 and HTTP/1.0 are served";

// Parses a head from the start of `data`. On kComplete, `head_bytes` is the head's length
// including the final empty line and the views in `head` point into `data`. kIncomplete:
// more bytes are needed (kError once `data` exceeds `head_bytes_max` without a complete
// head). `head` is reset first.
ParseStatus parse_request_head(std::string_view data, std::size_t head_bytes_max,
                               RequestHead& head, std::size_t& head_bytes);
ParseStatus parse_response_head(std::string_view data, std::size_t head_bytes_max,
                                ResponseHead& head, std::size_t& head_bytes);

bool iequals(std::string_view a, std::string_view b);
// A target in absolute form ("http://host/path", RFC 9112 §3.2.2, which servers must
// accept) stands for its path and query; Turnpike serves one origin, so the authority is
// not consulted. Any other target (or one without a path) is returned as it is.
std::string_view origin_form(std::string_view target);

// The position of the first CR or LF in `text` at or after `from`, or npos. A plain loop:
// string_view::find_first_of calls memchr on its two-character set once per character.
std::size_t find_line_break(std::string_view text, std::size_t from = 0);

// The token of an `Authorization: Bearer TOKEN` value, the scheme in any case (RFC 9110
// §11.1); empty for another scheme or none.
std::string_view bearer_token(std::string_view authorization);

// After a parsed head's bytes are copied from `from` to `to`, points its views at the copy.
void move_views(RequestHead& head, const char* from, const char* to);
void move_views(ResponseHead& head, const char* from, const char* to);

// Decodes a chunked body incrementally: feed it bytes as they arrive; it appends the data
// to `out` and reports how many input bytes it consumed. Trailer fields are skipped.
class ChunkedDecoder {
 public:
  // Returns kComplete after the last chunk and trailers, kIncomplete when it needs more
  // input, kError on malformed input or when the decoded size would pass `body_bytes_max`.
  ParseStatus decode(std::string_view in, std::size_t& consumed, std::string& out,
                     std::uint64_t body_bytes_max);
  std::uint64_t decoded_bytes() const { return decoded_; }
  // The error was a body past `body_bytes_max` (413), not malformed framing (400).
  bool too_large() const { return too_large_; }

 private:
  enum class State { kSize, kSizeExtension, kSizeLf, kData, kDataCr, kDataLf, kTrailer,
                     kTrailerLf, kTrailerLine, kTrailerLineLf, kDone };
  State state_ = State::kSize;
  std::uint64_t remaining_ = 0;  // of the current chunk
  std::uint64_t decoded_ = 0;
  int size_digits_ = 0;         // of the chunk size, leading zeros included
  int significant_digits_ = 0;  // of the chunk size, from its first non-zero one
  std::size_t extension_bytes_ = 0;  // of the chunk's extensions
  std::size_t trailer_bytes_ = 0;
  bool trailer_colon_ = false;  // the current trailer line has its field name's colon
  bool too_large_ = false;
};

}  // namespace tp::http
