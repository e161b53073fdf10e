#include "common/http/request_target.h"

#include <gtest/gtest.h>

namespace polis::http {
namespace {

TEST(RequestTarget, SegmentsAndQueryAreDecoded) {
  auto t = ParseTarget("/v2/models/bike%20demand//versions/3/infer?explain=1&who=a+b%2Bc&flag&=x");
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_EQ(t->path, "/v2/models/bike%20demand//versions/3/infer");
  EXPECT_EQ(t->seg, (std::vector<std::string>{"v2", "models", "bike demand", "versions", "3", "infer"}));
  EXPECT_EQ(t->Query("explain"), "1");
  EXPECT_EQ(t->Query("who"), "a b+c");  // '+' is a space in the query only
  EXPECT_EQ(t->Query("flag", "unset"), "");
  EXPECT_EQ(t->Query("missing", "fallback"), "fallback");
  EXPECT_EQ(t->query.count(""), 0u);  // an empty key is dropped
}

TEST(RequestTarget, PlusIsLiteralInThePathAndSlashStaysInsideASegment) {
  auto t = ParseTarget("/a+b/c%2Fd");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->seg, (std::vector<std::string>{"a+b", "c/d"}));
}

TEST(RequestTarget, BadInputNamesTheOffset) {
  EXPECT_FALSE(ParseTarget("models").ok());
  EXPECT_FALSE(ParseTarget("").ok());
  for (const char* bad : {"/a%", "/a%2", "/a%zz", "/?k=%G0"}) {
    auto t = ParseTarget(bad);
    ASSERT_FALSE(t.ok()) << bad;
    EXPECT_NE(t.status().message().find("bad percent-encoding at offset"), std::string::npos) << bad;
  }
  auto d = PercentDecode("ab%4", false);
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.status().message().find("offset 2"), std::string::npos) << d.status().message();
  EXPECT_EQ(*PercentDecode("%41%62", false), "Ab");
}

}  // namespace
}  // namespace polis::http
