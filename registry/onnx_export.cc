#include "registry/onnx_export.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include <nlohmann/json.hpp>

#include "common/data/timeseries.h"
#include "common/fs.h"
#include "common/nn/model.h"
#include "registry/model_card.h"
#include "polis_config.h"

#if POLIS_WITH_ONNX
#include <onnx/checker.h>
#include <onnx/onnx_pb.h>
#include <onnx/shape_inference/implementation.h>
#endif

namespace polis::registry {

#if POLIS_WITH_ONNX
namespace {

constexpr char kExportableLayers[] =
    "Conv2D, MaxPool2D, Flatten, Dense, ReLU, Embedding, LSTM, GRU, Dropout, LayerNorm, GELU, "
    "MultiHeadSelfAttention, TransformerEncoderBlock, PositionalEncoding, SequencePool";

void SetInts(onnx::NodeProto* n, const std::string& name, const std::vector<int64_t>& v) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INTS);
  for (int64_t x : v) a->add_ints(x);
}

void SetInt(onnx::NodeProto* n, const std::string& name, int64_t v) {
  auto* a = n->add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::INT);
  a->set_i(v);
}

void SetTensorType(onnx::ValueInfoProto* v, const std::string& name, const std::vector<int64_t>& dims) {
  v->set_name(name);
  auto* t = v->mutable_type()->mutable_tensor_type();
  t->set_elem_type(onnx::TensorProto::FLOAT);
  auto* shape = t->mutable_shape();
  shape->add_dim()->set_dim_param("batch");
  for (int64_t d : dims) shape->add_dim()->set_dim_value(d);
}

// Appends nodes and initializers to one graph. Every name a layer creates
// starts with the layer's name, so names never collide across layers.
class GraphBuilder {
 public:
  explicit GraphBuilder(onnx::GraphProto* g) : g_(g) {}

  onnx::NodeProto* Node(const std::string& op, const std::vector<std::string>& in,
                        const std::string& out) {
    auto* n = g_->add_node();
    n->set_op_type(op);
    n->set_name(out);
    for (const auto& i : in) n->add_input(i);
    n->add_output(out);
    return n;
  }
  // A float initializer (dims {} is a scalar).
  std::string Floats(const std::string& name, const std::vector<int64_t>& dims,
                     const std::vector<float>& v) {
    std::string raw(sizeof(float) * v.size(), '\0');  // little-endian, as in the artifact
    std::memcpy(raw.data(), v.data(), raw.size());
    Initializer(name, onnx::TensorProto::FLOAT, dims)->set_raw_data(std::move(raw));
    return name;
  }
  std::string Scalar(const std::string& name, float v) { return Floats(name, {}, {v}); }
  std::string Int64s(const std::string& name, const std::vector<int64_t>& dims,
                     const std::vector<int64_t>& v) {
    auto* t = Initializer(name, onnx::TensorProto::INT64, dims);
    for (int64_t x : v) t->add_int64_data(x);
    return name;
  }
  // A 1-D int64 initializer: a shape for Reshape, axes for Squeeze.
  std::string Ints(const std::string& name, const std::vector<int64_t>& v) {
    return Int64s(name, {static_cast<int64_t>(v.size())}, v);
  }
  std::string Transpose(const std::string& x, const std::vector<int64_t>& perm, const std::string& out) {
    SetInts(Node("Transpose", {x}, out), "perm", perm);
    return out;
  }
  std::string Reshape(const std::string& x, const std::vector<int64_t>& shape, const std::string& out) {
    return Node("Reshape", {x, Ints(out + "/shape", shape)}, out)->output(0);
  }
  // y = x · Wᵀ + b over the last axis of [batch, rows, in], W as stored
  // (out, in): Gemm on [batch * rows, in].
  std::string Linear(const std::string& x, int64_t rows, int64_t in, const std::string& w,
                     const std::string& b, int64_t out_dim, const std::string& out) {
    const std::string flat = Reshape(x, {-1, in}, out + "/rows");
    SetInt(Node("Gemm", {flat, w, b}, out + "/gemm"), "transB", 1);
    return Reshape(out + "/gemm", {-1, rows, out_dim}, out);
  }
  // Layer normalisation over the last axis, decomposed (LayerNormalization
  // is opset 17): (x - mean) / sqrt(mean((x - mean)²) + eps) * gain + bias.
  std::string LayerNorm(const std::string& x, const std::string& gain, const std::string& bias,
                        float epsilon, const std::string& out) {
    SetInts(Node("ReduceMean", {x}, out + "/mean"), "axes", {-1});
    Node("Sub", {x, out + "/mean"}, out + "/centered");
    Node("Mul", {out + "/centered", out + "/centered"}, out + "/squared");
    SetInts(Node("ReduceMean", {out + "/squared"}, out + "/variance"), "axes", {-1});
    Node("Add", {out + "/variance", Scalar(out + "/epsilon", epsilon)}, out + "/variance_eps");
    Node("Sqrt", {out + "/variance_eps"}, out + "/stddev");
    Node("Div", {out + "/centered", out + "/stddev"}, out + "/normalized");
    Node("Mul", {out + "/normalized", gain}, out + "/scaled");
    return Node("Add", {out + "/scaled", bias}, out)->output(0);
  }
  // GELU, decomposed: 0.5·x·(1 + erf(x/√2)), or with the tanh
  // approximation 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
  std::string Gelu(const std::string& x, bool tanh_approximation, const std::string& out) {
    std::string inner;
    if (tanh_approximation) {
      Node("Mul", {x, x}, out + "/x2");
      Node("Mul", {out + "/x2", x}, out + "/x3");
      Node("Mul", {out + "/x3", Scalar(out + "/c", 0.044715f)}, out + "/cx3");
      Node("Add", {x, out + "/cx3"}, out + "/poly");
      Node("Mul", {out + "/poly", Scalar(out + "/sqrt_2_over_pi", 0.7978845608028654f)}, out + "/arg");
      inner = Node("Tanh", {out + "/arg"}, out + "/tanh")->output(0);
    } else {
      Node("Mul", {x, Scalar(out + "/inv_sqrt2", 0.7071067811865476f)}, out + "/arg");
      inner = Node("Erf", {out + "/arg"}, out + "/erf")->output(0);
    }
    Node("Add", {inner, Scalar(out + "/one", 1.f)}, out + "/one_plus");
    Node("Mul", {x, out + "/one_plus"}, out + "/x_one_plus");
    return Node("Mul", {out + "/x_one_plus", Scalar(out + "/half", 0.5f)}, out)->output(0);
  }
  // Multi-head self-attention on [batch, T, F] (as seq::AttentionCore):
  // qkv = x·Wᵀ + b with [q | k | v] per row and head h on columns
  // [h·dh, (h+1)·dh) of each; softmax(q·kᵀ/√dh (+ causal mask))·v per head;
  // heads concatenated, then the output projection.
  std::string Attention(const std::string& x, int64_t T, int64_t F, int64_t heads, bool causal,
                        const std::string& qkv_w, const std::string& qkv_b,
                        const std::string& out_w, const std::string& out_b, const std::string& out) {
    const int64_t dh = F / heads;
    const std::string qkv = Linear(x, T, F, qkv_w, qkv_b, 3 * F, out + "/qkv");
    Reshape(qkv, {-1, T, 3, heads, dh}, out + "/qkv_heads");
    Transpose(out + "/qkv_heads", {2, 0, 3, 1, 4}, out + "/qkv_parts");  // [3, N, heads, T, dh]
    const char* parts[] = {"q", "k", "v"};
    for (int i = 0; i < 3; ++i)
      SetInt(Node("Gather", {out + "/qkv_parts", Int64s(out + "/" + parts[i] + "_index", {}, {i})},
                  out + "/" + parts[i]),
             "axis", 0);
    Transpose(out + "/k", {0, 1, 3, 2}, out + "/k_t");
    Node("MatMul", {out + "/q", out + "/k_t"}, out + "/qk");
    std::string scores = Node("Mul", {out + "/qk", Scalar(out + "/scale", 1.f / std::sqrt(static_cast<float>(dh)))},
                              out + "/scores")->output(0);
    if (causal) {
      // Step t sees steps <= t: the others get a large negative score, so
      // their probability is exactly 0 in float, as in Polis.
      std::vector<float> mask(T * T, 0.f);
      for (int64_t t = 0; t < T; ++t)
        for (int64_t j = t + 1; j < T; ++j) mask[t * T + j] = -1e30f;
      scores = Node("Add", {scores, Floats(out + "/causal_mask", {T, T}, mask)}, out + "/masked")->output(0);
    }
    SetInt(Node("Softmax", {scores}, out + "/probs"), "axis", -1);
    Node("MatMul", {out + "/probs", out + "/v"}, out + "/ctx_heads");    // [N, heads, T, dh]
    Transpose(out + "/ctx_heads", {0, 2, 1, 3}, out + "/ctx_steps");     // [N, T, heads, dh]
    Reshape(out + "/ctx_steps", {-1, T, F}, out + "/ctx");
    return Linear(out + "/ctx", T, F, out_w, out_b, F, out);
  }

 private:
  onnx::TensorProto* Initializer(const std::string& name, onnx::TensorProto::DataType type,
                                 const std::vector<int64_t>& dims) {
    auto* t = g_->add_initializer();
    t->set_name(name);
    t->set_data_type(type);
    for (int64_t d : dims) t->add_dims(d);
    return t;
  }

  onnx::GraphProto* g_;
};

// The layer's parameters as initializers named "<layer>/<tensor>", in the
// canonical layouts the artifact stores.
std::vector<std::string> AddParams(GraphBuilder& b, const nn::LayerInfo& l, const std::vector<float>& w) {
  std::vector<std::string> names;
  for (const nn::ParamTensor& p : l.params)
    names.push_back(b.Floats(l.name + "/" + p.name, p.shape,
                             std::vector<float>(w.begin() + p.offset, w.begin() + p.offset + p.count)));
  return names;
}

// Gate blocks of a [G*H, cols] tensor reordered: block k of the result is
// block order[k] of `from`.
std::vector<float> ReorderGates(const float* from, int64_t H, int64_t cols, const std::vector<int>& order) {
  const int64_t block = H * cols;
  std::vector<float> out(order.size() * block);
  for (size_t k = 0; k < order.size(); ++k)
    std::copy(from + order[k] * block, from + (order[k] + 1) * block, out.begin() + k * block);
  return out;
}

// LSTM / GRU as ONNX's own LSTM / GRU operators, one per stacked layer.
// Polis' gates are PyTorch's (LSTM i f g o, GRU r z n); ONNX wants LSTM
// i o f c and GRU z r h, with B = [Wb | Rb]. Polis' GRU is PyTorch's, whose
// reset gate scales (R_h·h + Rb_h): linear_before_reset = 1.
std::string ExportRecurrent(GraphBuilder& b, const nn::LayerInfo& l, const std::vector<float>& w,
                            const std::string& x) {
  const auto& p = l.spec.recurrent_param();
  const bool gru = l.type == "GRU";
  const int64_t H = p.hidden_size(), G = gru ? 3 : 4;
  const std::vector<int> order = gru ? std::vector<int>{1, 0, 2} : std::vector<int>{0, 3, 1, 2};
  std::string seq = b.Transpose(x, {1, 0, 2}, l.name + "/time_major");  // [T, N, in]
  std::string last;
  for (int layer = 0; layer < p.num_layers(); ++layer) {
    const int64_t in = layer == 0 ? l.in_shape[1] : H;
    const std::string pre = fmt::format("{}/l{}.", l.name, layer);
    auto param = [&](int k) { return w.data() + l.params.at(4 * layer + k).offset; };
    const std::string W = b.Floats(pre + "W", {1, G * H, in}, ReorderGates(param(0), H, in, order));
    const std::string R = b.Floats(pre + "R", {1, G * H, H}, ReorderGates(param(1), H, H, order));
    std::vector<float> bias = ReorderGates(param(2), H, 1, order);
    const std::vector<float> rb = ReorderGates(param(3), H, 1, order);
    bias.insert(bias.end(), rb.begin(), rb.end());
    const std::string B = b.Floats(pre + "B", {1, 2 * G * H}, bias);
    auto* n = b.Node(gru ? "GRU" : "LSTM", {seq, W, R, B}, pre + "Y");
    n->add_output(pre + "Y_h");
    SetInt(n, "hidden_size", H);
    if (gru) SetInt(n, "linear_before_reset", 1);
    // Y [T, 1, N, H] -> [T, N, H], the next layer's input.
    seq = b.Node("Squeeze", {pre + "Y", b.Ints(pre + "Y_axes", {1})}, pre + "Y_steps")->output(0);
    last = pre + "Y_h";
  }
  if (p.return_sequences()) return b.Transpose(seq, {1, 0, 2}, l.name);  // [N, T, H]
  return b.Node("Squeeze", {last, b.Ints(l.name + "/Y_h_axes", {0})}, l.name)->output(0);  // [N, H]
}

// The sinusoidal table PositionalEncoding adds (as the layer computes it).
std::vector<float> SinusoidalTable(int64_t steps, int64_t f) {
  std::vector<float> table(steps * f);
  for (int64_t t = 0; t < steps; ++t)
    for (int64_t i = 0; i < f; ++i) {
      const double angle = t / std::pow(10000.0, static_cast<double>(i - i % 2) / f);
      table[t * f + i] = static_cast<float>(i % 2 == 0 ? std::sin(angle) : std::cos(angle));
    }
  return table;
}

// One sequence layer's nodes on input `x`; returns the output's name, or
// Unimplemented for a type this file does not know.
StatusOr<std::string> ExportSequenceLayer(GraphBuilder& b, const nn::LayerInfo& l,
                                          const std::vector<float>& w, const std::string& x) {
  const auto& spec = l.spec;
  if (l.type == "LSTM" || l.type == "GRU") return ExportRecurrent(b, l, w, x);
  if (l.type == "Dropout") return b.Node("Identity", {x}, l.name)->output(0);  // inference
  const std::vector<std::string> params = AddParams(b, l, w);
  if (l.type == "Embedding") {
    // Ids arrive as floats (exact integers in [0, vocab)); Gather wants int64.
    SetInt(b.Node("Cast", {x}, l.name + "/ids"), "to", onnx::TensorProto::INT64);
    SetInt(b.Node("Gather", {params.at(0), l.name + "/ids"}, l.name), "axis", 0);
    return l.name;
  }
  if (l.type == "LayerNorm")
    return b.LayerNorm(x, params.at(0), params.at(1), spec.layer_norm_param().epsilon(), l.name);
  if (l.type == "GELU")
    return b.Gelu(x, spec.gelu_param().approximation() == proto::GeluParam::TANH, l.name);
  if (l.type == "PositionalEncoding") {
    const std::string table =
        params.empty() ? b.Floats(l.name + "/table", {l.in_shape[0], l.in_shape[1]},
                                  SinusoidalTable(l.in_shape[0], l.in_shape[1]))
                       : params.at(0);
    return b.Node("Add", {x, table}, l.name)->output(0);
  }
  if (l.type == "SequencePool") {
    if (spec.sequence_pool_param().mode() == proto::SequencePoolParam::MEAN) {
      auto* n = b.Node("ReduceMean", {x}, l.name);
      SetInts(n, "axes", {1});
      SetInt(n, "keepdims", 0);
      return l.name;
    }
    const std::string last = b.Int64s(l.name + "/last_step", {}, {l.in_shape[0] - 1});
    SetInt(b.Node("Gather", {x, last}, l.name), "axis", 1);
    return l.name;
  }
  const int64_t T = l.in_shape.size() == 2 ? l.in_shape[0] : 0, F = l.in_shape.back();
  if (l.type == "MultiHeadSelfAttention") {
    const auto& a = spec.attention_param();
    return b.Attention(x, T, F, a.num_heads(), a.causal(), params[0], params[1], params[2],
                       params[3], l.name);
  }
  if (l.type == "TransformerEncoderBlock") {
    // Pre-norm: x1 = x + MHA(LN1(x)); y = x1 + FFN(LN2(x1)), FFN = Linear ->
    // GELU (erf) -> Linear; dropout is the identity at inference.
    const auto& t = spec.transformer_param();
    const std::string& n = l.name;
    b.LayerNorm(x, params[0], params[1], t.epsilon(), n + "/ln1");
    b.Attention(n + "/ln1", T, F, t.num_heads(), t.causal(), params[2], params[3], params[4],
                params[5], n + "/attn");
    b.Node("Add", {x, n + "/attn"}, n + "/x1");
    b.LayerNorm(n + "/x1", params[6], params[7], t.epsilon(), n + "/ln2");
    b.Linear(n + "/ln2", T, F, params[8], params[9], t.ff_dim(), n + "/ffn1");
    b.Gelu(n + "/ffn1", false, n + "/gelu");
    b.Linear(n + "/gelu", T, t.ff_dim(), params[10], params[11], F, n + "/ffn2");
    return b.Node("Add", {n + "/x1", n + "/ffn2"}, n)->output(0);
  }
  return Unimplemented("layer {} ({}) has no ONNX export yet; exportable layers: {}", l.name, l.type,
                       kExportableLayers);
}

// One CNN layer, as before: one node named after the layer.
StatusOr<std::string> ExportImageLayer(GraphBuilder& b, const nn::LayerInfo& l,
                                       const std::vector<float>& w, const std::string& cur) {
  const auto& spec = l.spec;
  const std::vector<std::string> param_names = AddParams(b, l, w);
  if (l.type == "Conv2D") {
    const auto& c = spec.conv2d_param();
    const int64_t k = c.kernel_size(), s = c.stride();
    nn::SamePadding ph, pw;  // VALID: none
    if (c.padding() == proto::Conv2DParam::SAME) {
      // As the layers pad: each axis on its own, the odd pixel bottom/right.
      ph = nn::SamePaddingOf(l.in_shape[1], k, s);
      pw = nn::SamePaddingOf(l.in_shape[2], k, s);
    }
    auto* n = b.Node("Conv", {cur, param_names.at(0), param_names.at(1)}, l.name);
    SetInts(n, "kernel_shape", {k, k});
    SetInts(n, "strides", {s, s});
    SetInts(n, "pads", {ph.before, pw.before, ph.after, pw.after});  // [top, left, bottom, right]
  } else if (l.type == "MaxPool2D") {
    const auto& p = spec.pool2d_param();
    const int64_t k = p.pool_size(), s = p.has_stride() ? p.stride() : k;
    auto* n = b.Node("MaxPool", {cur}, l.name);
    SetInts(n, "kernel_shape", {k, k});
    SetInts(n, "strides", {s, s});
  } else if (l.type == "Flatten") {
    SetInt(b.Node("Flatten", {cur}, l.name), "axis", 1);
  } else if (l.type == "Dense") {
    if (l.in_shape.size() != 1)
      return Unimplemented("layer {} (Dense) takes a {}-dimensional input; ONNX Gemm needs a vector",
                           l.name, l.in_shape.size());
    SetInt(b.Node("Gemm", {cur, param_names.at(0), param_names.at(1)}, l.name), "transB", 1);
  } else if (l.type == "ReLU") {
    b.Node("Relu", {cur}, l.name);
  } else {
    return Unimplemented("layer {} ({}) has no ONNX export yet; exportable layers: {}", l.name, l.type,
                         kExportableLayers);
  }
  return l.name;
}

bool IsImageLayer(const std::string& type) {
  return type == "Conv2D" || type == "MaxPool2D" || type == "Flatten" || type == "Dense" || type == "ReLU";
}

}  // namespace

bool OnnxExportAvailable() { return true; }

StatusOr<std::string> ExportOnnx(const ModelArtifact& a, const std::string& model_name) {
  const proto::ArtifactHeader& h = a.header;
  nn::Shape in_shape(h.input_shape().begin(), h.input_shape().end());
  POLIS_ASSIGN_OR_RETURN(nn::Model model, nn::Model::Build(h.job().model(), in_shape));
  if (model.parameter_count() != static_cast<int64_t>(a.weights.size()))
    return DataLoss("model '{}': rebuilds with {} parameters, the artifact holds {}", model_name,
                    model.parameter_count(), a.weights.size());

  onnx::ModelProto m;
  m.set_ir_version(onnx::IR_VERSION);
  m.set_producer_name("polis-registry");
  m.set_producer_version(POLIS_VERSION);
  m.set_model_version(1);
  auto* opset = m.add_opset_import();
  opset->set_domain("");
  opset->set_version(13);
  onnx::GraphProto* g = m.mutable_graph();
  g->set_name(model_name);
  SetTensorType(g->add_input(), "input", in_shape);
  GraphBuilder b(g);

  std::string cur = "input";
  for (const nn::LayerInfo& l : model.layers()) {
    const auto& spec = l.spec;
    POLIS_ASSIGN_OR_RETURN(cur, IsImageLayer(l.type) ? ExportImageLayer(b, l, a.weights, cur)
                                                     : ExportSequenceLayer(b, l, a.weights, cur));
    if (spec.activation() == proto::RELU && l.type != "ReLU") {
      b.Node("Relu", {cur}, l.name + "/relu");
      cur = l.name + "/relu";
    } else if (spec.activation() == proto::TANH) {
      b.Node("Tanh", {cur}, l.name + "/tanh");
      cur = l.name + "/tanh";
    }
  }
  const bool classifier = h.job().model().loss() == proto::ModelSpec::SOFTMAX_CROSS_ENTROPY &&
                          model.output_shape().size() == 1;
  if (classifier) {
    b.Node("Identity", {cur}, "logits");
    SetInt(b.Node("Softmax", {"logits"}, "probabilities"), "axis", 1);
    SetTensorType(g->add_output(), "probabilities", model.output_shape());
    SetTensorType(g->add_output(), "logits", model.output_shape());
  } else {
    b.Node("Identity", {cur}, "predictions");
    SetTensorType(g->add_output(), "predictions", model.output_shape());
  }
  for (const auto& m_ : h.metric()) {
    auto* p = m.add_metadata_props();
    p->set_key("polis.metric." + m_.name());
    p->set_value(fmt::format("{}", m_.value()));
  }
  // Images: IDX, or SHARDS of images (shards of a time series' windows
  // carry its TimeSeriesSpec, below).
  if (h.job().dataset().format() == proto::DatasetSpec::IDX ||
      (h.job().dataset().format() == proto::DatasetSpec::SHARDS && !h.job().dataset().has_timeseries())) {
    auto* p = m.add_metadata_props();
    p->set_key("polis.input_preprocessing");
    p->set_value(fmt::format("pixel * {} + {}", h.job().dataset().scale(), h.job().dataset().shift()));
    // Image libraries hand out interleaved pixels, OpenCV's in B, G, R order:
    // say which planes the input holds.
    if (in_shape.size() == 3 && (in_shape[0] == 1 || in_shape[0] == 3)) {
      auto* layout = m.add_metadata_props();
      layout->set_key("polis.input_layout");
      layout->set_value(in_shape[0] == 3 ? "CHW RGB: planes R, G, B, each H x W" : "CHW grey: one H x W plane");
    }
  }

  // What the model card says (registry/model_card.h): ONNX users read
  // the class names and descriptions without the registry.
  auto prop = [&m](const std::string& key, const std::string& value) {
    if (value.empty()) return;
    auto* p = m.add_metadata_props();
    p->set_key(key);
    p->set_value(value);
  };
  if (h.class_names_size() > 0)
    prop("polis.class_names",
         nlohmann::json(std::vector<std::string>(h.class_names().begin(), h.class_names().end())).dump());
  prop("polis.description", h.job().model_card().description());
  prop("polis.input_description", h.input_description());
  prop("polis.output_description", h.output_description());

  POLIS_ASSIGN_OR_RETURN(std::string pre, TimeSeriesPreprocessingJson(a));
  if (!pre.empty()) {
    auto* p = m.add_metadata_props();
    p->set_key("polis.input_preprocessing");
    p->set_value(fmt::format("time-series window: see polis.preprocessing ({} beside model.onnx)",
                             kPreprocessingFileName));
    auto* j = m.add_metadata_props();
    j->set_key("polis.preprocessing");
    j->set_value(pre);
  }

  // ONNX's own checks, wrapped once here: structure, then shapes.
  try {
    onnx::checker::check_model(m);
    onnx::ModelProto inferred = m;
    onnx::shape_inference::InferShapes(inferred);
    for (const auto& out : inferred.graph().output()) {
      const auto& dims = out.type().tensor_type().shape().dim();
      if (dims.size() != static_cast<int>(model.output_shape().size()) + 1)
        return InternalError("ONNX shape inference gives output '{}' {} dimensions, expected {}",
                             out.name(), dims.size(), model.output_shape().size() + 1);
      for (size_t i = 0; i < model.output_shape().size(); ++i)
        if (dims[static_cast<int>(i) + 1].dim_value() != model.output_shape()[i])
          return InternalError("ONNX shape inference gives output '{}' dimension {} = {}, expected {}",
                               out.name(), i + 1, dims[static_cast<int>(i) + 1].dim_value(),
                               model.output_shape()[i]);
    }
    // Every intermediate must have been inferred too (a mistaken attribute
    // shows up as a missing or wrong shape).
    for (const auto& vi : inferred.graph().value_info())
      if (!vi.type().tensor_type().has_shape())
        return InternalError("ONNX shape inference could not infer '{}'", vi.name());
  } catch (const std::exception& e) {
    return InternalError("the exported ONNX model of '{}' fails ONNX's checks: {}", model_name,
                         e.what());
  }
  std::string out;
  if (!m.SerializeToString(&out)) return InternalError("cannot serialize the ONNX model");
  return out;
}

#else  // !POLIS_WITH_ONNX

bool OnnxExportAvailable() { return false; }

StatusOr<std::string> ExportOnnx(const ModelArtifact&, const std::string&) {
  return Unimplemented("this polis-registry was built without ONNX (install libonnx-dev and rebuild)");
}

#endif

StatusOr<std::string> TimeSeriesPreprocessingJson(const ModelArtifact& a) {
  const proto::ArtifactHeader& h = a.header;
  const proto::DatasetSpec& d = h.job().dataset();
  if (!IsTimeSeriesHeader(h)) return std::string();  // CSV, or SHARDS of its windows
  POLIS_ASSIGN_OR_RETURN(data::TimeSeriesStats stats, data::TimeSeriesStats::FromJson(h.preprocessing_json()));
  const proto::TimeSeriesSpec& ts = d.timeseries();
  using nlohmann::json;
  // One entry per input feature, in input order: how its raw value is
  // made (kind) and standardised ((raw - mean) / stddev, in double, then
  // rounded to float32).
  json features = json::array();
  size_t f = 0;  // features the spec gives; checked against the statistics below
  auto add = [&](json entry) {
    if (f < stats.feature_names.size()) {
      entry["name"] = stats.feature_names[f];
      entry["mean"] = stats.mean[f];
      entry["stddev"] = stats.stddev[f];
      features.push_back(std::move(entry));
    }
    ++f;
  };
  if (ts.target_as_feature()) add({{"kind", "numeric"}, {"column", ts.target_column()}});
  for (const auto& c : ts.numeric_features()) add({{"kind", "numeric"}, {"column", c}});
  for (size_t i = 0; i < stats.vocabularies.size(); ++i) {
    const auto& v = stats.vocabularies[i];
    const bool index = static_cast<int>(i) < ts.categorical_features_size() &&
                       ts.categorical_features(static_cast<int>(i)).encoding() ==
                           proto::TimeSeriesSpec::Categorical::EMBEDDING_INDEX;
    if (index) {
      add({{"kind", "category_index"}, {"column", v.column}, {"categories", v.categories}});
      continue;
    }
    add({{"kind", "one_hot"}, {"column", v.column}, {"category", nullptr}});  // unknown
    for (const auto& c : v.categories) add({{"kind", "one_hot"}, {"column", v.column}, {"category", c}});
  }
  const auto& cal = ts.calendar_features();
  for (const auto& [on, what] : {std::pair{cal.hour(), "hour"}, std::pair{cal.weekday(), "weekday"},
                                  std::pair{cal.month(), "month"}}) {
    if (!on) continue;
    add({{"kind", "calendar"}, {"period", what}, {"function", "sin"}});
    add({{"kind", "calendar"}, {"period", what}, {"function", "cos"}});
  }
  if (!cal.holiday_column().empty()) add({{"kind", "numeric"}, {"column", cal.holiday_column()}});
  if (f != stats.feature_names.size())
    return DataLoss("the artifact's time-series statistics name {} features, its spec gives {}",
                    stats.feature_names.size(), f);
  json pj = json::parse(h.preprocessing_json(), nullptr, false);
  json j = {{"format", "polis-timeseries-preprocessing/1"},
            {"input", {{"name", "input"}, {"shape", {"batch", ts.lookback(), stats.feature_names.size()}},
                       {"dtype", "float32"}}},
            {"output", {{"name", "predictions"}, {"shape", {"batch", ts.horizon()}},
                        {"to_original_units", "value * target.stddev + target.mean"}}},
            {"lookback", ts.lookback()},
            {"horizon", ts.horizon()},
            {"frequency_seconds", ts.frequency_seconds()},
            {"timestamp_column", ts.timestamp_column()},
            {"timestamp_format", ts.timestamp_format()},
            {"hour_column", ts.hour_column()},
            {"features", features},
            {"target", {{"column", ts.target_column()}, {"mean", stats.target_mean},
                        {"stddev", stats.target_stddev}}}};
  if (pj.is_object() && pj.contains("header")) j["header"] = pj["header"];
  // How training turned the file's rows into a series (docs/design/timeseries.md,
  // "Policies"): a client preparing windows itself must do the same.
  j["row_policies"] = {
      {"malformed", proto::TimeSeriesSpec::Malformed::Policy_Name(ts.malformed_policy())},
      {"duplicate", proto::TimeSeriesSpec::Duplicate::Policy_Name(ts.duplicate_policy())},
      {"missing", proto::TimeSeriesSpec::Missing::Policy_Name(ts.missing_policy())},
      {"max_fill_steps", ts.max_fill_steps()}};
  return j.dump(1);
}

StatusOr<std::string> ExportOnnxFile(const std::string& root, const std::string& model,
                                     int64_t version) {
  POLIS_ASSIGN_OR_RETURN(std::vector<int64_t> versions, ListVersions(root, model));
  if (version == 0 && !versions.empty()) version = versions.back();
  POLIS_ASSIGN_OR_RETURN(ModelArtifact a, LoadVersion(root, model, version));
  POLIS_ASSIGN_OR_RETURN(std::string bytes, ExportOnnx(a, model));
  const std::string dir = fmt::format("{}/{}/{}", root, model, version);
  POLIS_ASSIGN_OR_RETURN(std::string pre, TimeSeriesPreprocessingJson(a));
  if (!pre.empty()) POLIS_RETURN_IF_ERROR(WriteFileAtomic(dir + "/" + kPreprocessingFileName, pre + "\n"));
  const std::string path = dir + "/" + kOnnxFileName;
  POLIS_RETURN_IF_ERROR(WriteFileAtomic(path, bytes));
  return path;
}

}  // namespace polis::registry
