#include "common/data/shard_plan.h"

#include <algorithm>
#include <numeric>
#include <random>

#include "common/status.h"

namespace polis::data {

std::vector<int64_t> EpochPermutation(uint64_t seed, int epoch, int64_t n) {
  std::vector<int64_t> perm(static_cast<size_t>(n));
  std::iota(perm.begin(), perm.end(), 0);
  // splitmix64 of (seed, epoch) seeds the generator; Fisher-Yates with our own
  // bounded draw, so the order does not depend on the standard library.
  uint64_t z = seed + 0x9E3779B97F4A7C15ull * static_cast<uint64_t>(epoch + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  std::mt19937_64 rng(z ^ (z >> 31));
  for (int64_t i = n - 1; i > 0; --i) {
    uint64_t bound = static_cast<uint64_t>(i) + 1;
    uint64_t limit = ~0ull - (~0ull % bound);
    uint64_t r;
    do r = rng(); while (r >= limit);
    std::swap(perm[i], perm[static_cast<int64_t>(r % bound)]);
  }
  return perm;
}

ShardPlanner::ShardPlanner(int64_t dataset_size, int64_t shard_size, int64_t batch_size, int workers)
    : size_(dataset_size), shard_(shard_size), batch_(std::min(batch_size, shard_size)), workers_(workers) {
  POLIS_ENFORCE_GE(shard_size, 1);
  POLIS_ENFORCE_GE(batch_size, 1);
  POLIS_ENFORCE_GE(workers, 1);
}

int64_t ShardPlanner::ShardFor(int64_t left) const {
  // left / workers, rounded down to whole batches, within [one batch, shard_size].
  const int64_t share = left / workers_ / batch_ * batch_;
  return std::clamp(share, batch_, shard_);
}

ShardPlanner::Range ShardPlanner::Next(int epoch) {
  POLIS_ENFORCE_GE(epoch, 0);
  if (cursor_.size() <= static_cast<size_t>(epoch)) {
    cursor_.resize(epoch + 1, 0);
    granted_.resize(epoch + 1, 0);
  }
  if (epoch == remaining_epoch_) {
    while (!remaining_.empty() && remaining_.front().begin >= remaining_.front().end)
      remaining_.erase(remaining_.begin());
    if (remaining_.empty()) return {0, 0};
    Range& f = remaining_.front();
    Range r{f.begin, std::min(f.end, f.begin + ShardFor(remaining_left_))};
    f.begin = r.end;
    remaining_left_ -= r.end - r.begin;
    ++granted_[epoch];
    return r;
  }
  int64_t& c = cursor_[epoch];
  Range r{c, std::min(size_, c + ShardFor(size_ - c))};
  if (r.end > r.begin) ++granted_[epoch];
  c = r.end;
  return r;
}

int64_t ShardPlanner::shards_granted(int epoch) const {
  if (granted_.size() <= static_cast<size_t>(epoch)) return 0;
  return granted_[epoch];
}

void ShardPlanner::SetRemaining(int epoch, std::vector<Range> remaining) {
  remaining_epoch_ = epoch;
  remaining_ = std::move(remaining);
  remaining_left_ = 0;
  for (const Range& r : remaining_) remaining_left_ += std::max<int64_t>(r.end - r.begin, 0);
}

}  // namespace polis::data
