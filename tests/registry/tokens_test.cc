// Token files and scope decisions.
#include "registry/tokens.h"

#include <gtest/gtest.h>

#include "common/fs.h"

namespace polis::registry {
namespace {

constexpr char kFile[] = R"({
  "anonymous": ["read"],
  "tokens": [
    {"name": "ci", "token": "ci-secret-123", "scopes": ["publish", "infer"], "models": ["fashion*"]},
    {"name": "ops", "sha256": "HASH", "scopes": ["admin"]}
  ]})";

TokenSet Load() {
  std::string text = kFile;
  text.replace(text.find("HASH"), 4, Sha256Hex("ops-secret-456"));
  auto t = TokenSet::Parse(text, "tokens.json");
  EXPECT_TRUE(t.ok()) << t.status().ToString();
  return t.ok() ? *t : TokenSet();
}

TEST(TokensTest, ScopesAndModels) {
  TokenSet t = Load();
  EXPECT_EQ(t.size(), 2u);
  EXPECT_EQ(t.Authorize("", kScopeRead, "m").outcome, AuthOutcome::kAllowed);
  EXPECT_EQ(t.Authorize("", kScopeInfer, "m").outcome, AuthOutcome::kUnauthenticated);
  EXPECT_EQ(t.Authorize("", kScopePublish, "m").outcome, AuthOutcome::kUnauthenticated);
  EXPECT_EQ(t.Authorize("Bearer nope-nope-nope", kScopeRead, "m").outcome,
            AuthOutcome::kUnauthenticated);
  EXPECT_EQ(t.Authorize("Basic abc", kScopeRead, "m").outcome, AuthOutcome::kUnauthenticated);
  auto ci = t.Authorize("Bearer ci-secret-123", kScopePublish, "fashion_cnn");
  EXPECT_EQ(ci.outcome, AuthOutcome::kAllowed);
  EXPECT_EQ(ci.who, "ci");
  EXPECT_EQ(t.Authorize("Bearer ci-secret-123", kScopePublish, "traffic").outcome,
            AuthOutcome::kForbidden);
  auto no_admin = t.Authorize("Bearer ci-secret-123", kScopeAdmin, "fashion_cnn");
  EXPECT_EQ(no_admin.outcome, AuthOutcome::kForbidden);
  EXPECT_NE(no_admin.message.find("lacks scope 'admin'"), std::string::npos);
  // admin implies every scope, on every model.
  for (Scope s : {kScopeRead, kScopeInfer, kScopePublish, kScopeAdmin})
    EXPECT_EQ(t.Authorize("Bearer ops-secret-456", s, "any").outcome, AuthOutcome::kAllowed);
}

TEST(TokensTest, NoFileMeansAnonymousReadAndInferOnly) {
  TokenSet t;
  EXPECT_EQ(t.Authorize("", kScopeInfer, "m").outcome, AuthOutcome::kAllowed);
  EXPECT_EQ(t.Authorize("", kScopePublish, "m").outcome, AuthOutcome::kUnauthenticated);
  EXPECT_EQ(t.Authorize("Bearer anything-at-all", kScopeAdmin, "m").outcome,
            AuthOutcome::kUnauthenticated);
}

TEST(TokensTest, BadFilesAreRefusedWithTheReason) {
  auto bad = [](const std::string& text, const std::string& expect) {
    auto t = TokenSet::Parse(text, "t.json");
    ASSERT_FALSE(t.ok());
    EXPECT_NE(t.status().message().find(expect), std::string::npos) << t.status().message();
  };
  bad("[", "not a JSON object");
  bad(R"({"anonymous": ["publish"]})", "writes always need a token");
  bad(R"({"tokens": [{"name": "x", "token": "abcdefgh", "scopes": ["root"]}]})", "unknown scope 'root'");
  bad(R"({"tokens": [{"name": "x", "token": "short", "scopes": ["read"]}]})", "at least 8");
  bad(R"({"tokens": [{"name": "x", "scopes": ["read"]}]})", "needs \"token\" or \"sha256\"");
  bad(R"({"tokens": [{"name": "x", "token": "abcdefgh", "scopes": ["read"]},
                     {"name": "y", "token": "abcdefgh", "scopes": ["admin"]}]})", "listed twice");
}

TEST(TokensTest, AnEntryWithBothTokenAndSha256IsRefusedNamingIt) {
  auto t = TokenSet::Parse(R"({"tokens": [
      {"name": "ok", "token": "abcdefgh", "scopes": ["read"]},
      {"name": "both", "token": "ijklmnop", "sha256": ")" + Sha256Hex("qrstuvwx") + R"(",
       "scopes": ["admin"]}]})", "t.json");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), Code::kInvalidArgument);
  const std::string& m = t.status().message();
  EXPECT_NE(m.find("tokens[1]"), std::string::npos) << m;
  EXPECT_NE(m.find("'both'"), std::string::npos) << m;
  EXPECT_NE(m.find("both \"token\" and \"sha256\""), std::string::npos) << m;
}

TEST(TokensTest, ExplainIsAScopeOfItsOwnThatAnonymousLacksByDefault) {
  TokenSet none;
  EXPECT_EQ(none.Authorize("", kScopeExplain, "m").outcome, AuthOutcome::kUnauthenticated);
  EXPECT_NE(none.Authorize("", kScopeExplain, "m").message.find("scope 'explain'"), std::string::npos);
  none.AllowAnonymousExplain();
  EXPECT_EQ(none.Authorize("", kScopeExplain, "m").outcome, AuthOutcome::kAllowed);

  auto t = TokenSet::Parse(R"({"anonymous": ["read", "infer", "explain"], "tokens": [
      {"name": "app", "token": "app-secret-1", "scopes": ["infer"]},
      {"name": "ana", "token": "ana-secret-1", "scopes": ["explain"]}]})", "t.json");
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(t->Authorize("", kScopeExplain, "m").outcome, AuthOutcome::kAllowed);
  EXPECT_EQ(t->Authorize("Bearer app-secret-1", kScopeExplain, "m").outcome, AuthOutcome::kForbidden);
  EXPECT_EQ(t->Authorize("Bearer ana-secret-1", kScopeExplain, "m").outcome, AuthOutcome::kAllowed);
  EXPECT_EQ(Load().Authorize("Bearer ops-secret-456", kScopeExplain, "m").outcome,
            AuthOutcome::kAllowed);  // admin implies it
}

TEST(TokensTest, EchoedScopeNamesAreClippedAndEscaped) {
  auto t = TokenSet::Parse(R"({"tokens": [{"name": "x", "token": "abcdefgh", "scopes": [")" +
                               std::string(100000, 'z') + R"(\u0000"]}]})",
                           "t.json");
  ASSERT_FALSE(t.ok());
  EXPECT_LT(t.status().message().size(), 400u) << t.status().message().substr(0, 400);
  EXPECT_NE(t.status().message().find("(100001 bytes)"), std::string::npos);
}

}  // namespace
}  // namespace polis::registry
