// Numerical gradient checks: every layer, and the whole seed network.
//
// Loss L = sum(w ⊙ output) with fixed random w, so dL/doutput = w. Analytic
// gradients from Backward are compared with central differences in double
// precision of the float32 forward pass.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include <google/protobuf/text_format.h>

#include "common/job_spec.h"
#include "common/nn/model.h"

namespace polis::nn {
namespace {

proto::ModelSpec ParseModel(const std::string& text) {
  proto::ModelSpec spec;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &spec)) << text;
  return spec;
}

}  // namespace
struct Checker {
  const Model& model;
  int64_t batch;
  std::vector<float> params, grads, input, w;
  std::unique_ptr<Network> net;

  Checker(const Model& m, int64_t b, uint64_t seed) : model(m), batch(b) {
    params.resize(m.parameter_count());
    grads.resize(m.parameter_count());
    m.InitParams(params.data(), seed);
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> u(-1.f, 1.f);
    // Non-zero biases so every path is exercised.
    for (auto& p : params) p += 0.05f * u(rng);
    net = std::make_unique<Network>(m, b, params.data(), grads.data(), true, true);
    input.resize(b * ShapeElements(m.input_shape()));
    for (auto& x : input) x = u(rng);
    w.resize(b * ShapeElements(m.output_shape()));
    for (auto& x : w) x = u(rng);
  }

  double Loss() {
    std::copy(input.begin(), input.end(), net->input());
    net->Forward();
    const float* out = net->output();
    double l = 0;
    for (size_t i = 0; i < w.size(); ++i) l += static_cast<double>(w[i]) * out[i];
    return l;
  }

  void Analytic() {
    Loss();
    std::copy(w.begin(), w.end(), net->output_diff());
    net->Backward();
  }

  // Checks up to `samples` coordinates of a vector against central
  // differences. Where the forward and backward one-sided differences
  // disagree, the step crossed a kink (ReLU at 0, a max-pool tie) and the
  // coordinate is skipped, as Caffe's checker does; most must be checked.
  void Check(std::vector<float>& x, const float* analytic, int samples, const char* what) {
    std::mt19937 rng(7);
    std::uniform_int_distribution<size_t> pick(0, x.size() - 1);
    const float eps = 1e-3f;
    int bad = 0, checked = 0, kinks = 0;
    const double l0 = Loss();
    for (int s = 0; s < samples; ++s) {
      size_t i = samples >= static_cast<int>(x.size()) ? static_cast<size_t>(s) : pick(rng);
      if (i >= x.size()) break;
      float orig = x[i];
      x[i] = orig + eps;
      double lp = Loss();
      x[i] = orig - eps;
      double lm = Loss();
      x[i] = orig;
      double fwd = (lp - l0) / eps, bwd = (l0 - lm) / eps;
      if (std::abs(fwd - bwd) > 0.01 * std::max(1.0, std::abs(fwd) + std::abs(bwd))) {
        ++kinks;
        continue;
      }
      ++checked;
      double numeric = (lp - lm) / (2.0 * eps);
      double a = analytic[i];
      double err = std::abs(numeric - a) / std::max(1.0, std::abs(numeric) + std::abs(a));
      if (err > 1e-2) {
        ++bad;
        ADD_FAILURE() << what << "[" << i << "]: analytic " << a << " numeric " << numeric;
        if (bad > 5) return;
      }
    }
    EXPECT_GE(checked, 3 * kinks) << what << ": too many kinks (" << kinks << ") to trust the check";
  }

  void Run(int samples = 60) {
    Analytic();
    std::vector<float> g = grads;
    std::vector<float> dx(net->input_diff(), net->input_diff() + input.size());
    Check(params, g.data(), samples, "param");
    Check(input, dx.data(), samples, "input");
  }
};

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

}  // namespace
}  // namespace polis::nn
