// Values echoed into error messages: clipped, and escaped so that nothing
// cuts or garbles a message where it is printed.
#include "common/echo.h"

#include <gtest/gtest.h>

#include <string>

namespace polis {
namespace {

TEST(EchoTest, ShortPrintableValuesAreUnchanged) {
  EXPECT_EQ(EchoValue("fashion_cnn"), "fashion_cnn");
  EXPECT_EQ(EchoValue(""), "");
}

TEST(EchoTest, ControlCharactersNulAndNonAsciiAreEscaped) {
  EXPECT_EQ(EchoValue(std::string("a\0b", 3)), "a\\0b");
  EXPECT_EQ(EchoValue("x\ny\t\x1b\\"), "x\\ny\\t\\x1b\\\\");
  EXPECT_EQ(EchoValue("\xc3\xbc"), "\\xc3\\xbc");
}

TEST(EchoTest, LongValuesAreClippedWithTheirSize) {
  const std::string big(20u << 20, 'z');
  const std::string e = EchoValue(big);
  EXPECT_EQ(e, std::string(80, 'z') + "… (20971520 bytes)");
  EXPECT_EQ(EchoValue("abcdef", 3), "abc… (6 bytes)");
}

TEST(EchoTest, MessagesAreCutOnlyWhenOversizedAndNeverInsideAUtf8Character) {
  EXPECT_EQ(ClipMessage("model 'm' … ok"), "model 'm' … ok");
  EXPECT_EQ(ClipMessage(std::string("a\0b", 3)), "a\\0b");
  EXPECT_EQ(ClipMessage("back\\slash"), "back\\slash");  // earlier escapes are kept
  const std::string m = std::string(9, 'x') + "\xe2\x80\xa6" + "tail";
  EXPECT_EQ(ClipMessage(m, 10), std::string(9, 'x') + "… (message of 16 bytes cut)");
  EXPECT_LT(ClipMessage(std::string(1 << 20, 'q')).size(), 1100u);
}

}  // namespace
}  // namespace polis
