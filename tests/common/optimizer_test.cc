#include <gtest/gtest.h>

#include <cmath>

#include "common/optimizer.h"

namespace polis {
namespace {

TEST(Adam, MatchesHandComputedSteps) {
  proto::OptimizerSpec spec;  // defaults: lr 1e-3, b1 0.9, b2 0.999, eps 1e-7
  auto opt = MakeOptimizer(spec, 3);
  ASSERT_TRUE(opt.ok());
  std::vector<float> p = {1.0f, -2.0f, 0.5f};
  const std::vector<float> g1 = {0.1f, -0.2f, 0.0f};
  (*opt)->Step(p.data(), g1.data());
  // Step 1: m = 0.1 g, v = 0.001 g^2; mhat = g, vhat = g^2, so the update is
  // lr * g / (|g| + eps) = lr * sign(g) (0 where g is 0).
  EXPECT_NEAR(p[0], 1.0 - 1e-3 * 0.1 / (0.1 + 1e-7), 1e-7);
  EXPECT_NEAR(p[1], -2.0 + 1e-3 * 0.2 / (0.2 + 1e-7), 1e-7);
  EXPECT_FLOAT_EQ(p[2], 0.5f);
  // Step 2 by hand, in double.
  const std::vector<float> g2 = {0.3f, 0.1f, -0.4f};
  double m[3], v[3], expect[3];
  for (int i = 0; i < 3; ++i) {
    double m1 = 0.1 * g1[i], v1 = 0.001 * g1[i] * g1[i];
    m[i] = 0.9 * m1 + 0.1 * g2[i];
    v[i] = 0.999 * v1 + 0.001 * g2[i] * g2[i];
    double mhat = m[i] / (1 - 0.81), vhat = v[i] / (1 - 0.999 * 0.999);
    expect[i] = p[i] - 1e-3 * mhat / (std::sqrt(vhat) + 1e-7);
  }
  (*opt)->Step(p.data(), g2.data());
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(p[i], expect[i], 2e-7) << i;
  EXPECT_EQ((*opt)->step_count(), 2);
}

TEST(Sgd, MomentumStep) {
  proto::OptimizerSpec spec;
  spec.set_type(proto::OptimizerSpec::SGD);
  spec.set_learning_rate(0.1f);
  spec.set_momentum(0.9f);
  auto opt = MakeOptimizer(spec, 1);
  ASSERT_TRUE(opt.ok());
  float p = 1.0f, g = 1.0f;
  (*opt)->Step(&p, &g);
  EXPECT_FLOAT_EQ(p, 0.9f);
  (*opt)->Step(&p, &g);
  EXPECT_FLOAT_EQ(p, 0.9f - 0.1f * 1.9f);
}

TEST(MakeOptimizer, RefusesBadSettings) {
  proto::OptimizerSpec spec;
  spec.set_learning_rate(0);
  auto opt = MakeOptimizer(spec, 1);
  ASSERT_FALSE(opt.ok());
  EXPECT_NE(opt.status().message().find("learning_rate"), std::string::npos);
}

}  // namespace
}  // namespace polis
