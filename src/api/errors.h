#pragma once
// Error bodies in the shape each client surface expects. Messages are written by Turnpike
// and never quote prompt or completion text (at most a model name, an option's value or a
// field name, cut between UTF-8 characters).

#include <string>
#include <string_view>

#include "core/status.h"

namespace tp::api {

enum class Surface { kOpenAI, kAnthropic };

unsigned http_status(ErrorKind kind);

// OpenAI: {"error":{"message","type","param":null,"code"}}.
// Anthropic: {"type":"error","error":{"type","message"},"request_id"} (the id when given).
// `code` defaults to one derived from the status.
std::string error_body(Surface surface, unsigned status, std::string_view message,
                       std::string_view code = {}, std::string_view request_id = {});
// The message of an error body of either shape ("" when `body` is not one).
std::string error_message(std::string_view body);

// What an upstream's whole body is: a JSON object, one with a top-level "error" member, or
// something else (an HTML page, a body cut short, nothing).
enum class AnswerShape { kObject, kError, kNotAnObject };
AnswerShape answer_shape(std::string_view body);

}  // namespace tp::api
