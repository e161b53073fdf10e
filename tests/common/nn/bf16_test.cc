// bf16 on the CPU (docs/design/cpu-bf16.md): Conv2D and Dense computing in
// bfloat16 agree with fp32 to bf16's precision, forward and backward, and
// the seed CNN still learns.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include <google/protobuf/text_format.h>

#include "common/job_spec.h"
#include "common/nn/model.h"
#include "common/optimizer.h"

namespace polis::nn {
namespace {

// bf16 keeps 8 significant bits (relative rounding 2^-9 ≈ 0.002 per value);
// with fp32 accumulation a whole tensor stays well within 1%.
constexpr double kBf16Tolerance = 1e-2;

proto::ModelSpec ParseModel(const std::string& text) {
  proto::ModelSpec spec;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &spec)) << text;
  return spec;
}

// ‖a - b‖ / ‖a‖ over n values.
double RelativeError(const float* a, const float* b, int64_t n) {
  double diff = 0, norm = 0;
  for (int64_t i = 0; i < n; ++i) {
    diff += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
    norm += static_cast<double>(a[i]) * a[i];
  }
  return std::sqrt(diff / norm);
}

// On a CPU with AVX512_BF16 every Conv2D and Dense primitive must be a bf16
// one; elsewhere oneDNN may keep a layer in fp32 and the test is skipped.
bool CpuHasBf16() { return __builtin_cpu_supports("avx512bf16"); }

int CountBf16Kernels(const Network& net) {
  int n = 0;
  for (const auto& s : net.ImplInfo()) n += s.find(" bf16:") != std::string::npos;
  return n;
}

void FillUniform(float* x, int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(-1.f, 1.f);
  for (int64_t i = 0; i < n; ++i) x[i] = dist(rng);
}

// Runs the model forward and backward in fp32 and in bf16 on the same
// parameters, input and output gradient; compares outputs, parameter
// gradients and (with want_input_grad) the input gradient. A ReLU's
// gradient passes where its output is > 0, and bf16 moves outputs near 0
// to the other side; with uncorrelated random output gradients each such
// flip counts fully, so models with ReLUs get a looser gradient bound (as
// do max-pools, whose gradient goes to the largest input of each window).
void CompareWithFp32(const std::string& text, const Shape& in, int64_t batch, bool want_input_grad,
                     int expect_bf16_kernels, double grad_tolerance = kBf16Tolerance) {
  if (!CpuHasBf16()) GTEST_SKIP() << "this CPU has no AVX512_BF16";
  auto model = Model::Build(ParseModel(text), in);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  const int64_t P = model->parameter_count();
  std::vector<float> params(P), g32(P), g16(P);
  model->InitParams(params.data(), 7);
  // Non-zero biases, so that their use in the forward pass is checked too.
  for (auto& v : params) v += 0.01f;
  Network n32(*model, batch, params.data(), g32.data(), true, want_input_grad);
  Network n16(*model, batch, params.data(), g16.data(), true, want_input_grad, /*bf16=*/true);
  EXPECT_EQ(CountBf16Kernels(n32), 0);
  ASSERT_EQ(CountBf16Kernels(n16), expect_bf16_kernels) << fmt::format("{}", fmt::join(n16.ImplInfo(), "\n"));

  const int64_t in_n = batch * ShapeElements(in), out_n = batch * ShapeElements(model->output_shape());
  FillUniform(n32.input(), in_n, 11);
  std::copy_n(n32.input(), in_n, n16.input());
  n32.Forward();
  n16.Forward();
  const double out_err = RelativeError(n32.output(), n16.output(), out_n);
  EXPECT_LT(out_err, kBf16Tolerance);
  EXPECT_GT(out_err, 0.0) << "bit-identical to fp32: bf16 did not run";

  FillUniform(n32.output_diff(), out_n, 13);
  std::copy_n(n32.output_diff(), out_n, n16.output_diff());
  n32.Backward();
  n16.Backward();
  for (const auto& l : model->layers())
    for (const auto& p : l.params) {
      const double err = RelativeError(g32.data() + p.offset, g16.data() + p.offset, p.count);
      EXPECT_LT(err, grad_tolerance) << l.name << " " << p.name;
    }
  if (want_input_grad) EXPECT_LT(RelativeError(n32.input_diff(), n16.input_diff(), in_n), grad_tolerance);
}

TEST(Bf16, Conv2DMatchesFp32) {
  // 16 channels in: oneDNN's blocked bf16 kernels; SAME padding, fused ReLU.
  CompareWithFp32(R"(layer { type: "Conv2D" activation: TANH
                       conv2d_param { filters: 32 kernel_size: 3 padding: SAME } })",
                  {16, 8, 8}, 4, true, 3);
}

TEST(Bf16, Conv2DReluMatchesFp32) {
  CompareWithFp32(R"(layer { type: "Conv2D" activation: RELU
                       conv2d_param { filters: 32 kernel_size: 3 padding: SAME } })",
                  {16, 8, 8}, 4, true, 3, 0.05);
}

TEST(Bf16, FirstConv2DThreeChannelsMatchesFp32) {
  // A first layer on colour images: 3 input channels, VALID, stride 2, no
  // input gradient (as in training).
  CompareWithFp32(R"(layer { type: "Conv2D" activation: TANH
                       conv2d_param { filters: 16 kernel_size: 3 stride: 2 } })",
                  {3, 12, 12}, 4, false, 2);
}

// Two 3x3 convolutions (16 filters each) on `in`, built with bf16: for each
// of the network's primitives ("fwd: ...", "bwd_w bf16: ..."), whether it
// computes in bf16.
std::vector<bool> TwoConvBf16Kernels(const Shape& in, bool want_input_grad) {
  auto model = Model::Build(ParseModel(R"(layer { type: "Conv2D" conv2d_param { filters: 16 kernel_size: 3 } }
                                          layer { type: "Conv2D" conv2d_param { filters: 16 kernel_size: 3 } })"),
                            in);
  EXPECT_TRUE(model.ok()) << model.status().ToString();
  std::vector<float> params(model->parameter_count()), grads(params.size());
  Network net(*model, 4, params.data(), grads.data(), true, want_input_grad, /*bf16=*/true);
  std::vector<bool> bf16;
  for (const auto& s : net.ImplInfo()) bf16.push_back(s.find(" bf16:") != std::string::npos);
  return bf16;
}

TEST(Bf16, OneChannelConv2DStaysFp32) {
  // bf16 pairs input channels: with one, it saves nothing (see layers.cc).
  if (!CpuHasBf16()) GTEST_SKIP() << "this CPU has no AVX512_BF16";
  // fwd and bwd_w of the first layer, then fwd, bwd_w and bwd_d of the second.
  EXPECT_EQ(TwoConvBf16Kernels({1, 12, 12}, false), std::vector<bool>({false, false, true, true, true}));
}

TEST(Bf16, LayerWithoutFastBf16KernelStaysFp32) {
  // oneDNN has only a reference kernel for the input gradient of a bf16
  // convolution with 3 input channels: that layer runs in fp32 instead.
  if (!CpuHasBf16()) GTEST_SKIP() << "this CPU has no AVX512_BF16";
  EXPECT_EQ(TwoConvBf16Kernels({3, 12, 12}, true),
            std::vector<bool>({false, false, false, true, true, true}));
}

TEST(Bf16, DenseMatchesFp32) {
  CompareWithFp32(R"(layer { type: "Dense" activation: TANH dense_param { units: 64 } }
                     layer { type: "Dense" dense_param { units: 10 } })",
                  {200}, 8, true, 6);
}

TEST(Bf16, SeedNetworkMatchesFp32) {
  auto job = LoadJobFile(std::string(POLIS_SOURCE_DIR) + "/jobs/fashion_cnn.pbtxt");
  ASSERT_TRUE(job.ok()) << job.status().ToString();
  std::string text;
  google::protobuf::TextFormat::PrintToString(job->spec.model(), &text);
  // 2 convolutions and 2 dense layers in bf16, 3 primitives each (the first
  // convolution, on one channel, stays fp32); ReLUs and max-pools.
  CompareWithFp32(text, {1, 28, 28}, 4, false, 12, 0.05);
}

// A few Adam steps of the seed CNN in bf16 on one batch of 32 random images
// with random labels: the loss falls as it does in fp32.
TEST(Bf16, SeedNetworkTrainingReducesLoss) {
  if (!CpuHasBf16()) GTEST_SKIP() << "this CPU has no AVX512_BF16";
  auto job = LoadJobFile(std::string(POLIS_SOURCE_DIR) + "/jobs/fashion_cnn.pbtxt");
  ASSERT_TRUE(job.ok()) << job.status().ToString();
  auto model = Model::Build(job->spec.model(), {1, 28, 28});
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  const int64_t B = 32, P = model->parameter_count(), in_n = B * 28 * 28;
  std::vector<float> images(in_n);
  FillUniform(images.data(), in_n, 21);
  std::vector<int32_t> labels(B);
  for (int64_t i = 0; i < B; ++i) labels[i] = static_cast<int32_t>((i * 7) % 10);

  auto train = [&](bool bf16) {
    std::vector<float> params(P), grads(P);
    model->InitParams(params.data(), 5);
    auto opt = MakeOptimizer(job->spec.optimizer(), P);
    EXPECT_TRUE(opt.ok());
    Network net(*model, B, params.data(), grads.data(), true, false, bf16);
    EXPECT_EQ(CountBf16Kernels(net) > 0, bf16);
    std::vector<double> losses;
    for (int step = 0; step < 30; ++step) {
      std::copy(images.begin(), images.end(), net.input());
      net.Forward();
      losses.push_back(SoftmaxCrossEntropy(net.output(), labels.data(), B, 10, net.output_diff(), 1.0f / B)
                           .loss_sum / B);
      net.Backward();
      (*opt)->Step(params.data(), grads.data());
    }
    return losses;
  };
  const std::vector<double> l32 = train(false), l16 = train(true);
  EXPECT_NEAR(l16.front(), l32.front(), kBf16Tolerance * l32.front());
  // Random labels can only be memorised: both fall well below ln(10) ≈ 2.3.
  EXPECT_LT(l32.back(), 0.5 * l32.front());
  EXPECT_LT(l16.back(), 0.5 * l16.front()) << "fp32 reached " << l32.back();
}

// DP-SGD's per-example gradient norms read the layer's fp32 input, whatever
// precision the layer computes in.
TEST(Bf16, PerExampleNormsMatchFp32) {
  if (!CpuHasBf16()) GTEST_SKIP() << "this CPU has no AVX512_BF16";
  auto model = Model::Build(ParseModel(R"(
      layer { type: "Conv2D" activation: TANH conv2d_param { filters: 16 kernel_size: 3 } }
      layer { type: "Conv2D" activation: TANH conv2d_param { filters: 16 kernel_size: 3 } }
      layer { type: "Flatten" }
      layer { type: "Dense" dense_param { units: 10 } })"), {2, 14, 14});
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  const int64_t B = 6, P = model->parameter_count();
  std::vector<float> params(P), g32(P), g16(P), norms32(B), norms16(B);
  model->InitParams(params.data(), 3);
  Network n32(*model, B, params.data(), g32.data(), true);
  Network n16(*model, B, params.data(), g16.data(), true, false, true);
  ASSERT_GT(CountBf16Kernels(n16), 0);
  for (Network* n : {&n32, &n16}) {
    FillUniform(n->input(), B * 2 * 14 * 14, 31);
    n->Forward();
    FillUniform(n->output_diff(), B * 10, 37);
  }
  n32.BackwardClipped(0.5f, norms32.data());
  n16.BackwardClipped(0.5f, norms16.data());
  EXPECT_LT(RelativeError(norms32.data(), norms16.data(), B), kBf16Tolerance);
  EXPECT_LT(RelativeError(g32.data(), g16.data(), P), kBf16Tolerance);
}

}  // namespace
}  // namespace polis::nn
