#pragma once
// Expected failures travel as values. A Status carries an error kind and a human-readable
// message that is safe to show a client: it never contains prompt or completion text.

#include <optional>
#include <string>
#include <utility>
#include <variant>

#include "core/assert.h"

namespace tp {

// The kinds map one-to-one onto the client-visible statuses of CONTRACT.md.
enum class ErrorKind {
  kInvalidRequest,     // 400
  kUnauthenticated,    // 401
  kPaymentRequired,    // 402
  kForbidden,          // 403
  kNotFound,           // 404
  kConflict,           // 409
  kPayloadTooLarge,    // 413
  kRateLimited,        // 429
  kInternal,           // 500
  kUpstreamFailed,     // 502
  kUnavailable,        // 503
  kUpstreamTimeout,    // 504
};

class [[nodiscard]] Status {
 public:
  Status() = default;  // ok
  Status(ErrorKind kind, std::string message) : error_(Error{kind, std::move(message)}) {}

  static Status ok() { return {}; }
  bool is_ok() const { return !error_.has_value(); }
  explicit operator bool() const { return is_ok(); }

  ErrorKind kind() const {
    TP_ASSERT(error_);
    return error_->kind;
  }
  const std::string& message() const {
    TP_ASSERT(error_);
    return error_->message;
  }

 private:
  struct Error {
    ErrorKind kind;
    std::string message;
  };
  std::optional<Error> error_;
};

// A value or the Status that explains its absence.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : state_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : state_(std::move(status)) {
    TP_ASSERT(!std::get<Status>(state_).is_ok());
  }

  bool is_ok() const { return std::holds_alternative<T>(state_); }
  explicit operator bool() const { return is_ok(); }

  T& value() & {
    TP_ASSERT(is_ok());
    return std::get<T>(state_);
  }
  const T& value() const& {
    TP_ASSERT(is_ok());
    return std::get<T>(state_);
  }
  T&& value() && {
    TP_ASSERT(is_ok());
    return std::get<T>(std::move(state_));
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }

  const Status& status() const {
    TP_ASSERT(!is_ok());
    return std::get<Status>(state_);
  }

 private:
  std::variant<T, Status> state_;
};

}  // namespace tp
