// Bearer tokens of the registry server: who may read, infer, publish or
// administer which models.
//
// Token file (JSON):
//   {"anonymous": ["read", "infer"],           // scopes without a token (default: these two)
//    "tokens": [
//      {"name": "ci", "sha256": "<hex SHA-256 of the token>", "scopes": ["publish", "read"],
//       "models": ["fashion_cnn", "traffic-*"]},   // optional; "*" suffix = prefix match
//      {"name": "ops", "token": "<the token itself>", "scopes": ["admin"]}]}
//
// Scopes: read (metadata, index, alias history, artifact download), infer
// (infer), explain (explanations: far costlier than an infer, so a scope of
// their own), publish (upload a version), admin (promote, rollback, delete,
// everything). admin implies the others. Anonymous callers may be given read,
// infer and explain only (explain only when the file or the server's
// --allow-anonymous-explain says so): writes always need a token.
//
// A token entry gives exactly one of "token" and "sha256".
//
// Immutable after Load; safe to share between threads.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/status.h"

namespace polis::registry {

enum Scope : unsigned {
  kScopeRead = 1,
  kScopeInfer = 2,
  kScopePublish = 4,
  kScopeAdmin = 8,
  kScopeExplain = 16,
};
const char* ScopeName(Scope s);

struct Principal {
  std::string name;                 // "anonymous" for callers without a token
  unsigned scopes = 0;              // Scope bits
  std::vector<std::string> models;  // empty: every model
  bool HasScope(Scope s) const { return (scopes & kScopeAdmin) || (scopes & s); }
  bool CoversModel(const std::string& model) const;
};

enum class AuthOutcome { kAllowed, kUnauthenticated /*401*/, kForbidden /*403*/ };

struct AuthDecision {
  AuthOutcome outcome = AuthOutcome::kAllowed;
  std::string who;      // principal name, for logs and alias history
  std::string message;  // why it was refused
};

class TokenSet {
 public:
  // No token file: anonymous may read and infer; no token is valid.
  TokenSet();
  // Gives anonymous callers the explain scope too (--allow-anonymous-explain).
  void AllowAnonymousExplain();
  static StatusOr<TokenSet> Parse(const std::string& text, const std::string& source);
  static StatusOr<TokenSet> Load(const std::string& path);

  // `authorization` is the Authorization header ("" when absent); `model`
  // is "" for requests that name no model.
  AuthDecision Authorize(std::string_view authorization, Scope scope,
                         const std::string& model) const;
  size_t size() const { return by_hash_.size(); }

 private:
  Principal anonymous_;
  std::unordered_map<std::string, Principal> by_hash_;  // hex SHA-256 of the token
};

}  // namespace polis::registry
