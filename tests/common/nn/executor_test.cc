// The executor interface on the CPU: the same numbers as nn::Network, the
// loss through the interface, and the registry's per-backend executors.
#include <gtest/gtest.h>

#include <google/protobuf/text_format.h>

#include <random>
#include <vector>

#include "common/backend/backend.h"
#include "common/nn/executor.h"
#include "common/nn/model.h"

namespace polis::nn {
namespace {

const char* kCnn = R"(
  layer { type: "Conv2D" activation: RELU conv2d_param { filters: 4 kernel_size: 3 } }
  layer { type: "MaxPool2D" }
  layer { type: "Flatten" }
  layer { type: "Dense" dense_param { units: 5 } }
  loss: SOFTMAX_CROSS_ENTROPY)";

proto::ModelSpec Spec(const std::string& text) {
  proto::ModelSpec spec;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &spec)) << text;
  return spec;
}

TEST(CpuExecutor, MatchesNetworkBitForBitThroughTheInterface) {
  const proto::ModelSpec spec = Spec(kCnn);
  auto built = Model::Build(spec, {1, 8, 8});
  ASSERT_TRUE(built.ok()) << built.status().ToString();
  const Model& model = *built;
  const int64_t P = model.parameter_count(), B = 3, in = 64, K = 5;
  std::vector<float> params(P), grads_net(P), grads_ex(P);
  model.InitParams(params.data(), 7);
  std::vector<float> x(B * in);
  std::mt19937 rng(1);
  for (float& v : x) v = std::uniform_real_distribution<float>(0, 1)(rng);
  const std::vector<float> labels = {0, 3, 4};

  // The reference: the CPU network driven directly.
  Network net(model, B, params.data(), grads_net.data(), true);
  std::copy(x.begin(), x.end(), net.input());
  net.Forward();
  const LossStats want = ComputeLoss(spec, net.output(), labels.data(), B, K, net.output_diff(), 1.f);
  std::vector<int> order_net;
  net.Backward([&](int i) { order_net.push_back(i); });

  // The same through the backend, as the worker drives it.
  auto dev = backend::OpenDevice(device::Kind::kCpu);
  ASSERT_TRUE(dev.ok());
  auto ex = backend::MakeExecutor(**dev, model, B, device::HostSpan(params.data(), P),
                                  device::HostSpan(grads_ex.data(), P), ExecutorOptions{});
  ASSERT_TRUE(ex.ok()) << ex.status().ToString();
  auto loss = backend::MakeLoss(**dev, spec, B, K);
  ASSERT_TRUE(loss.ok());
  ASSERT_EQ((*ex)->input().size, B * in);
  ASSERT_EQ((*ex)->output().size, B * K);
  std::copy(x.begin(), x.end(), (*ex)->input().data);
  std::vector<int> before;
  ASSERT_TRUE((*ex)->Forward([&](int i) { before.push_back(i); }).ok());
  EXPECT_EQ(before, (std::vector<int>{0, 1, 2, 3}));
  ASSERT_TRUE((*loss)
                  ->Compute((*ex)->output(), device::HostSpan<const float>(labels.data(), B), (*ex)->output_diff(),
                            1.f, (*dev)->stream())
                  .ok());
  auto got = (*loss)->Read((*dev)->stream());
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->loss_sum, want.loss_sum);
  EXPECT_EQ(got->correct, want.correct);
  std::vector<int> order_ex;
  ASSERT_TRUE((*ex)->Backward([&](int i, device::Event* e) {
                     EXPECT_EQ(e, nullptr) << "the CPU's gradients are final at once";
                     order_ex.push_back(i);
                   }).ok());
  EXPECT_EQ(order_ex, order_net);
  EXPECT_EQ(grads_ex, grads_net);
  EXPECT_FALSE((*ex)->ImplInfo().empty());
}

TEST(CpuExecutor, RefusesWhatTheCpuCannotRun) {
  auto model = Model::Build(Spec(kCnn), {1, 8, 8});
  ASSERT_TRUE(model.ok());
  std::vector<float> params(model->parameter_count()), grads(model->parameter_count());
  ExecutorOptions tf32;
  tf32.precision = device::Precision::kTf32;
  auto ex = MakeCpuExecutor(*model, 2, device::HostSpan(params.data(), params.size()),
                            device::HostSpan(grads.data(), grads.size()), tf32);
  ASSERT_FALSE(ex.ok());
  EXPECT_NE(ex.status().message().find("TF32 is a CUDA precision"), std::string::npos) << ex.status().message();
  auto short_grads = MakeCpuExecutor(*model, 2, device::HostSpan(params.data(), params.size()),
                                     device::HostSpan(grads.data(), 3), ExecutorOptions{});
  ASSERT_FALSE(short_grads.ok());
  EXPECT_NE(short_grads.status().message().find("gradient buffer"), std::string::npos);
}

// One registry says what each backend runs; a job check asks it.
TEST(LayerRegistry, EachBackendsExecutorsAreNamedAndCheckedPerSpec) {
  LayerRegistry& r = LayerRegistry::Global();
  EXPECT_EQ(r.Names(device::Kind::kCpu), r.Names());
  const auto cuda = r.Names(device::Kind::kCuda);
  EXPECT_NE(std::find(cuda.begin(), cuda.end(), "TransformerEncoderBlock"), cuda.end());
  proto::LayerSpec conv;
  conv.set_type("Conv2D");
  conv.set_activation(proto::TANH);
  EXPECT_EQ(r.WhyNot(device::Kind::kCpu, conv), "");
  EXPECT_NE(r.WhyNot(device::Kind::kCuda, conv).find("activation TANH has no CUDA kernel"), std::string::npos);
  conv.set_activation(proto::RELU);
  EXPECT_EQ(r.WhyNot(device::Kind::kCuda, conv), "");
  EXPECT_EQ(r.RegisterExecutor(device::Kind::kCuda, "NoSuchLayer", nullptr).code(), Code::kNotFound);
  EXPECT_EQ(r.RegisterExecutor(device::Kind::kCuda, "Dense", nullptr).code(), Code::kAlreadyExists);

  proto::ModelSpec spec = Spec(kCnn);
  spec.mutable_layer(0)->set_activation(proto::TANH);
  auto model = Model::Build(spec, {1, 8, 8});
  ASSERT_TRUE(model.ok());
  EXPECT_EQ(UnsupportedLayer(device::Kind::kCpu, *model), "");
  EXPECT_NE(UnsupportedLayer(device::Kind::kCuda, *model).find("layer 'conv2d_0' (Conv2D): activation TANH"),
            std::string::npos)
      << UnsupportedLayer(device::Kind::kCuda, *model);
}

}  // namespace
}  // namespace polis::nn
