#include "api/errors.h"

#include <simdjson.h>

#include "core/json_dom.h"
#include "core/json_writer.h"

namespace tp::api {
namespace {

struct ErrorNames {
  std::string_view openai_type;
  std::string_view openai_code;
  std::string_view anthropic_type;
};

ErrorNames names_for(unsigned status) {
  switch (status) {
    case 400: return {"invalid_request_error", "invalid_request", "invalid_request_error"};
    case 401: return {"authentication_error", "invalid_api_key", "authentication_error"};
    case 402: return {"insufficient_quota", "insufficient_balance", "billing_error"};
    case 403: return {"permission_error", "forbidden", "permission_error"};
    case 404: return {"not_found_error", "not_found", "not_found_error"};
    case 405: return {"invalid_request_error", "method_not_allowed", "invalid_request_error"};
    case 408: return {"invalid_request_error", "request_timeout", "invalid_request_error"};
    case 409: return {"invalid_request_error", "conflict", "invalid_request_error"};
    case 413: return {"invalid_request_error", "request_too_large", "request_too_large"};
    case 415: return {"invalid_request_error", "unsupported_media_type", "invalid_request_error"};
    case 429: return {"rate_limit_error", "rate_limit_exceeded", "rate_limit_error"};
    case 431: return {"invalid_request_error", "headers_too_large", "invalid_request_error"};
    case 501: return {"invalid_request_error", "not_implemented", "invalid_request_error"};
    case 505: return {"invalid_request_error", "http_version_not_supported", "invalid_request_error"};
    case 502: return {"upstream_error", "upstream_failed", "api_error"};
    case 503: return {"service_unavailable", "unavailable", "overloaded_error"};
    case 504: return {"timeout_error", "upstream_timeout", "api_error"};
    default:
      if (status >= 400 && status < 500) {
        return {"invalid_request_error", "invalid_request", "invalid_request_error"};
      }
      return {"server_error", "internal_error", "api_error"};
  }
}

}  // namespace

unsigned http_status(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kInvalidRequest: return 400;
    case ErrorKind::kUnauthenticated: return 401;
    case ErrorKind::kPaymentRequired: return 402;
    case ErrorKind::kForbidden: return 403;
    case ErrorKind::kNotFound: return 404;
    case ErrorKind::kConflict: return 409;
    case ErrorKind::kPayloadTooLarge: return 413;
    case ErrorKind::kRateLimited: return 429;
    case ErrorKind::kInternal: return 500;
    case ErrorKind::kUpstreamFailed: return 502;
    case ErrorKind::kUnavailable: return 503;
    case ErrorKind::kUpstreamTimeout: return 504;
  }
  return 500;
}

std::string error_body(Surface surface, unsigned status, std::string_view message,
                       std::string_view code, std::string_view request_id) {
  const ErrorNames names = names_for(status);
  std::string out;
  out.reserve(128 + message.size());
  json::Writer w(out);
  if (surface == Surface::kAnthropic) {
    w.begin_object().field("type", "error").key("error").begin_object();
    w.field("type", names.anthropic_type).field("message", message).end_object();
    if (!request_id.empty()) w.field("request_id", request_id);
    w.end_object();
    return out;
  }
  w.begin_object().key("error").begin_object();
  w.field("message", message).field("type", names.openai_type).key("param").null();
  w.field("code", code.empty() ? names.openai_code : code);
  w.end_object().end_object();
  return out;
}

std::string error_message(std::string_view body) {
  simdjson::dom::parser parser;
  std::string_view message;
  simdjson::dom::element doc;
  if (json::parse_dom(parser, body, doc) || doc["error"]["message"].get_string().get(message)) {
    return {};
  }
  return std::string(message);
}

AnswerShape answer_shape(std::string_view body) {
  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  simdjson::dom::object object;
  if (json::parse_dom(parser, body, doc) || doc.get(object)) return AnswerShape::kNotAnObject;
  return object["error"].error() == simdjson::NO_SUCH_FIELD ? AnswerShape::kObject
                                                            : AnswerShape::kError;
}

}  // namespace tp::api
