// Numerical gradient checks: every layer, and the whole seed network
// (the checker is in gradient_checker.h).
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include <google/protobuf/text_format.h>

#include "common/job_spec.h"
#include "common/nn/model.h"
#include "tests/common/nn/gradient_checker.h"

namespace polis::nn {
namespace {

proto::ModelSpec ParseModel(const std::string& text) {
  proto::ModelSpec spec;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &spec)) << text;
  return spec;
}

}  // namespace

namespace {
void CheckModel(const std::string& text, const Shape& in, int64_t batch = 3) {
  auto model = Model::Build(ParseModel(text), in);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  Checker c(*model, batch, 1234);
  c.Run();
}

TEST(GradientCheck, Conv2DValid) {
  CheckModel(R"(layer { type: "Conv2D" conv2d_param { filters: 4 kernel_size: 3 } })", {2, 7, 7});
}
TEST(GradientCheck, Conv2DReluSameStride2) {
  CheckModel(R"(layer { type: "Conv2D" activation: RELU
                 conv2d_param { filters: 5 kernel_size: 3 stride: 2 padding: SAME } })",
             {3, 8, 8});
}
TEST(GradientCheck, Conv2DSixteenChannels) {
  // Enough channels for oneDNN's blocked (nChw16c) kernels.
  CheckModel(R"(layer { type: "Conv2D" activation: RELU conv2d_param { filters: 32 kernel_size: 3 } }
               layer { type: "Conv2D" conv2d_param { filters: 16 kernel_size: 3 } })",
             {16, 6, 6}, 2);
}
TEST(GradientCheck, Conv2DSameStride1) {
  CheckModel(R"(layer { type: "Conv2D" activation: RELU
                 conv2d_param { filters: 5 kernel_size: 3 padding: SAME } })",
             {3, 8, 8});
}
TEST(GradientCheck, MaxPool2D) {
  CheckModel(R"(layer { type: "MaxPool2D" pool2d_param { pool_size: 2 } })", {3, 6, 6});
}
TEST(GradientCheck, MaxPool2DOddInput) {
  CheckModel(R"(layer { type: "MaxPool2D" pool2d_param { pool_size: 2 } })", {2, 5, 5});
}
TEST(GradientCheck, DenseAndRelu) {
  CheckModel(R"(layer { type: "Dense" activation: RELU dense_param { units: 7 } }
               layer { type: "Dense" dense_param { units: 4 } })",
             {9});
}
TEST(GradientCheck, Conv2DTanhStride2) {
  CheckModel(R"(layer { type: "Conv2D" activation: TANH
                 conv2d_param { filters: 5 kernel_size: 3 stride: 2 padding: SAME } })",
             {3, 8, 8});
}
TEST(GradientCheck, TanhConvPoolStride1AndDense) {
  // The end-to-end DP CNN's shape: tanh everywhere, pooling with stride 1,
  // blocked layouts (16 channels).
  CheckModel(R"(layer { type: "Conv2D" activation: TANH
                 conv2d_param { filters: 16 kernel_size: 4 stride: 2 padding: SAME } }
               layer { type: "MaxPool2D" pool2d_param { pool_size: 2 stride: 1 } }
               layer { type: "Flatten" }
               layer { type: "Dense" activation: TANH dense_param { units: 6 } }
               layer { type: "Dense" dense_param { units: 3 } })",
             {1, 8, 8}, 2);
}
TEST(GradientCheck, Conv2DSameNonSquare) {
  // SAME padding of each axis on its own: 0/1 rows, 1/1 columns.
  CheckModel(R"(layer { type: "Conv2D" activation: RELU
                 conv2d_param { filters: 4 kernel_size: 3 stride: 2 padding: SAME } })",
             {3, 10, 11});
}
TEST(GradientCheck, ReluLayer) {
  CheckModel(R"(layer { type: "ReLU" })", {2, 4, 4});
}
TEST(GradientCheck, Flatten) {
  CheckModel(R"(layer { type: "Conv2D" conv2d_param { filters: 16 kernel_size: 2 } }
               layer { type: "Flatten" }
               layer { type: "Dense" dense_param { units: 3 } })",
             {2, 4, 4});
}

TEST(GradientCheck, SeedNetwork) {
  auto job = LoadJobFile(std::string(POLIS_SOURCE_DIR) + "/jobs/fashion_cnn.pbtxt");
  ASSERT_TRUE(job.ok()) << job.status().ToString();
  auto model = Model::Build(job->spec.model(), {1, 28, 28});
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  EXPECT_EQ(model->parameter_count(), 93322);
  Checker c(*model, 2, 99);
  c.Run(80);
}

TEST(SoftmaxCrossEntropy, MatchesClosedForm) {
  const float logits[6] = {1.f, 2.f, 3.f, 0.f, 0.f, 0.f};
  const int32_t labels[2] = {2, 1};
  float d[6];
  LossStats st = SoftmaxCrossEntropy(logits, labels, 2, 3, d, 0.5f);
  double l0 = -std::log(std::exp(3.0) / (std::exp(1.0) + std::exp(2.0) + std::exp(3.0)));
  double l1 = std::log(3.0);
  EXPECT_NEAR(st.loss_sum, l0 + l1, 1e-9);
  EXPECT_EQ(st.correct, 1);  // row 1 ties; argmax picks class 0
  EXPECT_NEAR(d[4], (1.0 / 3 - 1) * 0.5, 1e-7);
  EXPECT_NEAR(d[3], (1.0 / 3) * 0.5, 1e-7);
}

TEST(Model, UnknownLayerTypeListsKnownOnes) {
  auto m = Model::Build(ParseModel(R"(layer { type: "Conv3D" })"), {1, 4, 4});
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("Conv2D"), std::string::npos) << m.status().message();
  EXPECT_NE(m.status().message().find("layer[0]"), std::string::npos);
}

TEST(Model, DenseOnImageAsksForFlatten) {
  auto m = Model::Build(ParseModel(R"(layer { type: "Dense" dense_param { units: 3 } })"), {1, 4, 4});
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("Flatten"), std::string::npos);
}

TEST(Model, KernelTooLarge) {
  auto m = Model::Build(
      ParseModel(R"(layer { type: "Conv2D" conv2d_param { filters: 2 kernel_size: 5 } })"), {1, 4, 4});
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.status().message().find("does not fit"), std::string::npos);
}


namespace polis::nn {
namespace {
// A sequence [T, F] flattened into a dense head (time-series models).
TEST(GradientCheck, FlattenSequence) {
  CheckModel(R"(layer { type: "Flatten" } layer { type: "Dense" dense_param { units: 2 } })", {4, 3});
}
}  // namespace
}  // namespace polis::nn

// A frozen inference Network (a served version) computes exactly what an
// unfrozen one does.
TEST(Network, FrozenParamsGiveTheSameOutputs) {
  auto job = LoadJobFile(std::string(POLIS_SOURCE_DIR) + "/jobs/fashion_cnn.pbtxt");
  ASSERT_TRUE(job.ok()) << job.status().ToString();
  auto model = Model::Build(job->spec.model(), {1, 28, 28});
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  std::vector<float> params(model->parameter_count());
  model->InitParams(params.data(), 11);
  for (int64_t batch : {1, 5}) {
    Network plain(*model, batch, params.data(), nullptr, false);
    Network frozen(*model, batch, params.data(), nullptr, false);
    frozen.FreezeParams();
    std::mt19937 rng(3);
    std::uniform_real_distribution<float> u(0.f, 1.f);
    for (int64_t i = 0; i < batch * 784; ++i) plain.input()[i] = frozen.input()[i] = u(rng);
    plain.Forward();
    frozen.Forward();
    const int64_t n = batch * 10;
    std::vector<float> a(plain.output(), plain.output() + n), b(frozen.output(), frozen.output() + n);
    EXPECT_EQ(a, b) << "batch " << batch;
    frozen.Forward();  // again: the frozen weights are reused, not re-read
    EXPECT_EQ(std::vector<float>(frozen.output(), frozen.output() + n), a);
  }
}

}  // namespace
}  // namespace polis::nn
