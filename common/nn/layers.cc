// Built-in layers of the oneDNN CPU backend: Conv2D, MaxPool2D, Dense, ReLU,
// Flatten. See layer.h for the contract.
#include <algorithm>
#include <mutex>

#include "common/log.h"
#include "common/nn/layer.h"

namespace polis::nn {

using dnnl::memory;
using Tag = memory::format_tag;
using Dt = memory::data_type;

std::unique_ptr<LayerExec> CreateInPrecision(
    const LayerContext& c,
    const std::function<std::unique_ptr<LayerExec>(dnnl::memory::data_type)>& make) {
  if (c.bf16) {
    std::string why;
    try {
      auto e = make(dnnl::memory::data_type::bf16);
      for (const auto& s : e->ImplInfo())
        if (s.find("ref") != std::string::npos) why = "oneDNN would run a reference kernel (" + s + ")";
      if (why.empty()) return e;
    } catch (const dnnl::error& err) {
      why = fmt::format("oneDNN has no bf16 kernel for it ({})", err.what());
    }
    POLIS_LOG(kInfo, kNn, "{} layer {} stays fp32: {}", c.spec->type(),
              ShapeString(c.in_shape) + " -> " + ShapeString(c.out_shape), why);
  }
  return make(dnnl::memory::data_type::f32);
}

std::string ShapeString(const Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? "," : "") + std::to_string(s[i]);
  return out + "]";
}

int64_t ShapeElements(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

namespace {

memory::dims BatchDims(int64_t batch, const Shape& s) {
  memory::dims d{batch};
  d.insert(d.end(), s.begin(), s.end());
  return d;
}

memory::desc PlainDesc(const memory::dims& d) {
  return memory::desc(d, Dt::f32, d.size() == 4   ? Tag::nchw
                                  : d.size() == 3 ? Tag::ncw
                                  : d.size() == 2 ? Tag::nc
                                                  : Tag::x);
}

memory::desc AnyDesc(const memory::dims& d, Dt dt = Dt::f32) { return memory::desc(d, dt, Tag::any); }

// The same layout with another element type (bf16 copies of fp32 tensors
// keep their layout, so converting them is an element-wise reorder).
memory::desc WithType(memory::desc md, Dt dt) {
  md.data.data_type = static_cast<dnnl_data_type_t>(dt);
  return md;
}

// " bf16" in a layer's ImplInfo names marks the primitives that compute in bf16.
std::string TypeTag(Dt compute) { return compute == Dt::bf16 ? " bf16" : ""; }

dnnl::primitive_attr ActivationAttr(proto::Activation a) {
  dnnl::primitive_attr attr;
  if (a != proto::NONE) {
    dnnl::post_ops po;
    po.append_eltwise(1.0f, a == proto::RELU ? dnnl::algorithm::eltwise_relu : dnnl::algorithm::eltwise_tanh,
                      0.0f, 0.0f);
    attr.set_post_ops(po);
  }
  return attr;
}

// A fused activation's backward, in place, from the forward output y:
// ReLU diff *= (y > 0), tanh diff *= 1 - y². NONE does nothing.
struct ActivationBackward {
  dnnl::eltwise_backward prim;
  memory scratch;
  bool active = false;
  void Init(dnnl::engine& eng, proto::Activation a, const memory::desc& dst_md) {
    active = a != proto::NONE;
    if (!active) return;
    auto alg = a == proto::RELU ? dnnl::algorithm::eltwise_relu_use_dst_for_bwd
                                : dnnl::algorithm::eltwise_tanh_use_dst_for_bwd;
    dnnl::eltwise_forward::primitive_desc hint(
        dnnl::eltwise_forward::desc(dnnl::prop_kind::forward_training, alg, dst_md, 0.f, 0.f), eng);
    const dnnl::eltwise_backward::primitive_desc pd(
        dnnl::eltwise_backward::desc(alg, dst_md, dst_md, 0.f, 0.f), UserScratchpad(), eng, hint);
    prim = dnnl::eltwise_backward(pd);
    scratch = ScratchMemory(pd, eng);
  }
  void Run(dnnl::stream& s, const memory& dst, memory& diff) const {
    if (!active) return;
    prim.execute(s, {{DNNL_ARG_DST, dst},
                     {DNNL_ARG_DIFF_DST, diff},
                     {DNNL_ARG_DIFF_SRC, diff},
                     {DNNL_ARG_SCRATCHPAD, scratch}});
  }
};

std::string Impl(const dnnl::primitive_desc_base& pd) { return pd.impl_info_str(); }

// Σ a·b (kProduct) or Σ a over floats, in 16 float lanes (vectorised)
// summed in double per block of 4096: per-example norms to ~1e-6 relative,
// several times faster than a serial double loop. b is only read (and may
// be a) when kProduct.
template <bool kProduct>
double LaneSum(const float* __restrict a, const float* __restrict b, int64_t n) {
  double total = 0;
  for (int64_t at = 0; at < n; at += 4096) {
    const int64_t m = std::min<int64_t>(4096, n - at);
    float acc[16] = {};
    int64_t i = 0;
    for (; i + 16 <= m; i += 16)
      for (int j = 0; j < 16; ++j) acc[j] += kProduct ? a[at + i + j] * b[at + i + j] : a[at + i + j];
    for (; i < m; ++i) acc[0] += kProduct ? a[at + i] * b[at + i] : a[at + i];
    for (float v : acc) total += v;
  }
  return total;
}
double SumSquares(const float* x, int64_t n) { return LaneSum<true>(x, x, n); }
double Sum(const float* x, int64_t n) { return LaneSum<false>(x, x, n); }
double Dot(const float* a, const float* b, int64_t n) { return LaneSum<true>(a, b, n); }

// ---------------------------------------------------------------- Conv2D

}  // namespace

SamePadding SamePaddingOf(int64_t in, int64_t k, int64_t stride) {
  SamePadding p;
  p.out = (in + stride - 1) / stride;
  const int64_t total = std::max<int64_t>((p.out - 1) * stride + k - in, 0);
  p.before = total / 2;
  p.after = total - p.before;
  return p;
}

namespace {

// pad_t/pad_b pad the height, pad_l/pad_r the width.
struct ConvGeometry {
  int64_t k, stride, pad_t, pad_b, pad_l, pad_r, out_h, out_w;
};

StatusOr<ConvGeometry> Conv2DGeometry(const proto::LayerSpec& spec, const Shape& in) {
  const auto& p = spec.conv2d_param();
  if (!spec.has_conv2d_param()) return InvalidArgument("Conv2D needs conv2d_param");
  if (!p.has_filters() || p.filters() <= 0)
    return InvalidArgument("conv2d_param.filters is required and must be > 0");
  if (!p.has_kernel_size() || p.kernel_size() <= 0)
    return InvalidArgument("conv2d_param.kernel_size is required and must be > 0");
  if (p.stride() <= 0) return InvalidArgument("conv2d_param.stride must be > 0");
  if (in.size() != 3)
    return InvalidArgument("Conv2D needs a [channels,height,width] input, got {}", ShapeString(in));
  ConvGeometry g{p.kernel_size(), p.stride(), 0, 0, 0, 0, 0, 0};
  int64_t h = in[1], w = in[2];
  if (p.padding() == proto::Conv2DParam::VALID) {
    if (h < g.k || w < g.k)
      return InvalidArgument("kernel {}x{} does not fit input {} with VALID padding", g.k, g.k,
                             ShapeString(in));
    g.out_h = (h - g.k) / g.stride + 1;
    g.out_w = (w - g.k) / g.stride + 1;
  } else {
    const SamePadding ph = SamePaddingOf(h, g.k, g.stride), pw = SamePaddingOf(w, g.k, g.stride);
    g = {g.k, g.stride, ph.before, ph.after, pw.before, pw.after, ph.out, pw.out};
  }
  return g;
}

class Conv2DExec : public LayerExec {
 public:
  // compute: f32, or bf16 (src and weights converted; dst, diff_src and the
  // parameter gradients stay f32, accumulated in f32 by oneDNN).
  Conv2DExec(const LayerContext& c, Dt compute) : eng_(c.engine), src_(c.src) {
    auto& eng = *c.engine;
    ConvGeometry g = Conv2DGeometry(*c.spec, c.in_shape).value();
    const int64_t ic = c.in_shape[0], oc = c.spec->conv2d_param().filters();
    geo_ = g;
    batch_ = c.batch;
    in_shape_ = c.in_shape;
    out_shape_ = c.out_shape;
    memory::dims src_d = BatchDims(c.batch, c.in_shape), dst_d = BatchDims(c.batch, c.out_shape);
    memory::dims w_d{oc, ic, g.k, g.k}, b_d{oc};
    memory::dims strides{g.stride, g.stride}, pl{g.pad_t, g.pad_l}, pr{g.pad_b, g.pad_r};
    auto prop = c.training ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference;
    fwd_pd_ = dnnl::convolution_forward::primitive_desc(
        dnnl::convolution_forward::desc(prop, dnnl::algorithm::convolution_direct,
                                        AnyDesc(src_d, compute), AnyDesc(w_d, compute),
                                        AnyDesc(b_d), AnyDesc(dst_d), strides, pl, pr),
        UserScratchpad(ActivationAttr(c.spec->activation())), eng);
    fwd_ = dnnl::convolution_forward(fwd_pd_);
    impl_.push_back("fwd" + TypeTag(compute) + ": " + Impl(fwd_pd_));

    w_user_ = memory(PlainDesc(w_d), eng, c.params);
    b_user_ = memory(PlainDesc(b_d), eng, c.params + oc * ic * g.k * g.k);
    src_reorder_.Init(eng, c.src_md, fwd_pd_.src_desc());
    conv_src_ = src_reorder_.active ? memory(fwd_pd_.src_desc(), eng) : src_;
    w_fwd_reorder_.Init(eng, w_user_.get_desc(), fwd_pd_.weights_desc());
    w_fwd_ = w_fwd_reorder_.active ? memory(fwd_pd_.weights_desc(), eng) : w_user_;
    POLIS_ENFORCE(fwd_pd_.bias_desc() == b_user_.get_desc());
    dst_ = memory(fwd_pd_.dst_desc(), eng);
    fwd_args_ = {{DNNL_ARG_SRC, conv_src_}, {DNNL_ARG_WEIGHTS, w_fwd_},
                 {DNNL_ARG_BIAS, b_user_}, {DNNL_ARG_DST, dst_},
                 {DNNL_ARG_SCRATCHPAD, ScratchMemory(fwd_pd_, eng)}};
    if (!c.training) return;

    act_bwd_.Init(eng, c.relu_grad_deferred ? proto::NONE : c.spec->activation(), fwd_pd_.dst_desc());
    // diff_dst in the compute type, in dst's layout (one conversion, in
    // Backward, feeds both backward primitives).
    const memory::desc diff_dst_md = WithType(fwd_pd_.dst_desc(), compute);
    bwd_w_pd_ = dnnl::convolution_backward_weights::primitive_desc(
        dnnl::convolution_backward_weights::desc(dnnl::algorithm::convolution_direct,
                                                 fwd_pd_.src_desc(), AnyDesc(w_d), AnyDesc(b_d),
                                                 diff_dst_md, strides, pl, pr),
        UserScratchpad(), eng, fwd_pd_);
    bwd_w_ = dnnl::convolution_backward_weights(bwd_w_pd_);
    bwd_w_scratch_ = ScratchMemory(bwd_w_pd_, eng);
    impl_.push_back("bwd_w" + TypeTag(compute) + ": " + Impl(bwd_w_pd_));
    gw_user_ = memory(PlainDesc(w_d), eng, c.grads);
    gb_user_ = memory(PlainDesc(b_d), eng, c.grads + oc * ic * g.k * g.k);
    POLIS_ENFORCE(bwd_w_pd_.diff_bias_desc() == gb_user_.get_desc());
    gw_reorder_.Init(eng, bwd_w_pd_.diff_weights_desc(), gw_user_.get_desc());
    gw_ = gw_reorder_.active ? memory(bwd_w_pd_.diff_weights_desc(), eng) : gw_user_;

    need_diff_src_ = c.need_diff_src;
    if (need_diff_src_) {
      bwd_d_pd_ = dnnl::convolution_backward_data::primitive_desc(
          dnnl::convolution_backward_data::desc(dnnl::algorithm::convolution_direct,
                                                WithType(fwd_pd_.src_desc(), Dt::f32),
                                                AnyDesc(w_d, compute), diff_dst_md, strides, pl, pr),
          UserScratchpad(), eng, fwd_pd_);
      bwd_d_ = dnnl::convolution_backward_data(bwd_d_pd_);
      bwd_d_scratch_ = ScratchMemory(bwd_d_pd_, eng);
      impl_.push_back("bwd_d" + TypeTag(compute) + ": " + Impl(bwd_d_pd_));
      w_bwd_reorder_.Init(eng, w_user_.get_desc(), bwd_d_pd_.weights_desc());
      w_bwd_ = w_bwd_reorder_.active ? memory(bwd_d_pd_.weights_desc(), eng) : w_user_;
      diff_src_reorder_.Init(eng, bwd_d_pd_.diff_src_desc(), c.src_md);
      conv_diff_src_ = memory(bwd_d_pd_.diff_src_desc(), eng);
      diff_src_ = diff_src_reorder_.active ? memory(c.src_md, eng) : conv_diff_src_;
    }
  }

  void Forward(dnnl::stream& s) override {
    src_reorder_.Run(s, src_, conv_src_);
    if (!frozen_) w_fwd_reorder_.Run(s, w_user_, w_fwd_);
    fwd_.execute(s, fwd_args_);
  }
  void FreezeParams(dnnl::stream& s) override {
    w_fwd_reorder_.Run(s, w_user_, w_fwd_);
    frozen_ = true;
  }

  void BindDiffDst(const memory& diff_dst) override {
    diff_dst_ = diff_dst;
    diff_dst_reorder_.Init(*eng_, diff_dst_.get_desc(), bwd_w_pd_.diff_dst_desc());
    conv_diff_dst_ =
        diff_dst_reorder_.active ? memory(bwd_w_pd_.diff_dst_desc(), *eng_) : diff_dst_;
    bwd_w_args_ = {{DNNL_ARG_SRC, conv_src_}, {DNNL_ARG_DIFF_DST, conv_diff_dst_},
                   {DNNL_ARG_DIFF_WEIGHTS, gw_}, {DNNL_ARG_DIFF_BIAS, gb_user_},
                   {DNNL_ARG_SCRATCHPAD, bwd_w_scratch_}};
    if (need_diff_src_)
      bwd_d_args_ = {{DNNL_ARG_DIFF_DST, conv_diff_dst_}, {DNNL_ARG_WEIGHTS, w_bwd_},
                     {DNNL_ARG_DIFF_SRC, conv_diff_src_}, {DNNL_ARG_SCRATCHPAD, bwd_d_scratch_}};
  }

  void Backward(dnnl::stream& s) override {
    act_bwd_.Run(s, dst_, diff_dst_);
    diff_dst_reorder_.Run(s, diff_dst_, conv_diff_dst_);
    if (need_diff_src_) {
      w_bwd_reorder_.Run(s, w_user_, w_bwd_);
      bwd_d_.execute(s, bwd_d_args_);
      diff_src_reorder_.Run(s, conv_diff_src_, diff_src_);
    }
    if (!param_grads_wanted_) return;
    bwd_w_.execute(s, bwd_w_args_);
    gw_reorder_.Run(s, gw_, gw_user_);
  }

  memory& dst() override { return dst_; }
  memory& diff_src() override { return diff_src_; }
  std::vector<std::string> ImplInfo() const override { return impl_; }

  // Per-example weight gradients as Opacus computes them: unfold each
  // example's input (im2col, A_n: [P, D], P output positions, D = ic·k·k)
  // and multiply by its output gradient (dY_n: [O, P]): dW_n = dY_n · A_n,
  // one batched matmul (as many flops as the layer's weight gradient).
  // Where P·(D + O) < D·O (few output positions, e.g. the seed CNN's last
  // convolution) the ghost norm is cheaper and used instead:
  // ‖dW_n‖² = Σ_{p,q} (a_p·a_q)(d_p·d_q), nothing materialised (Li et al.
  // 2021). The bias gradient is Σ_p dY_n. Plain layouts, reordered from
  // oneDNN's once per call.
  void AddPerExampleSqNorms(dnnl::stream& s, double* sq_norms) override {
    const int64_t N = batch_, ic = in_shape_[0], H = in_shape_[1], W = in_shape_[2];
    const int64_t O = out_shape_[0], OH = out_shape_[1], OW = out_shape_[2], P = OH * OW;
    const int64_t k = geo_.k, D = ic * k * k;
    if (!pe_ready_) {
      auto& eng = *eng_;
      // From the layer's fp32 input (conv_src_ may be its bf16 copy).
      pe_src_reorder_.Init(eng, src_.get_desc(), PlainDesc(BatchDims(N, in_shape_)));
      pe_src_ = pe_src_reorder_.active ? memory(PlainDesc(BatchDims(N, in_shape_)), eng) : src_;
      pe_dy_reorder_.Init(eng, diff_dst_.get_desc(), PlainDesc(BatchDims(N, out_shape_)));
      pe_dy_ = pe_dy_reorder_.active ? memory(PlainDesc(BatchDims(N, out_shape_)), eng) : diff_dst_;
      pe_cols_ = memory(memory::desc({N, P, D}, Dt::f32, Tag::abc), eng);
      pe_ghost_ = P * (D + O) < D * O;
      if (pe_ghost_) pe_dyt_.resize(P * O);
      if (!pe_ghost_) {
        pe_dw_ = memory(memory::desc({N, O, D}, Dt::f32, Tag::abc), eng);
        pe_dy3_ = memory(memory::desc({N, O, P}, Dt::f32, Tag::abc), eng, pe_dy_.get_data_handle());
        const dnnl::matmul::primitive_desc pd(
            dnnl::matmul::desc(pe_dy3_.get_desc(), pe_cols_.get_desc(), pe_dw_.get_desc()),
            UserScratchpad(), eng);
        pe_mm_ = dnnl::matmul(pd);
        pe_mm_scratch_ = ScratchMemory(pd, eng);
      }
      pe_ready_ = true;
    }
    pe_src_reorder_.Run(s, src_, pe_src_);
    pe_dy_reorder_.Run(s, diff_dst_, pe_dy_);
    s.wait();
    const float* x = static_cast<const float*>(pe_src_.get_data_handle());
    float* cols = static_cast<float*>(pe_cols_.get_data_handle());
    const bool padded = geo_.pad_t > 0 || geo_.pad_b > 0 || geo_.pad_l > 0 || geo_.pad_r > 0;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t oy = 0; oy < OH; ++oy)
        for (int64_t ox = 0; ox < OW; ++ox) {
          float* __restrict row = cols + ((n * OH + oy) * OW + ox) * D;
          for (int64_t c = 0; c < ic; ++c)
            for (int64_t ky = 0; ky < k; ++ky) {
              const int64_t iy = oy * geo_.stride - geo_.pad_t + ky;
              const int64_t ix0 = ox * geo_.stride - geo_.pad_l;
              const int64_t base = ((n * ic + c) * H + iy) * W + ix0;  // may lie in the padding
              if (!padded) {
                for (int64_t kx = 0; kx < k; ++kx) row[kx] = x[base + kx];
              } else {
                // Zeros where the kernel row lies in the padding, a copy in between.
                const bool in_rows = iy >= 0 && iy < H;
                const int64_t lo = in_rows ? std::clamp<int64_t>(-ix0, 0, k) : k;
                const int64_t hi = in_rows ? std::clamp<int64_t>(W - ix0, lo, k) : k;
                for (int64_t kx = 0; kx < lo; ++kx) row[kx] = 0.f;
                for (int64_t kx = lo; kx < hi; ++kx) row[kx] = x[base + kx];
                for (int64_t kx = hi; kx < k; ++kx) row[kx] = 0.f;
              }
              row += k;
            }
        }
    const float* dy = static_cast<const float*>(pe_dy_.get_data_handle());
    if (!pe_ghost_) {
      pe_mm_.execute(s, {{DNNL_ARG_SRC, pe_dy3_}, {DNNL_ARG_WEIGHTS, pe_cols_},
                         {DNNL_ARG_DST, pe_dw_}, {DNNL_ARG_SCRATCHPAD, pe_mm_scratch_}});
      s.wait();
    }
    const float* dw = pe_ghost_ ? nullptr : static_cast<const float*>(pe_dw_.get_data_handle());
    for (int64_t n = 0; n < N; ++n) {
      double sq = 0;
      if (!pe_ghost_) {
        sq = SumSquares(dw + n * O * D, O * D);
      } else {
        const float* a = cols + n * P * D;
        const float* d = dy + n * O * P;
        float* dt = pe_dyt_.data();  // dY_nᵀ: [P, O], rows contiguous like A_n's
        for (int64_t o = 0; o < O; ++o)
          for (int64_t p = 0; p < P; ++p) dt[p * O + o] = d[o * P + p];
        for (int64_t p = 0; p < P; ++p)
          for (int64_t q = 0; q <= p; ++q)
            sq += (p == q ? 1.0 : 2.0) * Dot(a + p * D, a + q * D, D) * Dot(dt + p * O, dt + q * O, O);
      }
      for (int64_t o = 0; o < O; ++o) {
        const double b = Sum(dy + (n * O + o) * P, P);
        sq += b * b;
      }
      sq_norms[n] += sq;
    }
  }

 private:
  dnnl::engine* eng_;
  ConvGeometry geo_{};
  int64_t batch_ = 0;
  Shape in_shape_, out_shape_;
  bool pe_ready_ = false, pe_ghost_ = false;
  std::vector<float> pe_dyt_;  // ghost norm: one example's dY transposed
  MaybeReorder pe_src_reorder_, pe_dy_reorder_;
  memory pe_src_, pe_dy_, pe_dy3_, pe_cols_, pe_dw_, pe_mm_scratch_;
  dnnl::matmul pe_mm_;
  memory bwd_w_scratch_, bwd_d_scratch_;
  memory src_, conv_src_, w_user_, b_user_, w_fwd_, dst_;
  memory gw_user_, gb_user_, gw_, w_bwd_, conv_diff_src_, diff_src_, diff_dst_, conv_diff_dst_;
  bool need_diff_src_ = false;
  dnnl::convolution_forward::primitive_desc fwd_pd_;
  dnnl::convolution_backward_weights::primitive_desc bwd_w_pd_;
  dnnl::convolution_backward_data::primitive_desc bwd_d_pd_;
  dnnl::convolution_forward fwd_;
  dnnl::convolution_backward_weights bwd_w_;
  dnnl::convolution_backward_data bwd_d_;
  MaybeReorder src_reorder_, w_fwd_reorder_, gw_reorder_, w_bwd_reorder_, diff_src_reorder_,
      diff_dst_reorder_;
  bool frozen_ = false;  // FreezeParams: w_fwd_ holds the weights for good
  ActivationBackward act_bwd_;
  std::unordered_map<int, memory> fwd_args_, bwd_w_args_, bwd_d_args_;
  std::vector<std::string> impl_;
};

class Conv2DType : public LayerType {
 public:
  Status Infer(const proto::LayerSpec& spec, const Shape& in, Shape* out,
               std::vector<ParamTensor>* params) const override {
    POLIS_ASSIGN_OR_RETURN(ConvGeometry g, Conv2DGeometry(spec, in));
    int64_t oc = spec.conv2d_param().filters(), ic = in[0];
    *out = {oc, g.out_h, g.out_w};
    params->push_back({"weights", {oc, ic, g.k, g.k}, oc * ic * g.k * g.k, 0, ic * g.k * g.k,
                       oc * g.k * g.k});
    params->push_back({"bias", {oc}, oc, 0, 0, 0});
    return Status::Ok();
  }
  std::unique_ptr<LayerExec> Create(const LayerContext& c) const override {
    // oneDNN's bf16 convolutions multiply pairs of input channels; with one
    // input channel (a first layer on greyscale images) half of each pair is
    // padding, so the bf16 kernels save nothing, the weight gradient's is
    // slower than fp32's, and converting the layer's large output gradient
    // to bf16 is pure cost: such a layer stays fp32 (docs/design/cpu-bf16.md).
    if (c.bf16 && c.in_shape[0] == 1) {
      LayerContext fp32 = c;
      fp32.bf16 = false;
      return std::make_unique<Conv2DExec>(fp32, Dt::f32);
    }
    return CreateInPrecision(c, [&](Dt t) { return std::make_unique<Conv2DExec>(c, t); });
  }
  PerExample PerExampleMethod(const proto::LayerSpec&, std::string*) const override {
    return PerExample::kOwn;
  }
};

// ---------------------------------------------------------------- MaxPool2D

struct PoolGeometry {
  int64_t k, stride;
};

PoolGeometry PoolOf(const proto::LayerSpec& spec) {
  const auto& p = spec.pool2d_param();
  int64_t k = p.pool_size();
  return {k, p.has_stride() ? p.stride() : k};
}

class MaxPool2DExec : public LayerExec {
 public:
  explicit MaxPool2DExec(const LayerContext& c) : src_(c.src) {
    auto& eng = *c.engine;
    PoolGeometry g = PoolOf(*c.spec);
    memory::dims dst_d = BatchDims(c.batch, c.out_shape);
    memory::dims strides{g.stride, g.stride}, kernel{g.k, g.k}, pad{0, 0};
    auto prop = c.training ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference;
    fwd_pd_ = dnnl::pooling_forward::primitive_desc(
        dnnl::pooling_forward::desc(prop, dnnl::algorithm::pooling_max, c.src_md, AnyDesc(dst_d),
                                    strides, kernel, pad, pad),
        UserScratchpad(), eng);
    fwd_ = dnnl::pooling_forward(fwd_pd_);
    impl_.push_back("fwd: " + Impl(fwd_pd_));
    dst_ = memory(fwd_pd_.dst_desc(), eng);
    fwd_args_ = {{DNNL_ARG_SRC, src_}, {DNNL_ARG_DST, dst_},
                 {DNNL_ARG_SCRATCHPAD, ScratchMemory(fwd_pd_, eng)}};
    if (!c.training) return;
    ws_ = memory(fwd_pd_.workspace_desc(), eng);
    fwd_args_[DNNL_ARG_WORKSPACE] = ws_;
    need_diff_src_ = c.need_diff_src;
    if (!need_diff_src_) return;
    act_bwd_.Init(eng, c.relu_grad_on_dst ? proto::RELU : proto::NONE, fwd_pd_.dst_desc());
    bwd_pd_ = dnnl::pooling_backward::primitive_desc(
        dnnl::pooling_backward::desc(dnnl::algorithm::pooling_max, c.src_md, fwd_pd_.dst_desc(),
                                     strides, kernel, pad, pad),
        UserScratchpad(), eng, fwd_pd_);
    bwd_ = dnnl::pooling_backward(bwd_pd_);
    bwd_scratch_ = ScratchMemory(bwd_pd_, eng);
    impl_.push_back("bwd: " + Impl(bwd_pd_));
    diff_src_ = memory(c.src_md, eng);
  }
  void Forward(dnnl::stream& s) override { fwd_.execute(s, fwd_args_); }
  void BindDiffDst(const memory& diff_dst) override {
    diff_dst_ = diff_dst;
    if (need_diff_src_)
      bwd_args_ = {{DNNL_ARG_DIFF_DST, diff_dst}, {DNNL_ARG_DIFF_SRC, diff_src_},
                   {DNNL_ARG_WORKSPACE, ws_}, {DNNL_ARG_SCRATCHPAD, bwd_scratch_}};
  }
  void Backward(dnnl::stream& s) override {
    if (!need_diff_src_) return;
    act_bwd_.Run(s, dst_, diff_dst_);
    bwd_.execute(s, bwd_args_);
  }
  memory& dst() override { return dst_; }
  memory& diff_src() override { return diff_src_; }
  std::vector<std::string> ImplInfo() const override { return impl_; }

 private:
  memory src_, dst_, ws_, diff_src_, diff_dst_, bwd_scratch_;
  bool need_diff_src_ = false;
  ActivationBackward act_bwd_;
  dnnl::pooling_forward::primitive_desc fwd_pd_;
  dnnl::pooling_backward::primitive_desc bwd_pd_;
  dnnl::pooling_forward fwd_;
  dnnl::pooling_backward bwd_;
  std::unordered_map<int, memory> fwd_args_, bwd_args_;
  std::vector<std::string> impl_;
};

class MaxPool2DType : public LayerType {
 public:
  Status Infer(const proto::LayerSpec& spec, const Shape& in, Shape* out,
               std::vector<ParamTensor>*) const override {
    if (in.size() != 3)
      return InvalidArgument("MaxPool2D needs a [channels,height,width] input, got {}",
                             ShapeString(in));
    PoolGeometry g = PoolOf(spec);
    if (g.k <= 0 || g.stride <= 0)
      return InvalidArgument("pool2d_param.pool_size and stride must be > 0");
    if (in[1] < g.k || in[2] < g.k)
      return InvalidArgument("pool {}x{} does not fit input {}", g.k, g.k, ShapeString(in));
    *out = {in[0], (in[1] - g.k) / g.stride + 1, (in[2] - g.k) / g.stride + 1};
    return Status::Ok();
  }
  std::unique_ptr<LayerExec> Create(const LayerContext& c) const override {
    return std::make_unique<MaxPool2DExec>(c);
  }
};

// ---------------------------------------------------------------- Dense

class DenseExec : public LayerExec {
 public:
  // compute: as Conv2DExec's.
  DenseExec(const LayerContext& c, Dt compute) : eng_(c.engine), src_(c.src) {
    auto& eng = *c.engine;
    const int64_t in = c.in_shape[0], out = c.out_shape[0];
    batch_ = c.batch;
    in_ = in;
    out_ = out;
    memory::dims w_d{out, in}, b_d{out}, dst_d{c.batch, out};
    auto prop = c.training ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference;
    // The output is kept plain (nc): logits are read by the loss directly.
    const memory::desc ip_src_md = WithType(c.src_md, compute);
    fwd_pd_ = dnnl::inner_product_forward::primitive_desc(
        dnnl::inner_product_forward::desc(prop, ip_src_md, AnyDesc(w_d, compute), AnyDesc(b_d),
                                          PlainDesc(dst_d)),
        UserScratchpad(ActivationAttr(c.spec->activation())), eng);
    fwd_ = dnnl::inner_product_forward(fwd_pd_);
    impl_.push_back("fwd" + TypeTag(compute) + ": " + Impl(fwd_pd_));
    w_user_ = memory(PlainDesc(w_d), eng, c.params);
    b_user_ = memory(PlainDesc(b_d), eng, c.params + out * in);
    POLIS_ENFORCE(fwd_pd_.src_desc() == ip_src_md);
    src_reorder_.Init(eng, c.src_md, ip_src_md);
    ip_src_ = src_reorder_.active ? memory(ip_src_md, eng) : src_;
    POLIS_ENFORCE(fwd_pd_.bias_desc() == b_user_.get_desc());
    w_fwd_reorder_.Init(eng, w_user_.get_desc(), fwd_pd_.weights_desc());
    w_fwd_ = w_fwd_reorder_.active ? memory(fwd_pd_.weights_desc(), eng) : w_user_;
    dst_ = memory(fwd_pd_.dst_desc(), eng);
    fwd_args_ = {{DNNL_ARG_SRC, ip_src_}, {DNNL_ARG_WEIGHTS, w_fwd_}, {DNNL_ARG_BIAS, b_user_},
                 {DNNL_ARG_DST, dst_}, {DNNL_ARG_SCRATCHPAD, ScratchMemory(fwd_pd_, eng)}};
    if (!c.training) return;
    act_bwd_.Init(eng, c.relu_grad_deferred ? proto::NONE : c.spec->activation(), fwd_pd_.dst_desc());
    const memory::desc diff_dst_md = WithType(fwd_pd_.dst_desc(), compute);
    bwd_w_pd_ = dnnl::inner_product_backward_weights::primitive_desc(
        dnnl::inner_product_backward_weights::desc(ip_src_md, AnyDesc(w_d), AnyDesc(b_d),
                                                   diff_dst_md),
        UserScratchpad(), eng, fwd_pd_);
    bwd_w_ = dnnl::inner_product_backward_weights(bwd_w_pd_);
    bwd_w_scratch_ = ScratchMemory(bwd_w_pd_, eng);
    impl_.push_back("bwd_w" + TypeTag(compute) + ": " + Impl(bwd_w_pd_));
    gw_user_ = memory(PlainDesc(w_d), eng, c.grads);
    gb_user_ = memory(PlainDesc(b_d), eng, c.grads + out * in);
    POLIS_ENFORCE(bwd_w_pd_.diff_bias_desc() == gb_user_.get_desc());
    gw_reorder_.Init(eng, bwd_w_pd_.diff_weights_desc(), gw_user_.get_desc());
    gw_ = gw_reorder_.active ? memory(bwd_w_pd_.diff_weights_desc(), eng) : gw_user_;
    need_diff_src_ = c.need_diff_src;
    if (need_diff_src_) {
      bwd_d_pd_ = dnnl::inner_product_backward_data::primitive_desc(
          dnnl::inner_product_backward_data::desc(c.src_md, AnyDesc(w_d, compute), diff_dst_md),
          UserScratchpad(), eng, fwd_pd_);
      bwd_d_ = dnnl::inner_product_backward_data(bwd_d_pd_);
      bwd_d_scratch_ = ScratchMemory(bwd_d_pd_, eng);
      impl_.push_back("bwd_d" + TypeTag(compute) + ": " + Impl(bwd_d_pd_));
      POLIS_ENFORCE(bwd_d_pd_.diff_src_desc() == c.src_md);
      w_bwd_reorder_.Init(eng, w_user_.get_desc(), bwd_d_pd_.weights_desc());
      w_bwd_ = w_bwd_reorder_.active ? memory(bwd_d_pd_.weights_desc(), eng) : w_user_;
      diff_src_ = memory(c.src_md, eng);
    }
  }
  void Forward(dnnl::stream& s) override {
    src_reorder_.Run(s, src_, ip_src_);
    if (!frozen_) w_fwd_reorder_.Run(s, w_user_, w_fwd_);
    fwd_.execute(s, fwd_args_);
  }
  void FreezeParams(dnnl::stream& s) override {
    w_fwd_reorder_.Run(s, w_user_, w_fwd_);
    frozen_ = true;
  }
  void BindDiffDst(const memory& diff_dst) override {
    diff_dst_ = diff_dst;
    diff_dst_reorder_.Init(*eng_, diff_dst_.get_desc(), bwd_w_pd_.diff_dst_desc());
    ip_diff_dst_ = diff_dst_reorder_.active ? memory(bwd_w_pd_.diff_dst_desc(), *eng_) : diff_dst_;
    bwd_w_args_ = {{DNNL_ARG_SRC, ip_src_}, {DNNL_ARG_DIFF_DST, ip_diff_dst_},
                   {DNNL_ARG_DIFF_WEIGHTS, gw_}, {DNNL_ARG_DIFF_BIAS, gb_user_},
                   {DNNL_ARG_SCRATCHPAD, bwd_w_scratch_}};
    if (need_diff_src_)
      bwd_d_args_ = {{DNNL_ARG_DIFF_DST, ip_diff_dst_}, {DNNL_ARG_WEIGHTS, w_bwd_},
                     {DNNL_ARG_DIFF_SRC, diff_src_}, {DNNL_ARG_SCRATCHPAD, bwd_d_scratch_}};
  }
  void Backward(dnnl::stream& s) override {
    act_bwd_.Run(s, dst_, diff_dst_);
    diff_dst_reorder_.Run(s, diff_dst_, ip_diff_dst_);
    if (need_diff_src_) {
      w_bwd_reorder_.Run(s, w_user_, w_bwd_);
      bwd_d_.execute(s, bwd_d_args_);
    }
    if (!param_grads_wanted_) return;
    bwd_w_.execute(s, bwd_w_args_);
    gw_reorder_.Run(s, gw_, gw_user_);
  }
  memory& dst() override { return dst_; }
  memory& diff_src() override { return diff_src_; }
  std::vector<std::string> ImplInfo() const override { return impl_; }

  // Ghost norm (Goodfellow 2015; Li et al. 2021): example n's weight
  // gradient is the outer product dy_n x_nᵀ, so its squared norm is
  // ‖dy_n‖²‖x_n‖², and the bias adds ‖dy_n‖²: O(in + out) per example,
  // nothing materialised.
  void AddPerExampleSqNorms(dnnl::stream& s, double* sq_norms) override {
    if (!pe_ready_) {
      const memory::desc plain = PlainDesc({batch_, in_});
      pe_src_reorder_.Init(*eng_, src_.get_desc(), plain);
      pe_src_ = pe_src_reorder_.active ? memory(plain, *eng_) : src_;
      pe_ready_ = true;
    }
    pe_src_reorder_.Run(s, src_, pe_src_);
    s.wait();
    const float* x = static_cast<const float*>(pe_src_.get_data_handle());
    const float* dy = static_cast<const float*>(diff_dst_.get_data_handle());
    for (int64_t n = 0; n < batch_; ++n)
      sq_norms[n] += SumSquares(dy + n * out_, out_) * (SumSquares(x + n * in_, in_) + 1.0);
  }

 private:
  dnnl::engine* eng_;
  int64_t batch_ = 0, in_ = 0, out_ = 0;
  bool pe_ready_ = false;
  MaybeReorder pe_src_reorder_;
  memory pe_src_;
  memory bwd_w_scratch_, bwd_d_scratch_;
  memory src_, ip_src_, w_user_, b_user_, w_fwd_, dst_, gw_user_, gb_user_, gw_, w_bwd_,
      diff_src_, diff_dst_, ip_diff_dst_;
  bool need_diff_src_ = false;
  dnnl::inner_product_forward::primitive_desc fwd_pd_;
  dnnl::inner_product_backward_weights::primitive_desc bwd_w_pd_;
  dnnl::inner_product_backward_data::primitive_desc bwd_d_pd_;
  dnnl::inner_product_forward fwd_;
  dnnl::inner_product_backward_weights bwd_w_;
  dnnl::inner_product_backward_data bwd_d_;
  MaybeReorder src_reorder_, w_fwd_reorder_, gw_reorder_, w_bwd_reorder_, diff_dst_reorder_;
  bool frozen_ = false;  // FreezeParams: w_fwd_ holds the weights for good
  ActivationBackward act_bwd_;
  std::unordered_map<int, memory> fwd_args_, bwd_w_args_, bwd_d_args_;
  std::vector<std::string> impl_;
};

class DenseType : public LayerType {
 public:
  Status Infer(const proto::LayerSpec& spec, const Shape& in, Shape* out,
               std::vector<ParamTensor>* params) const override {
    if (!spec.has_dense_param() || !spec.dense_param().has_units() ||
        spec.dense_param().units() <= 0)
      return InvalidArgument("dense_param.units is required and must be > 0");
    if (in.size() != 1)
      return InvalidArgument("Dense needs a flat input, got {}: add a Flatten layer before it",
                             ShapeString(in));
    int64_t o = spec.dense_param().units(), i = in[0];
    *out = {o};
    params->push_back({"weights", {o, i}, o * i, 0, i, o});
    params->push_back({"bias", {o}, o, 0, 0, 0});
    return Status::Ok();
  }
  std::unique_ptr<LayerExec> Create(const LayerContext& c) const override {
    return CreateInPrecision(c, [&](Dt t) { return std::make_unique<DenseExec>(c, t); });
  }
  PerExample PerExampleMethod(const proto::LayerSpec&, std::string*) const override {
    return PerExample::kOwn;
  }
};

// ---------------------------------------------------------------- ReLU

class ReluExec : public LayerExec {
 public:
  explicit ReluExec(const LayerContext& c) : src_(c.src) {
    auto& eng = *c.engine;
    auto prop = c.training ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference;
    auto alg = dnnl::algorithm::eltwise_relu_use_dst_for_bwd;
    fwd_pd_ = dnnl::eltwise_forward::primitive_desc(
        dnnl::eltwise_forward::desc(prop, alg, c.src_md, 0.f, 0.f), UserScratchpad(), eng);
    fwd_ = dnnl::eltwise_forward(fwd_pd_);
    fwd_scratch_ = ScratchMemory(fwd_pd_, eng);
    dst_ = memory(fwd_pd_.dst_desc(), eng);
    need_diff_src_ = c.training && c.need_diff_src;
    if (need_diff_src_) {
      const dnnl::eltwise_backward::primitive_desc pd(
          dnnl::eltwise_backward::desc(alg, dst_.get_desc(), dst_.get_desc(), 0.f, 0.f),
          UserScratchpad(), eng, fwd_pd_);
      bwd_ = dnnl::eltwise_backward(pd);
      bwd_scratch_ = ScratchMemory(pd, eng);
      diff_src_ = memory(dst_.get_desc(), eng);
    }
  }
  void Forward(dnnl::stream& s) override {
    fwd_.execute(s, {{DNNL_ARG_SRC, src_}, {DNNL_ARG_DST, dst_}, {DNNL_ARG_SCRATCHPAD, fwd_scratch_}});
  }
  void BindDiffDst(const memory& diff_dst) override { diff_dst_ = diff_dst; }
  void Backward(dnnl::stream& s) override {
    if (need_diff_src_)
      bwd_.execute(s, {{DNNL_ARG_DST, dst_}, {DNNL_ARG_DIFF_DST, diff_dst_},
                       {DNNL_ARG_DIFF_SRC, diff_src_}, {DNNL_ARG_SCRATCHPAD, bwd_scratch_}});
  }
  memory& dst() override { return dst_; }
  memory& diff_src() override { return diff_src_; }

 private:
  memory src_, dst_, diff_src_, diff_dst_, fwd_scratch_, bwd_scratch_;
  bool need_diff_src_ = false;
  dnnl::eltwise_forward::primitive_desc fwd_pd_;
  dnnl::eltwise_forward fwd_;
  dnnl::eltwise_backward bwd_;
};

class ReluType : public LayerType {
 public:
  Status Infer(const proto::LayerSpec& spec, const Shape& in, Shape* out,
               std::vector<ParamTensor>*) const override {
    if (spec.activation() != proto::NONE)
      return InvalidArgument("ReLU takes no activation field");
    *out = in;
    return Status::Ok();
  }
  std::unique_ptr<LayerExec> Create(const LayerContext& c) const override {
    return std::make_unique<ReluExec>(c);
  }
};

// ---------------------------------------------------------------- Flatten

// Copies any activation layout into plain NCHW order, viewed as (N, C*H*W):
// the canonical order of the next Dense layer's weights.
class FlattenExec : public LayerExec {
 public:
  explicit FlattenExec(const LayerContext& c) : src_(c.src) {
    auto& eng = *c.engine;
    memory::dims in_d = BatchDims(c.batch, c.in_shape);
    memory::dims out_d{c.batch, ShapeElements(c.in_shape)};
    plain_in_ = memory(PlainDesc(in_d), eng);
    dst_ = memory(PlainDesc(out_d), eng, plain_in_.get_data_handle());
    fwd_.Init(eng, c.src_md, plain_in_.get_desc(), /*copy=*/true);
    need_diff_src_ = c.training && c.need_diff_src;
    if (need_diff_src_) {
      diff_src_ = memory(c.src_md, eng);
      bwd_.Init(eng, plain_in_.get_desc(), c.src_md, /*copy=*/true);
    }
  }
  void Forward(dnnl::stream& s) override { fwd_.Run(s, src_, plain_in_); }
  void BindDiffDst(const memory& diff_dst) override {
    if (need_diff_src_)
      diff_dst_view_ = memory(plain_in_.get_desc(), diff_dst.get_engine(), diff_dst.get_data_handle());
  }
  void Backward(dnnl::stream& s) override {
    if (need_diff_src_) bwd_.Run(s, diff_dst_view_, diff_src_);
  }
  memory& dst() override { return dst_; }
  memory& diff_src() override { return diff_src_; }

 private:
  memory src_, plain_in_, dst_, diff_src_, diff_dst_view_;
  bool need_diff_src_ = false;
  MaybeReorder fwd_, bwd_;
};

class FlattenType : public LayerType {
 public:
  Status Infer(const proto::LayerSpec& spec, const Shape& in, Shape* out,
               std::vector<ParamTensor>*) const override {
    if (spec.activation() != proto::NONE)
      return InvalidArgument("Flatten takes no activation field");
    *out = {ShapeElements(in)};
    return Status::Ok();
  }
  std::unique_ptr<LayerExec> Create(const LayerContext& c) const override {
    return std::make_unique<FlattenExec>(c);
  }
};

}  // namespace

LayerRegistry& LayerRegistry::Global() {
  static LayerRegistry* registry = [] {
    auto* r = new LayerRegistry;
    POLIS_ENFORCE_OK(r->Register("Conv2D", std::make_unique<Conv2DType>()));
    POLIS_ENFORCE_OK(r->Register("MaxPool2D", std::make_unique<MaxPool2DType>()));
    POLIS_ENFORCE_OK(r->Register("Dense", std::make_unique<DenseType>()));
    POLIS_ENFORCE_OK(r->Register("ReLU", std::make_unique<ReluType>()));
    POLIS_ENFORCE_OK(r->Register("Flatten", std::make_unique<FlattenType>()));
    RegisterSequenceLayers(*r);
    RegisterCudaExecutors(*r);
    return r;
  }();
  return *registry;
}

Status LayerRegistry::Register(const std::string& name, std::unique_ptr<LayerType> type) {
  if (types_.count(name)) return AlreadyExists("layer type '{}' is already registered", name);
  types_[name] = std::move(type);
  executors_[{device::Kind::kCpu, name}] = nullptr;
  return Status::Ok();
}

Status LayerRegistry::RegisterExecutor(device::Kind kind, const std::string& name, BackendCheck check) {
  if (!types_.count(name)) return NotFound("no layer type '{}' to give a {} executor", name, device::KindName(kind));
  if (!executors_.emplace(std::make_pair(kind, name), std::move(check)).second)
    return AlreadyExists("layer type '{}' already has a {} executor", name, device::KindName(kind));
  return Status::Ok();
}

std::vector<std::string> LayerRegistry::Names(device::Kind kind) const {
  std::vector<std::string> names;
  for (const auto& [key, check] : executors_)
    if (key.first == kind) names.push_back(key.second);
  return names;
}

std::string LayerRegistry::WhyNot(device::Kind kind, const proto::LayerSpec& spec) const {
  auto it = executors_.find({kind, spec.type()});
  if (it == executors_.end())
    return fmt::format("layer type {} has no {} executor; {} runs {}", spec.type(), device::KindName(kind),
                       device::KindName(kind), fmt::join(Names(kind), ", "));
  return it->second ? it->second(spec) : "";
}

StatusOr<const LayerType*> LayerRegistry::Find(const std::string& name) const {
  auto it = types_.find(name);
  if (it == types_.end())
    return NotFound("unknown layer type '{}'; known types: {}", name, fmt::join(Names(), ", "));
  return it->second.get();
}

std::vector<std::string> LayerRegistry::Names() const {
  std::vector<std::string> names;
  for (const auto& [k, v] : types_) names.push_back(k);
  return names;
}

}  // namespace polis::nn
