// Clipping by global norm (common/grad_clip.h) against hand-computed values
// and torch.nn.utils.clip_grad_norm_'s formula.
#include "common/grad_clip.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

namespace polis {
namespace {

TEST(GradClip, ScalesAGradientAboveTheBound) {
  // g = (3, 4, 0, 12): norm 13; max 6.5 -> coefficient 6.5 / (13 + 1e-6).
  std::vector<float> g = {3, 4, 0, 12};
  const double norm = ClipByGlobalNorm(g.data(), 4, 6.5);
  EXPECT_DOUBLE_EQ(norm, 13.0);
  const float c = static_cast<float>(6.5 / (13.0 + 1e-6));
  EXPECT_FLOAT_EQ(g[0], 3 * c);
  EXPECT_FLOAT_EQ(g[1], 4 * c);
  EXPECT_FLOAT_EQ(g[3], 12 * c);
  EXPECT_NEAR(std::sqrt(SquaredNorm(g.data(), 4)), 6.5, 1e-5);
}

TEST(GradClip, LeavesAGradientWithinTheBound) {
  std::vector<float> g = {0.3f, -0.4f};  // norm 0.5
  ClipByGlobalNorm(g.data(), 2, 1.0);
  EXPECT_EQ(g[0], 0.3f);
  EXPECT_EQ(g[1], -0.4f);
  EXPECT_EQ(ClipCoefficient(0.5, 1.0), 1.0f);
}

// Two parameter servers holding (3, 4) and (12): each scales its own range
// by the coefficient of the combined norm, as one buffer would be.
TEST(GradClip, PartialNormsAcrossRangesGiveTheWholeBuffersClip) {
  std::vector<float> whole = {3, 4, 12}, a = {3, 4}, b = {12};
  ClipByGlobalNorm(whole.data(), 3, 1.0);
  const double norm = std::sqrt(SquaredNorm(a.data(), 2) + SquaredNorm(b.data(), 1));
  EXPECT_DOUBLE_EQ(norm, 13.0);
  ScaleGradient(a.data(), 2, ClipCoefficient(norm, 1.0));
  ScaleGradient(b.data(), 1, ClipCoefficient(norm, 1.0));
  EXPECT_EQ(a[0], whole[0]);
  EXPECT_EQ(a[1], whole[1]);
  EXPECT_EQ(b[0], whole[2]);
}

}  // namespace
}  // namespace polis
