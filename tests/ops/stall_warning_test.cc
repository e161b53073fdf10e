// coordinator/stall_warning.h: when the warning is due, and its line.
#include "coordinator/stall_warning.h"

#include <gtest/gtest.h>

namespace polis::coordinator {
namespace {

using std::chrono::milliseconds;

TEST(StallWarning, DueEveryIntervalWhileNothingProgresses) {
  const auto t0 = comm::Clock::now();
  StallWarning w(2.0, t0);
  EXPECT_FALSE(w.Due(t0 + milliseconds(1999)));
  auto first = w.Due(t0 + milliseconds(2000));
  ASSERT_TRUE(first);
  EXPECT_DOUBLE_EQ(*first, 2.0);
  EXPECT_FALSE(w.Due(t0 + milliseconds(3000)));  // once per interval
  auto second = w.Due(t0 + milliseconds(4100));
  ASSERT_TRUE(second);
  EXPECT_DOUBLE_EQ(*second, 4.1);
  // A completed step ends the stall; the next warning is a full interval on.
  w.Progressed(t0 + milliseconds(5000));
  EXPECT_FALSE(w.Due(t0 + milliseconds(6500)));
  EXPECT_TRUE(w.Due(t0 + milliseconds(7000)));
}

TEST(StallWarning, ZeroIsOff) {
  const auto t0 = comm::Clock::now();
  StallWarning w(0, t0);
  EXPECT_FALSE(w.Due(t0 + std::chrono::hours(1)));
}

TEST(StallWarning, LineNamesWaitedOnAndHeldRanks) {
  EXPECT_EQ(LastWindowSummary(2.9, 0.1, 0), "mostly computing (2.9 of 3.0 s)");
  EXPECT_EQ(LastWindowSummary(0.2, 2.8, 0), "mostly communicating (2.8 of 3.0 s)");
  EXPECT_EQ(LastWindowSummary(0.1, 0.2, 4), "mostly waiting for data or for the others (4.0 of 4.3 s)");
  EXPECT_EQ(LastWindowSummary(0, 0, 0), "");
  const std::string line =
      StallWarningLine(62.4, {{"rank 3 (worker on node2)", "epoch 1, step 40, last message 61 s ago"}},
                       {{"rank 2 (worker on node1)", "epoch 1, step 40, last message 1 s ago"}});
  EXPECT_EQ(line,
            "stall: no worker has completed a step for 62 s; waiting on rank 3 (worker on node2): epoch 1, step 40, "
            "last message 61 s ago; held: rank 2 (worker on node1): epoch 1, step 40, last message 1 s ago");
  EXPECT_EQ(StallWarningLine(5, {}, {}), "stall: no worker has completed a step for 5 s; waiting on nobody known");
}

}  // namespace
}  // namespace polis::coordinator
