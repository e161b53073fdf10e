// DP noise: N(0, σ²C²) per coordinate, reproducible per (key, step, share),
// and W shares that sum to exactly that variance.
#include "common/privacy/noise.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

namespace polis::privacy {
namespace {

struct Moments {
  double mean = 0, var = 0, kurt = 0;
};
Moments Of(const std::vector<float>& x) {
  Moments m;
  for (float v : x) m.mean += v;
  m.mean /= static_cast<double>(x.size());
  double m4 = 0;
  for (float v : x) {
    const double d = v - m.mean;
    m.var += d * d;
    m4 += d * d * d * d;
  }
  m.var /= static_cast<double>(x.size() - 1);
  m.kurt = m4 / static_cast<double>(x.size()) / (m.var * m.var);
  return m;
}

// n = 1e6 draws: the sample mean's stddev is σC/1000 and the sample
// variance's relative stddev sqrt(2/n) = 0.0014; the bounds are 5 of those.
TEST(Noise, MeanAndVarianceWithAFixedKey) {
  const Key256 key = KeyFromNumber("noise-test", 42);
  const double sigma = 1.1, clip = 0.5, sd = NoiseStddev(sigma, clip);
  EXPECT_DOUBLE_EQ(sd, 0.55);
  const int64_t n = 1000000;
  std::vector<float> x(n, 0.f);
  AddGaussianNoise(key, 7, 0, sd, 0, x.data(), n);
  const Moments m = Of(x);
  EXPECT_NEAR(m.mean, 0, 5 * sd / 1000);
  EXPECT_NEAR(m.var / (sd * sd), 1.0, 5 * std::sqrt(2.0 / n));
  EXPECT_NEAR(m.kurt, 3.0, 0.05);  // Gaussian tails, not uniform (1.8)
  // Coordinates are uncorrelated with their neighbours (Box–Muller pairs).
  double c = 0;
  for (int64_t i = 0; i + 1 < n; ++i) c += x[i] * x[i + 1];
  EXPECT_NEAR(c / (n - 1) / (sd * sd), 0, 5e-3);
}

TEST(Noise, ReproduciblePerKeyStepAndShareAndSliceable) {
  const Key256 key = KeyFromNumber("noise-test", 1);
  const int64_t n = 1001;
  std::vector<float> a(n, 0.f), b(n, 0.f), other_step(n, 0.f), other_share(n, 0.f), other_key(n, 0.f);
  AddGaussianNoise(key, 3, 0, 1.0, 0, a.data(), n);
  AddGaussianNoise(key, 3, 0, 1.0, 0, b.data(), n);
  EXPECT_EQ(a, b);
  AddGaussianNoise(key, 4, 0, 1.0, 0, other_step.data(), n);
  AddGaussianNoise(key, 3, 1, 1.0, 0, other_share.data(), n);
  AddGaussianNoise(KeyFromNumber("noise-test", 2), 3, 0, 1.0, 0, other_key.data(), n);
  EXPECT_NE(a, other_step);
  EXPECT_NE(a, other_share);
  EXPECT_NE(a, other_key);
  // Any key range, drawn on its own (odd offsets split a Box–Muller pair),
  // equals that slice of the whole.
  for (int64_t off : {0, 1, 17, 500, 999}) {
    const int64_t len = std::min<int64_t>(n - off, 77);
    std::vector<float> s(len, 0.f);
    AddGaussianNoise(key, 3, 0, 1.0, off, s.data(), len);
    for (int64_t i = 0; i < len; ++i) ASSERT_EQ(s[i], a[off + i]) << off << "+" << i;
  }
}

// Split mode: W workers each add share w with stddev σC/√W; the sum of
// their vectors has variance σ²C² (and zero mean).
TEST(Noise, SharesSumToTheFullVariance) {
  const Key256 key = KeyFromNumber("noise-test", 9);
  const int W = 5;
  const double sigma = 1.3, clip = 2.0;
  const int64_t n = 400000;
  std::vector<float> sum(n, 0.f);
  for (int w = 0; w < W; ++w) AddGaussianNoise(key, 11, w, NoiseStddev(sigma, clip, W), 0, sum.data(), n);
  const Moments m = Of(sum);
  const double sd = sigma * clip;
  EXPECT_NEAR(m.mean, 0, 5 * sd / std::sqrt(n));
  EXPECT_NEAR(m.var / (sd * sd), 1.0, 5 * std::sqrt(2.0 / n));
}

}  // namespace
}  // namespace polis::privacy
