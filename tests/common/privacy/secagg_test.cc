// Secure aggregation: pair seeds agree, masks cancel exactly, the decoded
// sum is the float sum within the fixed-point bound, and what a server sees
// of one worker is uncorrelated with that worker's gradient.
#include "common/privacy/secagg.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

namespace polis::privacy {
namespace {

struct Worker {
  KeyPair keys;
  std::vector<PeerSeed> seeds;
};

std::vector<Worker> MakeWorkers(int W, const std::string& session) {
  std::vector<Worker> ws;
  for (int i = 0; i < W; ++i) {
    auto kp = KeyPair::Generate();
    EXPECT_TRUE(kp.ok()) << kp.status().ToString();
    ws.push_back({*kp, {}});
  }
  for (int i = 0; i < W; ++i)
    for (int j = 0; j < W; ++j) {
      if (i == j) continue;
      auto s = AgreeSeed(ws[i].keys, ws[j].keys.public_key(), i, j, session);
      EXPECT_TRUE(s.ok()) << s.status().ToString();
      ws[i].seeds.push_back({static_cast<uint32_t>(j), *s});
    }
  return ws;
}

TEST(SecAgg, BothSidesOfAPairDeriveTheSameSeedAndMasks) {
  auto ws = MakeWorkers(3, "run-1");
  for (int i = 0; i < 3; ++i)
    for (const PeerSeed& p : ws[i].seeds) {
      // Find j's seed for i.
      for (const PeerSeed& q : ws[p.peer_index].seeds) {
        if (q.peer_index != static_cast<uint32_t>(i)) continue;
        EXPECT_EQ(p.seed, q.seed) << i << "," << p.peer_index;
      }
    }
  // Distinct pairs, and the same pair in another session, differ.
  EXPECT_NE(ws[0].seeds[0].seed, ws[0].seeds[1].seed);
  auto other = AgreeSeed(ws[0].keys, ws[1].keys.public_key(), 0, 1, "run-2");
  ASSERT_TRUE(other.ok());
  EXPECT_NE(*other, ws[0].seeds[0].seed);
  // Same seed -> identical mask streams: +mask on one side, -mask on the other.
  std::vector<uint32_t> a(1000, 0), b(1000, 0);
  Masker(0, std::vector<PeerSeed>{ws[0].seeds[0]}).Mask(5, 0, a.data(), 1000);
  Masker(1, std::vector<PeerSeed>{{0, ws[1].seeds[0].seed}}).Mask(5, 0, b.data(), 1000);
  for (int k = 0; k < 1000; ++k) ASSERT_EQ(static_cast<uint32_t>(a[k] + b[k]), 0u) << k;
  // A zero (low-order) public key is refused.
  EXPECT_FALSE(AgreeSeed(ws[0].keys, PublicKey{}, 0, 1, "run-1").ok());
}

TEST(SecAgg, MasksCancelExactlyInTheSumOverEveryRangeAndRound) {
  for (int W : {2, 3, 5, 8}) {
    auto ws = MakeWorkers(W, "cancel");
    const int64_t n = 3001;
    std::mt19937 rng(W);
    std::vector<std::vector<uint32_t>> plain(W, std::vector<uint32_t>(n));
    std::vector<uint32_t> plain_sum(n, 0);
    for (int w = 0; w < W; ++w) {
      for (auto& v : plain[w]) v = rng();
      AddModular(plain[w].data(), n, plain_sum.data());
    }
    for (uint64_t round : {0ull, 1ull, 12345ull}) {
      // A server holding the key range [1000, 3001) sums masked slices.
      for (auto [off, len] : {std::pair<int64_t, int64_t>{0, n}, {1000, n - 1000}, {7, 13}}) {
        std::vector<uint32_t> sum(len, 0);
        for (int w = 0; w < W; ++w) {
          std::vector<uint32_t> push(plain[w].begin() + off, plain[w].begin() + off + len);
          Masker(w, ws[w].seeds).Mask(round, off, push.data(), len);
          EXPECT_NE(push[0], plain[w][off]);  // masked
          AddModular(push.data(), len, sum.data());
        }
        for (int64_t k = 0; k < len; ++k) ASSERT_EQ(sum[k], plain_sum[off + k]) << W << " " << round << " " << k;
      }
    }
  }
}

// Gradient-like values: clipped per-example sums plus DP noise, within the
// per-worker bound the encoding was built for.
TEST(SecAgg, DecodedSumEqualsFloatSumWithinTheRoundingBound) {
  const int W = 4;
  const double bound = 64 * 1.0 + 10;  // batch 64 x clip 1, plus a noise margin
  auto fp = FixedPoint::For(W, bound);
  ASSERT_TRUE(fp.ok());
  EXPECT_GE(fp->max_abs(), bound);
  EXPECT_LT(W * fp->max_abs() * fp->scale(), 2147483648.0);
  auto ws = MakeWorkers(W, "sum");
  const int64_t n = 100000;
  std::mt19937 rng(3);
  std::normal_distribution<float> g(0.f, 5.f);
  std::vector<double> want(n, 0.0);
  std::vector<uint32_t> sum(n, 0);
  for (int w = 0; w < W; ++w) {
    std::vector<float> x(n);
    for (auto& v : x) v = g(rng);
    x[0] = static_cast<float>(bound);  // the extremes
    x[1] = static_cast<float>(-bound);
    for (int64_t k = 0; k < n; ++k) want[k] += x[k];
    std::vector<uint32_t> enc(n);
    ASSERT_EQ(fp->Encode(x.data(), n, enc.data()), 0);
    Masker(w, ws[w].seeds).Mask(9, 0, enc.data(), n);
    AddModular(enc.data(), n, sum.data());
  }
  std::vector<float> got(n);
  fp->Decode(sum.data(), n, got.data());
  double worst = 0;
  for (int64_t k = 0; k < n; ++k) worst = std::max(worst, std::abs(got[k] - want[k]) - 1e-7 * std::abs(want[k]));
  EXPECT_LE(worst, fp->rounding_bound() + 1e-12);
  EXPECT_NEAR(got[0], W * bound, fp->rounding_bound() + 1e-4);
  // Out-of-range values are clamped and counted, so the sum cannot wrap.
  float big[3] = {static_cast<float>(2 * fp->max_abs()), -1e30f, NAN};
  uint32_t e[3];
  EXPECT_EQ(fp->Encode(big, 3, e), 3);
}

TEST(SecAgg, FixedPointRefusesRangesThatDoNotFit) {
  EXPECT_FALSE(FixedPoint::For(0, 1).ok());
  EXPECT_FALSE(FixedPoint::For(2, 0).ok());
  EXPECT_FALSE(FixedPoint::For(4, 1e9).ok());
}

// What a server captures of one worker's push, read as signed fixed-point
// values, against that worker's true gradient: Pearson correlation within
// 5/sqrt(n) of zero over n = 1e6 (the unmasked encoding correlates ~1).
TEST(SecAgg, AMaskedPushIsUncorrelatedWithTheTrueGradient) {
  const int W = 3;
  auto ws = MakeWorkers(W, "corr");
  auto fp = FixedPoint::For(W, 100);
  ASSERT_TRUE(fp.ok());
  const int64_t n = 1000000;
  std::vector<float> grad(n);
  std::mt19937 rng(5);
  std::normal_distribution<float> g(0.f, 1.f);
  for (int64_t k = 0; k < n; ++k) grad[k] = g(rng) + 3.f * std::sin(k * 1e-3f);  // structure, not noise only
  std::vector<uint32_t> push(n);
  ASSERT_EQ(fp->Encode(grad.data(), n, push.data()), 0);
  auto corr = [&](const std::vector<uint32_t>& p) {
    double sx = 0, sy = 0, sxx = 0, syy = 0, sxy = 0;
    for (int64_t k = 0; k < n; ++k) {
      const double x = grad[k], y = static_cast<int32_t>(p[k]);
      sx += x, sy += y, sxx += x * x, syy += y * y, sxy += x * y;
    }
    const double cov = sxy / n - sx / n * sy / n;
    return cov / std::sqrt((sxx / n - sx / n * sx / n) * (syy / n - sy / n * sy / n));
  };
  EXPECT_GT(corr(push), 0.99);
  Masker(1, ws[1].seeds).Mask(0, 0, push.data(), n);
  EXPECT_LT(std::abs(corr(push)), 5 / std::sqrt(static_cast<double>(n)));
}

}  // namespace
}  // namespace polis::privacy
