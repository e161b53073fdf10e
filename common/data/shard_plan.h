// The epoch plan: a seeded permutation of the training indices, cut into
// shards that workers ask for when they run low. The coordinator hands out
// positions [begin, end) into the permutation; every rank can recompute the
// permutation from (seed, epoch), so the coordinator never ships samples.
#pragma once

#include <cstdint>
#include <vector>

namespace polis::data {

// Deterministic across processes and runs of the same build.
std::vector<int64_t> EpochPermutation(uint64_t seed, int epoch, int64_t n);

// Hands out consecutive shards of one epoch: [cursor, cursor + shard_size).
//
// Near an epoch's end shards shrink (guided scheduling): once fewer than
// `workers` full shards are left, a shard is the remainder divided among the
// workers, in whole batches, at least one batch. Synchronous training steps
// every worker together, so with fixed shards the worker that took the last
// one trains alone for up to shard_size / batch_size steps, each a full
// optimizer step on 1/workers of the global batch, right before the epoch's
// evaluation (docs/design/training-protocol.md). With guided shards the
// workers run out of data within a step of each other.
class ShardPlanner {
 public:
  // batch_size 1 and workers 1: fixed shards to the end.
  ShardPlanner(int64_t dataset_size, int64_t shard_size, int64_t batch_size = 1, int workers = 1);
  // Next shard of `epoch`; an empty range when the epoch is exhausted.
  // Epochs may be asked for in any order (a fast worker may be one ahead).
  struct Range {
    int64_t begin = 0, end = 0;
  };
  Range Next(int epoch);
  int64_t shards_granted(int epoch) const;
  // After a resume: only these positions of `epoch` are left to hand out.
  void SetRemaining(int epoch, std::vector<Range> remaining);

 private:
  // Samples the next shard of `epoch` may hold when `left` are left to hand out.
  int64_t ShardFor(int64_t left) const;

  int64_t size_, shard_, batch_;
  int workers_;
  std::vector<int64_t> cursor_;  // per epoch
  std::vector<int64_t> granted_;  // shards handed out, per epoch
  int remaining_epoch_ = -1;
  std::vector<Range> remaining_;  // for remaining_epoch_, consumed from the front
  int64_t remaining_left_ = 0;    // samples in remaining_
};

}  // namespace polis::data
