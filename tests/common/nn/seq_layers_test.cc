// Sequence layers (common/nn/seq_layers.cc): a numerical gradient check for
// every layer and for two small end-to-end models, LSTM/GRU outputs against
// values computed here in double, causality of masked attention, dropout
// semantics, and the validation messages.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>

#include <google/protobuf/text_format.h>

#include "common/nn/model.h"
#include "common/nn/seq_kernels.h"
#include "tests/common/nn/gradient_checker.h"

namespace polis::nn {
namespace {

proto::ModelSpec ParseModel(const std::string& text) {
  proto::ModelSpec spec;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &spec)) << text;
  return spec;
}

Model BuildOrDie(const std::string& text, const Shape& in) {
  auto m = Model::Build(ParseModel(text), in);
  EXPECT_TRUE(m.ok()) << m.status().ToString();
  return std::move(m).value();
}

void CheckModel(const std::string& text, const Shape& in, int64_t batch = 3, int samples = 60) {
  auto model = Model::Build(ParseModel(text), in);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  Checker c(*model, batch, 1234);
  c.Run(samples);
}

// Dropout draws a new mask per Forward; central differences need one mask.
struct FrozenDropout {
  FrozenDropout() { seq::SetDropoutMaskFrozenForTesting(true); }
  ~FrozenDropout() { seq::SetDropoutMaskFrozenForTesting(false); }
};

std::string Recurrent(const char* type, int hidden, int layers, bool seq) {
  return std::string("layer { type: \"") + type + "\" recurrent_param { hidden_size: " +
         std::to_string(hidden) + " num_layers: " + std::to_string(layers) +
         " return_sequences: " + (seq ? "true" : "false") + " } }";
}

// ------------------------------------------------------------ gradient checks

TEST(SeqGradient, Embedding) {
  Model m = BuildOrDie(R"(layer { type: "Embedding" embedding_param { vocab: 7 dim: 5 } })", {6});
  Checker c(m, 3, 1234);
  std::mt19937 rng(3);
  for (auto& x : c.input) x = static_cast<float>(rng() % 7);
  c.Run(60, /*check_input=*/false);
  for (size_t i = 0; i < c.input.size(); ++i) EXPECT_EQ(c.net->input_diff()[i], 0.f);
}

TEST(SeqGradient, LstmSequences) { CheckModel(Recurrent("LSTM", 4, 1, true), {5, 3}); }
TEST(SeqGradient, LstmLastStep) { CheckModel(Recurrent("LSTM", 4, 1, false), {5, 3}); }
TEST(SeqGradient, LstmTwoLayers) { CheckModel(Recurrent("LSTM", 3, 2, true), {4, 5}, 2, 80); }
TEST(SeqGradient, LstmLengthOne) { CheckModel(Recurrent("LSTM", 3, 2, false), {1, 2}); }
TEST(SeqGradient, LstmLengthTwo) { CheckModel(Recurrent("LSTM", 3, 2, true), {2, 2}); }
TEST(SeqGradient, GruSequences) { CheckModel(Recurrent("GRU", 4, 1, true), {5, 3}); }
TEST(SeqGradient, GruLastStep) { CheckModel(Recurrent("GRU", 4, 1, false), {5, 3}); }
TEST(SeqGradient, GruTwoLayers) { CheckModel(Recurrent("GRU", 3, 2, true), {4, 5}, 2, 80); }
TEST(SeqGradient, GruLengthOne) { CheckModel(Recurrent("GRU", 3, 2, false), {1, 2}); }
TEST(SeqGradient, GruLengthTwo) { CheckModel(Recurrent("GRU", 3, 2, true), {2, 2}); }

TEST(SeqGradient, Dropout) {
  FrozenDropout frozen;
  CheckModel(R"(layer { type: "Dropout" dropout_param { rate: 0.4 seed: 5 } })", {4, 3});
}

TEST(SeqGradient, LayerNormSequence) {
  CheckModel(R"(layer { type: "LayerNorm" })", {4, 6});
}
TEST(SeqGradient, LayerNormFlat) {
  CheckModel(R"(layer { type: "LayerNorm" layer_norm_param { epsilon: 1e-3 } })", {7});
}

TEST(SeqGradient, GeluErf) { CheckModel(R"(layer { type: "GELU" })", {4, 3}); }
TEST(SeqGradient, GeluTanh) {
  CheckModel(R"(layer { type: "GELU" gelu_param { approximation: TANH } })", {4, 3});
}

TEST(SeqGradient, Attention) {
  CheckModel(R"(layer { type: "MultiHeadSelfAttention" attention_param { num_heads: 2 } })",
             {5, 4});
}
TEST(SeqGradient, AttentionCausal) {
  CheckModel(R"(layer { type: "MultiHeadSelfAttention"
                        attention_param { num_heads: 2 causal: true } })",
             {5, 4});
}
TEST(SeqGradient, AttentionOneStep) {
  CheckModel(R"(layer { type: "MultiHeadSelfAttention" attention_param { num_heads: 1 } })",
             {1, 3});
}

TEST(SeqGradient, TransformerBlock) {
  CheckModel(R"(layer { type: "TransformerEncoderBlock"
                        transformer_param { num_heads: 2 ff_dim: 6 } })",
             {4, 4}, 2, 80);
}
TEST(SeqGradient, TransformerBlockCausalDropout) {
  FrozenDropout frozen;
  CheckModel(R"(layer { type: "TransformerEncoderBlock"
                        transformer_param { num_heads: 2 ff_dim: 6 causal: true dropout: 0.2 } })",
             {4, 4}, 2, 80);
}

TEST(SeqGradient, PositionalEncodingSinusoidal) {
  CheckModel(R"(layer { type: "PositionalEncoding" })", {5, 3});
}
TEST(SeqGradient, PositionalEncodingLearned) {
  CheckModel(R"(layer { type: "PositionalEncoding"
                        positional_encoding_param { kind: LEARNED } })",
             {5, 3});
}

TEST(SeqGradient, SequencePoolLast) {
  CheckModel(R"(layer { type: "SequencePool" })", {4, 3});
}
TEST(SeqGradient, SequencePoolMean) {
  CheckModel(R"(layer { type: "SequencePool" sequence_pool_param { mode: MEAN } })", {4, 3});
}

TEST(SeqGradient, AfterBlockedConvolution) {
  // 16 channels: oneDNN picks a blocked layout, so GELU and Dropout run on
  // it as is and LayerNorm reorders to plain and back.
  FrozenDropout frozen;
  CheckModel(R"(layer { type: "Conv2D" conv2d_param { filters: 16 kernel_size: 3 } }
               layer { type: "GELU" }
               layer { type: "Dropout" dropout_param { rate: 0.3 } }
               layer { type: "LayerNorm" }
               layer { type: "Flatten" }
               layer { type: "Dense" dense_param { units: 3 } })",
             {3, 6, 6}, 2, 80);
}

// ------------------------------------------------------------ whole models

TEST(SeqModel, TransformerClassifier) {
  FrozenDropout frozen;
  CheckModel(R"(layer { type: "PositionalEncoding" }
               layer { type: "TransformerEncoderBlock"
                       transformer_param { num_heads: 2 ff_dim: 8 dropout: 0.1 } }
               layer { type: "SequencePool" sequence_pool_param { mode: MEAN } }
               layer { type: "Dense" dense_param { units: 3 } })",
             {6, 4}, 2, 80);
}

TEST(SeqModel, LstmClassifier) {
  CheckModel(Recurrent("LSTM", 4, 2, false) + R"( layer { type: "Dense" dense_param { units: 3 } })",
             {5, 3}, 2, 80);
}

TEST(SeqModel, EmbeddingGruHead) {
  Model m = BuildOrDie(R"(layer { type: "Embedding" embedding_param { vocab: 9 dim: 4 } }
                         layer { type: "GRU" recurrent_param { hidden_size: 3 } }
                         layer { type: "Dropout" dropout_param { rate: 0.3 } }
                         layer { type: "Dense" dense_param { units: 2 } })",
                       {5});
  FrozenDropout frozen;
  Checker c(m, 2, 77);
  std::mt19937 rng(9);
  for (auto& x : c.input) x = static_cast<float>(rng() % 9);
  c.Run(80, /*check_input=*/false);
}

// ------------------------------------------------------------ reference values

double Sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// T=2, F=1, H=1, batch 2: every gate gets its own weight so that a gate
// permutation or a bias mix-up changes the output.
struct TinyRnn {
  std::vector<float> params;
  std::vector<float> out;
  TinyRnn(const char* type, const std::vector<float>& p, const std::vector<float>& x) {
    Model m = BuildOrDie(Recurrent(type, 1, 1, true), {2, 1});
    EXPECT_EQ(m.parameter_count(), static_cast<int64_t>(p.size()));
    params = p;
    std::vector<float> grads(p.size());
    Network net(m, 2, params.data(), grads.data(), /*training=*/false);
    std::copy(x.begin(), x.end(), net.input());
    net.Forward();
    out.assign(net.output(), net.output() + 4);
  }
};

TEST(SeqReference, LstmTiny) {
  // Layout: weight_ih[i,f,g,o], weight_hh[i,f,g,o], bias_ih[4], bias_hh[4].
  const std::vector<float> p = {0.5f, -0.4f, 0.9f, 0.3f,  -0.2f, 0.6f, 0.1f, -0.7f,
                                0.05f, 0.2f, -0.1f, 0.15f, -0.03f, 0.1f, 0.02f, -0.05f};
  const std::vector<float> x = {1.0f, -0.5f, 0.3f, 2.0f};  // [n][t]
  TinyRnn r("LSTM", p, x);
  for (int n = 0; n < 2; ++n) {
    double h = 0, c = 0;
    for (int t = 0; t < 2; ++t) {
      double xt = x[n * 2 + t], pre[4];
      for (int g = 0; g < 4; ++g) pre[g] = p[g] * xt + p[4 + g] * h + p[8 + g] + p[12 + g];
      double i = Sigmoid(pre[0]), f = Sigmoid(pre[1]), gg = std::tanh(pre[2]), o = Sigmoid(pre[3]);
      c = f * c + i * gg;
      h = o * std::tanh(c);
      EXPECT_NEAR(r.out[n * 2 + t], h, 1e-6) << "n=" << n << " t=" << t;
    }
  }
}

TEST(SeqReference, GruTiny) {
  // Layout: weight_ih[r,z,n], weight_hh[r,z,n], bias_ih[3], bias_hh[3].
  const std::vector<float> p = {0.5f, -0.4f, 0.9f, -0.2f, 0.6f, -0.7f,
                                0.05f, 0.2f, -0.1f, -0.03f, 0.1f, 0.25f};
  const std::vector<float> x = {1.0f, -0.5f, 0.3f, 2.0f};
  TinyRnn r("GRU", p, x);
  for (int n = 0; n < 2; ++n) {
    double h = 0;
    for (int t = 0; t < 2; ++t) {
      double xt = x[n * 2 + t];
      double rg = Sigmoid(p[0] * xt + p[6] + p[3] * h + p[9]);
      double z = Sigmoid(p[1] * xt + p[7] + p[4] * h + p[10]);
      double nn = std::tanh(p[2] * xt + p[8] + rg * (p[5] * h + p[11]));
      h = (1 - z) * nn + z * h;
      EXPECT_NEAR(r.out[n * 2 + t], h, 1e-6) << "n=" << n << " t=" << t;
    }
  }
}

// ------------------------------------------------------------ attention

TEST(SeqAttention, CausalOutputIgnoresLaterSteps) {
  for (const char* layer :
       {R"(layer { type: "MultiHeadSelfAttention" attention_param { num_heads: 2 causal: true } })",
        R"(layer { type: "TransformerEncoderBlock"
                   transformer_param { num_heads: 2 ff_dim: 8 causal: true } })"}) {
    const int64_t T = 6, F = 4, N = 2;
    Model m = BuildOrDie(layer, {T, F});
    std::vector<float> params(m.parameter_count()), grads(params.size());
    m.InitParams(params.data(), 11);
    Network net(m, N, params.data(), grads.data(), /*training=*/false);
    std::mt19937 rng(5);
    std::uniform_real_distribution<float> u(-1.f, 1.f);
    std::vector<float> x(N * T * F);
    for (auto& v : x) v = u(rng);
    std::copy(x.begin(), x.end(), net.input());
    net.Forward();
    std::vector<float> before(net.output(), net.output() + x.size());
    const int64_t t0 = 2;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t t = t0 + 1; t < T; ++t)
        for (int64_t f = 0; f < F; ++f) x[(n * T + t) * F + f] += 3.f * u(rng);
    std::copy(x.begin(), x.end(), net.input());
    net.Forward();
    int changed_later = 0;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t t = 0; t < T; ++t)
        for (int64_t f = 0; f < F; ++f) {
          const int64_t i = (n * T + t) * F + f;
          if (t <= t0) EXPECT_NEAR(net.output()[i], before[i], 1e-6) << layer << " t=" << t;
          else changed_later += std::abs(net.output()[i] - before[i]) > 1e-4;
        }
    EXPECT_GT(changed_later, 0) << layer;
  }
}

TEST(SeqAttention, NonCausalSeesLaterSteps) {
  Model m = BuildOrDie(
      R"(layer { type: "MultiHeadSelfAttention" attention_param { num_heads: 1 } })", {3, 2});
  std::vector<float> params(m.parameter_count()), grads(params.size());
  m.InitParams(params.data(), 3);
  Network net(m, 1, params.data(), grads.data(), false);
  std::vector<float> x = {0.1f, 0.2f, -0.3f, 0.4f, 0.5f, -0.6f};
  std::copy(x.begin(), x.end(), net.input());
  net.Forward();
  const float first = net.output()[0];
  net.input()[4] += 1.f;
  net.Forward();
  EXPECT_GT(std::abs(net.output()[0] - first), 1e-5);
}

// ------------------------------------------------------------ dropout

TEST(SeqDropout, InferenceIsIdentity) {
  Model m = BuildOrDie(R"(layer { type: "Dropout" dropout_param { rate: 0.5 } })", {3, 4});
  std::vector<float> none;
  Network net(m, 2, none.data(), nullptr, /*training=*/false);
  for (int i = 0; i < 24; ++i) net.input()[i] = 0.1f * i - 1.f;
  net.Forward();
  for (int i = 0; i < 24; ++i) EXPECT_EQ(net.output()[i], 0.1f * i - 1.f);
}

TEST(SeqDropout, TrainingScalesKeptAndReusesMaskInBackward) {
  const float rate = 0.25f;
  Model m = BuildOrDie(R"(layer { type: "Dropout" dropout_param { rate: 0.25 seed: 3 } })",
                       {100, 40});
  std::vector<float> none;
  const int64_t n = 2 * 100 * 40;
  Network net(m, 2, none.data(), none.data(), /*training=*/true, /*want_input_grad=*/true);
  for (int64_t i = 0; i < n; ++i) net.input()[i] = 1.f + 0.001f * (i % 100);
  net.Forward();
  std::vector<float> first(net.output(), net.output() + n);
  int64_t dropped = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float x = net.input()[i], y = first[i];
    if (y == 0.f) ++dropped;
    else EXPECT_FLOAT_EQ(y, x / (1.f - rate)) << i;
  }
  const double frac = static_cast<double>(dropped) / n;
  EXPECT_NEAR(frac, rate, 0.02);
  for (int64_t i = 0; i < n; ++i) net.output_diff()[i] = 2.f;
  net.Backward();
  for (int64_t i = 0; i < n; ++i)
    EXPECT_EQ(net.input_diff()[i], first[i] == 0.f ? 0.f : 2.f / (1.f - rate)) << i;
  // The next step draws a different mask.
  net.Forward();
  int64_t differ = 0;
  for (int64_t i = 0; i < n; ++i) differ += (net.output()[i] == 0.f) != (first[i] == 0.f);
  EXPECT_GT(differ, n / 10);
}

// ------------------------------------------------------------ embedding ids

TEST(SeqEmbeddingDeathTest, OutOfRangeIdIsRefused) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  Model m = BuildOrDie(R"(layer { type: "Embedding" embedding_param { vocab: 4 dim: 2 } })", {3});
  std::vector<float> params(m.parameter_count());
  Network net(m, 1, params.data(), nullptr, false);
  net.input()[0] = 1;
  net.input()[1] = 4;  // == vocab
  net.input()[2] = 0;
  EXPECT_DEATH(net.Forward(), "id 4 at sample 0 step 1");
  net.input()[1] = 1.5f;
  EXPECT_DEATH(net.Forward(), "not an integer");
  net.input()[1] = -1;
  EXPECT_DEATH(net.Forward(), "embedding_param.vocab");
}

// ------------------------------------------------------------ shapes, params, errors

TEST(SeqInfer, ShapesAndParameterCounts) {
  Model lstm = BuildOrDie(Recurrent("LSTM", 8, 2, false), {10, 3});
  EXPECT_EQ(lstm.output_shape(), (Shape{8}));
  // PyTorch nn.LSTM(3, 8, 2): 4H(F + H + 2) + 4H(H + H + 2).
  EXPECT_EQ(lstm.parameter_count(), 32 * (3 + 8 + 2) + 32 * (8 + 8 + 2));
  Model gru = BuildOrDie(Recurrent("GRU", 8, 1, true), {10, 3});
  EXPECT_EQ(gru.output_shape(), (Shape{10, 8}));
  EXPECT_EQ(gru.parameter_count(), 24 * (3 + 8 + 2));
  Model block = BuildOrDie(R"(layer { type: "TransformerEncoderBlock"
                                      transformer_param { num_heads: 4 ff_dim: 32 } })",
                           {7, 16});
  // PyTorch TransformerEncoderLayer(16, 4, 32): 2 norms, in/out projections, FFN.
  EXPECT_EQ(block.parameter_count(), 4 * 16 + (3 * 16 * 16 + 3 * 16) + (16 * 16 + 16) +
                                         (32 * 16 + 32) + (16 * 32 + 16));
  Model pool = BuildOrDie(R"(layer { type: "Embedding" embedding_param { vocab: 5 dim: 3 } }
                            layer { type: "SequencePool" })",
                          {4});
  EXPECT_EQ(pool.output_shape(), (Shape{3}));
}

TEST(SeqInfer, LayerNormGainStartsAtOne) {
  Model m = BuildOrDie(R"(layer { type: "LayerNorm" })", {3, 5});
  std::vector<float> p(m.parameter_count(), -7.f);
  m.InitParams(p.data(), 1);
  ASSERT_EQ(m.layers()[0].params[0].name, "gain");
  for (int i = 0; i < 5; ++i) EXPECT_EQ(p[i], 1.f);
  for (int i = 5; i < 10; ++i) EXPECT_EQ(p[i], 0.f);
}

void ExpectError(const std::string& text, const Shape& in, const std::string& needle) {
  auto m = Model::Build(ParseModel(text), in);
  ASSERT_FALSE(m.ok()) << text;
  EXPECT_NE(m.status().message().find(needle), std::string::npos) << m.status().message();
}

TEST(SeqInfer, ClearErrors) {
  ExpectError(R"(layer { type: "LSTM" })", {4, 3}, "recurrent_param.hidden_size");
  ExpectError(R"(layer { type: "GRU" recurrent_param { hidden_size: 3 num_layers: 0 } })", {4, 3},
              "recurrent_param.num_layers");
  ExpectError(R"(layer { type: "LSTM" recurrent_param { hidden_size: 3 } })", {12},
              "[steps,features]");
  ExpectError(R"(layer { type: "Embedding" embedding_param { dim: 3 } })", {4},
              "embedding_param.vocab");
  ExpectError(R"(layer { type: "Embedding" embedding_param { vocab: 3 dim: 3 } })", {4, 2},
              "[steps] input of integer ids");
  ExpectError(R"(layer { type: "MultiHeadSelfAttention" attention_param { num_heads: 3 } })",
              {5, 8}, "attention_param.num_heads = 3 does not divide");
  ExpectError(R"(layer { type: "TransformerEncoderBlock" transformer_param { num_heads: 2 } })",
              {5, 8}, "transformer_param.ff_dim");
  ExpectError(R"(layer { type: "Dropout" dropout_param { rate: 1 } })", {5, 8},
              "dropout_param.rate");
  ExpectError(R"(layer { type: "LayerNorm" layer_norm_param { epsilon: 0 } })", {5, 8},
              "layer_norm_param.epsilon");
  ExpectError(R"(layer { type: "SequencePool" })", {8}, "SequencePool needs a [steps,features]");
  ExpectError(R"(layer { type: "GELU" activation: RELU })", {8}, "no activation");
  ExpectError(R"(layer { type: "LSTM" recurrent_param { hidden_size: 3 return_sequences: true } }
                 layer { type: "Dense" dense_param { units: 2 } })",
              {4, 3}, "layer[1]");
}

}  // namespace
}  // namespace polis::nn
