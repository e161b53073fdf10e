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
class ShardPlanner {
 public:
  ShardPlanner(int64_t dataset_size, int64_t shard_size);
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
  int64_t size_, shard_;
  std::vector<int64_t> cursor_;  // per epoch
  std::vector<int64_t> granted_;  // shards handed out, per epoch
  int remaining_epoch_ = -1;
  std::vector<Range> remaining_;  // for remaining_epoch_, consumed from the front
};

}  // namespace polis::data
