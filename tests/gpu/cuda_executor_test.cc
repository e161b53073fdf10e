// The CUDA backend through the interfaces the worker drives: the device,
// the executor, the loss and the replica's staging, against the CPU backend
// on the same model, parameters and batch.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include <google/protobuf/text_format.h>

#include "common/backend/backend.h"
#include "common/device/cuda/cuda_device.h"
#include "tests/gpu/gpu_test_util.h"
#include "worker/replica.h"

namespace polis::gpu_test {
namespace {

// The seed CNN's shape, smaller: two dense layers after the pool.
const char* kCnn = R"(
  layer { type: "Conv2D" activation: RELU conv2d_param { filters: 8 kernel_size: 3 padding: SAME } }
  layer { type: "MaxPool2D" } layer { type: "Flatten" }
  layer { type: "Dense" activation: RELU dense_param { units: 32 } }
  layer { type: "Dense" dense_param { units: 10 } })";

struct Step {
  std::vector<float> grads;
  nn::LossStats loss;
  std::vector<int> layers_done;
};

// One training step of `model` on `kind` through backend.h and Replica.
Step RunStep(device::Kind kind, const nn::Model& model, const proto::ModelSpec& spec, std::vector<float> params,
             const std::vector<float>& x, const std::vector<float>& labels, int64_t B) {
  Step out;
  const int64_t P = model.parameter_count(), K = nn::ShapeElements(model.output_shape());
  const int64_t in = nn::ShapeElements(model.input_shape());
  std::vector<float> grads(P);
  auto dev = backend::OpenDevice(kind);
  EXPECT_TRUE(dev.ok()) << dev.status().ToString();
  if (!dev.ok()) return out;
  auto replica = worker::Replica::Create(**dev, params.data(), grads.data(), {P, 0, B, in, K}, model,
                                        /*device_collectives=*/false);
  EXPECT_TRUE(replica.ok()) << replica.status().ToString();
  auto ex = backend::MakeExecutor(**dev, model, B, (*replica)->params(), (*replica)->grads(), nn::ExecutorOptions{});
  EXPECT_TRUE(ex.ok()) << ex.status().ToString();
  auto loss = backend::MakeLoss(**dev, spec, B, K);
  EXPECT_TRUE(loss.ok()) << loss.status().ToString();
  if (!replica.ok() || !ex.ok() || !loss.ok()) return out;
  std::copy(x.begin(), x.end(), (*replica)->HostInput(**ex));
  std::copy(labels.begin(), labels.end(), (*replica)->HostTargets());
  auto targets = (*replica)->LoadBatch(**ex, B);
  EXPECT_TRUE(targets.ok());
  const int layers = static_cast<int>(model.layers().size());
  EXPECT_TRUE((*replica)->Forward(**ex, [](int) {}).ok());
  EXPECT_TRUE((*loss)->Compute((*ex)->output(), *targets, (*ex)->output_diff(), 1.f, (*dev)->stream()).ok());
  auto st = (*loss)->Read((*dev)->stream());
  EXPECT_TRUE(st.ok());
  out.loss = *st;
  EXPECT_TRUE((*replica)->Backward(**ex, layers, [&](int i) { out.layers_done.push_back(i); }).ok());
  out.grads = grads;
  return out;
}

TEST(CudaBackend, TrainingStepThroughTheInterfacesMatchesTheCpu) {
  POLIS_REQUIRE_GPU();
  proto::ModelSpec spec;
  ASSERT_TRUE(google::protobuf::TextFormat::ParseFromString(kCnn, &spec));
  auto model = nn::Model::Build(spec, {1, 12, 12});
  ASSERT_TRUE(model.ok());
  const int64_t B = 16;
  std::vector<float> params(model->parameter_count()), x(B * 144), labels(B);
  model->InitParams(params.data(), 11);
  std::mt19937 rng(3);
  for (float& v : x) v = std::uniform_real_distribution<float>(0, 1)(rng);
  for (int64_t i = 0; i < B; ++i) labels[i] = static_cast<float>(i % 10);
  const Step cpu = RunStep(device::Kind::kCpu, *model, spec, params, x, labels, B);
  const Step gpu = RunStep(device::Kind::kCuda, *model, spec, params, x, labels, B);
  EXPECT_NEAR(gpu.loss.loss_sum, cpu.loss.loss_sum, 1e-3 * std::abs(cpu.loss.loss_sum));
  EXPECT_EQ(gpu.loss.correct, cpu.loss.correct);
  EXPECT_LT(RelErr(gpu.grads, cpu.grads), Bound(Precision::kFp32));
  EXPECT_EQ(gpu.layers_done, cpu.layers_done);
}

// The optimizer behind polis::Optimizer::Update: the CUDA one on device
// spans matches the host one on host spans, and its state survives the
// checkpoint round trip (State, then set_step_count).
TEST(CudaBackend, OptimizerUpdateMatchesTheHostOne) {
  POLIS_REQUIRE_GPU();
  proto::OptimizerSpec spec;
  spec.set_type(proto::OptimizerSpec::ADAM);
  spec.set_learning_rate(0.01f);
  const int64_t n = 1000;
  auto dev = backend::OpenDevice(device::Kind::kCuda);
  ASSERT_TRUE(dev.ok()) << dev.status().ToString();
  auto cpu = backend::OpenDevice(device::Kind::kCpu);
  auto gpu_opt = backend::MakeOptimizer(**dev, spec, n);
  auto cpu_opt = backend::MakeOptimizer(**cpu, spec, n);
  ASSERT_TRUE(gpu_opt.ok() && cpu_opt.ok());
  std::vector<float> p(n), g(n);
  std::mt19937 rng(9);
  for (int64_t i = 0; i < n; ++i) p[i] = std::normal_distribution<float>()(rng);
  std::vector<float> host_p = p;
  auto d_p = (*dev)->Allocate(n, device::Space::kDevice);
  auto d_g = (*dev)->Allocate(n, device::Space::kDevice);
  ASSERT_TRUE(d_p.ok() && d_g.ok());
  POLIS_ASSERT_OK((*dev)->Copy(d_p->span(), device::HostSpan<const float>(p.data(), n), (*dev)->stream()));
  for (int step = 0; step < 5; ++step) {
    for (int64_t i = 0; i < n; ++i) g[i] = std::normal_distribution<float>()(rng);
    POLIS_ASSERT_OK((*dev)->Copy(d_g->span(), device::HostSpan<const float>(g.data(), n), (*dev)->stream()));
    POLIS_ASSERT_OK((*gpu_opt)->Update(d_p->span(), d_g->span(), (*dev)->stream()));
    POLIS_ASSERT_OK((*cpu_opt)->Update(device::HostSpan(host_p.data(), n), device::HostSpan<const float>(g.data(), n),
                                       (*cpu)->stream()));
  }
  std::vector<float> got(n);
  POLIS_ASSERT_OK((*dev)->Copy(device::HostSpan(got.data(), n), d_p->span(), (*dev)->stream()));
  POLIS_ASSERT_OK((*dev)->stream().Synchronize());
  EXPECT_LT(RelErr(got, host_p), 1e-5);
  // Host memory is refused by the device optimizer, device memory by the host one.
  EXPECT_FALSE((*gpu_opt)->Update(device::HostSpan(host_p.data(), n), device::HostSpan<const float>(g.data(), n),
                                  (*dev)->stream()).ok());
  EXPECT_FALSE((*cpu_opt)->Update(d_p->span(), d_g->span(), (*dev)->stream()).ok());
  auto state = (*gpu_opt)->State();
  auto host_state = (*cpu_opt)->State();
  ASSERT_EQ(state.size(), host_state.size());
  for (size_t i = 0; i < state.size(); ++i) EXPECT_LT(RelErr(*state[i].second, *host_state[i].second), 1e-5);
}

TEST(CudaBackendNoDevice, OpenDeviceFailsWithTheReason) {
  std::string why;
  if (nn::cuda::DeviceAvailable(&why)) GTEST_SKIP() << "a CUDA device is present";
  EXPECT_TRUE(backend::Linked(device::Kind::kCuda));
  auto dev = backend::OpenDevice(device::Kind::kCuda);
  ASSERT_FALSE(dev.ok());
  EXPECT_EQ(dev.status().code(), Code::kFailedPrecondition) << dev.status().ToString();
}

}  // namespace
}  // namespace polis::gpu_test
