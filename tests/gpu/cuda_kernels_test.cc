// The device loss and optimizers against the CPU's: nn::ComputeLoss for
// every loss, and MakeOptimizer (common/optimizer.cc) for SGD (plain,
// momentum, Nesterov), Adam and AdamW with weight decay and schedules.
// The optimizer kernels avoid FMA contraction, so parameters are expected
// equal up to 1 ulp-level noise (bound 1e-6 relative).
#include <google/protobuf/text_format.h>

#include <random>

#include "common/nn/model.h"
#include "common/optimizer.h"
#include "tests/gpu/gpu_test_util.h"

namespace polis::gpu_test {
namespace {

using nn::cuda::CudaLoss;
using nn::cuda::CudaOptimizer;

TEST(CudaLoss, MatchesComputeLossForEveryLoss) {
  POLIS_REQUIRE_GPU();
  const int64_t n = 37, k = 10;
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-3.f, 3.f);
  for (auto kind : {proto::ModelSpec::SOFTMAX_CROSS_ENTROPY, proto::ModelSpec::MSE,
                    proto::ModelSpec::MAE, proto::ModelSpec::HUBER}) {
    SCOPED_TRACE(proto::ModelSpec::Loss_Name(kind));
    proto::ModelSpec spec;
    spec.set_loss(kind);
    spec.set_huber_delta(0.7f);
    const bool cls = kind == proto::ModelSpec::SOFTMAX_CROSS_ENTROPY;
    std::vector<float> out(n * k), y(cls ? n : n * k), dout(n * k);
    for (float& v : out) v = u(rng);
    for (float& v : y) v = cls ? static_cast<float>(rng() % k) : u(rng);
    nn::LossStats want = nn::ComputeLoss(spec, out.data(), y.data(), n, k, dout.data(), 0.25f);
    DeviceArray<float> d_out, d_y, d_dout;
    POLIS_ASSERT_OK(d_out.Allocate(n * k));
    POLIS_ASSERT_OK(d_y.Allocate(static_cast<int64_t>(y.size())));
    POLIS_ASSERT_OK(d_dout.Allocate(n * k));
    ToDevice(out, d_out.get());
    ToDevice(y, d_y.get());
    auto loss = CudaLoss::Create(spec, n, k);
    ASSERT_TRUE(loss.ok()) << loss.status().ToString();
    POLIS_ASSERT_OK((*loss)->Compute(d_out.get(), d_y.get(), d_dout.get(), 0.25f, nullptr));
    auto got = (*loss)->Read(nullptr);
    ASSERT_TRUE(got.ok());
    EXPECT_NEAR(got->loss_sum, want.loss_sum, 1e-9 * std::abs(want.loss_sum));
    EXPECT_EQ(got->correct, want.correct);
    EXPECT_LT(RelErr(FromDevice(d_dout.get(), n * k), dout), 1e-6);
  }
}

proto::OptimizerSpec ParseOptimizer(const std::string& text) {
  proto::OptimizerSpec spec;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &spec)) << text;
  return spec;
}

TEST(CudaOptimizer, MatchesCpuOptimizers) {
  POLIS_REQUIRE_GPU();
  const char* specs[] = {
      "type: SGD learning_rate: 0.1",
      "type: SGD learning_rate: 0.05 momentum: 0.9 weight_decay: 0.01",
      "type: SGD learning_rate: 0.05 momentum: 0.9 nesterov: true schedule { type: STEP step_size: 2 gamma: 0.5 }",
      "type: ADAM learning_rate: 0.002 weight_decay: 0.001 schedule { type: COSINE warmup_steps: 2 total_steps: 6 }",
      "type: ADAMW learning_rate: 0.001 weight_decay: 0.05 beta2: 0.98",
  };
  const int64_t n = 10007;
  for (const char* text : specs) {
    SCOPED_TRACE(text);
    const proto::OptimizerSpec spec = ParseOptimizer(text);
    std::mt19937 rng(11);
    std::uniform_real_distribution<float> u(-1.f, 1.f);
    std::vector<float> p(n), g(n);
    for (float& v : p) v = u(rng);
    auto cpu = MakeOptimizer(spec, n, 6);
    auto gpu = CudaOptimizer::Create(spec, n, 6);
    ASSERT_TRUE(cpu.ok() && gpu.ok());
    DeviceArray<float> dp, dg;
    POLIS_ASSERT_OK(dp.Allocate(n));
    POLIS_ASSERT_OK(dg.Allocate(n));
    ToDevice(p, dp.get());
    for (int step = 0; step < 6; ++step) {
      for (float& v : g) v = u(rng);
      ToDevice(g, dg.get());
      (*cpu)->Step(p.data(), g.data());
      POLIS_ASSERT_OK((*gpu)->Step(dp.get(), dg.get(), nullptr));
      EXPECT_DOUBLE_EQ((*gpu)->current_lr(), (*cpu)->current_lr());
    }
    EXPECT_EQ((*gpu)->step_count(), 6);
    EXPECT_LT(RelErr(FromDevice(dp.get(), n), p), 1e-6);
    auto cpu_state = (*cpu)->State();
    auto gpu_state = (*gpu)->DeviceState();
    ASSERT_EQ(cpu_state.size(), gpu_state.size());
    for (size_t i = 0; i < cpu_state.size(); ++i) {
      EXPECT_EQ(cpu_state[i].first, gpu_state[i].first);
      EXPECT_LT(RelErr(FromDevice(gpu_state[i].second, n), *cpu_state[i].second), 1e-6);
    }
  }
}

}  // namespace
}  // namespace polis::gpu_test
