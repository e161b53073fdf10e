#include "common/http/request_target.h"

namespace polis::http {
namespace {

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

StatusOr<std::string> PercentDecode(std::string_view s, bool plus_is_space) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%') {
      if (i + 2 >= s.size() || HexValue(s[i + 1]) < 0 || HexValue(s[i + 2]) < 0)
        return InvalidArgument("bad percent-encoding at offset {} of the request target", i);
      out.push_back(static_cast<char>(HexValue(s[i + 1]) * 16 + HexValue(s[i + 2])));
      i += 2;
    } else if (plus_is_space && s[i] == '+') {
      out.push_back(' ');
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

StatusOr<RequestTarget> ParseTarget(const std::string& raw) {
  RequestTarget t;
  const size_t q = raw.find('?');
  t.path = raw.substr(0, q);
  if (t.path.empty() || t.path[0] != '/') return InvalidArgument("request target must start with '/'");
  size_t at = 1;
  while (at <= t.path.size()) {
    size_t next = t.path.find('/', at);
    if (next == std::string::npos) next = t.path.size();
    std::string_view part(t.path.data() + at, next - at);
    if (!part.empty()) {
      POLIS_ASSIGN_OR_RETURN(std::string decoded, PercentDecode(part, false));
      t.seg.push_back(std::move(decoded));
    }
    at = next + 1;
  }
  if (q != std::string::npos) {
    std::string_view qs(raw.data() + q + 1, raw.size() - q - 1);
    while (!qs.empty()) {
      size_t amp = qs.find('&');
      std::string_view kv = qs.substr(0, amp);
      size_t eq = kv.find('=');
      POLIS_ASSIGN_OR_RETURN(std::string k, PercentDecode(kv.substr(0, eq), true));
      std::string v;
      if (eq != std::string_view::npos) {
        POLIS_ASSIGN_OR_RETURN(v, PercentDecode(kv.substr(eq + 1), true));
      }
      if (!k.empty()) t.query[k] = v;
      if (amp == std::string_view::npos) break;
      qs.remove_prefix(amp + 1);
    }
  }
  return t;
}

}  // namespace polis::http
