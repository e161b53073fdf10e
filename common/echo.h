// Values from requests and files as they may appear in error messages: a
// message never carries megabytes back to the sender, and never holds a NUL
// or a control character that would cut or garble it where it is printed
// (a C string, a terminal, a log line).
//
// Stateless; thread-safe.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace polis {

inline constexpr size_t kEchoMaxBytes = 80;

// At most the first `max_bytes` bytes of `value`, each byte below 0x20, 0x7f,
// a backslash or a byte >= 0x80 escaped (\0, \n, \t, \\, \x1b, \xc3), then,
// when cut, "… (N bytes)" with N the full size. No quotes are added.
std::string EchoValue(std::string_view value, size_t max_bytes = kEchoMaxBytes);

// A whole message (which may hold values the code did not clip itself)
// limited to `max_bytes`, its control characters and NUL escaped (UTF-8 and
// backslashes kept); the last safety net before an error leaves the server.
std::string ClipMessage(std::string_view message, size_t max_bytes = 1000);

}  // namespace polis
