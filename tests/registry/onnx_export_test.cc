// ONNX export: the exported graph, run by a small reference interpreter
// written here from the ONNX operator definitions, gives the network's own
// outputs (checks weight layouts, padding, flatten order, Gemm transposes).
// Sequence models: a tiny model per layer kind is exported and checked by
// registry/tools/check_onnx.py (onnx.checker full_check, then its reference
// evaluator of the ONNX operators) against Polis's batched forward.
#include "registry/onnx_export.h"

#include <cmath>
#include <map>

#include "common/data/timeseries.h"
#include "tests/prereq.h"
#include "tests/registry/registry_test_util.h"

#if POLIS_TEST_WITH_ONNX
#include <onnx/onnx_pb.h>
#endif

namespace polis::registry {
namespace {

using namespace testing;  // NOLINT

#if POLIS_TEST_WITH_ONNX

struct Tensor {
  std::vector<int64_t> dims;
  std::vector<float> v;
};

std::vector<int64_t> Ints(const onnx::NodeProto& n, const std::string& name) {
  for (const auto& a : n.attribute())
    if (a.name() == name) return std::vector<int64_t>(a.ints().begin(), a.ints().end());
  return {};
}

int64_t Int(const onnx::NodeProto& n, const std::string& name, int64_t fallback) {
  for (const auto& a : n.attribute())
    if (a.name() == name) return a.i();
  return fallback;
}

// Runs the graph on one batch; only the operators the exporter emits.
std::map<std::string, Tensor> Interpret(const onnx::ModelProto& m, const Tensor& input) {
  std::map<std::string, Tensor> t;
  t["input"] = input;
  for (const auto& init : m.graph().initializer()) {
    Tensor x;
    x.dims.assign(init.dims().begin(), init.dims().end());
    x.v.resize(init.raw_data().size() / 4);
    std::memcpy(x.v.data(), init.raw_data().data(), init.raw_data().size());
    t[init.name()] = x;
  }
  for (const auto& n : m.graph().node()) {
    const Tensor& x = t.at(n.input(0));
    Tensor y;
    const std::string& op = n.op_type();
    if (op == "Conv") {
      const Tensor &w = t.at(n.input(1)), &b = t.at(n.input(2));
      const auto s = Ints(n, "strides"), p = Ints(n, "pads");
      const int64_t N = x.dims[0], C = x.dims[1], H = x.dims[2], W = x.dims[3];
      const int64_t O = w.dims[0], K = w.dims[2];
      const int64_t OH = (H + p[0] + p[2] - K) / s[0] + 1, OW = (W + p[1] + p[3] - K) / s[1] + 1;
      y.dims = {N, O, OH, OW};
      y.v.assign(N * O * OH * OW, 0.f);
      for (int64_t i = 0; i < N; ++i)
        for (int64_t o = 0; o < O; ++o)
          for (int64_t oh = 0; oh < OH; ++oh)
            for (int64_t ow = 0; ow < OW; ++ow) {
              double acc = b.v[o];
              for (int64_t c = 0; c < C; ++c)
                for (int64_t kh = 0; kh < K; ++kh)
                  for (int64_t kw = 0; kw < K; ++kw) {
                    const int64_t ih = oh * s[0] - p[0] + kh, iw = ow * s[1] - p[1] + kw;
                    if (ih < 0 || iw < 0 || ih >= H || iw >= W) continue;
                    acc += static_cast<double>(x.v[((i * C + c) * H + ih) * W + iw]) *
                           w.v[((o * C + c) * K + kh) * K + kw];
                  }
              y.v[((i * O + o) * OH + oh) * OW + ow] = static_cast<float>(acc);
            }
    } else if (op == "MaxPool") {
      const auto k = Ints(n, "kernel_shape"), s = Ints(n, "strides");
      const int64_t N = x.dims[0], C = x.dims[1], H = x.dims[2], W = x.dims[3];
      const int64_t OH = (H - k[0]) / s[0] + 1, OW = (W - k[1]) / s[1] + 1;
      y.dims = {N, C, OH, OW};
      for (int64_t i = 0; i < N * C; ++i)
        for (int64_t oh = 0; oh < OH; ++oh)
          for (int64_t ow = 0; ow < OW; ++ow) {
            float mx = -INFINITY;
            for (int64_t a = 0; a < k[0]; ++a)
              for (int64_t c = 0; c < k[1]; ++c)
                mx = std::max(mx, x.v[(i * H + oh * s[0] + a) * W + ow * s[1] + c]);
            y.v.push_back(mx);
          }
    } else if (op == "Flatten") {
      EXPECT_EQ(Int(n, "axis", 1), 1);
      y = x;
      int64_t rest = 1;
      for (size_t i = 1; i < x.dims.size(); ++i) rest *= x.dims[i];
      y.dims = {x.dims[0], rest};
    } else if (op == "Gemm") {
      EXPECT_EQ(Int(n, "transB", 0), 1);
      const Tensor &w = t.at(n.input(1)), &b = t.at(n.input(2));
      const int64_t N = x.dims[0], I = x.dims[1], O = w.dims[0];
      EXPECT_EQ(w.dims[1], I);
      y.dims = {N, O};
      for (int64_t i = 0; i < N; ++i)
        for (int64_t o = 0; o < O; ++o) {
          double acc = b.v[o];
          for (int64_t k = 0; k < I; ++k) acc += static_cast<double>(x.v[i * I + k]) * w.v[o * I + k];
          y.v.push_back(static_cast<float>(acc));
        }
    } else if (op == "Relu") {
      y = x;
      for (float& v : y.v) v = std::max(v, 0.f);
    } else if (op == "Tanh") {
      y = x;
      for (float& v : y.v) v = std::tanh(v);
    } else if (op == "Identity") {
      y = x;
    } else if (op == "Softmax") {
      y = x;
      const int64_t k = x.dims[1];
      for (int64_t i = 0; i < x.dims[0]; ++i) {
        float mx = -INFINITY;
        for (int64_t j = 0; j < k; ++j) mx = std::max(mx, x.v[i * k + j]);
        double sum = 0;
        for (int64_t j = 0; j < k; ++j) sum += std::exp(x.v[i * k + j] - mx);
        for (int64_t j = 0; j < k; ++j) y.v[i * k + j] = static_cast<float>(std::exp(x.v[i * k + j] - mx) / sum);
      }
    } else {
      ADD_FAILURE() << "unexpected operator " << op;
    }
    t[n.output(0)] = y;
  }
  return t;
}

// The exported graph of `a`, parsed; empty (and the test failed) when the
// export fails.
onnx::ModelProto Exported(const ModelArtifact& a, const std::string& name) {
  onnx::ModelProto m;
  auto bytes = ExportOnnx(a, name);
  EXPECT_TRUE(bytes.ok()) << bytes.status().ToString();
  if (bytes.ok()) {
    EXPECT_TRUE(m.ParseFromString(*bytes));
  }
  return m;
}

// SAME padding with stride 2 (uneven pads), ReLU and tanh, pooling, two
// dense layers; four outputs.
constexpr char kExportedCnn[] = R"(
    layer { type: "Conv2D" activation: RELU conv2d_param { filters: 4 kernel_size: 3 stride: 2 padding: SAME } }
    layer { type: "Conv2D" activation: TANH conv2d_param { filters: 3 kernel_size: 2 } }
    layer { type: "MaxPool2D" pool2d_param { pool_size: 2 } }
    layer { type: "Flatten" }
    layer { type: "Dense" activation: RELU dense_param { units: 6 } }
    layer { type: "Dense" dense_param { units: 4 } })";

TEST(OnnxExportTest, ExportedGraphComputesWhatTheNetworkComputes) {
  const nn::Shape in = {2, 11, 11};
  const ModelArtifact a = MakeArtifact(kExportedCnn, in, 21);
  const onnx::ModelProto m = Exported(a, "tiny");
  ASSERT_EQ(m.graph().input_size(), 1);
  EXPECT_EQ(m.opset_import(0).version(), 13);
  ASSERT_EQ(m.graph().output_size(), 2);
  EXPECT_EQ(m.graph().output(0).name(), "probabilities");
  EXPECT_EQ(m.graph().input(0).type().tensor_type().shape().dim(0).dim_param(), "batch");

  const int64_t rows = 3, E = 2 * 11 * 11;
  Tensor x;
  x.dims = {rows, 2, 11, 11};
  x.v = Pattern(rows * E, 4);
  auto out = Interpret(m, x);
  const Tensor& logits = out.at("logits");
  const Tensor& probs = out.at("probabilities");
  ASSERT_EQ(logits.dims, (std::vector<int64_t>{rows, 4}));
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<float> xr(x.v.begin() + r * E, x.v.begin() + (r + 1) * E);
    const auto ref = ReferenceLogits(a, xr);
    double sum = 0;
    for (int k = 0; k < 4; ++k) {
      EXPECT_NEAR(logits.v[r * 4 + k], ref[k], 1e-4) << "row " << r << " class " << k;
      sum += probs.v[r * 4 + k];
    }
    EXPECT_NEAR(sum, 1.0, 1e-5);
  }
}

// An RGB model on non-square images (3 x 10 x 11, as a SHARDS job trains
// it; SAME padding 0/1 rows and 1/1 columns): the graph's input is
// [batch, 3, 10, 11] and it computes what the network computes, channel
// planes in Polis' C x H x W order.
TEST(OnnxExportTest, RgbNonSquareModelExportsAndComputesWhatTheNetworkComputes) {
  const nn::Shape in = {3, 10, 11};
  ModelArtifact a = MakeArtifact(kExportedCnn, in, 33);
  a.header.mutable_job()->mutable_dataset()->set_format(proto::DatasetSpec::SHARDS);
  const onnx::ModelProto m = Exported(a, "rgb");
  ASSERT_EQ(m.graph().input_size(), 1);
  const auto& dims = m.graph().input(0).type().tensor_type().shape().dim();
  ASSERT_EQ(dims.size(), 4);
  EXPECT_EQ(dims[0].dim_param(), "batch");
  EXPECT_EQ(dims[1].dim_value(), 3);
  EXPECT_EQ(dims[2].dim_value(), 10);
  EXPECT_EQ(dims[3].dim_value(), 11);
  EXPECT_EQ(m.graph().initializer(0).dims(1), 3);  // the first kernel reads three channels
  std::map<std::string, std::string> props;
  for (const auto& p : m.metadata_props()) props[p.key()] = p.value();
  EXPECT_EQ(props["polis.input_layout"], "CHW RGB: planes R, G, B, each H x W");
  EXPECT_EQ(props["polis.input_preprocessing"], "pixel * 0.003921569 + 0");
  EXPECT_EQ(props.count("polis.class_names"), 0u);  // a model without names says none

  const int64_t rows = 2, E = 3 * 10 * 11;
  Tensor x;
  x.dims = {rows, 3, 10, 11};
  x.v = Pattern(rows * E, 6);
  // Channels that differ: a model that mixed them up would not match.
  for (int64_t i = 0; i < rows * E; ++i) x.v[i] += 0.25f * static_cast<float>((i / (10 * 11)) % 3);
  const auto out = Interpret(m, x);
  const Tensor& logits = out.at("logits");
  ASSERT_EQ(logits.dims, (std::vector<int64_t>{rows, 4}));
  for (int64_t r = 0; r < rows; ++r) {
    const auto ref = ReferenceLogits(a, std::vector<float>(x.v.begin() + r * E, x.v.begin() + (r + 1) * E));
    for (int k = 0; k < 4; ++k) EXPECT_NEAR(logits.v[r * 4 + k], ref[k], 1e-4) << "row " << r << " class " << k;
  }
}


// The model card's class names and descriptions travel in metadata_props.
TEST(OnnxExportTest, ClassNamesAndDescriptionsAreMetadataProps) {
  const onnx::ModelProto m = Exported(NamedClassifier(false), "named");
  std::map<std::string, std::string> props;
  for (const auto& p : m.metadata_props()) props[p.key()] = p.value();
  EXPECT_EQ(json::parse(props["polis.class_names"]),
            json({"T-shirt/top", "Trouser", "Pull\"over", "Dress", "Coat"}));
  EXPECT_EQ(props["polis.description"], "Tells five kinds of clothing apart.");
  EXPECT_EQ(props["polis.input_description"], "1x8x8 grey image, pixel value * 0.00392 + 0");
  EXPECT_EQ(props["polis.output_description"],
            "probabilities of 5 classes: T-shirt/top, Trouser, Pull\"over, Dress, Coat");
}

TEST(OnnxExportTest, WritesModelOnnxBesideTheArtifact) {
  TempDir dir;
  ASSERT_EQ(Publish(dir.path(), "m", MakeArtifact(kTinyCnn, kTinyInput, 1)), 1);
  auto path = ExportOnnxFile(dir.path(), "m", 0);
  ASSERT_TRUE(path.ok()) << path.status().ToString();
  EXPECT_EQ(*path, dir.path() + "/m/1/model.onnx");
  onnx::ModelProto m;
  auto bytes = ReadFile(*path);
  ASSERT_TRUE(bytes.ok());
  ASSERT_TRUE(m.ParseFromString(*bytes));
  EXPECT_EQ(m.graph().node_size(), 7);  // conv, relu, pool, flatten, gemm, identity, softmax
}

// ---------------------------------------------------------------- sequence models

struct SeqCase {
  const char* name;
  const char* layers;  // a regression model (loss MSE)
  nn::Shape input;
  const char* expect_op;  // an operator the graph must use
  bool ids = false;       // the input holds Embedding ids, not values
};

void PrintTo(const SeqCase& c, std::ostream* os) { *os << c.name; }

const SeqCase kSeqCases[] = {
    {"Lstm2Layers", R"(loss: MSE
       layer { type: "LSTM" recurrent_param { hidden_size: 5 num_layers: 2 } }
       layer { type: "Dense" dense_param { units: 2 } })", {6, 3}, "LSTM"},
    {"LstmSequencesMeanPool", R"(loss: MSE
       layer { type: "LSTM" recurrent_param { hidden_size: 4 return_sequences: true } }
       layer { type: "SequencePool" sequence_pool_param { mode: MEAN } }
       layer { type: "Dense" dense_param { units: 1 } })", {5, 3}, "LSTM"},
    {"Gru2Layers", R"(loss: MSE
       layer { type: "GRU" recurrent_param { hidden_size: 5 num_layers: 2 } }
       layer { type: "Dense" dense_param { units: 2 } })", {6, 3}, "GRU"},
    {"GruSequences", R"(loss: MSE
       layer { type: "GRU" recurrent_param { hidden_size: 4 return_sequences: true } }
       layer { type: "SequencePool" }
       layer { type: "Dense" dense_param { units: 1 } })", {4, 2}, "GRU"},
    {"EmbeddingLstm", R"(loss: MSE
       layer { type: "Embedding" embedding_param { vocab: 7 dim: 4 } }
       layer { type: "LSTM" recurrent_param { hidden_size: 3 } }
       layer { type: "Dense" dense_param { units: 1 } })", {6}, "Gather", true},
    {"LayerNormGeluDropout", R"(loss: MSE
       layer { type: "LayerNorm" layer_norm_param { epsilon: 1e-3 } }
       layer { type: "GELU" }
       layer { type: "Dropout" dropout_param { rate: 0.3 } }
       layer { type: "GELU" gelu_param { approximation: TANH } }
       layer { type: "SequencePool" sequence_pool_param { mode: MEAN } }
       layer { type: "Dense" activation: TANH dense_param { units: 3 } })", {4, 6}, "Erf"},
    {"CausalAttentionLearnedPositions", R"(loss: MSE
       layer { type: "PositionalEncoding" positional_encoding_param { kind: LEARNED } }
       layer { type: "MultiHeadSelfAttention" attention_param { num_heads: 2 causal: true } }
       layer { type: "SequencePool" }
       layer { type: "Dense" dense_param { units: 2 } })", {5, 4}, "Softmax"},
    {"Attention", R"(loss: MSE
       layer { type: "MultiHeadSelfAttention" attention_param { num_heads: 3 } }
       layer { type: "SequencePool" sequence_pool_param { mode: MEAN } }
       layer { type: "Dense" dense_param { units: 1 } })", {4, 6}, "MatMul"},
    {"TransformerSinusoidal", R"(loss: MSE
       layer { type: "PositionalEncoding" }
       layer { type: "TransformerEncoderBlock" transformer_param { num_heads: 2 ff_dim: 8 dropout: 0.2 } }
       layer { type: "TransformerEncoderBlock" transformer_param { num_heads: 1 ff_dim: 5 causal: true epsilon: 1e-3 } }
       layer { type: "SequencePool" }
       layer { type: "Dense" activation: RELU dense_param { units: 4 } }
       layer { type: "Dense" dense_param { units: 1 } })", {7, 4}, "Erf"},
};

class OnnxSequenceExportTest : public ::testing::TestWithParam<SeqCase> {};

// The exported graph, evaluated by check_onnx.py on a batch of inputs, gives
// what Polis's own (batched) forward gives, within 1e-4.
TEST_P(OnnxSequenceExportTest, CheckerMatchesPolisForward) {
  const SeqCase& c = GetParam();
  if (Sh(std::string("/usr/bin/python3 -c 'import numpy, onnx, onnx.checker'")).exit_code != 0)
    POLIS_MISSING_PREREQ() << "/usr/bin/python3 lacks numpy or onnx (Debian: python3-numpy python3-onnx; "
                              "launch/install-deps.sh installs them)";
  TempDir dir;
  ModelArtifact a = MakeArtifact(c.layers, c.input, 17);
  a.header.mutable_job()->mutable_dataset()->set_format(proto::DatasetSpec::CSV);
  const onnx::ModelProto m = Exported(a, c.name);
  ASSERT_EQ(m.opset_import(0).version(), 13);
  bool uses = false;
  for (const auto& n : m.graph().node()) uses |= n.op_type() == c.expect_op;
  EXPECT_TRUE(uses) << "no " << c.expect_op << " node";
  auto bytes = ExportOnnx(a, c.name);
  ASSERT_TRUE(bytes.ok());
  ASSERT_TRUE(WriteFileAtomic(dir.path() + "/model.onnx", *bytes).ok());

  // Polis's forward on a batch of 5 (the graph must not mix rows up).
  const int64_t rows = 5, per = nn::ShapeElements(c.input);
  std::vector<float> x = Pattern(rows * per, 3);
  if (c.ids)
    for (int64_t i = 0; i < rows * per; ++i) x[i] = static_cast<float>((i * 5 + i / per) % 7);
  auto model = nn::Model::Build(a.header.job().model(), c.input);
  ASSERT_TRUE(model.ok());
  std::vector<float> w = a.weights;
  nn::Network net(*model, rows, w.data(), nullptr, false);
  std::copy(x.begin(), x.end(), net.input());
  net.Forward();
  const int64_t k = nn::ShapeElements(model->output_shape());
  const std::vector<float> y(net.output(), net.output() + rows * k);
  for (float v : y) ASSERT_TRUE(std::isfinite(v));
  auto write = [&](const std::string& name, const std::vector<float>& v) {
    ASSERT_TRUE(WriteFileAtomic(dir.path() + "/" + name,
                                std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float)))
                    .ok());
  };
  write("windows.f32", x);
  write("polis.f32", y);
  CtlRun run = Sh(std::string("/usr/bin/python3 ") + POLIS_SOURCE_DIR + "/registry/tools/check_onnx.py --onnx " +
                  dir.path() + "/model.onnx --windows " + dir.path() + "/windows.f32 --polis-outputs " +
                  dir.path() + "/polis.f32 --batch 2 --tolerance 1e-4");
  ASSERT_EQ(run.exit_code, 0) << run.out << run.err;
  const json report = json::parse(run.out, nullptr, false);
  ASSERT_TRUE(report.is_object()) << run.out << run.err;
  EXPECT_EQ(report["windows"], rows);
  EXPECT_EQ(report["outputs"], k);
  EXPECT_LE(report["max_abs_diff"].get<double>(), 1e-4) << run.out;
  EXPECT_EQ(report["checker"], "ok (full_check)");

  // A wrong Polis output is caught: the check can fail.
  std::vector<float> off = y;
  off[rows * k - 1] += 1e-3f;
  write("off.f32", off);
  CtlRun bad = Sh(std::string("/usr/bin/python3 ") + POLIS_SOURCE_DIR + "/registry/tools/check_onnx.py --onnx " +
                  dir.path() + "/model.onnx --windows " + dir.path() + "/windows.f32 --polis-outputs " +
                  dir.path() + "/off.f32");
  EXPECT_EQ(bad.exit_code, 1) << bad.out << bad.err;
}

INSTANTIATE_TEST_SUITE_P(EveryLayerKind, OnnxSequenceExportTest, ::testing::ValuesIn(kSeqCases),
                         [](const auto& info) { return std::string(info.param.name); });

// A forecaster on a CSV time series: preprocessing.json beside model.onnx
// (and the same JSON in the graph's metadata) lists every input feature in
// input order with its recipe and statistics, and the target's.
TEST(OnnxExportTest, TimeSeriesPreprocessingIsWrittenBesideTheModel) {
  TempDir dir;
  proto::TimeSeriesSpec spec;
  spec.set_timestamp_column("time");
  spec.set_target_column("demand");
  spec.add_numeric_features("temp");
  spec.add_categorical_features()->set_column("weather");
  auto* idx = spec.add_categorical_features();
  idx->set_column("station");
  idx->set_encoding(proto::TimeSeriesSpec::Categorical::EMBEDDING_INDEX);
  spec.mutable_calendar_features()->set_month(false);
  spec.mutable_calendar_features()->set_holiday_column("holiday");
  spec.set_lookback(3);
  spec.set_duplicate_policy(proto::TimeSeriesSpec::Duplicate::KEEP_LAST);
  spec.set_missing_policy(proto::TimeSeriesSpec::Missing::FORWARD_FILL);
  spec.set_max_fill_steps(2);
  data::TimeSeriesStats stats;
  stats.feature_names = {"demand", "temp", "weather=<unknown>", "weather=rain", "weather=sun", "station#index",
                         "hour_sin", "hour_cos", "weekday_sin", "weekday_cos", "holiday"};
  stats.mean = {100, 12.5, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  stats.stddev = {20, 4, 1, 1, 1, 1, 1, 1, 1, 1, 1};
  stats.target_mean = 100;
  stats.target_stddev = 20;
  stats.vocabularies = {{"weather", {"rain", "sun"}}, {"station", {"a", "b", "c"}}};
  ModelArtifact a = MakeArtifact(R"(loss: MSE
      layer { type: "GRU" recurrent_param { hidden_size: 3 } }
      layer { type: "Dense" dense_param { units: 1 } })",
                                 {3, 11}, 5);
  proto::DatasetSpec& d = *a.header.mutable_job()->mutable_dataset();
  d.set_format(proto::DatasetSpec::CSV);
  *d.mutable_timeseries() = spec;
  a.header.set_preprocessing_json(stats.ToJson());
  ASSERT_EQ(Publish(dir.path(), "ts", a), 1);
  auto path = ExportOnnxFile(dir.path(), "ts", 0);
  ASSERT_TRUE(path.ok()) << path.status().ToString();
  auto text = ReadFile(dir.path() + "/ts/1/preprocessing.json");
  ASSERT_TRUE(text.ok()) << text.status().ToString();
  const json j = json::parse(*text, nullptr, false);
  ASSERT_TRUE(j.is_object()) << *text;
  EXPECT_EQ(j["format"], "polis-timeseries-preprocessing/1");
  EXPECT_EQ(j["lookback"], 3);
  EXPECT_EQ(j["target"]["mean"], 100.0);
  EXPECT_EQ(j["target"]["stddev"], 20.0);
  const json& f = j["features"];
  ASSERT_EQ(f.size(), 11u);
  EXPECT_EQ(f[0]["kind"], "numeric");
  EXPECT_EQ(f[0]["column"], "demand");
  EXPECT_EQ(f[1]["mean"], 12.5);
  EXPECT_EQ(f[1]["stddev"], 4.0);
  EXPECT_TRUE(f[2]["category"].is_null());  // the unknown slot
  EXPECT_EQ(f[4]["category"], "sun");
  EXPECT_EQ(f[5]["kind"], "category_index");
  EXPECT_EQ(f[5]["categories"], json({"a", "b", "c"}));
  EXPECT_EQ(f[6]["period"], "hour");
  EXPECT_EQ(f[6]["function"], "sin");
  EXPECT_EQ(f[9]["period"], "weekday");
  EXPECT_EQ(f[9]["function"], "cos");
  EXPECT_EQ(f[10]["column"], "holiday");
  EXPECT_EQ(j["row_policies"], (json{{"malformed", "FAIL"}, {"duplicate", "KEEP_LAST"},
                                     {"missing", "FORWARD_FILL"}, {"max_fill_steps", 2}}));
  onnx::ModelProto m;
  ASSERT_TRUE(m.ParseFromString(*ReadFile(*path)));
  std::map<std::string, std::string> props;
  for (const auto& p : m.metadata_props()) props[p.key()] = p.value();
  EXPECT_EQ(json::parse(props["polis.preprocessing"]), j);

  // Statistics that do not match the spec are refused, naming both counts.
  stats.feature_names.pop_back();
  stats.mean.pop_back();
  stats.stddev.pop_back();
  a.header.set_preprocessing_json(stats.ToJson());
  auto refused = TimeSeriesPreprocessingJson(a);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("10 features"), std::string::npos) << refused.status().ToString();
}

#else

TEST(OnnxExportTest, UnavailableWithoutLibonnx) {
  EXPECT_FALSE(OnnxExportAvailable());
  EXPECT_EQ(ExportOnnx(ModelArtifact(), "m").status().code(), Code::kUnimplemented);
}

#endif

}  // namespace
}  // namespace polis::registry
