// Poisson sampling across workers: every example joins a step with
// probability q independently, each worker draws only its own examples,
// and the draws are reproducible from (key, step, worker).
#include "common/privacy/poisson.h"

#include <gtest/gtest.h>

#include <cmath>
#include <set>

namespace polis::privacy {
namespace {

const Key256 kKey = KeyFromNumber("poisson-test", 7);

TEST(PoissonSample, ReproducibleOwnedAscendingAndDisjoint) {
  const int W = 3;
  const int64_t n = 1000;
  std::set<int64_t> all;
  size_t total = 0;
  for (int w = 0; w < W; ++w) {
    auto s = PoissonSample(kKey, 5, w, W, n, 0.1);
    EXPECT_EQ(s, PoissonSample(kKey, 5, w, W, n, 0.1));
    EXPECT_NE(s, PoissonSample(kKey, 6, w, W, n, 0.1));
    for (size_t k = 0; k < s.size(); ++k) {
      EXPECT_EQ(s[k] % W, w);
      EXPECT_GE(s[k], 0);
      EXPECT_LT(s[k], n);
      if (k > 0) EXPECT_LT(s[k - 1], s[k]);
    }
    all.insert(s.begin(), s.end());
    total += s.size();
  }
  EXPECT_EQ(all.size(), total);
  EXPECT_TRUE(PoissonSample(kKey, 1, 0, W, n, 0).empty());
  EXPECT_EQ(PoissonSample(kKey, 1, 1, W, n, 1).size(), 333u);  // 1, 4, ..., 997
  EXPECT_TRUE(PoissonSample(kKey, 1, 2, W, 2, 0.5).empty());   // owns nothing of [0, 2)
}

// Over many steps: the batch size has mean qN and variance qN(1 - q), each
// example joins with frequency q, and two examples join together with
// frequency q² (independence). Bounds are 5 standard errors.
TEST(PoissonSample, SizesAndInclusionFrequenciesMatchTheBernoulliModel) {
  const int W = 4;
  const int64_t n = 2000;
  const double q = 0.05;
  const int steps = 4000;
  std::vector<int64_t> hits(n, 0);
  int64_t both = 0;  // examples 0 and 1: different workers
  double sum = 0, sum_sq = 0;
  for (int t = 0; t < steps; ++t) {
    int64_t size = 0;
    bool has0 = false, has1 = false;
    for (int w = 0; w < W; ++w) {
      for (int64_t i : PoissonSample(kKey, t, w, W, n, q)) {
        ++hits[i];
        has0 |= i == 0;
        has1 |= i == 1;
        ++size;
      }
    }
    both += has0 && has1;
    sum += static_cast<double>(size);
    sum_sq += static_cast<double>(size) * static_cast<double>(size);
  }
  const double mean = sum / steps, var = sum_sq / steps - mean * mean;
  const double want_mean = q * n, want_var = q * (1 - q) * n;
  EXPECT_NEAR(mean, want_mean, 5 * std::sqrt(want_var / steps));
  EXPECT_NEAR(var, want_var, 5 * want_var * std::sqrt(2.0 / steps));
  // Every example's frequency: mean q, spread of a binomial(steps, q) / steps.
  const double sd = std::sqrt(q * (1 - q) / steps);
  double max_dev = 0;
  for (int64_t c : hits) max_dev = std::max(max_dev, std::abs(static_cast<double>(c) / steps - q));
  EXPECT_LT(max_dev, 5 * sd);  // 2000 examples: 5 sd leaves room for the largest
  EXPECT_NEAR(static_cast<double>(both) / steps, q * q, 5 * std::sqrt(q * q / steps));
}

}  // namespace
}  // namespace polis::privacy
