// DP-SGD per-example gradients (Network::BackwardClipped) for every layer
// type with parameters, gradient-check style: each example's norm equals the
// norm of a batch-of-1 backward of that example alone, each clipped
// contribution has norm <= C, and the clipped sum equals a reference loop
// over batch-of-1 backward passes.
//
// Tolerance: float32 kernels summed in different orders (batched vs batch
// of 1, ghost norm vs materialised gradient): relative 2e-4 on norms, and
// 2e-4 of the largest entry on the clipped sum.
#include <gtest/gtest.h>

#include <google/protobuf/text_format.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "common/nn/model.h"

namespace polis::nn {
namespace {

Model Build(const std::string& text, const Shape& in) {
  proto::ModelSpec spec;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &spec)) << text;
  auto m = Model::Build(spec, in);
  EXPECT_TRUE(m.ok()) << m.status().ToString();
  return std::move(m).value();
}

double Norm(const std::vector<float>& g) {
  double s = 0;
  for (float v : g) s += static_cast<double>(v) * v;
  return std::sqrt(s);
}

// Runs the check on `model` with a batch of `batch`; `vocab` > 0 makes the
// inputs integer ids in [0, vocab) (an Embedding first). The last example
// is padding (zero output gradient) when pad is true.
void CheckPerExample(const Model& model, int64_t batch, int vocab = 0, bool pad = true) {
  ASSERT_EQ(UnsupportedForDp(model), "");
  const int64_t P = model.parameter_count(), in = ShapeElements(model.input_shape()),
                out = ShapeElements(model.output_shape());
  std::vector<float> params(P), grads(P);
  model.InitParams(params.data(), 7);
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  for (auto& p : params) p += 0.05f * u(rng);
  std::vector<float> x(batch * in), dy(batch * out);
  for (auto& v : x) v = vocab > 0 ? static_cast<float>(rng() % vocab) : u(rng);
  for (auto& v : dy) v = u(rng);
  if (pad) std::fill(dy.end() - out, dy.end(), 0.f);

  // Reference: each example alone through a batch-1 Network.
  Network one(model, 1, params.data(), grads.data(), true);
  std::vector<std::vector<float>> g(batch);
  std::vector<double> norms(batch);
  for (int64_t n = 0; n < batch; ++n) {
    std::copy(x.begin() + n * in, x.begin() + (n + 1) * in, one.input());
    one.Forward();
    std::copy(dy.begin() + n * out, dy.begin() + (n + 1) * out, one.output_diff());
    one.Backward();
    g[n] = grads;
    norms[n] = Norm(grads);
  }
  if (pad) EXPECT_EQ(norms[batch - 1], 0.0);

  Network net(model, batch, params.data(), grads.data(), true);
  std::vector<double> sorted(norms.begin(), norms.end() - (pad ? 1 : 0));
  std::sort(sorted.begin(), sorted.end());
  // No clipping (C above every norm), clipping about half, clipping all.
  for (double C : {2 * sorted.back() + 1, sorted[sorted.size() / 2], 0.5 * sorted.front()}) {
    std::copy(x.begin(), x.end(), net.input());
    net.Forward();
    std::copy(dy.begin(), dy.end(), net.output_diff());
    std::fill(grads.begin(), grads.end(), 1e3f);  // must be overwritten
    std::vector<float> got_norms(batch);
    net.BackwardClipped(static_cast<float>(C), got_norms.data());
    std::vector<double> want(P, 0.0);
    double biggest = 0;
    for (int64_t n = 0; n < batch; ++n) {
      EXPECT_NEAR(got_norms[n], norms[n], 2e-4 * norms[n] + 1e-6) << "example " << n << " C " << C;
      const double c = norms[n] > C ? C / norms[n] : 1.0;
      EXPECT_LE(c * norms[n], C * (1 + 1e-6));  // each contribution is bounded by C
      for (int64_t k = 0; k < P; ++k) want[k] += c * g[n][k];
    }
    for (double w : want) biggest = std::max(biggest, std::abs(w));
    for (int64_t k = 0; k < P; ++k)
      ASSERT_NEAR(grads[k], want[k], 2e-4 * biggest + 1e-7) << "parameter " << k << " C " << C;
    EXPECT_LE(Norm(grads), (batch - (pad ? 1 : 0)) * C * (1 + 1e-4));
    // output_diff is left as the caller wrote it.
    for (int64_t i = 0; i < batch * out; ++i) ASSERT_EQ(net.output_diff()[i], dy[i]);
  }
}

TEST(PerExample, DenseGhostNorm) {
  CheckPerExample(Build(R"(
    layer { type: "Dense" activation: RELU dense_param { units: 5 } }
    layer { type: "Dense" dense_param { units: 3 } })", {6}), 5);
}

TEST(PerExample, ConvPoolReluUnfold) {
  CheckPerExample(Build(R"(
    layer { type: "Conv2D" activation: RELU conv2d_param { filters: 3 kernel_size: 3 padding: VALID } }
    layer { type: "MaxPool2D" pool2d_param { pool_size: 2 } }
    layer { type: "Conv2D" conv2d_param { filters: 4 kernel_size: 2 stride: 2 padding: SAME } }
    layer { type: "ReLU" }
    layer { type: "Flatten" }
    layer { type: "Dense" dense_param { units: 3 } })", {2, 9, 9}), 4);
}

// Few output positions, many channels: the ghost-norm path, with padding.
TEST(PerExample, ConvGhostNormPadded) {
  CheckPerExample(Build(R"(
    layer { type: "Conv2D" activation: RELU conv2d_param { filters: 16 kernel_size: 3 padding: SAME } }
    layer { type: "Flatten" }
    layer { type: "Dense" dense_param { units: 3 } })", {8, 3, 3}), 4);
}

// Non-square input, SAME padding that differs between the axes.
TEST(PerExample, ConvSameNonSquare) {
  CheckPerExample(Build(R"(
    layer { type: "Conv2D" activation: TANH conv2d_param { filters: 3 kernel_size: 3 stride: 2 padding: SAME } }
    layer { type: "Flatten" }
    layer { type: "Dense" dense_param { units: 3 } })", {2, 10, 11}), 4);
}

// The third convolution (P = 9) takes the ghost norm, the others unfold.
TEST(PerExample, SeedCnn) {
  CheckPerExample(Build(R"(
    layer { type: "Conv2D" activation: RELU conv2d_param { filters: 32 kernel_size: 3 padding: VALID } }
    layer { type: "MaxPool2D" pool2d_param { pool_size: 2 } }
    layer { type: "Conv2D" activation: RELU conv2d_param { filters: 64 kernel_size: 3 padding: VALID } }
    layer { type: "MaxPool2D" pool2d_param { pool_size: 2 } }
    layer { type: "Conv2D" activation: RELU conv2d_param { filters: 64 kernel_size: 3 padding: VALID } }
    layer { type: "Flatten" }
    layer { type: "Dense" activation: RELU dense_param { units: 64 } }
    layer { type: "Dense" dense_param { units: 10 } })", {1, 28, 28}), 4, 0, false);
}

// Papernot et al.'s DP CNN for Fashion-MNIST (jobs/fashion_cnn_dp.pbtxt):
// tanh, 8x8 stride-2 SAME convolution, pooling with stride 1.
TEST(PerExample, TanhCnn) {
  CheckPerExample(Build(R"(
    layer { type: "Conv2D" activation: TANH conv2d_param { filters: 16 kernel_size: 8 stride: 2 padding: SAME } }
    layer { type: "MaxPool2D" pool2d_param { pool_size: 2 stride: 1 } }
    layer { type: "Conv2D" activation: TANH conv2d_param { filters: 32 kernel_size: 4 stride: 2 padding: VALID } }
    layer { type: "MaxPool2D" pool2d_param { pool_size: 2 stride: 1 } }
    layer { type: "Flatten" }
    layer { type: "Dense" activation: TANH dense_param { units: 32 } }
    layer { type: "Dense" dense_param { units: 10 } })", {1, 28, 28}), 4, 0, false);
}

TEST(PerExample, EmbeddingWithRepeatedIdsAndLstm) {
  CheckPerExample(Build(R"(
    layer { type: "Embedding" embedding_param { vocab: 4 dim: 3 } }
    layer { type: "LSTM" recurrent_param { hidden_size: 4 num_layers: 1 return_sequences: false } }
    layer { type: "Dense" dense_param { units: 2 } })", {6}), 4, 4);
}

TEST(PerExample, GruTwoLayersSequencesAndPool) {
  CheckPerExample(Build(R"(
    layer { type: "GRU" recurrent_param { hidden_size: 3 num_layers: 2 return_sequences: true } }
    layer { type: "SequencePool" sequence_pool_param { mode: MEAN } }
    layer { type: "Dense" dense_param { units: 2 } })", {5, 3}), 3);
}

TEST(PerExample, LstmTwoLayers) {
  CheckPerExample(Build(R"(
    layer { type: "LSTM" recurrent_param { hidden_size: 3 num_layers: 2 return_sequences: true } }
    layer { type: "SequencePool" }
    layer { type: "Dense" dense_param { units: 2 } })", {4, 2}), 3);
}

TEST(PerExample, LayerNormGeluAttention) {
  CheckPerExample(Build(R"(
    layer { type: "LayerNorm" }
    layer { type: "GELU" }
    layer { type: "MultiHeadSelfAttention" attention_param { num_heads: 2 causal: true } }
    layer { type: "SequencePool" sequence_pool_param { mode: MEAN } }
    layer { type: "LayerNorm" }
    layer { type: "Dense" dense_param { units: 2 } })", {5, 4}), 4);
}

TEST(PerExample, TransformerBlockWithLearnedPositions) {
  CheckPerExample(Build(R"(
    layer { type: "PositionalEncoding" positional_encoding_param { kind: LEARNED } }
    layer { type: "TransformerEncoderBlock" transformer_param { num_heads: 2 ff_dim: 8 } }
    layer { type: "SequencePool" }
    layer { type: "Dense" dense_param { units: 2 } })", {4, 4}), 3);
}

TEST(PerExample, UnsupportedLayerIsNamed) {
  Model m = Build(R"(
    layer { type: "TransformerEncoderBlock" name: "enc" transformer_param { num_heads: 2 ff_dim: 8 dropout: 0.1 } }
    layer { type: "SequencePool" })", {4, 4});
  const std::string why = UnsupportedForDp(m);
  EXPECT_NE(why.find("layer 'enc' (TransformerEncoderBlock)"), std::string::npos) << why;
  EXPECT_NE(why.find("transformer_param.dropout"), std::string::npos) << why;
  // Parameter-free layers (pooling, activations, dropout) need nothing.
  EXPECT_EQ(UnsupportedForDp(Build(R"(
    layer { type: "Dropout" dropout_param { rate: 0.5 } }
    layer { type: "GELU" }
    layer { type: "SequencePool" }
    layer { type: "Dense" dense_param { units: 2 } })", {4, 4})), "");
}

}  // namespace
}  // namespace polis::nn
