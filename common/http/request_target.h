// The request target of an HTTP request (RFC 9112 origin-form): the path
// cut into percent-decoded segments and the query string into decoded
// key/value pairs ('+' is a space there). Used by the registry's router;
// fuzzed by tests/fuzz/http_fuzzer.cc. Stateless; thread-safe.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace polis::http {

struct RequestTarget {
  std::string path;
  std::vector<std::string> seg;  // decoded
  std::map<std::string, std::string> query;
  std::string Query(const std::string& k, const std::string& fallback = "") const {
    auto it = query.find(k);
    return it == query.end() ? fallback : it->second;
  }
};

// Percent-decodes s; InvalidArgument naming the offset of a '%' not
// followed by two hex digits.
StatusOr<std::string> PercentDecode(std::string_view s, bool plus_is_space);

// Segments are the non-empty parts between '/' (decoded, so a segment may
// hold "%2F" as '/'); a later query key replaces an earlier one. The target
// must start with '/'.
StatusOr<RequestTarget> ParseTarget(const std::string& raw);

}  // namespace polis::http
