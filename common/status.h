// Status and StatusOr: the recoverable-error values every Polis API returns.
//
// Policy (docs/errors.md): failures a caller can act on (bad input, I/O, a
// remote peer that died, a deadline) are Status values with a Code to branch
// on; broken invariants inside the process are POLIS_ENFORCE* and abort with
// both values, the expression and file:line. Thread-safe: values only.
#pragma once

#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace polis {

enum class Code {
  kOk = 0,
  kInvalidArgument,     // the caller's input is wrong (a job field, a file's contents)
  kNotFound,            // a named thing does not exist
  kAlreadyExists,       // a name is taken
  kIo,                  // the operating system refused a read or write
  kDataLoss,            // a checksum or a format check failed: the bytes are bad
  kRemote,              // a peer rank or process failed or broke protocol
  kTimeout,             // a deadline passed
  kFailedPrecondition,  // the system is not in a state to do this
  kUnimplemented,
  kCancelled,           // the operation was stopped on purpose (a stop command)
  kInternal,            // a bug in Polis
};

const char* CodeName(Code code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Code code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }
  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }
  // "CODE: message", or "OK".
  std::string ToString() const;
  // Returns a copy whose message is "context: message" (a free backtrace).
  Status WithContext(const std::string& context) const;

 private:
  Code code_ = Code::kOk;
  std::string message_;
};

#define POLIS_STATUS_FACTORY(Name, CodeValue)                                   \
  template <typename... Args>                                                  \
  Status Name(fmt::format_string<Args...> f, Args&&... args) {                 \
    return Status(CodeValue, fmt::format(f, std::forward<Args>(args)...));     \
  }
POLIS_STATUS_FACTORY(InvalidArgument, Code::kInvalidArgument)
POLIS_STATUS_FACTORY(NotFound, Code::kNotFound)
POLIS_STATUS_FACTORY(AlreadyExists, Code::kAlreadyExists)
POLIS_STATUS_FACTORY(IoError, Code::kIo)
POLIS_STATUS_FACTORY(DataLoss, Code::kDataLoss)
POLIS_STATUS_FACTORY(RemoteError, Code::kRemote)
POLIS_STATUS_FACTORY(Timeout, Code::kTimeout)
POLIS_STATUS_FACTORY(FailedPrecondition, Code::kFailedPrecondition)
POLIS_STATUS_FACTORY(Unimplemented, Code::kUnimplemented)
POLIS_STATUS_FACTORY(InternalError, Code::kInternal)
inline Status Cancelled() { return Status(Code::kCancelled, "cancelled"); }
#undef POLIS_STATUS_FACTORY

// Status from errno after a failed system call: "what 'path': strerror".
Status ErrnoStatus(const std::string& what, const std::string& path, int err);

template <typename T>
class [[nodiscard]] StatusOr {
 public:
  StatusOr(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design
  StatusOr(Status status) : status_(std::move(status)) {  // NOLINT
    if (status_.ok()) status_ = InternalError("StatusOr built from an OK status");
  }
  bool ok() const { return value_.has_value(); }
  const Status& status() const { return status_; }
  T& value() & { return *value_; }
  const T& value() const& { return *value_; }
  T&& value() && { return std::move(*value_); }
  T* operator->() { return &*value_; }
  const T* operator->() const { return &*value_; }
  T& operator*() { return *value_; }
  const T& operator*() const { return *value_; }

 private:
  Status status_;
  std::optional<T> value_;
};

[[noreturn]] void EnforceFailed(const char* file, int line, const std::string& what);

}  // namespace polis

#define POLIS_CONCAT_INNER(a, b) a##b
#define POLIS_CONCAT(a, b) POLIS_CONCAT_INNER(a, b)

#define POLIS_RETURN_IF_ERROR(expr)                  \
  do {                                               \
    ::polis::Status _polis_st = (expr);              \
    if (!_polis_st.ok()) return _polis_st;           \
  } while (0)

#define POLIS_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                \
  if (!tmp.ok()) return tmp.status();               \
  lhs = std::move(tmp).value()

#define POLIS_ASSIGN_OR_RETURN(lhs, expr) \
  POLIS_ASSIGN_OR_RETURN_IMPL(POLIS_CONCAT(_polis_so_, __LINE__), lhs, expr)

// Broken invariants: print the expression and both values, then abort.
#define POLIS_ENFORCE(cond)                                                         \
  do {                                                                              \
    if (!(cond)) ::polis::EnforceFailed(__FILE__, __LINE__, "POLIS_ENFORCE(" #cond ")"); \
  } while (0)

#define POLIS_ENFORCE_OP(a, b, op)                                                   \
  do {                                                                               \
    const auto& _pa = (a);                                                           \
    const auto& _pb = (b);                                                           \
    if (!(_pa op _pb))                                                               \
      ::polis::EnforceFailed(__FILE__, __LINE__,                                     \
                             fmt::format("POLIS_ENFORCE({} " #op " {}) with {} = {}, {} = {}", \
                                         #a, #b, #a, _pa, #b, _pb));                 \
  } while (0)
#define POLIS_ENFORCE_EQ(a, b) POLIS_ENFORCE_OP(a, b, ==)
#define POLIS_ENFORCE_NE(a, b) POLIS_ENFORCE_OP(a, b, !=)
#define POLIS_ENFORCE_LT(a, b) POLIS_ENFORCE_OP(a, b, <)
#define POLIS_ENFORCE_LE(a, b) POLIS_ENFORCE_OP(a, b, <=)
#define POLIS_ENFORCE_GE(a, b) POLIS_ENFORCE_OP(a, b, >=)
#define POLIS_ENFORCE_OK(expr)                                                       \
  do {                                                                               \
    ::polis::Status _polis_st = (expr);                                              \
    if (!_polis_st.ok())                                                             \
      ::polis::EnforceFailed(__FILE__, __LINE__, "POLIS_ENFORCE_OK(" #expr ") -> " + \
                                                     _polis_st.ToString());          \
  } while (0)
