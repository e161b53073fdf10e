#include "common/echo.h"

#include <fmt/format.h>

namespace polis {
namespace {

// `value`: a foreign value (every byte outside printable ASCII escaped, and
// backslashes, so an escape is never ambiguous); otherwise a message, whose
// UTF-8 and backslashes (earlier escapes) are kept.
void AppendEscaped(std::string& out, std::string_view s, bool value) {
  for (unsigned char c : s) {
    switch (c) {
      case '\0': out += "\\0"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c == '\\' && value)
          out += "\\\\";
        else if (c < 0x20 || c == 0x7f || (c >= 0x80 && value))
          out += fmt::format("\\x{:02x}", c);
        else
          out.push_back(static_cast<char>(c));
    }
  }
}

}  // namespace

std::string EchoValue(std::string_view value, size_t max_bytes) {
  std::string out;
  AppendEscaped(out, value.substr(0, max_bytes), /*value=*/true);
  if (value.size() > max_bytes) out += fmt::format("… ({} bytes)", value.size());
  return out;
}

std::string ClipMessage(std::string_view message, size_t max_bytes) {
  // Messages are the code's own sentences (UTF-8 such as "…" kept); only
  // control characters are escaped, and only an oversized one is cut.
  std::string out;
  const bool cut = message.size() > max_bytes;
  std::string_view keep = message.substr(0, max_bytes);
  // Do not cut a UTF-8 sequence in two.
  if (cut)
    while (!keep.empty() && (static_cast<unsigned char>(keep.back()) & 0xc0) == 0x80)
      keep.remove_suffix(1);
  if (cut && !keep.empty() && static_cast<unsigned char>(keep.back()) >= 0xc0) keep.remove_suffix(1);
  AppendEscaped(out, keep, /*value=*/false);
  if (cut) out += fmt::format("… (message of {} bytes cut)", message.size());
  return out;
}

}  // namespace polis
