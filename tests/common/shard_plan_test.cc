#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>
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

// Synchronous workers (all-reduce, BSP) step together: each asks for a shard
// when it holds less than a batch, then every worker with data trains one
// batch. Returns the steps of one epoch in which some worker had less than a
// full batch; every index is checked to come exactly once.
int ShortSteps(int64_t n, int64_t shard, int64_t batch, int workers, unsigned order_seed) {
  ShardPlanner planner(n, shard, batch, workers);
  std::vector<int64_t> held(workers, 0);
  std::vector<int> order(workers);
  std::iota(order.begin(), order.end(), 0);
  std::mt19937 rng(order_seed);
  int64_t next = 0;  // shards come in order: the next expected begin
  bool exhausted = false;
  int short_steps = 0;
  while (true) {
    std::shuffle(order.begin(), order.end(), rng);  // who asks first is a matter of timing
    for (int w : order)
      while (held[w] < batch && !exhausted) {
        auto r = planner.Next(0);
        if (r.begin == r.end) exhausted = true;
        EXPECT_EQ(r.begin, next);
        next = r.end;
        held[w] += r.end - r.begin;
      }
    int64_t step = 0;
    for (int64_t& h : held) {
      const int64_t take = std::min(h, batch);
      step += take;
      h -= take;
    }
    if (step == 0) break;
    if (step < batch * workers) ++short_steps;
  }
  EXPECT_EQ(next, n);
  return short_steps;
}

TEST(ShardPlanner, SynchronousWorkersRunOutOfDataTogether) {
  // With fixed shards of 16 batches the worker that took the last one
  // trained alone for up to 16 steps at the epoch's end.
  for (int workers : {2, 3, 4, 8})
    for (int64_t n : {60000, 1664, 50000, 59999})
      for (unsigned seed = 0; seed < 5; ++seed) {
        // A step with less than a full global batch happens only where the
        // samples left do not fill one (at most one such step).
        EXPECT_LE(ShortSteps(n, 512, 32, workers, seed), 1) << workers << " workers, " << n << " samples";
        // A shard_size that is not whole batches leaves workers remainders
        // of less than a batch, used up in the last two steps.
        EXPECT_LE(ShortSteps(n, 100, 32, workers, seed), 2) << workers << " workers, " << n << " samples";
      }
}

TEST(ShardPlanner, ShrinksNearTheEndInWholeBatches) {
  ShardPlanner planner(1000, 128, 32, 4);
  int64_t left = 1000;
  while (true) {
    auto r = planner.Next(0);
    if (r.begin == r.end) break;
    const int64_t len = r.end - r.begin;
    EXPECT_LE(len, 128);
    if (r.end < 1000) EXPECT_EQ(len % 32, 0) << "a shard cut mid-batch at " << r.begin;
    if (left >= 4 * 128) EXPECT_EQ(len, 128) << "full shards while every worker can get one";
    left -= len;
  }
  EXPECT_EQ(left, 0);
}

TEST(ShardPlanner, EpochsAreIndependent) {
  ShardPlanner planner(10, 4);
  EXPECT_EQ(planner.Next(1).begin, 0);  // a fast worker may ask for the next epoch first
  EXPECT_EQ(planner.Next(0).begin, 0);
  EXPECT_EQ(planner.Next(1).begin, 4);
}

}  // namespace
}  // namespace polis::data
