// Sequence layers for recurrent and Transformer models on time series:
// Embedding, LSTM, GRU, Dropout, LayerNorm, GELU, MultiHeadSelfAttention,
// TransformerEncoderBlock, PositionalEncoding, SequencePool. See layer.h for
// the contract and docs/design/sequence-layers.md for the conventions.
//
// A per-sample sequence is [T, F] (time-major within a sample), so a batch is
// a plain row-major [N, T, F] buffer. LSTM/GRU run on oneDNN's RNN
// primitives; LayerNorm, GELU and every projection on oneDNN primitives; the
// attention core, dropout, embedding, positional encoding and pooling are
// hand-written loops over plain buffers (seq_kernels.h).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <unordered_map>

#include "common/comm/half.h"
#include "common/log.h"
#include "common/nn/layer.h"
#include "common/nn/seq_kernels.h"

namespace polis::nn {

namespace {

using dnnl::memory;
using Tag = memory::format_tag;
using Dt = memory::data_type;

float* Ptr(const memory& m) { return static_cast<float*>(m.get_data_handle()); }

memory::desc PlainMd(const memory::dims& d) {
  static const Tag kTags[] = {Tag::undef, Tag::a, Tag::ab, Tag::abc, Tag::abcd, Tag::abcde};
  POLIS_ENFORCE(d.size() >= 1 && d.size() <= 5);
  return memory::desc(d, Dt::f32, kTags[d.size()]);
}

memory::desc PlainBatchMd(int64_t batch, const Shape& s) {
  memory::dims d{batch};
  d.insert(d.end(), s.begin(), s.end());
  return PlainMd(d);
}

// The memory `m` itself when it already has layout `md`, else a new buffer.
memory SameOrNew(const memory& m, const memory::desc& md, dnnl::engine& eng) {
  return m.get_desc() == md ? m : memory(md, eng);
}

// Views of one layer's parameters and gradients, in the order Infer lists them.
struct ParamViews {
  std::vector<float*> w, g;
  ParamViews(const LayerContext& c, const std::vector<ParamTensor>& params) {
    int64_t off = 0;
    for (const auto& p : params) {
      w.push_back(c.params + off);
      g.push_back(c.grads ? c.grads + off : nullptr);
      off += p.count;
    }
  }
};

Status NoActivation(const proto::LayerSpec& spec, const char* type) {
  if (spec.activation() != proto::NONE)
    return InvalidArgument("{} takes no activation field; add an activation layer after it",
                           type);
  return Status::Ok();
}

Status NeedSequence(const Shape& in, const char* type) {
  if (in.size() != 2)
    return InvalidArgument("{} needs a [steps,features] sequence input, got {}", type,
                           ShapeString(in));
  return Status::Ok();
}

ParamTensor Weights(const std::string& name, int64_t rows, int64_t cols, int64_t fan_in,
                    int64_t fan_out) {
  return {name, {rows, cols}, rows * cols, 0, fan_in, fan_out};
}
ParamTensor Zeros(const std::string& name, int64_t n) { return {name, {n}, n, 0, 0, 0}; }
ParamTensor Ones(const std::string& name, int64_t n) {
  ParamTensor p{name, {n}, n, 0, 0, 0};
  p.init_one = true;
  return p;
}

// Seed of a layer's dropout masks: the configured seed mixed with the layer's
// name, so that named layers with the same seed draw different masks.
uint64_t DropoutSeed(const proto::LayerSpec& spec, uint64_t seed) {
  return seed ^ seq::HashString(spec.name() + "/" + spec.type());
}

Status CheckRate(float rate, const char* field) {
  if (!(rate >= 0.f && rate < 1.f)) return InvalidArgument("{} must be in [0, 1), got {}", field, rate);
  return Status::Ok();
}

// ------------------------------------------------------------ PlainExec

// Base of the layers that compute on plain row-major buffers: the input is
// reordered to plain when the producer chose another layout, diff_src is
// returned in the producer's layout, dst is plain [N, out_shape...].
class PlainExec : public LayerExec {
 public:
  void Forward(dnnl::stream& s) override {
    in_reorder_.Run(s, src_, in_);
    s.wait();
    Fwd(s);
  }
  void BindDiffDst(const memory& diff_dst) override {
    POLIS_ENFORCE(diff_dst.get_desc() == dst_.get_desc());
    diff_dst_ = diff_dst;
    Bind();
  }
  void Backward(dnnl::stream& s) override {
    s.wait();
    Bwd(s);
    if (need_diff_src_) diff_src_reorder_.Run(s, diff_in_, diff_src_);
  }
  memory& dst() override { return dst_; }
  memory& diff_src() override { return diff_src_; }
  std::vector<std::string> ImplInfo() const override { return impl_; }

 protected:
  explicit PlainExec(const LayerContext& c)
      : eng_(*c.engine), batch_(c.batch), training_(c.training),
        need_diff_src_(c.training && c.need_diff_src), src_(c.src) {
    memory::desc plain = PlainBatchMd(c.batch, c.in_shape);
    in_reorder_.Init(eng_, c.src_md, plain);
    in_ = in_reorder_.active ? memory(plain, eng_) : src_;
    dst_ = memory(PlainBatchMd(c.batch, c.out_shape), eng_);
    if (need_diff_src_) {
      diff_in_ = memory(plain, eng_);
      diff_src_reorder_.Init(eng_, plain, c.src_md);
      diff_src_ = diff_src_reorder_.active ? memory(c.src_md, eng_) : diff_in_;
    }
  }
  virtual void Fwd(dnnl::stream& s) = 0;
  virtual void Bwd(dnnl::stream& s) = 0;
  virtual void Bind() {}  // diff_dst_ is known

  const float* in() const { return Ptr(in_); }
  float* out() const { return Ptr(dst_); }
  const float* dout() const { return Ptr(diff_dst_); }
  float* din() const { return need_diff_src_ ? Ptr(diff_in_) : nullptr; }

  dnnl::engine& eng_;
  int64_t batch_;
  bool training_, need_diff_src_;
  memory src_, in_, dst_, diff_dst_, diff_in_, diff_src_;
  MaybeReorder in_reorder_, diff_src_reorder_;
  std::vector<std::string> impl_;
};

// ------------------------------------------------------------ Embedding

class EmbeddingExec : public PlainExec {
 public:
  explicit EmbeddingExec(const LayerContext& c, const std::vector<ParamTensor>& params)
      : PlainExec(c), pv_(c, params) {
    steps_ = c.in_shape[0];
    vocab_ = c.spec->embedding_param().vocab();
    dim_ = c.spec->embedding_param().dim();
  }

  // Example n's table gradient has one row per distinct id it uses, the sum
  // of dy over that id's steps: sort the example's (id, step) pairs and sum
  // each run. O(T log T + T·dim) per example, exact.
  void AddPerExampleSqNorms(dnnl::stream&, double* sq_norms) override {
    pe_order_.resize(steps_);
    pe_row_.resize(dim_);
    const float* ids = in();
    const float* dy = dout();
    for (int64_t n = 0; n < batch_; ++n) {
      for (int64_t t = 0; t < steps_; ++t) pe_order_[t] = {Row(ids, n * steps_ + t), t};
      std::sort(pe_order_.begin(), pe_order_.end());
      double sq = 0;
      for (int64_t a = 0; a < steps_;) {
        std::fill(pe_row_.begin(), pe_row_.end(), 0.0);
        int64_t b = a;
        for (; b < steps_ && pe_order_[b].first == pe_order_[a].first; ++b) {
          const float* d = dy + (n * steps_ + pe_order_[b].second) * dim_;
          for (int64_t j = 0; j < dim_; ++j) pe_row_[j] += d[j];
        }
        for (double v : pe_row_) sq += v * v;
        a = b;
      }
      sq_norms[n] += sq;
    }
  }

 private:
  std::vector<std::pair<int64_t, int64_t>> pe_order_;
  std::vector<double> pe_row_;
  void Fwd(dnnl::stream&) override {
    const float* ids = in();
    const float* table = pv_.w[0];
    float* y = out();
    for (int64_t i = 0; i < batch_ * steps_; ++i) {
      const int64_t row = Row(ids, i);
      std::memcpy(y + i * dim_, table + row * dim_, sizeof(float) * dim_);
    }
  }
  void Bwd(dnnl::stream&) override {
    const float* ids = in();
    float* g = pv_.g[0];
    std::fill(g, g + vocab_ * dim_, 0.f);
    const float* dy = dout();
    for (int64_t i = 0; i < batch_ * steps_; ++i) {
      float* __restrict grow = g + Row(ids, i) * dim_;
      const float* __restrict drow = dy + i * dim_;
      for (int64_t j = 0; j < dim_; ++j) grow[j] += drow[j];
    }
    // Ids are not differentiable: their gradient is zero.
    if (need_diff_src_) std::fill(din(), din() + batch_ * steps_, 0.f);
  }
  // Ids arrive as floats; anything but an exact integer in [0, vocab) is a
  // data error upstream. Clamping would silently train on the wrong rows.
  int64_t Row(const float* ids, int64_t i) const {
    const float id = ids[i];
    if (!(id >= 0.f && id < static_cast<float>(vocab_) && id == std::floor(id)))
      EnforceFailed(__FILE__, __LINE__,
                    fmt::format("Embedding: id {} at sample {} step {} is not an integer in "
                                "[0, embedding_param.vocab = {})",
                                id, i / steps_, i % steps_, vocab_));
    return static_cast<int64_t>(id);
  }
  ParamViews pv_;
  int64_t steps_, vocab_, dim_;
};

class EmbeddingType : public LayerType {
 public:
  Status Infer(const proto::LayerSpec& spec, const Shape& in, Shape* out,
               std::vector<ParamTensor>* params) const override {
    POLIS_RETURN_IF_ERROR(NoActivation(spec, "Embedding"));
    const auto& p = spec.embedding_param();
    if (!spec.has_embedding_param() || !p.has_vocab() || p.vocab() <= 0)
      return InvalidArgument("embedding_param.vocab is required and must be > 0");
    if (!p.has_dim() || p.dim() <= 0)
      return InvalidArgument("embedding_param.dim is required and must be > 0");
    if (in.size() != 1)
      return InvalidArgument("Embedding needs a [steps] input of integer ids, got {}",
                             ShapeString(in));
    *out = {in[0], p.dim()};
    params->push_back(Weights("table", p.vocab(), p.dim(), p.vocab(), p.dim()));
    return Status::Ok();
  }
  std::unique_ptr<LayerExec> Create(const LayerContext& c) const override {
    std::vector<ParamTensor> params;
    Shape out;
    POLIS_ENFORCE_OK(Infer(*c.spec, c.in_shape, &out, &params));
    return std::make_unique<EmbeddingExec>(c, params);
  }
  PerExample PerExampleMethod(const proto::LayerSpec&, std::string*) const override {
    return PerExample::kOwn;
  }
};

// ------------------------------------------------------------ LSTM, GRU

// One oneDNN RNN layer per stacked layer (oneDNN's multi-layer primitive
// needs equal input and hidden sizes). Parameters are PyTorch's, per layer l:
// l<l>.weight_ih [G*H, in], l<l>.weight_hh [G*H, H], l<l>.bias_ih [G*H],
// l<l>.bias_hh [G*H], gates in PyTorch order (LSTM i,f,g,o; GRU r,z,n).
// LSTM: oneDNN's vanilla_lstm gate order equals PyTorch's, so weight_ih is
// oneDNN's ldgoi layout as is; its single bias is bias_ih + bias_hh.
// GRU: lbr_gru is PyTorch's GRU (the reset gate scales W_hn h + b_hn), with
// gates (u=z, r, n): the first two gate blocks are swapped into a scratch,
// and its 4-gate bias is (b_z, b_r, b_in, b_hn) with b_z, b_r summed.
class RecurrentExec : public PlainExec {
 public:
  // compute: f32, or bf16 (inference only: its inputs, outputs and weights
  // in bf16; biases and gate arithmetic in fp32 inside oneDNN).
  RecurrentExec(const LayerContext& c, const std::vector<ParamTensor>& params, bool gru, Dt compute)
      : PlainExec(c), pv_(c, params), gru_(gru), bf16_(compute == Dt::bf16) {
    const auto& p = c.spec->recurrent_param();
    H_ = p.hidden_size();
    T_ = c.in_shape[0];
    seq_out_ = p.return_sequences();
    G_ = gru ? 3 : 4;
    const int64_t L = p.num_layers(), N = batch_;
    const auto prop =
        training_ ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference;
    const auto dir = dnnl::rnn_direction::unidirectional_left2right;
    const memory::desc none;
    POLIS_ENFORCE(!(bf16_ && training_));  // training stays fp32 (docs/design/cpu-bf16.md)
    const Dt t = compute;
    layers_.resize(L);
    for (int64_t l = 0; l < L; ++l) {
      Layer& y = layers_[l];
      const int64_t in = l == 0 ? c.in_shape[1] : H_;
      y.in = in;
      memory::desc src_md({T_, N, in}, t, Tag::ntc), dst_md({T_, N, H_}, t, Tag::ntc);
      memory::desc wl_any({1, 1, in, G_, H_}, t, Tag::any);
      memory::desc wi_any({1, 1, H_, G_, H_}, t, Tag::any);
      memory::desc wl_user({1, 1, in, G_, H_}, Dt::f32, Tag::ldgoi);
      memory::desc wi_user({1, 1, H_, G_, H_}, Dt::f32, Tag::ldgoi);
      memory::desc bias_md({1, 1, 4, H_}, Dt::f32, Tag::ldgo);
      if (l == 0 && bf16_) {
        y.src = memory(src_md, eng_);
        in_f32_ = memory(memory::desc({T_, N, in}, Dt::f32, Tag::ntc), eng_, Ptr(in_));
        src_to_bf16_.Init(eng_, in_f32_.get_desc(), src_md);
      } else {
        y.src = l == 0 ? memory(src_md, eng_, Ptr(in_)) : layers_[l - 1].dst;
      }
      const bool top = l == L - 1;
      y.dst = top && seq_out_ && !bf16_ ? memory(dst_md, eng_, Ptr(dst_)) : memory(dst_md, eng_);
      if (top && seq_out_ && bf16_) {
        out_f32_ = memory(memory::desc({T_, N, H_}, Dt::f32, Tag::ntc), eng_, Ptr(dst_));
        dst_to_f32_.Init(eng_, dst_md, out_f32_.get_desc());
      }
      // Weights as the primitive reads them: on the parameters (LSTM) or on
      // a gate-permuted copy (GRU), then reordered to its layout.
      y.wl_user = gru_ ? memory(wl_user, eng_) : memory(wl_user, eng_, W(l, 0));
      y.wi_user = gru_ ? memory(wi_user, eng_) : memory(wi_user, eng_, W(l, 1));
      y.bias = memory(bias_md, eng_);
      dnnl::lbr_gru_forward::primitive_desc gru_fwd_pd;
      dnnl::lstm_forward::primitive_desc lstm_fwd_pd;
      if (gru_) {
        gru_fwd_pd = dnnl::lbr_gru_forward::primitive_desc(
            dnnl::lbr_gru_forward::desc(prop, dir, src_md, none, wl_any, wi_any, bias_md, dst_md,
                                        none),
            UserScratchpad(), eng_);
        y.fwd = dnnl::lbr_gru_forward(gru_fwd_pd);
      } else {
        lstm_fwd_pd = dnnl::lstm_forward::primitive_desc(
            dnnl::lstm_forward::desc(prop, dir, src_md, none, none, wl_any, wi_any, bias_md,
                                     dst_md, none, none),
            UserScratchpad(), eng_);
        y.fwd = dnnl::lstm_forward(lstm_fwd_pd);
      }
      const dnnl::primitive_desc_base& fwd_pd =
          gru_ ? static_cast<const dnnl::primitive_desc_base&>(gru_fwd_pd) : lstm_fwd_pd;
      // Some oneDNN builds name their CPU RNN implementation "ref:any"
      // although the cell GEMMs are JIT; an fp32 one is not listed in
      // ImplInfo so that the Network's "reference kernel" warning keeps its
      // meaning. A bf16 one is, so that CreateInPrecision refuses a "ref"
      // one and the served model can say which layers compute in bf16.
      if (bf16_) impl_.push_back(fmt::format("fwd bf16: {}", fwd_pd.impl_info_str()));
      y.wl_fwd = SameOrNew(y.wl_user, fwd_pd.query_md(dnnl::query::weights_md, 0), eng_);
      y.wi_fwd = SameOrNew(y.wi_user, fwd_pd.query_md(dnnl::query::weights_md, 1), eng_);
      y.wl_fwd_reorder.Init(eng_, wl_user, y.wl_fwd.get_desc());
      y.wi_fwd_reorder.Init(eng_, wi_user, y.wi_fwd.get_desc());
      y.fwd_args = {{DNNL_ARG_SRC_LAYER, y.src}, {DNNL_ARG_WEIGHTS_LAYER, y.wl_fwd},
                    {DNNL_ARG_WEIGHTS_ITER, y.wi_fwd}, {DNNL_ARG_BIAS, y.bias},
                    {DNNL_ARG_DST_LAYER, y.dst}, {DNNL_ARG_SCRATCHPAD, ScratchMemory(fwd_pd, eng_)}};
      if (!training_) continue;
      y.ws = memory(fwd_pd.query_md(dnnl::query::workspace_md, 0), eng_);
      y.fwd_args[DNNL_ARG_WORKSPACE] = y.ws;

      dnnl::lbr_gru_backward::primitive_desc gru_bwd_pd;
      dnnl::lstm_backward::primitive_desc lstm_bwd_pd;
      if (gru_) {
        gru_bwd_pd = dnnl::lbr_gru_backward::primitive_desc(
            dnnl::lbr_gru_backward::desc(dnnl::prop_kind::backward, dir, src_md, none, wl_any,
                                         wi_any, bias_md, dst_md, none, src_md, none, wl_any,
                                         wi_any, bias_md, dst_md, none),
            UserScratchpad(), eng_, gru_fwd_pd);
        y.bwd = dnnl::lbr_gru_backward(gru_bwd_pd);
      } else {
        lstm_bwd_pd = dnnl::lstm_backward::primitive_desc(
            dnnl::lstm_backward::desc(dnnl::prop_kind::backward, dir, src_md, none, none, wl_any,
                                      wi_any, bias_md, dst_md, none, none, src_md, none, none,
                                      wl_any, wi_any, bias_md, dst_md, none, none),
            UserScratchpad(), eng_, lstm_fwd_pd);
        y.bwd = dnnl::lstm_backward(lstm_bwd_pd);
      }
      const dnnl::primitive_desc_base& bwd_pd =
          gru_ ? static_cast<const dnnl::primitive_desc_base&>(gru_bwd_pd) : lstm_bwd_pd;
      y.bwd_scratch = ScratchMemory(bwd_pd, eng_);
      y.wl_bwd = SameOrNew(y.wl_user, bwd_pd.query_md(dnnl::query::weights_md, 0), eng_);
      y.wi_bwd = SameOrNew(y.wi_user, bwd_pd.query_md(dnnl::query::weights_md, 1), eng_);
      y.wl_bwd_reorder.Init(eng_, wl_user, y.wl_bwd.get_desc());
      y.wi_bwd_reorder.Init(eng_, wi_user, y.wi_bwd.get_desc());
      // Gradients in the primitive's layout (it accumulates into them), then
      // reordered to the canonical layout: the gradient buffer (LSTM) or a
      // scratch whose gate blocks are swapped back (GRU).
      y.dwl_user = gru_ ? memory(wl_user, eng_) : memory(wl_user, eng_, G(l, 0));
      y.dwi_user = gru_ ? memory(wi_user, eng_) : memory(wi_user, eng_, G(l, 1));
      y.dwl = SameOrNew(y.dwl_user, bwd_pd.query_md(dnnl::query::diff_weights_md, 0), eng_);
      y.dwi = SameOrNew(y.dwi_user, bwd_pd.query_md(dnnl::query::diff_weights_md, 1), eng_);
      y.dwl_reorder.Init(eng_, y.dwl.get_desc(), wl_user);
      y.dwi_reorder.Init(eng_, y.dwi.get_desc(), wi_user);
      y.dbias = memory(bias_md, eng_);
      y.diff_src = l == 0 && need_diff_src_ ? memory(src_md, eng_, Ptr(diff_in_))
                                            : memory(src_md, eng_);
      if (top && !seq_out_) {
        y.diff_dst = memory(dst_md, eng_);
        std::memset(Ptr(y.diff_dst), 0, dst_md.get_size());
      }
    }
    if (!training_) return;
    for (int64_t l = 0; l + 1 < L; ++l) layers_[l].diff_dst = layers_[l + 1].diff_src;
  }

 private:
  struct Layer {
    int64_t in = 0;
    memory src, dst, wl_user, wi_user, wl_fwd, wi_fwd, bias, ws;
    memory wl_bwd, wi_bwd, dwl, dwi, dwl_user, dwi_user, dbias, diff_src, diff_dst, bwd_scratch;
    MaybeReorder wl_fwd_reorder, wi_fwd_reorder, wl_bwd_reorder, wi_bwd_reorder, dwl_reorder,
        dwi_reorder;
    dnnl::primitive fwd, bwd;
    std::unordered_map<int, memory> fwd_args, bwd_args;
  };

  float* W(int64_t l, int k) const { return pv_.w[4 * l + k]; }
  float* G(int64_t l, int k) const { return pv_.g[4 * l + k]; }

  // Swaps gate blocks 0 and 1 of a [3, H, cols] matrix: PyTorch (r, z, n)
  // <-> oneDNN (u=z, r, n). Its own inverse.
  void SwapGates01(const float* from, float* to, int64_t cols) const {
    const int64_t block = H_ * cols;
    std::memcpy(to, from + block, sizeof(float) * block);
    std::memcpy(to + block, from, sizeof(float) * block);
    std::memcpy(to + 2 * block, from + 2 * block, sizeof(float) * block);
  }

  void Bind() override {
    const int64_t L = static_cast<int64_t>(layers_.size());
    if (seq_out_) {
      layers_[L - 1].diff_dst =
          memory(layers_[L - 1].dst.get_desc(), eng_, Ptr(diff_dst_));
    }
    for (auto& y : layers_)
      y.bwd_args = {{DNNL_ARG_SRC_LAYER, y.src},         {DNNL_ARG_WEIGHTS_LAYER, y.wl_bwd},
                    {DNNL_ARG_WEIGHTS_ITER, y.wi_bwd},   {DNNL_ARG_BIAS, y.bias},
                    {DNNL_ARG_DST_LAYER, y.dst},         {DNNL_ARG_DIFF_DST_LAYER, y.diff_dst},
                    {DNNL_ARG_WORKSPACE, y.ws},          {DNNL_ARG_DIFF_SRC_LAYER, y.diff_src},
                    {DNNL_ARG_DIFF_WEIGHTS_LAYER, y.dwl}, {DNNL_ARG_DIFF_WEIGHTS_ITER, y.dwi},
                    {DNNL_ARG_DIFF_BIAS, y.dbias},       {DNNL_ARG_SCRATCHPAD, y.bwd_scratch}};
  }

  // A served model's weights never change: prepare them (gate order, summed
  // biases, the primitive's layout) once instead of at every forward pass.
  void FreezeParams(dnnl::stream& s) override {
    for (size_t l = 0; l < layers_.size(); ++l) PrepareWeights(s, l);
    s.wait();
    frozen_ = true;
  }

  void Fwd(dnnl::stream& s) override {
    if (bf16_) src_to_bf16_.Run(s, in_f32_, layers_[0].src);
    for (size_t l = 0; l < layers_.size(); ++l) {
      if (!frozen_) PrepareWeights(s, l);
      layers_[l].fwd.execute(s, layers_[l].fwd_args);
    }
    if (seq_out_) {
      if (bf16_) dst_to_f32_.Run(s, layers_.back().dst, out_f32_);
      return;
    }
    s.wait();
    if (bf16_) {
      // The last step's outputs, widened to fp32.
      const auto* top = static_cast<const uint16_t*>(layers_.back().dst.get_data_handle());
      for (int64_t n = 0; n < batch_; ++n)
        for (int64_t j = 0; j < H_; ++j)
          out()[n * H_ + j] = comm::Bf16ToFloat(top[(n * T_ + T_ - 1) * H_ + j]);
      return;
    }
    const float* top = Ptr(layers_.back().dst);
    for (int64_t n = 0; n < batch_; ++n)
      std::memcpy(out() + n * H_, top + (n * T_ + T_ - 1) * H_, sizeof(float) * H_);
  }

  // Layer l's weights and bias as its primitive reads them, from the
  // parameters (PyTorch's layout and gate order).
  void PrepareWeights(dnnl::stream& s, size_t l) {
    Layer& y = layers_[l];
    const float* b_ih = W(l, 2);
    const float* b_hh = W(l, 3);
    float* __restrict bias = Ptr(y.bias);
    if (gru_) {
      SwapGates01(W(l, 0), Ptr(y.wl_user), y.in);
      SwapGates01(W(l, 1), Ptr(y.wi_user), H_);
      for (int64_t j = 0; j < H_; ++j) {
        bias[j] = b_ih[H_ + j] + b_hh[H_ + j];      // u = z
        bias[H_ + j] = b_ih[j] + b_hh[j];           // r
        bias[2 * H_ + j] = b_ih[2 * H_ + j];        // n, input part
        bias[3 * H_ + j] = b_hh[2 * H_ + j];        // n, inside r * (...)
      }
    } else {
      for (int64_t j = 0; j < 4 * H_; ++j) bias[j] = b_ih[j] + b_hh[j];
    }
    y.wl_fwd_reorder.Run(s, y.wl_user, y.wl_fwd);
    y.wi_fwd_reorder.Run(s, y.wi_user, y.wi_fwd);
  }

  void Bwd(dnnl::stream& s) override {
    if (!seq_out_) {
      float* d = Ptr(layers_.back().diff_dst);
      for (int64_t n = 0; n < batch_; ++n)
        std::memcpy(d + (n * T_ + T_ - 1) * H_, dout() + n * H_, sizeof(float) * H_);
    }
    for (int64_t l = static_cast<int64_t>(layers_.size()) - 1; l >= 0; --l) {
      Layer& y = layers_[l];
      y.wl_bwd_reorder.Run(s, y.wl_user, y.wl_bwd);
      y.wi_bwd_reorder.Run(s, y.wi_user, y.wi_bwd);
      for (memory* m : {&y.dwl, &y.dwi, &y.dbias})
        std::memset(m->get_data_handle(), 0, m->get_desc().get_size());
      y.bwd.execute(s, y.bwd_args);
      y.dwl_reorder.Run(s, y.dwl, y.dwl_user);
      y.dwi_reorder.Run(s, y.dwi, y.dwi_user);
      s.wait();
      const float* db = Ptr(y.dbias);
      float* g_ih = G(l, 2);
      float* g_hh = G(l, 3);
      if (gru_) {
        SwapGates01(Ptr(y.dwl_user), G(l, 0), y.in);
        SwapGates01(Ptr(y.dwi_user), G(l, 1), H_);
        for (int64_t j = 0; j < H_; ++j) {
          g_ih[j] = g_hh[j] = db[H_ + j];
          g_ih[H_ + j] = g_hh[H_ + j] = db[j];
          g_ih[2 * H_ + j] = db[2 * H_ + j];
          g_hh[2 * H_ + j] = db[3 * H_ + j];
        }
      } else {
        for (int64_t j = 0; j < 4 * H_; ++j) g_ih[j] = g_hh[j] = db[j];
      }
    }
  }

  ParamViews pv_;
  bool gru_, seq_out_ = false;
  bool bf16_;            // inference in bf16: inputs, outputs and weights
  bool frozen_ = false;  // FreezeParams: the weights are prepared for good
  MaybeReorder src_to_bf16_, dst_to_f32_;
  memory in_f32_, out_f32_;  // f32 views of the layer's input and (sequences) output
  int64_t H_ = 0, T_ = 0, G_ = 4;
  std::vector<Layer> layers_;
};

class RecurrentType : public LayerType {
 public:
  explicit RecurrentType(bool gru) : gru_(gru) {}
  Status Infer(const proto::LayerSpec& spec, const Shape& in, Shape* out,
               std::vector<ParamTensor>* params) const override {
    const char* type = gru_ ? "GRU" : "LSTM";
    POLIS_RETURN_IF_ERROR(NoActivation(spec, type));
    const auto& p = spec.recurrent_param();
    if (!spec.has_recurrent_param() || !p.has_hidden_size() || p.hidden_size() <= 0)
      return InvalidArgument("recurrent_param.hidden_size is required and must be > 0");
    if (p.num_layers() < 1)
      return InvalidArgument("recurrent_param.num_layers must be >= 1, got {}", p.num_layers());
    POLIS_RETURN_IF_ERROR(NeedSequence(in, type));
    const int64_t H = p.hidden_size(), G = gru_ ? 3 : 4;
    *out = p.return_sequences() ? Shape{in[0], H} : Shape{H};
    for (int l = 0; l < p.num_layers(); ++l) {
      const int64_t i = l == 0 ? in[1] : H;
      const std::string pre = fmt::format("l{}.", l);
      params->push_back(Weights(pre + "weight_ih", G * H, i, i, G * H));
      params->push_back(Weights(pre + "weight_hh", G * H, H, H, G * H));
      params->push_back(Zeros(pre + "bias_ih", G * H));
      params->push_back(Zeros(pre + "bias_hh", G * H));
    }
    return Status::Ok();
  }
  std::unique_ptr<LayerExec> Create(const LayerContext& c) const override {
    std::vector<ParamTensor> params;
    Shape out;
    POLIS_ENFORCE_OK(Infer(*c.spec, c.in_shape, &out, &params));
    // bf16 in inference only (a served model); training stays fp32.
    if (c.training) return std::make_unique<RecurrentExec>(c, params, gru_, Dt::f32);
    return CreateInPrecision(
        c, [&](Dt t) { return std::make_unique<RecurrentExec>(c, params, gru_, t); });
  }
  // The gate pre-activation gradients that make up an example's weight
  // gradient live inside oneDNN's RNN workspace, summed over the batch: the
  // Network recomputes the layer per example instead (forward, then
  // backpropagation through time of that example's output gradient).
  PerExample PerExampleMethod(const proto::LayerSpec&, std::string*) const override {
    return PerExample::kRecompute;
  }

 private:
  bool gru_;
};

// ------------------------------------------------------------ Dropout

// Works on the producer's layout as is (elementwise). Inference: dst is src.
class DropoutExec : public LayerExec {
 public:
  explicit DropoutExec(const LayerContext& c)
      : src_(c.src), rate_(c.spec->dropout_param().rate()),
        seed_(DropoutSeed(*c.spec, c.spec->dropout_param().seed())) {
    auto& eng = *c.engine;
    if (!c.training) {
      dst_ = src_;
      return;
    }
    count_ = static_cast<int64_t>(c.src_md.get_size() / sizeof(float));
    dst_ = memory(c.src_md, eng);
    mask_.assign(count_, 1.f);
    need_diff_src_ = c.need_diff_src;
    if (need_diff_src_) diff_src_ = memory(c.src_md, eng);
  }
  void Forward(dnnl::stream& s) override {
    if (count_ == 0) return;  // inference: identity, no copy
    s.wait();
    if (rate_ > 0.f && (!seq::DropoutMaskFrozen() || step_ == 0))
      seq::DropoutMask(seed_, step_++, rate_, count_, mask_.data());
    const float* __restrict x = Ptr(src_);
    const float* __restrict m = mask_.data();
    float* __restrict y = Ptr(dst_);
    for (int64_t i = 0; i < count_; ++i) y[i] = x[i] * m[i];
  }
  void BindDiffDst(const memory& diff_dst) override { diff_dst_ = diff_dst; }
  void Backward(dnnl::stream& s) override {
    if (!need_diff_src_) return;
    s.wait();
    const float* __restrict dy = Ptr(diff_dst_);
    const float* __restrict m = mask_.data();
    float* __restrict dx = Ptr(diff_src_);
    for (int64_t i = 0; i < count_; ++i) dx[i] = dy[i] * m[i];
  }
  memory& dst() override { return dst_; }
  memory& diff_src() override { return diff_src_; }

 private:
  memory src_, dst_, diff_dst_, diff_src_;
  float rate_;
  uint64_t seed_, step_ = 0;
  int64_t count_ = 0;
  bool need_diff_src_ = false;
  std::vector<float> mask_;
};

class DropoutType : public LayerType {
 public:
  Status Infer(const proto::LayerSpec& spec, const Shape& in, Shape* out,
               std::vector<ParamTensor>*) const override {
    POLIS_RETURN_IF_ERROR(NoActivation(spec, "Dropout"));
    POLIS_RETURN_IF_ERROR(CheckRate(spec.dropout_param().rate(), "dropout_param.rate"));
    *out = in;
    return Status::Ok();
  }
  std::unique_ptr<LayerExec> Create(const LayerContext& c) const override {
    return std::make_unique<DropoutExec>(c);
  }
};

// ------------------------------------------------------------ GELU

// oneDNN eltwise on the producer's layout; backward uses the source.
class GeluExec : public LayerExec {
 public:
  explicit GeluExec(const LayerContext& c) : src_(c.src) {
    auto& eng = *c.engine;
    auto prop = c.training ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference;
    auto alg = c.spec->gelu_param().approximation() == proto::GeluParam::TANH
                   ? dnnl::algorithm::eltwise_gelu_tanh
                   : dnnl::algorithm::eltwise_gelu_erf;
    fwd_pd_ = dnnl::eltwise_forward::primitive_desc(
        dnnl::eltwise_forward::desc(prop, alg, c.src_md, 0.f, 0.f), UserScratchpad(), eng);
    fwd_ = dnnl::eltwise_forward(fwd_pd_);
    fwd_scratch_ = ScratchMemory(fwd_pd_, eng);
    impl_.push_back("fwd: " + std::string(fwd_pd_.impl_info_str()));
    dst_ = memory(fwd_pd_.dst_desc(), eng);
    need_diff_src_ = c.training && c.need_diff_src;
    if (!need_diff_src_) return;
    dnnl::eltwise_backward::primitive_desc bwd_pd(
        dnnl::eltwise_backward::desc(alg, c.src_md, c.src_md, 0.f, 0.f), UserScratchpad(), eng,
        fwd_pd_);
    bwd_ = dnnl::eltwise_backward(bwd_pd);
    bwd_scratch_ = ScratchMemory(bwd_pd, eng);
    impl_.push_back("bwd: " + std::string(bwd_pd.impl_info_str()));
    diff_src_ = memory(c.src_md, eng);
  }
  void Forward(dnnl::stream& s) override {
    fwd_.execute(s, {{DNNL_ARG_SRC, src_}, {DNNL_ARG_DST, dst_}, {DNNL_ARG_SCRATCHPAD, fwd_scratch_}});
  }
  void BindDiffDst(const memory& diff_dst) override { diff_dst_ = diff_dst; }
  void Backward(dnnl::stream& s) override {
    if (need_diff_src_)
      bwd_.execute(s, {{DNNL_ARG_SRC, src_}, {DNNL_ARG_DIFF_DST, diff_dst_},
                       {DNNL_ARG_DIFF_SRC, diff_src_}, {DNNL_ARG_SCRATCHPAD, bwd_scratch_}});
  }
  memory& dst() override { return dst_; }
  memory& diff_src() override { return diff_src_; }
  std::vector<std::string> ImplInfo() const override { return impl_; }

 private:
  memory src_, dst_, diff_dst_, diff_src_, fwd_scratch_, bwd_scratch_;
  bool need_diff_src_ = false;
  dnnl::eltwise_forward::primitive_desc fwd_pd_;
  dnnl::eltwise_forward fwd_;
  dnnl::eltwise_backward bwd_;
  std::vector<std::string> impl_;
};

class GeluType : public LayerType {
 public:
  Status Infer(const proto::LayerSpec& spec, const Shape& in, Shape* out,
               std::vector<ParamTensor>*) const override {
    POLIS_RETURN_IF_ERROR(NoActivation(spec, "GELU"));
    *out = in;
    return Status::Ok();
  }
  std::unique_ptr<LayerExec> Create(const LayerContext& c) const override {
    return std::make_unique<GeluExec>(c);
  }
};

// ------------------------------------------------------------ LayerNorm

class LayerNormExec : public PlainExec {
 public:
  LayerNormExec(const LayerContext& c, const std::vector<ParamTensor>& params)
      : PlainExec(c), pv_(c, params) {
    const int64_t f = c.in_shape.back();
    const int64_t rows = batch_ * ShapeElements(c.in_shape) / f;
    op_.Init(eng_, rows, f, c.spec->layer_norm_param().epsilon(), training_);
    impl_ = op_.impl();
    f_ = f;
    rows_per_example_ = rows / batch_;
    epsilon_ = c.spec->layer_norm_param().epsilon();
    // oneDNN always writes diff_src; the first layer gets a scratch for it.
    if (training_ && !need_diff_src_) dx_scratch_ = memory(dst_.get_desc(), eng_);
  }

 private:
  void Fwd(dnnl::stream& s) override { op_.Forward(s, in(), pv_.w[0], pv_.w[1], out()); }
  void Bwd(dnnl::stream& s) override {
    op_.Backward(s, in(), dout(), pv_.w[0], pv_.w[1], need_diff_src_ ? din() : Ptr(dx_scratch_),
                 pv_.g[0], pv_.g[1]);
  }
  // Example n's gain gradient is Σ_rows dy ⊙ x̂ and its bias gradient
  // Σ_rows dy, over its own rows; x̂ recomputed in double from x.
  void AddPerExampleSqNorms(dnnl::stream&, double* sq_norms) override {
    pe_gain_.resize(f_);
    pe_bias_.resize(f_);
    for (int64_t n = 0; n < batch_; ++n) {
      std::fill(pe_gain_.begin(), pe_gain_.end(), 0.0);
      std::fill(pe_bias_.begin(), pe_bias_.end(), 0.0);
      for (int64_t r = n * rows_per_example_; r < (n + 1) * rows_per_example_; ++r) {
        const float* x = in() + r * f_;
        const float* dy = dout() + r * f_;
        double mean = 0, var = 0;
        for (int64_t j = 0; j < f_; ++j) mean += x[j];
        mean /= static_cast<double>(f_);
        for (int64_t j = 0; j < f_; ++j) var += (x[j] - mean) * (x[j] - mean);
        var /= static_cast<double>(f_);
        const double inv = 1.0 / std::sqrt(var + epsilon_);
        for (int64_t j = 0; j < f_; ++j) {
          pe_gain_[j] += dy[j] * (x[j] - mean) * inv;
          pe_bias_[j] += dy[j];
        }
      }
      double sq = 0;
      for (int64_t j = 0; j < f_; ++j) sq += pe_gain_[j] * pe_gain_[j] + pe_bias_[j] * pe_bias_[j];
      sq_norms[n] += sq;
    }
  }

  ParamViews pv_;
  seq::LayerNormOp op_;
  memory dx_scratch_;
  int64_t f_ = 0, rows_per_example_ = 0;
  double epsilon_ = 0;
  std::vector<double> pe_gain_, pe_bias_;
};

class LayerNormType : public LayerType {
 public:
  Status Infer(const proto::LayerSpec& spec, const Shape& in, Shape* out,
               std::vector<ParamTensor>* params) const override {
    POLIS_RETURN_IF_ERROR(NoActivation(spec, "LayerNorm"));
    if (!(spec.layer_norm_param().epsilon() > 0.f))
      return InvalidArgument("layer_norm_param.epsilon must be > 0, got {}",
                             spec.layer_norm_param().epsilon());
    if (in.empty()) return InvalidArgument("LayerNorm needs an input with a feature dimension");
    *out = in;
    params->push_back(Ones("gain", in.back()));
    params->push_back(Zeros("bias", in.back()));
    return Status::Ok();
  }
  std::unique_ptr<LayerExec> Create(const LayerContext& c) const override {
    std::vector<ParamTensor> params;
    Shape out;
    POLIS_ENFORCE_OK(Infer(*c.spec, c.in_shape, &out, &params));
    return std::make_unique<LayerNormExec>(c, params);
  }
  PerExample PerExampleMethod(const proto::LayerSpec&, std::string*) const override {
    return PerExample::kOwn;
  }
};

// ------------------------------------------------------------ attention

Status CheckHeads(int64_t heads, int64_t dim, const char* field) {
  if (heads <= 0) return InvalidArgument("{} is required and must be > 0", field);
  if (dim % heads != 0)
    return InvalidArgument("{} = {} does not divide the model dimension (features) {}", field,
                           heads, dim);
  return Status::Ok();
}

void AttentionParams(const std::string& pre, int64_t f, std::vector<ParamTensor>* params) {
  // q, k and v projections stacked as PyTorch's in_proj_weight; each third
  // is initialised as its own f x f Glorot matrix.
  params->push_back(Weights(pre + "qkv_weights", 3 * f, f, f, f));
  params->push_back(Zeros(pre + "qkv_bias", 3 * f));
  params->push_back(Weights(pre + "out_weights", f, f, f, f));
  params->push_back(Zeros(pre + "out_bias", f));
}

// Self-attention over a [rows = N*T, F] buffer: the projections (oneDNN
// matmul) around the hand-written core. Parameters at w[0..3], grads g[0..3].
struct AttentionBlock {
  seq::AttentionShape shape;
  seq::Linear in_proj, out_proj;
  seq::AttentionCore core;
  std::vector<float> qkv, probs, ctx, dctx, dqkv, dscores;

  void Init(dnnl::engine& eng, int64_t batch, int64_t steps, int64_t dim, int64_t heads,
            bool causal, bool training, bool need_dx) {
    shape = {batch, steps, dim, heads, causal};
    const int64_t rows = batch * steps;
    in_proj.Init(eng, rows, dim, 3 * dim, training, need_dx);
    out_proj.Init(eng, rows, dim, dim, training, true);
    core.Init(eng, shape, training);
    qkv.resize(rows * 3 * dim);
    probs.resize(shape.prob_floats());
    ctx.resize(rows * dim);
    if (!training) return;
    dctx.resize(rows * dim);
    dqkv.resize(rows * 3 * dim);
    dscores.resize(shape.prob_floats());
  }
  void Forward(dnnl::stream& s, const float* x, float* const* w, float* y) {
    in_proj.Forward(s, x, w[0], w[1], qkv.data());
    core.Forward(s, qkv.data(), probs.data(), ctx.data());
    out_proj.Forward(s, ctx.data(), w[2], w[3], y);
  }
  void Backward(dnnl::stream& s, const float* x, float* const* w, const float* dy, float* dx,
                float* const* g) {
    out_proj.Backward(s, ctx.data(), w[2], dy, dctx.data(), g[2], g[3]);
    core.Backward(s, qkv.data(), probs.data(), dctx.data(), dqkv.data(), dscores.data());
    in_proj.Backward(s, x, w[0], dqkv.data(), dx, g[0], g[1]);
  }
  void AddImpl(std::vector<std::string>* impl) const {
    for (const auto* v : {&in_proj.impl(), &core.impl(), &out_proj.impl()})
      impl->insert(impl->end(), v->begin(), v->end());
  }
};

class MhaExec : public PlainExec {
 public:
  MhaExec(const LayerContext& c, const std::vector<ParamTensor>& params)
      : PlainExec(c), pv_(c, params) {
    const auto& p = c.spec->attention_param();
    att_.Init(eng_, batch_, c.in_shape[0], c.in_shape[1], p.num_heads(), p.causal(), training_,
              need_diff_src_);
    att_.AddImpl(&impl_);
  }

 private:
  void Fwd(dnnl::stream& s) override { att_.Forward(s, in(), pv_.w.data(), out()); }
  void Bwd(dnnl::stream& s) override {
    att_.Backward(s, in(), pv_.w.data(), dout(), din(), pv_.g.data());
  }
  ParamViews pv_;
  AttentionBlock att_;
};

class MhaType : public LayerType {
 public:
  Status Infer(const proto::LayerSpec& spec, const Shape& in, Shape* out,
               std::vector<ParamTensor>* params) const override {
    POLIS_RETURN_IF_ERROR(NoActivation(spec, "MultiHeadSelfAttention"));
    POLIS_RETURN_IF_ERROR(NeedSequence(in, "MultiHeadSelfAttention"));
    POLIS_RETURN_IF_ERROR(
        CheckHeads(spec.attention_param().num_heads(), in[1], "attention_param.num_heads"));
    *out = in;
    AttentionParams("", in[1], params);
    return Status::Ok();
  }
  std::unique_ptr<LayerExec> Create(const LayerContext& c) const override {
    std::vector<ParamTensor> params;
    Shape out;
    POLIS_ENFORCE_OK(Infer(*c.spec, c.in_shape, &out, &params));
    return std::make_unique<MhaExec>(c, params);
  }
  // Per example by recomputation (a batch-1 copy of the layer): exact, and
  // the attention's T x T products are per example anyway.
  PerExample PerExampleMethod(const proto::LayerSpec&, std::string*) const override {
    return PerExample::kRecompute;
  }
};

// ------------------------------------------------------------ TransformerEncoderBlock

// Pre-norm block: x1 = x + D1(MHA(LN1(x))); y = x1 + D2(FFN(LN2(x1))), with
// FFN = Linear(ff_dim) -> GELU (erf) -> Linear(F) and D1, D2 dropout.
class TransformerExec : public PlainExec {
 public:
  // Parameter indices, in Infer's order.
  enum { kLn1G, kLn1B, kQkvW, kQkvB, kOutW, kOutB, kLn2G, kLn2B, kF1W, kF1B, kF2W, kF2B };

  TransformerExec(const LayerContext& c, const std::vector<ParamTensor>& params)
      : PlainExec(c), pv_(c, params) {
    const auto& p = c.spec->transformer_param();
    const int64_t T = c.in_shape[0];
    f_ = c.in_shape[1];
    ff_ = p.ff_dim();
    rows_ = batch_ * T;
    rate_ = training_ ? p.dropout() : 0.f;
    seed_ = DropoutSeed(*c.spec, p.seed());
    ln1_.Init(eng_, rows_, f_, p.epsilon(), training_);
    ln2_.Init(eng_, rows_, f_, p.epsilon(), training_);
    att_.Init(eng_, batch_, T, f_, p.num_heads(), p.causal(), training_, true);
    ffn1_.Init(eng_, rows_, f_, ff_, training_, true);
    ffn2_.Init(eng_, rows_, ff_, f_, training_, true);
    gelu_.Init(eng_, rows_ * ff_, false, training_);
    for (const auto* v : {&ln1_.impl(), &ln2_.impl(), &ffn1_.impl(), &ffn2_.impl()})
      impl_.insert(impl_.end(), v->begin(), v->end());
    att_.AddImpl(&impl_);
    for (auto* b : {&a_, &att_out_, &x1_, &b_, &f_out_}) b->resize(rows_ * f_);
    for (auto* b : {&h_, &g_}) b->resize(rows_ * ff_);
    if (rate_ > 0.f) {
      mask1_.resize(rows_ * f_);
      mask2_.resize(rows_ * f_);
    }
    if (!training_) return;
    for (auto* b : {&d_f_, &d_b_, &d_x1_, &d_a_, &d_x_}) b->resize(rows_ * f_);
    for (auto* b : {&d_g_, &d_h_}) b->resize(rows_ * ff_);
  }

 private:
  const float* P(int i) const { return pv_.w[i]; }
  float* Gr(int i) const { return pv_.g[i]; }

  void Fwd(dnnl::stream& s) override {
    if (rate_ > 0.f && (!seq::DropoutMaskFrozen() || step_ == 0)) {
      seq::DropoutMask(seed_ ^ 0x1, step_, rate_, rows_ * f_, mask1_.data());
      seq::DropoutMask(seed_ ^ 0x2, step_, rate_, rows_ * f_, mask2_.data());
      ++step_;
    }
    const float* x = in();
    ln1_.Forward(s, x, P(kLn1G), P(kLn1B), a_.data());
    att_.Forward(s, a_.data(), pv_.w.data() + kQkvW, att_out_.data());
    s.wait();
    Residual(x, att_out_.data(), mask1_.data(), x1_.data());
    ln2_.Forward(s, x1_.data(), P(kLn2G), P(kLn2B), b_.data());
    ffn1_.Forward(s, b_.data(), P(kF1W), P(kF1B), h_.data());
    gelu_.Forward(s, h_.data(), g_.data());
    ffn2_.Forward(s, g_.data(), P(kF2W), P(kF2B), f_out_.data());
    s.wait();
    Residual(x1_.data(), f_out_.data(), mask2_.data(), out());
  }

  void Bwd(dnnl::stream& s) override {
    const float* dy = dout();
    Masked(dy, mask2_.data(), d_f_.data());
    ffn2_.Backward(s, g_.data(), P(kF2W), d_f_.data(), d_g_.data(), Gr(kF2W), Gr(kF2B));
    gelu_.Backward(s, h_.data(), d_g_.data(), d_h_.data());
    ffn1_.Backward(s, b_.data(), P(kF1W), d_h_.data(), d_b_.data(), Gr(kF1W), Gr(kF1B));
    ln2_.Backward(s, x1_.data(), d_b_.data(), P(kLn2G), P(kLn2B), d_x1_.data(), Gr(kLn2G),
                  Gr(kLn2B));
    s.wait();
    Add(d_x1_.data(), dy, rows_ * f_);  // the residual path
    Masked(d_x1_.data(), mask1_.data(), d_f_.data());
    att_.Backward(s, a_.data(), pv_.w.data() + kQkvW, d_f_.data(), d_a_.data(),
                  pv_.g.data() + kQkvW);
    float* dx = need_diff_src_ ? din() : d_x_.data();
    ln1_.Backward(s, in(), d_a_.data(), P(kLn1G), P(kLn1B), dx, Gr(kLn1G), Gr(kLn1B));
    s.wait();
    if (need_diff_src_) Add(dx, d_x1_.data(), rows_ * f_);
  }

  // out = x + branch ⊙ mask (mask ignored without dropout).
  void Residual(const float* __restrict x, const float* __restrict branch,
                const float* __restrict mask, float* __restrict y) const {
    const int64_t n = rows_ * f_;
    if (rate_ > 0.f) {
      for (int64_t i = 0; i < n; ++i) y[i] = x[i] + branch[i] * mask[i];
    } else {
      for (int64_t i = 0; i < n; ++i) y[i] = x[i] + branch[i];
    }
  }
  void Masked(const float* __restrict d, const float* __restrict mask,
              float* __restrict y) const {
    const int64_t n = rows_ * f_;
    if (rate_ > 0.f) {
      for (int64_t i = 0; i < n; ++i) y[i] = d[i] * mask[i];
    } else {
      std::memcpy(y, d, sizeof(float) * n);
    }
  }
  static void Add(float* __restrict y, const float* __restrict x, int64_t n) {
    for (int64_t i = 0; i < n; ++i) y[i] += x[i];
  }

  ParamViews pv_;
  int64_t f_ = 0, ff_ = 0, rows_ = 0;
  float rate_ = 0.f;
  uint64_t seed_ = 0, step_ = 0;
  seq::LayerNormOp ln1_, ln2_;
  AttentionBlock att_;
  seq::Linear ffn1_, ffn2_;
  seq::GeluOp gelu_;
  std::vector<float> a_, att_out_, x1_, b_, h_, g_, f_out_, mask1_, mask2_;
  std::vector<float> d_f_, d_g_, d_h_, d_b_, d_x1_, d_a_, d_x_;
};

class TransformerType : public LayerType {
 public:
  Status Infer(const proto::LayerSpec& spec, const Shape& in, Shape* out,
               std::vector<ParamTensor>* params) const override {
    POLIS_RETURN_IF_ERROR(NoActivation(spec, "TransformerEncoderBlock"));
    if (!spec.has_transformer_param())
      return InvalidArgument("TransformerEncoderBlock needs transformer_param");
    const auto& p = spec.transformer_param();
    POLIS_RETURN_IF_ERROR(NeedSequence(in, "TransformerEncoderBlock"));
    POLIS_RETURN_IF_ERROR(CheckHeads(p.num_heads(), in[1], "transformer_param.num_heads"));
    if (!p.has_ff_dim() || p.ff_dim() <= 0)
      return InvalidArgument("transformer_param.ff_dim is required and must be > 0");
    POLIS_RETURN_IF_ERROR(CheckRate(p.dropout(), "transformer_param.dropout"));
    if (!(p.epsilon() > 0.f))
      return InvalidArgument("transformer_param.epsilon must be > 0, got {}", p.epsilon());
    const int64_t f = in[1], ff = p.ff_dim();
    *out = in;
    params->push_back(Ones("ln1.gain", f));
    params->push_back(Zeros("ln1.bias", f));
    AttentionParams("attn.", f, params);
    params->push_back(Ones("ln2.gain", f));
    params->push_back(Zeros("ln2.bias", f));
    params->push_back(Weights("ffn1.weights", ff, f, f, ff));
    params->push_back(Zeros("ffn1.bias", ff));
    params->push_back(Weights("ffn2.weights", f, ff, ff, f));
    params->push_back(Zeros("ffn2.bias", f));
    return Status::Ok();
  }
  std::unique_ptr<LayerExec> Create(const LayerContext& c) const override {
    std::vector<ParamTensor> params;
    Shape out;
    POLIS_ENFORCE_OK(Infer(*c.spec, c.in_shape, &out, &params));
    return std::make_unique<TransformerExec>(c, params);
  }
  // By recomputation, like MultiHeadSelfAttention. A batch-1 copy would
  // draw its own dropout masks, not the batch's, so internal dropout is
  // refused (put Dropout layers between blocks instead).
  PerExample PerExampleMethod(const proto::LayerSpec& spec, std::string* why) const override {
    if (spec.transformer_param().dropout() > 0.f) {
      *why = fmt::format("transformer_param.dropout is {}; DP-SGD needs 0 here (use Dropout layers "
                         "between blocks)", spec.transformer_param().dropout());
      return PerExample::kUnsupported;
    }
    return PerExample::kRecompute;
  }
};

// ------------------------------------------------------------ PositionalEncoding

// y = x + P with P[t, 2i] = sin(t / 10000^(2i/F)), P[t, 2i+1] = cos(same), or
// a learned [T, F] table.
class PositionalEncodingExec : public PlainExec {
 public:
  PositionalEncodingExec(const LayerContext& c, const std::vector<ParamTensor>& params)
      : PlainExec(c), pv_(c, params) {
    steps_ = c.in_shape[0];
    f_ = c.in_shape[1];
    learned_ = c.spec->positional_encoding_param().kind() == proto::PositionalEncodingParam::LEARNED;
    if (learned_) return;
    table_.resize(steps_ * f_);
    for (int64_t t = 0; t < steps_; ++t)
      for (int64_t i = 0; i < f_; ++i) {
        const double angle = t / std::pow(10000.0, static_cast<double>(i - i % 2) / f_);
        table_[t * f_ + i] = static_cast<float>(i % 2 == 0 ? std::sin(angle) : std::cos(angle));
      }
  }

 private:
  const float* Table() const { return learned_ ? pv_.w[0] : table_.data(); }
  void Fwd(dnnl::stream&) override {
    const int64_t n = steps_ * f_;
    const float* __restrict p = Table();
    for (int64_t b = 0; b < batch_; ++b) {
      const float* __restrict x = in() + b * n;
      float* __restrict y = out() + b * n;
      for (int64_t i = 0; i < n; ++i) y[i] = x[i] + p[i];
    }
  }
  void Bwd(dnnl::stream&) override {
    const int64_t n = steps_ * f_;
    if (need_diff_src_) std::memcpy(din(), dout(), sizeof(float) * batch_ * n);
    if (!learned_) return;
    float* __restrict g = pv_.g[0];
    std::fill(g, g + n, 0.f);
    for (int64_t b = 0; b < batch_; ++b) {
      const float* __restrict d = dout() + b * n;
      for (int64_t i = 0; i < n; ++i) g[i] += d[i];
    }
  }
  // A learned table's per-example gradient is the example's dy itself.
  void AddPerExampleSqNorms(dnnl::stream&, double* sq_norms) override {
    const int64_t n_el = steps_ * f_;
    for (int64_t b = 0; b < batch_; ++b) {
      const float* d = dout() + b * n_el;
      double sq = 0;
      for (int64_t i = 0; i < n_el; ++i) sq += static_cast<double>(d[i]) * d[i];
      sq_norms[b] += sq;
    }
  }

  ParamViews pv_;
  int64_t steps_ = 0, f_ = 0;
  bool learned_ = false;
  std::vector<float> table_;
};

class PositionalEncodingType : public LayerType {
 public:
  Status Infer(const proto::LayerSpec& spec, const Shape& in, Shape* out,
               std::vector<ParamTensor>* params) const override {
    POLIS_RETURN_IF_ERROR(NoActivation(spec, "PositionalEncoding"));
    POLIS_RETURN_IF_ERROR(NeedSequence(in, "PositionalEncoding"));
    *out = in;
    if (spec.positional_encoding_param().kind() == proto::PositionalEncodingParam::LEARNED)
      params->push_back(Weights("table", in[0], in[1], in[0], in[1]));
    return Status::Ok();
  }
  std::unique_ptr<LayerExec> Create(const LayerContext& c) const override {
    std::vector<ParamTensor> params;
    Shape out;
    POLIS_ENFORCE_OK(Infer(*c.spec, c.in_shape, &out, &params));
    return std::make_unique<PositionalEncodingExec>(c, params);
  }
  PerExample PerExampleMethod(const proto::LayerSpec& spec, std::string*) const override {
    return spec.positional_encoding_param().kind() == proto::PositionalEncodingParam::LEARNED
               ? PerExample::kOwn
               : PerExample::kNoParams;
  }
};

// ------------------------------------------------------------ SequencePool

class SequencePoolExec : public PlainExec {
 public:
  explicit SequencePoolExec(const LayerContext& c) : PlainExec(c) {
    steps_ = c.in_shape[0];
    f_ = c.in_shape[1];
    mean_ = c.spec->sequence_pool_param().mode() == proto::SequencePoolParam::MEAN;
  }

 private:
  void Fwd(dnnl::stream&) override {
    for (int64_t b = 0; b < batch_; ++b) {
      const float* __restrict x = in() + b * steps_ * f_;
      float* __restrict y = out() + b * f_;
      if (!mean_) {
        std::memcpy(y, x + (steps_ - 1) * f_, sizeof(float) * f_);
        continue;
      }
      std::fill(y, y + f_, 0.f);
      for (int64_t t = 0; t < steps_; ++t)
        for (int64_t i = 0; i < f_; ++i) y[i] += x[t * f_ + i];
      const float inv = 1.f / static_cast<float>(steps_);
      for (int64_t i = 0; i < f_; ++i) y[i] *= inv;
    }
  }
  void Bwd(dnnl::stream&) override {
    if (!need_diff_src_) return;
    const float inv = 1.f / static_cast<float>(steps_);
    for (int64_t b = 0; b < batch_; ++b) {
      const float* __restrict d = dout() + b * f_;
      float* __restrict dx = din() + b * steps_ * f_;
      if (!mean_) {
        std::fill(dx, dx + (steps_ - 1) * f_, 0.f);
        std::memcpy(dx + (steps_ - 1) * f_, d, sizeof(float) * f_);
        continue;
      }
      for (int64_t t = 0; t < steps_; ++t)
        for (int64_t i = 0; i < f_; ++i) dx[t * f_ + i] = d[i] * inv;
    }
  }
  int64_t steps_ = 0, f_ = 0;
  bool mean_ = false;
};

class SequencePoolType : public LayerType {
 public:
  Status Infer(const proto::LayerSpec& spec, const Shape& in, Shape* out,
               std::vector<ParamTensor>*) const override {
    POLIS_RETURN_IF_ERROR(NoActivation(spec, "SequencePool"));
    POLIS_RETURN_IF_ERROR(NeedSequence(in, "SequencePool"));
    *out = {in[1]};
    return Status::Ok();
  }
  std::unique_ptr<LayerExec> Create(const LayerContext& c) const override {
    return std::make_unique<SequencePoolExec>(c);
  }
};

}  // namespace

void RegisterSequenceLayers(LayerRegistry& r) {
  POLIS_ENFORCE_OK(r.Register("Embedding", std::make_unique<EmbeddingType>()));
  POLIS_ENFORCE_OK(r.Register("LSTM", std::make_unique<RecurrentType>(false)));
  POLIS_ENFORCE_OK(r.Register("GRU", std::make_unique<RecurrentType>(true)));
  POLIS_ENFORCE_OK(r.Register("Dropout", std::make_unique<DropoutType>()));
  POLIS_ENFORCE_OK(r.Register("LayerNorm", std::make_unique<LayerNormType>()));
  POLIS_ENFORCE_OK(r.Register("GELU", std::make_unique<GeluType>()));
  POLIS_ENFORCE_OK(r.Register("MultiHeadSelfAttention", std::make_unique<MhaType>()));
  POLIS_ENFORCE_OK(r.Register("TransformerEncoderBlock", std::make_unique<TransformerType>()));
  POLIS_ENFORCE_OK(r.Register("PositionalEncoding", std::make_unique<PositionalEncodingType>()));
  POLIS_ENFORCE_OK(r.Register("SequencePool", std::make_unique<SequencePoolType>()));
}

}  // namespace polis::nn
