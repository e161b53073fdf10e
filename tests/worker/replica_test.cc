// The replica on the CPU: the executors use the synchroniser's own buffers,
// the hooks run in the order the synchronisers rely on, and an empty step
// zeroes the gradients (the GPU half is tests/gpu/cuda_executor_test.cc).
#include <gtest/gtest.h>

#include <random>

#include "common/backend/backend.h"
#include "common/job_spec.h"
#include "worker/gradient_sync.h"
#include "worker/replica.h"

namespace polis::worker {
namespace {

TEST(Replica, OnTheCpuTheExecutorsUseTheSynchronisersBuffers) {
  auto job = LoadJobFile(std::string(POLIS_SOURCE_DIR) + "/jobs/fashion_cnn.pbtxt");
  ASSERT_TRUE(job.ok());
  auto model = nn::Model::Build(job->spec.model(), {1, 28, 28});
  ASSERT_TRUE(model.ok());
  const int64_t P = model->parameter_count(), B = 4, K = 10;
  std::vector<float> params(P), grads(P + kGradientExtraSlots, 7.f);
  model->InitParams(params.data(), 1);
  auto dev = backend::OpenDevice(device::Kind::kCpu);
  ASSERT_TRUE(dev.ok());
  auto r = Replica::Create(**dev, params.data(), grads.data(), {P, kGradientExtraSlots, B, 784, K}, *model,
                           /*device_collectives=*/true);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  Replica& replica = **r;
  EXPECT_EQ(replica.params().data, params.data());
  EXPECT_EQ(replica.grads().data, grads.data());
  EXPECT_EQ(replica.grads().size, P);
  // The CPU has no device collectives: all-reduce runs on the host buffer.
  EXPECT_EQ(replica.reduce().data, grads.data());
  EXPECT_EQ(replica.reduce().size, P + kGradientExtraSlots);

  auto ex = backend::MakeExecutor(**dev, *model, B, replica.params(), replica.grads(), nn::ExecutorOptions{});
  ASSERT_TRUE(ex.ok());
  EXPECT_EQ(replica.HostInput(**ex), (*ex)->input().data) << "the CPU gathers straight into the executor";
  std::mt19937 rng(5);
  for (int64_t i = 0; i < B * 784; ++i) replica.HostInput(**ex)[i] = std::uniform_real_distribution<float>(0, 1)(rng);
  for (int64_t i = 0; i < B; ++i) replica.HostTargets()[i] = static_cast<float>(i);
  auto targets = replica.LoadBatch(**ex, B);
  ASSERT_TRUE(targets.ok());
  EXPECT_EQ(targets->data, replica.HostTargets());

  const int layers = static_cast<int>(model->layers().size());
  std::vector<int> before, after;
  ASSERT_TRUE(replica.Forward(**ex, [&](int i) { before.push_back(i); }).ok());
  for (int i = 0; i < layers; ++i) ASSERT_EQ(before.at(i), i);
  auto loss = backend::MakeLoss(**dev, job->spec.model(), B, K);
  ASSERT_TRUE(loss.ok());
  ASSERT_TRUE((*loss)->Compute((*ex)->output(), *targets, (*ex)->output_diff(), 1.f, (*dev)->stream()).ok());
  ASSERT_TRUE(replica.Backward(**ex, layers, [&](int i) { after.push_back(i); }).ok());
  ASSERT_EQ(static_cast<int>(after.size()), layers);
  for (int i = 0; i < layers; ++i) ASSERT_EQ(after.at(i), layers - 1 - i) << "last layer first";
  double norm = 0;
  for (int64_t i = 0; i < P; ++i) norm += grads[i] * grads[i];
  EXPECT_GT(norm, 0);
  EXPECT_EQ(grads[P], 7.f) << "the extra slots belong to the synchroniser";

  ASSERT_TRUE(replica.ZeroGradients().ok());
  for (int64_t i = 0; i < P; ++i) ASSERT_EQ(grads[i], 0.f);
  EXPECT_TRUE(replica.UploadParams().ok());
}

}  // namespace
}  // namespace polis::worker
