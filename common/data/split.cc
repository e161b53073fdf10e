#include "common/data/split.h"

#include <algorithm>
#include <cmath>

#include "common/data/shard_plan.h"

namespace polis::data {
namespace {

// Mixed into the seed so the split's shuffles differ from the epochs' ones.
constexpr uint64_t kSplitSalt = 0x76616c6964617465ull;  // "validate"

// How many of each class go to validation: proportional quotas, the
// remainder to the largest fractional parts.
std::vector<int64_t> Quotas(const std::vector<int64_t>& per_class, int64_t n, int64_t count) {
  const size_t k = per_class.size();
  std::vector<int64_t> quota(k);
  std::vector<std::pair<int64_t, size_t>> remainder;  // (n_c * count mod n, class)
  int64_t taken = 0;
  for (size_t c = 0; c < k; ++c) {
    const __int128 scaled = static_cast<__int128>(per_class[c]) * count;
    quota[c] = static_cast<int64_t>(scaled / n);
    remainder.emplace_back(static_cast<int64_t>(scaled % n), c);
    taken += quota[c];
  }
  std::stable_sort(remainder.begin(), remainder.end(),
                   [](const auto& a, const auto& b) { return a.first > b.first; });
  for (size_t i = 0; taken < count && i < k; ++i) {
    const size_t c = remainder[i].second;
    if (quota[c] < per_class[c]) {
      ++quota[c];
      ++taken;
    }
  }
  return quota;
}

}  // namespace

TrainValidationSplit StratifiedSplit(const std::vector<int32_t>& labels, int num_classes, int64_t count,
                                     uint64_t seed) {
  const int64_t n = static_cast<int64_t>(labels.size());
  count = std::clamp<int64_t>(count, 0, n);
  std::vector<std::vector<int64_t>> members(num_classes);
  for (int64_t i = 0; i < n; ++i) members[labels[i]].push_back(i);
  std::vector<int64_t> per_class(num_classes);
  for (int c = 0; c < num_classes; ++c) per_class[c] = static_cast<int64_t>(members[c].size());
  const std::vector<int64_t> quota = n > 0 ? Quotas(per_class, n, count) : per_class;
  std::vector<bool> held(n, false);
  for (int c = 0; c < num_classes && n > 0; ++c) {
    const std::vector<int64_t> order = EpochPermutation(seed ^ kSplitSalt, c, per_class[c]);
    for (int64_t j = 0; j < quota[c]; ++j) held[members[c][order[j]]] = true;
  }
  TrainValidationSplit out;
  out.validation.reserve(count);
  out.train.reserve(n - count);
  for (int64_t i = 0; i < n; ++i) (held[i] ? out.validation : out.train).push_back(i);
  return out;
}

int64_t ValidationCount(const proto::DatasetSpec& spec, int64_t train_samples) {
  if (spec.validation_size() > 0) return std::min(spec.validation_size(), train_samples);
  return std::llround(static_cast<double>(spec.validation_fraction()) * static_cast<double>(train_samples));
}

}  // namespace polis::data
