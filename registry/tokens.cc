#include "registry/tokens.h"

#include <nlohmann/json.hpp>

#include "common/fs.h"
#include "common/echo.h"

namespace polis::registry {
namespace {

using json = nlohmann::json;

StatusOr<unsigned> ParseScopes(const json& j, const std::string& where) {
  if (!j.is_array()) return InvalidArgument("{}: \"scopes\" must be an array of strings", where);
  unsigned bits = 0;
  for (const auto& s : j) {
    const std::string name = s.is_string() ? s.get<std::string>() : s.dump();
    if (name == "read") bits |= kScopeRead;
    else if (name == "infer") bits |= kScopeInfer;
    else if (name == "explain") bits |= kScopeExplain;
    else if (name == "publish") bits |= kScopePublish;
    else if (name == "admin") bits |= kScopeAdmin;
    else
      return InvalidArgument(
          "{}: unknown scope '{}'; known scopes: read, infer, explain, publish, admin", where,
          EchoValue(name));
  }
  return bits;
}

bool IsHex64(const std::string& s) {
  if (s.size() != 64) return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

}  // namespace

const char* ScopeName(Scope s) {
  switch (s) {
    case kScopeRead: return "read";
    case kScopeInfer: return "infer";
    case kScopePublish: return "publish";
    case kScopeAdmin: return "admin";
    case kScopeExplain: return "explain";
  }
  return "?";
}

bool Principal::CoversModel(const std::string& model) const {
  if (models.empty() || model.empty()) return true;
  for (const auto& m : models) {
    if (!m.empty() && m.back() == '*') {
      if (model.compare(0, m.size() - 1, m, 0, m.size() - 1) == 0) return true;
    } else if (m == model) {
      return true;
    }
  }
  return false;
}

TokenSet::TokenSet() {
  anonymous_.name = "anonymous";
  anonymous_.scopes = kScopeRead | kScopeInfer;
}

void TokenSet::AllowAnonymousExplain() { anonymous_.scopes |= kScopeExplain; }

StatusOr<TokenSet> TokenSet::Parse(const std::string& text, const std::string& source) {
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object())
    return InvalidArgument("token file '{}' is not a JSON object", source);
  TokenSet set;
  if (j.contains("anonymous")) {
    POLIS_ASSIGN_OR_RETURN(unsigned bits, ParseScopes(j["anonymous"], "'" + source + "': anonymous"));
    if (bits & (kScopePublish | kScopeAdmin))
      return InvalidArgument(
          "token file '{}': anonymous callers may only have 'read', 'infer' and 'explain' (writes "
          "always need a token)",
          source);
    set.anonymous_.scopes = bits;
  }
  const json& tokens = j.contains("tokens") ? j["tokens"] : json::array();
  if (!tokens.is_array()) return InvalidArgument("token file '{}': \"tokens\" must be an array", source);
  for (size_t i = 0; i < tokens.size(); ++i) {
    const json& t = tokens[i];
    const std::string where = fmt::format("token file '{}': tokens[{}]", source, i);
    if (!t.is_object()) return InvalidArgument("{} is not an object", where);
    Principal p;
    if (t.contains("name") && !t["name"].is_string())
      return InvalidArgument("{}: \"name\" must be a string", where);
    p.name = t.value("name", fmt::format("token-{}", i));
    if (p.name.size() > 128 || EchoValue(p.name) != p.name)
      return InvalidArgument("{}: name {} must be at most 128 printable characters", where,
                             EchoValue(p.name));
    if (p.name == "anonymous") return InvalidArgument("{}: the name 'anonymous' is reserved", where);
    if (!t.contains("scopes")) return InvalidArgument("{}: \"scopes\" is required", where);
    POLIS_ASSIGN_OR_RETURN(p.scopes, ParseScopes(t["scopes"], where));
    if (t.contains("models")) {
      if (!t["models"].is_array()) return InvalidArgument("{}: \"models\" must be an array", where);
      for (const auto& m : t["models"]) {
        if (!m.is_string()) return InvalidArgument("{}: \"models\" must hold strings", where);
        p.models.push_back(m.get<std::string>());
      }
    }
    std::string hash;
    if (t.contains("sha256") && t.contains("token"))
      return InvalidArgument(
          "{} (name '{}') has both \"token\" and \"sha256\"; give exactly one (prefer \"sha256\", "
          "so the file holds no secret)",
          where, p.name);
    if (t.contains("sha256") && t["sha256"].is_string()) {
      hash = t["sha256"].get<std::string>();
      if (!IsHex64(hash))
        return InvalidArgument("{}: \"sha256\" must be 64 lower-case hex digits", where);
    } else if (t.contains("token") && t["token"].is_string()) {
      const std::string token = t["token"].get<std::string>();
      if (token.size() < 8) return InvalidArgument("{}: a token needs at least 8 characters", where);
      hash = Sha256Hex(token);
    } else {
      return InvalidArgument("{}: needs \"token\" or \"sha256\" (a string)", where);
    }
    if (set.by_hash_.count(hash)) return InvalidArgument("{}: the same token is listed twice", where);
    set.by_hash_.emplace(hash, std::move(p));
  }
  return set;
}

StatusOr<TokenSet> TokenSet::Load(const std::string& path) {
  POLIS_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  return Parse(text, path);
}

AuthDecision TokenSet::Authorize(std::string_view authorization, Scope scope,
                                 const std::string& model) const {
  AuthDecision d;
  const Principal* p = &anonymous_;
  if (!authorization.empty()) {
    constexpr std::string_view kBearer = "Bearer ";
    if (authorization.substr(0, kBearer.size()) != kBearer) {
      d.outcome = AuthOutcome::kUnauthenticated;
      d.who = "anonymous";
      d.message = "the Authorization header must be 'Bearer <token>'";
      return d;
    }
    // Look tokens up by their hash: the comparison never touches the secret.
    auto it = by_hash_.find(Sha256Hex(authorization.substr(kBearer.size())));
    if (it == by_hash_.end()) {
      d.outcome = AuthOutcome::kUnauthenticated;
      d.who = "anonymous";
      d.message = "unknown token";
      return d;
    }
    p = &it->second;
  }
  d.who = p->name;
  if (!p->HasScope(scope)) {
    if (p == &anonymous_) {
      d.outcome = AuthOutcome::kUnauthenticated;
      d.message = fmt::format("this request needs a token with scope '{}' (Authorization: Bearer <token>)",
                              ScopeName(scope));
    } else {
      d.outcome = AuthOutcome::kForbidden;
      d.message = fmt::format("token '{}' lacks scope '{}'", p->name, ScopeName(scope));
    }
    return d;
  }
  if (!p->CoversModel(model)) {
    d.outcome = AuthOutcome::kForbidden;
    d.message = fmt::format("token '{}' does not cover model '{}'", p->name, model);
  }
  return d;
}

}  // namespace polis::registry
