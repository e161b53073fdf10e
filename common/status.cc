#include "common/status.h"

#include <cstring>

namespace polis {

const char* CodeName(Code code) {
  switch (code) {
    case Code::kOk: return "OK";
    case Code::kInvalidArgument: return "INVALID_ARGUMENT";
    case Code::kNotFound: return "NOT_FOUND";
    case Code::kAlreadyExists: return "ALREADY_EXISTS";
    case Code::kIo: return "IO_ERROR";
    case Code::kDataLoss: return "DATA_LOSS";
    case Code::kRemote: return "REMOTE_ERROR";
    case Code::kTimeout: return "TIMEOUT";
    case Code::kFailedPrecondition: return "FAILED_PRECONDITION";
    case Code::kUnimplemented: return "UNIMPLEMENTED";
    case Code::kCancelled: return "CANCELLED";
    case Code::kInternal: return "INTERNAL";
  }
  return "UNKNOWN";
}

std::string Status::ToString() const {
  if (ok()) return "OK";
  return fmt::format("{}: {}", CodeName(code_), message_);
}

Status Status::WithContext(const std::string& context) const {
  if (ok()) return *this;
  return Status(code_, context + ": " + message_);
}

Status ErrnoStatus(const std::string& what, const std::string& path, int err) {
  return Status(Code::kIo, fmt::format("{} '{}': {}", what, path, std::strerror(err)));
}

void EnforceFailed(const char* file, int line, const std::string& what) {
  std::fprintf(stderr, "polis: internal error at %s:%d: %s\n", file, line, what.c_str());
  std::fflush(stderr);
  std::abort();
}

}  // namespace polis
