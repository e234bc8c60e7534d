// Status and StatusOr<T>: how servekit's C++ code reports errors.
//
// Every fallible function returns a Status (or a StatusOr<T> holding either a value
// or an error). Nothing in cc/ throws across its own API; exceptions appear only at
// the pybind11 boundary, where a Status becomes a Python exception. Messages are
// meant for a person: they name the file, endpoint or
// tensor concerned and what was expected versus found.
#ifndef SERVEKIT_CC_STATUS_H_
#define SERVEKIT_CC_STATUS_H_

#include <memory>
#include <string>
#include <utility>
#include <variant>

namespace servekit {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,     // the caller passed something malformed or mismatched
  kNotFound,            // a file, endpoint or tensor does not exist
  kFailedPrecondition,  // e.g. a GPU was requested and there is none
  kDataLoss,            // a file exists but is truncated or corrupt
  kUnimplemented,       // a valid input servekit does not support (e.g. sparse tensors)
  kInternal,            // a runtime (TensorFlow, ONNX Runtime) failed
};

const char* StatusCodeName(StatusCode code);

// [[nodiscard]]: a Status dropped on the floor is an error nobody handles.
// An OK Status is one null pointer: the serving hot path (Model::RunInto and the
// runners under it) makes and passes several per call, and a code plus an inline
// std::string cost a measurable share of a microsecond model's call (LiteRT's zoo MLP).
class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message)
      : rep_(code == StatusCode::kOk ? nullptr : std::make_unique<Rep>(Rep{code, std::move(message)})) {}
  Status(const Status& other) : rep_(other.rep_ != nullptr ? std::make_unique<Rep>(*other.rep_) : nullptr) {}
  Status& operator=(const Status& other) {
    if (this != &other) rep_ = other.rep_ != nullptr ? std::make_unique<Rep>(*other.rep_) : nullptr;
    return *this;
  }
  Status(Status&&) noexcept = default;  // the moved-from Status is OK
  Status& operator=(Status&&) noexcept = default;

  static Status Ok() { return Status(); }

  bool ok() const { return rep_ == nullptr; }
  StatusCode code() const { return rep_ != nullptr ? rep_->code : StatusCode::kOk; }
  const std::string& message() const;  // empty when OK
  // "NOT_FOUND: no file at x" (or "OK").
  std::string ToString() const;

  // Returns this status with `prefix + ": "` prepended to the message.
  Status WithContext(const std::string& prefix) const {
    if (ok()) return *this;
    return Status(rep_->code, prefix + ": " + rep_->message);
  }

 private:
  struct Rep {
    StatusCode code;
    std::string message;
  };
  std::unique_ptr<Rep> rep_;
};

inline Status InvalidArgument(std::string m) { return Status(StatusCode::kInvalidArgument, std::move(m)); }
inline Status NotFound(std::string m) { return Status(StatusCode::kNotFound, std::move(m)); }
inline Status FailedPrecondition(std::string m) { return Status(StatusCode::kFailedPrecondition, std::move(m)); }
inline Status DataLoss(std::string m) { return Status(StatusCode::kDataLoss, std::move(m)); }
inline Status Unimplemented(std::string m) { return Status(StatusCode::kUnimplemented, std::move(m)); }
inline Status Internal(std::string m) { return Status(StatusCode::kInternal, std::move(m)); }

// Either a T or a non-OK Status. Accessing value() of an error is a programming bug.
template <typename T>
class [[nodiscard]] StatusOr {
 public:
  StatusOr(const Status& status) : state_(status) {  // NOLINT: implicit by design
    if (status.ok()) state_ = Status(StatusCode::kInternal, "StatusOr built from an OK status");
  }
  StatusOr(T value) : state_(std::move(value)) {}  // NOLINT: implicit by design

  bool ok() const { return std::holds_alternative<T>(state_); }
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<Status>(state_);
  }
  const T& value() const& { return std::get<T>(state_); }
  T& value() & { return std::get<T>(state_); }
  T&& value() && { return std::get<T>(std::move(state_)); }
  const T& operator*() const& { return value(); }
  T& operator*() & { return value(); }
  const T* operator->() const { return &value(); }
  T* operator->() { return &value(); }

 private:
  std::variant<Status, T> state_;
};

}  // namespace servekit

#define SERVEKIT_STATUS_CONCAT_INNER(a, b) a##b
#define SERVEKIT_STATUS_CONCAT(a, b) SERVEKIT_STATUS_CONCAT_INNER(a, b)

// Returns from the current function when `expr` (a Status) is not OK.
#define SERVEKIT_RETURN_IF_ERROR(expr)                  \
  do {                                                  \
    ::servekit::Status servekit_status_ = (expr);       \
    if (!servekit_status_.ok()) return servekit_status_; \
  } while (0)

// `lhs = value of expr` (a StatusOr), or returns its error.
#define SERVEKIT_ASSIGN_OR_RETURN(lhs, expr) \
  SERVEKIT_ASSIGN_OR_RETURN_IMPL(SERVEKIT_STATUS_CONCAT(servekit_statusor_, __LINE__), lhs, expr)
#define SERVEKIT_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                   \
  if (!tmp.ok()) return tmp.status();                  \
  lhs = std::move(tmp).value()

#endif  // SERVEKIT_CC_STATUS_H_
