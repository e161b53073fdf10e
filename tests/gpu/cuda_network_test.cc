// Each CUDA layer against the CPU backend (common/nn/), forward and
// backward, on the same parameters, inputs and output gradients; then whole
// training steps of the seed CNN and the bike-demand Transformer (network,
// device loss and device Adam against nn::Network, nn::ComputeLoss and
// MakeOptimizer).
//
// Errors are normwise relative, computed in double (gpu_test_util.h), with
// the bound of the precision: FP32 1e-4, TF32 5e-3, BF16 3e-2.
#include <google/protobuf/text_format.h>

#include <fstream>
#include <random>
#include <sstream>

#include "common/nn/model.h"
#include "common/optimizer.h"
#include "tests/gpu/gpu_test_util.h"

namespace polis::gpu_test {
namespace {

using nn::Model;
using nn::Shape;
using nn::cuda::CudaNetwork;
using nn::cuda::CudaOptions;

proto::ModelSpec ParseModel(const std::string& text) {
  proto::ModelSpec spec;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &spec)) << text;
  return spec;
}

struct LayerCase {
  const char* name;
  const char* model;  // ModelSpec text
  Shape input;
  int vocab = 0;      // > 0: the input holds ids in [0, vocab)
};

const LayerCase kCases[] = {
    {"conv_valid_relu",
     R"(layer { type: "Conv2D" activation: RELU conv2d_param { filters: 4 kernel_size: 3 } })",
     {3, 10, 10}},
    {"conv_same_symmetric",
     R"(layer { type: "Conv2D" conv2d_param { filters: 3 kernel_size: 3 padding: SAME } })",
     {2, 8, 8}},
    {"conv_same_asymmetric_stride2",
     R"(layer { type: "Conv2D" conv2d_param { filters: 5 kernel_size: 4 stride: 2 padding: SAME } })",
     {2, 9, 9}},
    {"conv_same_nonsquare_stride2",  // 0/1 rows, 1/1 columns of padding
     R"(layer { type: "Conv2D" conv2d_param { filters: 4 kernel_size: 3 stride: 2 padding: SAME } })",
     {2, 10, 11}},
    {"conv_relu_maxpool",
     R"(layer { type: "Conv2D" activation: RELU conv2d_param { filters: 4 kernel_size: 3 } }
        layer { type: "MaxPool2D" pool2d_param { pool_size: 2 } })",
     {2, 9, 9}},
    {"maxpool_overlapping",
     R"(layer { type: "MaxPool2D" pool2d_param { pool_size: 3 stride: 2 } })", {3, 9, 9}},
    {"flatten_dense_relu_dense",
     R"(layer { type: "Flatten" }
        layer { type: "Dense" activation: RELU dense_param { units: 7 } }
        layer { type: "Dense" dense_param { units: 3 } })",
     {2, 3, 3}},
    {"relu", R"(layer { type: "ReLU" })", {3, 4, 4}},
    {"embedding", R"(layer { type: "Embedding" embedding_param { vocab: 11 dim: 5 } })", {6}, 11},
    {"lstm_2_layers_last",
     R"(layer { type: "LSTM" recurrent_param { hidden_size: 7 num_layers: 2 } })", {6, 8}},
    {"lstm_sequences",
     R"(layer { type: "LSTM" recurrent_param { hidden_size: 4 return_sequences: true } })", {5, 3}},
    {"gru_sequences",
     R"(layer { type: "GRU" recurrent_param { hidden_size: 5 return_sequences: true } })", {6, 8}},
    {"gru_2_layers_last",
     R"(layer { type: "GRU" recurrent_param { hidden_size: 6 num_layers: 2 } })", {4, 3}},
    {"dropout", R"(layer { type: "Dropout" dropout_param { rate: 0.3 seed: 5 } })", {6, 8}},
    {"layer_norm", R"(layer { type: "LayerNorm" })", {6, 8}},
    {"gelu_erf", R"(layer { type: "GELU" })", {6, 8}},
    {"gelu_tanh", R"(layer { type: "GELU" gelu_param { approximation: TANH } })", {6, 8}},
    {"mha", R"(layer { type: "MultiHeadSelfAttention" attention_param { num_heads: 2 } })", {6, 8}},
    {"mha_causal",
     R"(layer { type: "MultiHeadSelfAttention" attention_param { num_heads: 4 causal: true } })",
     {7, 8}},
    {"transformer_dropout",
     R"(layer { type: "TransformerEncoderBlock"
                transformer_param { num_heads: 2 ff_dim: 16 dropout: 0.1 seed: 3 } })",
     {6, 8}},
    {"transformer_causal",
     R"(layer { type: "TransformerEncoderBlock"
                transformer_param { num_heads: 4 ff_dim: 12 causal: true } })",
     {5, 8}},
    {"positional_sinusoidal", R"(layer { type: "PositionalEncoding" })", {6, 8}},
    {"positional_learned",
     R"(layer { type: "PositionalEncoding" positional_encoding_param { kind: LEARNED } })", {6, 8}},
    {"sequence_pool_last", R"(layer { type: "SequencePool" })", {6, 8}},
    {"sequence_pool_mean",
     R"(layer { type: "SequencePool" sequence_pool_param { mode: MEAN } })", {6, 8}},
};

// Runs one forward and backward of `model` on both backends and checks the
// output, every parameter tensor's gradient and the input gradient.
void CompareWithCpu(const LayerCase& c, Precision precision) {
  SCOPED_TRACE(std::string(c.name) + " at " + nn::cuda::PrecisionName(precision));
  auto built = Model::Build(ParseModel(c.model), c.input);
  ASSERT_TRUE(built.ok()) << built.status().ToString();
  const Model& model = *built;
  const int64_t batch = 4, n_params = model.parameter_count();
  const int64_t n_in = batch * nn::ShapeElements(model.input_shape());
  const int64_t n_out = batch * nn::ShapeElements(model.output_shape());
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<float> params(n_params), grads(n_params, 0.f), x(n_in), dy(n_out);
  model.InitParams(params.data(), 11);
  for (float& p : params) p += 0.05f * u(rng);  // non-trivial biases and gains
  for (float& v : x) v = c.vocab ? static_cast<float>(rng() % c.vocab) : u(rng);
  for (float& v : dy) v = u(rng);

  nn::Network cpu(model, batch, params.data(), grads.data(), true, /*want_input_grad=*/true);
  std::copy(x.begin(), x.end(), cpu.input());
  cpu.Forward();
  std::vector<float> cpu_out(cpu.output(), cpu.output() + n_out);
  std::copy(dy.begin(), dy.end(), cpu.output_diff());
  cpu.Backward();
  std::vector<float> cpu_dx(cpu.input_diff(), cpu.input_diff() + n_in);

  DeviceArray<float> d_params, d_grads;
  POLIS_ASSERT_OK(d_params.Allocate(n_params));
  POLIS_ASSERT_OK(d_grads.AllocateZeroed(n_params));
  ToDevice(params, d_params.get());
  CudaOptions opt;
  opt.precision = precision;
  opt.want_input_grad = true;
  auto net = CudaNetwork::Create(model, batch, d_params.get(), d_grads.get(), true, opt);
  ASSERT_TRUE(net.ok()) << net.status().ToString();
  CudaNetwork& gpu = **net;
  cudaStream_t st = gpu.stream();
  ToDevice(x, gpu.d_input(), st);
  POLIS_ASSERT_OK(gpu.Forward());
  ToDevice(dy, gpu.d_output_diff(), st);
  POLIS_ASSERT_OK(gpu.Backward());
  POLIS_ASSERT_OK(gpu.TakeDataError());

  // Backward leaves every layer's output as Forward wrote it.
  const double bound = Bound(precision);
  EXPECT_LT(RelErr(FromDevice(gpu.d_output(), n_out, st), cpu_out), bound) << "output";
  std::vector<float> gpu_grads = FromDevice(d_grads.get(), n_params, st);
  for (const auto& l : model.layers())
    for (const auto& p : l.params) {
      std::vector<float> want(grads.begin() + p.offset, grads.begin() + p.offset + p.count);
      std::vector<float> got(gpu_grads.begin() + p.offset, gpu_grads.begin() + p.offset + p.count);
      EXPECT_LT(RelErr(got, want), bound) << "gradient of " << l.name << "." << p.name;
    }
  EXPECT_LT(RelErr(FromDevice(gpu.d_input_diff(), n_in, st), cpu_dx), bound) << "input gradient";
}

class CudaLayerTest : public ::testing::TestWithParam<std::tuple<int, Precision>> {};

TEST_P(CudaLayerTest, MatchesCpuBackend) {
  POLIS_REQUIRE_GPU();
  CompareWithCpu(kCases[std::get<0>(GetParam())], std::get<1>(GetParam()));
}

std::string CaseName(const ::testing::TestParamInfo<std::tuple<int, Precision>>& info) {
  return std::string(kCases[std::get<0>(info.param)].name) + "_" +
         nn::cuda::PrecisionName(std::get<1>(info.param));
}

INSTANTIATE_TEST_SUITE_P(
    AllLayers, CudaLayerTest,
    ::testing::Combine(::testing::Range(0, static_cast<int>(std::size(kCases))),
                       ::testing::Values(Precision::kFp32, Precision::kTf32, Precision::kBf16)),
    CaseName);

// An inference network (no gradient buffer) gives the training output.
TEST(CudaNetwork, InferenceMatchesCpu) {
  POLIS_REQUIRE_GPU();
  const LayerCase& c = kCases[8];  // LSTM, two layers
  auto model = Model::Build(ParseModel(c.model), c.input);
  ASSERT_TRUE(model.ok());
  const int64_t batch = 5, n = model->parameter_count();
  std::vector<float> params(n), x(batch * nn::ShapeElements(c.input), 0.25f);
  model->InitParams(params.data(), 9);
  nn::Network cpu(*model, batch, params.data(), nullptr, false);
  std::copy(x.begin(), x.end(), cpu.input());
  cpu.Forward();
  const int64_t n_out = batch * nn::ShapeElements(model->output_shape());
  std::vector<float> want(cpu.output(), cpu.output() + n_out);
  DeviceArray<float> dp;
  POLIS_ASSERT_OK(dp.Allocate(n));
  ToDevice(params, dp.get());
  auto net = CudaNetwork::Create(*model, batch, dp.get(), nullptr, false);
  ASSERT_TRUE(net.ok()) << net.status().ToString();
  ToDevice(x, (*net)->d_input(), (*net)->stream());
  POLIS_ASSERT_OK((*net)->Forward());
  EXPECT_LT(RelErr(FromDevice((*net)->d_output(), n_out, (*net)->stream()), want), 1e-4);
  EXPECT_EQ((*net)->Backward().code(), Code::kFailedPrecondition);
}

TEST(CudaNetwork, BadEmbeddingIdIsADataError) {
  POLIS_REQUIRE_GPU();
  auto model = Model::Build(ParseModel(kCases[7].model), kCases[7].input);
  ASSERT_TRUE(model.ok());
  DeviceArray<float> dp, dg;
  POLIS_ASSERT_OK(dp.AllocateZeroed(model->parameter_count()));
  POLIS_ASSERT_OK(dg.AllocateZeroed(model->parameter_count()));
  auto net = CudaNetwork::Create(*model, 2, dp.get(), dg.get(), true);
  ASSERT_TRUE(net.ok());
  std::vector<float> ids(12, 1.f);
  ids[7] = 11.f;  // vocab is 11
  ToDevice(ids, (*net)->d_input(), (*net)->stream());
  POLIS_ASSERT_OK((*net)->Forward());
  Status st = (*net)->TakeDataError();
  EXPECT_EQ(st.code(), Code::kInvalidArgument) << st.ToString();
  EXPECT_NE(st.message().find("position 7"), std::string::npos) << st.message();
  EXPECT_TRUE((*net)->TakeDataError().ok());  // cleared
}

// ---------------------------------------------------------------- whole steps

proto::JobSpec ReadJob(const std::string& file) {
  std::ifstream in(std::string(POLIS_SOURCE_DIR) + "/jobs/" + file);
  std::stringstream text;
  text << in.rdbuf();
  proto::JobSpec job;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text.str(), &job)) << file;
  return job;
}

// Three training steps (forward, loss, backward, optimizer) on both
// backends from the same start: losses, first gradients and final
// parameters must agree.
void CompareTraining(const proto::JobSpec& job, const Shape& input, int64_t batch, bool classes) {
  auto model = Model::Build(job.model(), input);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  const int64_t n = model->parameter_count();
  const int64_t n_in = batch * nn::ShapeElements(input);
  const int64_t k = nn::ShapeElements(model->output_shape());
  std::vector<float> params(n), grads(n);
  model->InitParams(params.data(), job.training().seed());
  DeviceArray<float> dp, dg, dy;
  POLIS_ASSERT_OK(dp.Allocate(n));
  POLIS_ASSERT_OK(dg.AllocateZeroed(n));
  POLIS_ASSERT_OK(dy.Allocate(classes ? batch : batch * k));
  ToDevice(params, dp.get());
  nn::Network cpu(*model, batch, params.data(), grads.data(), true);
  auto net = CudaNetwork::Create(*model, batch, dp.get(), dg.get(), true);
  ASSERT_TRUE(net.ok()) << net.status().ToString();
  auto cpu_opt = MakeOptimizer(job.optimizer(), n, 1000);
  auto gpu_opt = nn::cuda::CudaOptimizer::Create(job.optimizer(), n, 1000);
  auto loss = nn::cuda::CudaLoss::Create(job.model(), batch, k);
  ASSERT_TRUE(cpu_opt.ok() && gpu_opt.ok() && loss.ok());
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(0.f, 1.f);
  for (int step = 0; step < 3; ++step) {
    SCOPED_TRACE("step " + std::to_string(step));
    std::vector<float> x(n_in), y(classes ? batch : batch * k);
    for (float& v : x) v = u(rng);
    for (float& v : y) v = classes ? static_cast<float>(rng() % k) : u(rng) - 0.5f;
    std::copy(x.begin(), x.end(), cpu.input());
    cpu.Forward();
    nn::LossStats want = nn::ComputeLoss(job.model(), cpu.output(), y.data(), batch, k,
                                         cpu.output_diff(), 1.f / batch);
    cpu.Backward();
    auto& g = **net;
    ToDevice(x, g.d_input(), g.stream());
    ToDevice(y, dy.get(), g.stream());
    POLIS_ASSERT_OK(g.Forward());
    POLIS_ASSERT_OK((*loss)->Compute(g.d_output(), dy.get(), g.d_output_diff(), 1.f / batch, g.stream()));
    POLIS_ASSERT_OK(g.Backward());
    auto got = (*loss)->Read(g.stream());
    ASSERT_TRUE(got.ok());
    EXPECT_NEAR(got->loss_sum, want.loss_sum, 1e-4 * std::abs(want.loss_sum) + 1e-6);
    if (step == 0) {
      EXPECT_LT(RelErr(FromDevice(dg.get(), n, g.stream()), grads), 1e-4) << "gradients";
    }
    (*cpu_opt)->Step(params.data(), grads.data());
    POLIS_ASSERT_OK((*gpu_opt)->Step(dp.get(), dg.get(), g.stream()));
    ASSERT_EQ(cudaStreamSynchronize(g.stream()), cudaSuccess);
  }
  EXPECT_LT(RelErr(FromDevice(dp.get(), n, (**net).stream()), params), 1e-3)
      << "parameters after 3 steps";
}

TEST(CudaTraining, SeedCnnMatchesCpu) {
  POLIS_REQUIRE_GPU();
  CompareTraining(ReadJob("fashion_cnn.pbtxt"), {1, 28, 28}, 16, true);
}

TEST(CudaTraining, BikeTransformerMatchesCpu) {
  POLIS_REQUIRE_GPU();
  // 168 hours of 18 features: the shape of jobs/bike_demand_transformer's data.
  CompareTraining(ReadJob("bike_demand_transformer.pbtxt"), {168, 18}, 8, false);
}

// On a machine without a GPU, Create fails with a sentence, not a crash.
TEST(CudaNetworkNoDevice, CreateFailsCleanly) {
  std::string why;
  if (nn::cuda::DeviceAvailable(&why)) GTEST_SKIP() << "a CUDA device is present";
  auto model = Model::Build(ParseModel(kCases[6].model), kCases[6].input);
  ASSERT_TRUE(model.ok());
  auto net = CudaNetwork::Create(*model, 2, nullptr, nullptr, false);
  ASSERT_FALSE(net.ok());
  EXPECT_EQ(net.status().code(), Code::kFailedPrecondition) << net.status().ToString();
}

// The registry's CUDA executors (common/nn/cuda_executors.cc, what a job
// check trusts) are exactly the layers the backend builds. No GPU needed.
TEST(CudaNetworkCoverage, RegistryExecutorsAreTheBackendsLayers) {
  EXPECT_EQ(nn::LayerRegistry::Global().Names(device::Kind::kCuda), nn::cuda::CudaLayerTypes());
}

}  // namespace
}  // namespace polis::gpu_test
