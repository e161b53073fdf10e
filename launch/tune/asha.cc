#include "launch/tune/asha.h"

#include <algorithm>

namespace polis::tune {

std::vector<int> RungEpochs(int grace_period, int reduction_factor, int max_epochs) {
  std::vector<int> out;
  long long e = std::max(1, grace_period);
  while (e < max_epochs) {
    out.push_back(static_cast<int>(e));
    e *= std::max(2, reduction_factor);
  }
  out.push_back(max_epochs);
  return out;
}

std::optional<Promotion> NextPromotion(const std::vector<std::vector<RungResult>>& rungs,
                                       const std::vector<std::set<int>>& promoted, int reduction_factor,
                                       bool maximize) {
  for (int k = static_cast<int>(rungs.size()) - 2; k >= 0; --k) {
    std::vector<RungResult> sorted = rungs[k];
    std::stable_sort(sorted.begin(), sorted.end(), [&](const RungResult& a, const RungResult& b) {
      if (a.value != b.value) return maximize ? a.value > b.value : a.value < b.value;
      return a.trial < b.trial;
    });
    const size_t top = sorted.size() / static_cast<size_t>(reduction_factor);
    for (size_t i = 0; i < top; ++i) {
      const bool done = k < static_cast<int>(promoted.size()) && promoted[k].count(sorted[i].trial) > 0;
      if (!done) return Promotion{sorted[i].trial, k + 1};
    }
  }
  return std::nullopt;
}

}  // namespace polis::tune
