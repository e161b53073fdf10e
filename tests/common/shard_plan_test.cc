#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "common/data/shard_plan.h"

namespace polis::data {
namespace {

TEST(EpochPermutation, IsAPermutationAndDependsOnSeedAndEpoch) {
  for (int64_t n : {0, 1, 2, 7, 1000, 60000}) {
    auto p = EpochPermutation(42, 0, n);
    std::vector<int64_t> sorted = p;
    std::sort(sorted.begin(), sorted.end());
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(sorted[i], i);
  }
  EXPECT_EQ(EpochPermutation(42, 3, 1000), EpochPermutation(42, 3, 1000));
  EXPECT_NE(EpochPermutation(42, 3, 1000), EpochPermutation(42, 4, 1000));
  EXPECT_NE(EpochPermutation(42, 3, 1000), EpochPermutation(43, 3, 1000));
}

TEST(ShardPlanner, CoversEveryIndexExactlyOncePerEpoch) {
  for (int64_t n : {1, 5, 100, 60000}) {
    for (int64_t shard : {1, 3, 512, 100000}) {
      ShardPlanner planner(n, shard);
      for (int epoch = 0; epoch < 3; ++epoch) {
        auto perm = EpochPermutation(7, epoch, n);
        std::vector<int> seen(n, 0);
        // Interleave requests as two workers would.
        while (true) {
          auto r = planner.Next(epoch);
          if (r.begin == r.end) break;
          ASSERT_LE(r.end - r.begin, shard);
          for (int64_t p = r.begin; p < r.end; ++p) ++seen[perm[p]];
        }
        for (int64_t i = 0; i < n; ++i) ASSERT_EQ(seen[i], 1) << "index " << i << " epoch " << epoch;
        EXPECT_EQ(planner.shards_granted(epoch), (n + shard - 1) / shard);
        // Exhausted epochs stay exhausted.
        auto r = planner.Next(epoch);
        EXPECT_EQ(r.begin, r.end);
      }
    }
  }
}

TEST(ShardPlanner, EpochsAreIndependent) {
  ShardPlanner planner(10, 4);
  EXPECT_EQ(planner.Next(1).begin, 0);  // a fast worker may ask for the next epoch first
  EXPECT_EQ(planner.Next(0).begin, 0);
  EXPECT_EQ(planner.Next(1).begin, 4);
}

}  // namespace
}  // namespace polis::data
