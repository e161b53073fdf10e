// DpPlan: what every rank of a DP-SGD job derives from the job, the
// cluster's size and the job's key (common/privacy/dp_plan.h).
#include "common/privacy/dp_plan.h"

#include <gtest/gtest.h>

#include <google/protobuf/text_format.h>

namespace polis::privacy {
namespace {

proto::JobSpec Job(const std::string& privacy, int batch = 32, int epochs = 3) {
  proto::JobSpec spec;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(
      "training { batch_size: " + std::to_string(batch) + " epochs: " + std::to_string(epochs) + " } privacy { " +
          privacy + " }",
      &spec));
  return spec;
}

const Key256 kKey = KeyFromNumber("dp plan test", 7);

TEST(DpPlan, FiguresFromTheJob) {
  auto plan = MakeDpPlan(Job("noise_multiplier: 1.1 delta: 1e-5 max_grad_norm: 2"), 2, 1000, kKey);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  ASSERT_TRUE(plan->has_value());
  const DpPlan& p = **plan;
  EXPECT_EQ(p.expected_batch, 64);  // 32 a worker × 2 workers
  EXPECT_DOUBLE_EQ(p.q, 0.064);
  EXPECT_EQ(p.steps_per_epoch, 16);  // ceil(1000 / 64)
  EXPECT_EQ(p.planned_steps, 48);
  EXPECT_DOUBLE_EQ(p.sigma, 1.1);
  EXPECT_DOUBLE_EQ(p.clip, 2);
  EXPECT_DOUBLE_EQ(p.AveragedNoiseStddev(), 1.1 * 2 / 64);
  EXPECT_EQ(p.target_epsilon, 0);
  // ε grows with the steps and is what the accountant gives for them.
  RdpAccountant acc;
  acc.Step(p.q, p.sigma, 30);
  EXPECT_NEAR(p.EpsilonAfter(30), acc.Spent(1e-5).epsilon, 1e-9);
  EXPECT_EQ(p.EpsilonAfter(0), 0);
  EXPECT_LT(p.EpsilonAfter(10), p.EpsilonAfter(30));
}

TEST(DpPlan, TargetEpsilonIsSpentByThePlannedSteps) {
  auto plan = MakeDpPlan(Job("target_epsilon: 3 delta: 1e-5 max_grad_norm: 1", 64, 5), 4, 60000, kKey);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  const DpPlan& p = **plan;
  EXPECT_EQ(p.planned_steps, 5 * 235);  // ceil(60000 / 256) = 235
  EXPECT_LE(p.EpsilonAfter(p.planned_steps), 3.0);
  EXPECT_GT(p.EpsilonAfter(p.planned_steps), 2.99);
  EXPECT_GT(p.sigma, 0.5);
  const nlohmann::json r = p.Record(p.planned_steps, false);
  EXPECT_EQ(r["target_epsilon"], 3.0);
  EXPECT_EQ(r["sampler"], "poisson");
  EXPECT_EQ(r["accountant"], "rdp");
  EXPECT_EQ(r["steps"], p.planned_steps);
  EXPECT_DOUBLE_EQ(r["epsilon"].get<double>(), p.EpsilonAfter(p.planned_steps));
}

TEST(DpPlan, KeysPerPurposeAndPerJob) {
  auto a = MakeDpPlan(Job("noise_multiplier: 1 delta: 1e-5 max_grad_norm: 1"), 1, 100, kKey);
  auto b = MakeDpPlan(Job("noise_multiplier: 1 delta: 1e-5 max_grad_norm: 1"), 1, 100, kKey);
  auto c = MakeDpPlan(Job("noise_multiplier: 1 delta: 1e-5 max_grad_norm: 1"), 1, 100, KeyFromNumber("other", 7));
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_NE((*a)->sample_key, (*a)->noise_key);  // independent streams
  EXPECT_EQ((*a)->sample_key, (*b)->sample_key);  // every rank derives the same
  EXPECT_EQ((*a)->noise_key, (*b)->noise_key);
  EXPECT_NE((*a)->noise_key, (*c)->noise_key);
  EXPECT_NE((*a)->sample_key, kKey);
}

TEST(DpPlan, NoneWithoutDpSgdAndClearRefusals) {
  proto::JobSpec plain = Job("secure_aggregation: true");
  auto none = MakeDpPlan(plain, 2, 1000, kKey);
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  EXPECT_FALSE(WantsDpSgd(plain));

  auto big = MakeDpPlan(Job("noise_multiplier: 1 delta: 1e-5 max_grad_norm: 1", 600), 2, 1000, kKey);
  ASSERT_FALSE(big.ok());
  EXPECT_NE(big.status().message().find("1200 expected examples a step"), std::string::npos)
      << big.status().message();
}

}  // namespace
}  // namespace polis::privacy
