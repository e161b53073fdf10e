#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "common/device/device.h"
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

namespace polis {
namespace {

TEST(AdamW, DecoupledDecayShrinksFirst) {
  proto::OptimizerSpec spec;
  spec.set_type(proto::OptimizerSpec::ADAMW);
  spec.set_learning_rate(0.01f);
  spec.set_weight_decay(0.1f);
  auto opt = MakeOptimizer(spec, 1);
  ASSERT_TRUE(opt.ok());
  float p = 2.0f, g = 0.5f;
  (*opt)->Step(&p, &g);
  // p * (1 - lr*wd) - lr * g/|g| (first Adam step is lr * sign(g)).
  EXPECT_NEAR(p, 2.0 * (1 - 0.001) - 0.01 * 0.5 / (0.5 + 1e-7), 1e-6);
}

TEST(Sgd, NesterovStep) {
  proto::OptimizerSpec spec;
  spec.set_type(proto::OptimizerSpec::SGD);
  spec.set_learning_rate(0.1f);
  spec.set_momentum(0.9f);
  spec.set_nesterov(true);
  auto opt = MakeOptimizer(spec, 1);
  ASSERT_TRUE(opt.ok());
  float p = 1.0f, g = 1.0f;
  (*opt)->Step(&p, &g);  // v = 1; p -= 0.1 * (1 + 0.9 * 1)
  EXPECT_FLOAT_EQ(p, 1.0f - 0.19f);
  (*opt)->Step(&p, &g);  // v = 1.9; p -= 0.1 * (1 + 0.9 * 1.9)
  EXPECT_FLOAT_EQ(p, 1.0f - 0.19f - 0.1f * (1.0f + 0.9f * 1.9f));
}

TEST(Sgd, WeightDecayIsL2) {
  proto::OptimizerSpec spec;
  spec.set_type(proto::OptimizerSpec::SGD);
  spec.set_learning_rate(0.1f);
  spec.set_weight_decay(0.5f);
  auto opt = MakeOptimizer(spec, 1);
  float p = 2.0f, g = 0.0f;
  (*opt)->Step(&p, &g);
  EXPECT_FLOAT_EQ(p, 2.0f - 0.1f * 0.5f * 2.0f);
}

TEST(Sgd, PlainStepsUseOnlyThisStepsGradient) {
  proto::OptimizerSpec spec;
  spec.set_type(proto::OptimizerSpec::SGD);
  spec.set_learning_rate(0.1f);
  spec.set_weight_decay(0.01f);
  auto opt = MakeOptimizer(spec, 2);
  float p[2] = {1.0f, -2.0f}, ref[2] = {1.0f, -2.0f};
  const float g[3][2] = {{0.5f, 1.0f}, {-0.25f, 2.0f}, {3.0f, -1.0f}};
  for (const auto& gs : g) {
    (*opt)->Step(p, gs);
    for (int i = 0; i < 2; ++i) ref[i] -= 0.1f * (gs[i] + 0.01f * ref[i]);
  }
  EXPECT_EQ(p[0], ref[0]);
  EXPECT_EQ(p[1], ref[1]);
}

TEST(Schedule, WarmupStepAndCosine) {
  proto::OptimizerSpec spec;
  spec.set_learning_rate(1.0f);
  auto* s = spec.mutable_schedule();
  s->set_warmup_steps(4);
  EXPECT_DOUBLE_EQ(ScheduledLearningRate(spec, 1, 0), 0.25);
  EXPECT_DOUBLE_EQ(ScheduledLearningRate(spec, 4, 0), 1.0);
  EXPECT_DOUBLE_EQ(ScheduledLearningRate(spec, 100, 0), 1.0);
  s->set_type(proto::LrSchedule::STEP);
  s->set_step_size(10);
  s->set_gamma(0.5f);
  EXPECT_DOUBLE_EQ(ScheduledLearningRate(spec, 5, 0), 1.0);    // first update after warm-up
  EXPECT_DOUBLE_EQ(ScheduledLearningRate(spec, 14, 0), 1.0);
  EXPECT_DOUBLE_EQ(ScheduledLearningRate(spec, 15, 0), 0.5);
  EXPECT_DOUBLE_EQ(ScheduledLearningRate(spec, 25, 0), 0.25);
  s->set_type(proto::LrSchedule::COSINE);
  s->set_min_lr(0.1f);
  // Total from the hint: 104 updates, 100 after warm-up.
  EXPECT_NEAR(ScheduledLearningRate(spec, 5, 104), 1.0, 1e-12);
  EXPECT_NEAR(ScheduledLearningRate(spec, 55, 104), 0.1 + 0.9 * 0.5 * (1 + std::cos(M_PI * 0.5)), 1e-6);
  EXPECT_NEAR(ScheduledLearningRate(spec, 104, 104), 0.1 + 0.9 * 0.5 * (1 + std::cos(M_PI * 0.99)), 1e-6);
  EXPECT_NEAR(ScheduledLearningRate(spec, 500, 104), 0.1, 1e-6);  // clamped after the end
}

TEST(Schedule, AdamUsesTheScheduledRate) {
  proto::OptimizerSpec spec;
  spec.set_learning_rate(0.01f);
  spec.mutable_schedule()->set_warmup_steps(2);
  auto opt = MakeOptimizer(spec, 1);
  float p = 0.0f, g = 1.0f;
  (*opt)->Step(&p, &g);  // lr 0.005, first Adam step moves by lr * sign(g)
  EXPECT_NEAR(p, -0.005, 1e-7);
  EXPECT_NEAR((*opt)->current_lr(), 0.01, 1e-9);
}

TEST(Optimizer, StateRoundTripsForCheckpoints) {
  proto::OptimizerSpec spec;
  auto a = MakeOptimizer(spec, 4);
  std::vector<float> p(4, 1.0f), g = {0.1f, -0.2f, 0.3f, -0.4f};
  (*a)->Step(p.data(), g.data());
  (*a)->Step(p.data(), g.data());
  auto b = MakeOptimizer(spec, 4);
  auto sa = (*a)->State(), sb = (*b)->State();
  for (size_t i = 0; i < sa.size(); ++i) *sb[i].second = *sa[i].second;
  (*b)->set_step_count((*a)->step_count());
  std::vector<float> pb = p;
  (*a)->Step(p.data(), g.data());
  (*b)->Step(pb.data(), g.data());
  EXPECT_EQ(p, pb);  // bit-exact
}

// Update over spans on the CPU device is Step; mismatched sizes are refused
// with the counts, not run past the end.
TEST(Optimizer, UpdateOverHostSpansIsStep) {
  proto::OptimizerSpec spec;
  auto a = MakeOptimizer(spec, 4);
  auto b = MakeOptimizer(spec, 4);
  auto cpu = device::CpuDevice();
  std::vector<float> p(4, 1.0f), g = {0.1f, -0.2f, 0.3f, -0.4f};
  std::vector<float> pb = p;
  for (int i = 0; i < 3; ++i) {
    (*a)->Step(p.data(), g.data());
    Status st = (*b)->Update(device::HostSpan(pb.data(), 4), device::HostSpan<const float>(g.data(), 4), cpu->stream());
    ASSERT_TRUE(st.ok()) << st.ToString();
  }
  EXPECT_EQ(p, pb);
  EXPECT_EQ((*b)->step_count(), 3);
  // The CPU device's "device" memory is host memory: it updates too.
  auto buf = cpu->Allocate(4, device::Space::kDevice);
  ASSERT_TRUE(buf.ok());
  std::copy(pb.begin(), pb.end(), buf->span().data);
  EXPECT_TRUE((*b)->Update(buf->span(), device::HostSpan<const float>(g.data(), 4), cpu->stream()).ok());
  Status bad = (*b)->Update(device::HostSpan(pb.data(), 3), device::HostSpan<const float>(g.data(), 4), cpu->stream());
  EXPECT_FALSE(bad.ok());
  EXPECT_NE(bad.message().find("3 parameters with 4 gradients"), std::string::npos) << bad.message();
}

}  // namespace
}  // namespace polis
