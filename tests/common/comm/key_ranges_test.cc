#include <gtest/gtest.h>

#include "common/comm/key_ranges.h"

namespace polis::comm {
namespace {

TEST(PartitionByBytes, ContiguousCompleteAndBalanced) {
  for (int64_t total : {0, 1, 15, 16, 17, 93322, 1000003}) {
    for (int servers : {1, 2, 3, 4, 7, 8}) {
      auto r = PartitionByBytes(total, servers);
      ASSERT_EQ(static_cast<int>(r.size()), servers);
      EXPECT_EQ(r.front().begin, 0);
      EXPECT_EQ(r.back().end, total);
      int64_t lo = total, hi = 0;
      for (int s = 0; s < servers; ++s) {
        if (s > 0) EXPECT_EQ(r[s].begin, r[s - 1].end);
        EXPECT_GE(r[s].size(), 0);
        if (s + 1 < servers && r[s].end != total) EXPECT_EQ(r[s].end % 16, 0) << "boundaries are 64-byte aligned";
        lo = std::min(lo, r[s].size());
        hi = std::max(hi, r[s].size());
      }
      // Balanced by bytes: servers differ by at most one alignment unit (16
      // floats) on each side of a boundary.
      if (total >= 16 * servers) EXPECT_LE(hi - lo, 32) << total << " over " << servers;
    }
  }
}

TEST(PartitionByBytes, SeedModelOverThreeServers) {
  auto r = PartitionByBytes(93322, 3);
  for (const auto& k : r) EXPECT_NEAR(static_cast<double>(k.size()), 93322.0 / 3, 16);
}

}  // namespace
}  // namespace polis::comm
