// Kernels shared by the sequence layers; see seq_kernels.h.
#include "common/nn/seq_kernels.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>

#include "common/nn/scratchpad.h"
#include "common/status.h"

namespace polis::nn::seq {

using dnnl::memory;
using Dt = memory::data_type;

namespace {

memory::desc Strided(const memory::dims& d, const memory::dims& strides) {
  return memory::desc(d, Dt::f32, strides);
}

memory Unbound(const memory::desc& md, dnnl::engine& eng) {
  return memory(md, eng, DNNL_MEMORY_NONE);
}

void Bind(memory& m, const float* p) { m.set_data_handle(const_cast<float*>(p)); }

}  // namespace

// ---------------------------------------------------------------- Linear

void Linear::Init(dnnl::engine& eng, int64_t rows, int64_t in, int64_t out, bool training,
                  bool need_dx) {
  rows_ = rows;
  in_ = in;
  out_ = out;
  need_dx_ = training && need_dx;
  // Forward: x[rows,in] · Wᵀ, where Wᵀ is the (out,in) buffer read with strides.
  auto x_md = Strided({rows, in}, {in, 1});
  auto wt_md = Strided({in, out}, {1, in});
  auto b_md = Strided({1, out}, {out, 1});
  auto y_md = Strided({rows, out}, {out, 1});
  dnnl::matmul::primitive_desc fwd_pd(dnnl::matmul::desc(x_md, wt_md, b_md, y_md),
                                      UserScratchpad(), eng);
  fwd_ = dnnl::matmul(fwd_pd);
  fwd_scratch_ = ScratchMemory(fwd_pd, eng);
  impl_.push_back("matmul fwd: " + std::string(fwd_pd.impl_info_str()));
  x_ = Unbound(x_md, eng);
  w_t_ = Unbound(wt_md, eng);
  b_ = Unbound(b_md, eng);
  y_ = Unbound(y_md, eng);
  if (!training) return;
  // dW[out,in] = dyᵀ[out,rows] · x[rows,in].
  auto dyt_md = Strided({out, rows}, {1, out});
  auto dw_md = Strided({out, in}, {in, 1});
  dnnl::matmul::primitive_desc bwd_w_pd(dnnl::matmul::desc(dyt_md, x_md, dw_md), UserScratchpad(),
                                        eng);
  bwd_w_ = dnnl::matmul(bwd_w_pd);
  bwd_w_scratch_ = ScratchMemory(bwd_w_pd, eng);
  impl_.push_back("matmul bwd_w: " + std::string(bwd_w_pd.impl_info_str()));
  dy_t_ = Unbound(dyt_md, eng);
  x_w_ = Unbound(x_md, eng);
  dw_ = Unbound(dw_md, eng);
  if (!need_dx_) return;
  // dx[rows,in] = dy[rows,out] · W[out,in].
  dnnl::matmul::primitive_desc bwd_d_pd(dnnl::matmul::desc(y_md, dw_md, x_md), UserScratchpad(),
                                        eng);
  bwd_d_ = dnnl::matmul(bwd_d_pd);
  bwd_d_scratch_ = ScratchMemory(bwd_d_pd, eng);
  impl_.push_back("matmul bwd_d: " + std::string(bwd_d_pd.impl_info_str()));
  dy_ = Unbound(y_md, eng);
  w_ = Unbound(dw_md, eng);
  dx_ = Unbound(x_md, eng);
}

void Linear::Forward(dnnl::stream& s, const float* x, const float* w, const float* b,
                     float* y) {
  Bind(x_, x);
  Bind(w_t_, w);
  Bind(b_, b);
  Bind(y_, y);
  fwd_.execute(s, {{DNNL_ARG_SRC, x_}, {DNNL_ARG_WEIGHTS, w_t_}, {DNNL_ARG_BIAS, b_},
                   {DNNL_ARG_DST, y_}, {DNNL_ARG_SCRATCHPAD, fwd_scratch_}});
}

void Linear::Backward(dnnl::stream& s, const float* x, const float* w, const float* dy,
                      float* dx, float* dw, float* db) {
  Bind(dy_t_, dy);
  Bind(x_w_, x);
  Bind(dw_, dw);
  bwd_w_.execute(s, {{DNNL_ARG_SRC, dy_t_}, {DNNL_ARG_WEIGHTS, x_w_}, {DNNL_ARG_DST, dw_},
                     {DNNL_ARG_SCRATCHPAD, bwd_w_scratch_}});
  if (need_dx_) {
    Bind(dy_, dy);
    Bind(w_, w);
    Bind(dx_, dx);
    bwd_d_.execute(s, {{DNNL_ARG_SRC, dy_}, {DNNL_ARG_WEIGHTS, w_}, {DNNL_ARG_DST, dx_},
                       {DNNL_ARG_SCRATCHPAD, bwd_d_scratch_}});
  }
  float* __restrict out = db;
  std::fill(out, out + out_, 0.f);
  for (int64_t r = 0; r < rows_; ++r) {
    const float* __restrict row = dy + r * out_;
    for (int64_t j = 0; j < out_; ++j) out[j] += row[j];
  }
}

// ---------------------------------------------------------------- LayerNormOp

void LayerNormOp::Init(dnnl::engine& eng, int64_t rows, int64_t features, float epsilon,
                       bool training) {
  auto md = Strided({rows, features}, {features, 1});
  auto p_md = Strided({features}, {1});
  auto flags = dnnl::normalization_flags::use_scale | dnnl::normalization_flags::use_shift;
  auto prop = training ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference;
  dnnl::layer_normalization_forward::primitive_desc fwd_pd(
      dnnl::layer_normalization_forward::desc(prop, md, epsilon, flags), UserScratchpad(), eng);
  fwd_ = dnnl::layer_normalization_forward(fwd_pd);
  fwd_scratch_ = ScratchMemory(fwd_pd, eng);
  impl_.push_back("layer_norm fwd: " + std::string(fwd_pd.impl_info_str()));
  x_ = Unbound(md, eng);
  y_ = Unbound(md, eng);
  gain_ = Unbound(p_md, eng);
  bias_ = Unbound(p_md, eng);
  // Statistics: outputs in training (backward reads them), ignored otherwise.
  mean_ = memory(Strided({rows}, {1}), eng);
  var_ = memory(Strided({rows}, {1}), eng);
  if (!training) return;
  dnnl::layer_normalization_backward::primitive_desc bwd_pd(
      dnnl::layer_normalization_backward::desc(dnnl::prop_kind::backward, md, md,
                                               Strided({rows}, {1}), epsilon, flags),
      UserScratchpad(), eng, fwd_pd);
  bwd_ = dnnl::layer_normalization_backward(bwd_pd);
  bwd_scratch_ = ScratchMemory(bwd_pd, eng);
  impl_.push_back("layer_norm bwd: " + std::string(bwd_pd.impl_info_str()));
  dy_ = Unbound(md, eng);
  dx_ = Unbound(md, eng);
  dgain_ = Unbound(p_md, eng);
  dbias_ = Unbound(p_md, eng);
}

void LayerNormOp::Forward(dnnl::stream& s, const float* x, const float* gain, const float* bias,
                          float* y) {
  Bind(x_, x);
  Bind(y_, y);
  Bind(gain_, gain);
  Bind(bias_, bias);
  fwd_.execute(s, {{DNNL_ARG_SRC, x_}, {DNNL_ARG_DST, y_}, {DNNL_ARG_SCALE, gain_},
                   {DNNL_ARG_SHIFT, bias_}, {DNNL_ARG_MEAN, mean_}, {DNNL_ARG_VARIANCE, var_},
                   {DNNL_ARG_SCRATCHPAD, fwd_scratch_}});
}

void LayerNormOp::Backward(dnnl::stream& s, const float* x, const float* dy, const float* gain,
                           const float* bias, float* dx, float* dgain, float* dbias) {
  Bind(x_, x);
  Bind(dy_, dy);
  Bind(gain_, gain);
  Bind(bias_, bias);
  Bind(dx_, dx);
  Bind(dgain_, dgain);
  Bind(dbias_, dbias);
  bwd_.execute(s, {{DNNL_ARG_SRC, x_}, {DNNL_ARG_MEAN, mean_}, {DNNL_ARG_VARIANCE, var_},
                   {DNNL_ARG_DIFF_DST, dy_}, {DNNL_ARG_SCALE, gain_}, {DNNL_ARG_SHIFT, bias_},
                   {DNNL_ARG_DIFF_SRC, dx_}, {DNNL_ARG_DIFF_SCALE, dgain_},
                   {DNNL_ARG_DIFF_SHIFT, dbias_}, {DNNL_ARG_SCRATCHPAD, bwd_scratch_}});
}

// ---------------------------------------------------------------- GeluOp

void GeluOp::Init(dnnl::engine& eng, int64_t count, bool tanh_approximation, bool training) {
  auto md = Strided({count}, {1});
  auto alg = tanh_approximation ? dnnl::algorithm::eltwise_gelu_tanh
                                : dnnl::algorithm::eltwise_gelu_erf;
  auto prop = training ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference;
  dnnl::eltwise_forward::primitive_desc fwd_pd(dnnl::eltwise_forward::desc(prop, alg, md, 0.f, 0.f),
                                               UserScratchpad(), eng);
  fwd_ = dnnl::eltwise_forward(fwd_pd);
  fwd_scratch_ = ScratchMemory(fwd_pd, eng);
  x_ = Unbound(md, eng);
  y_ = Unbound(md, eng);
  if (!training) return;
  const dnnl::eltwise_backward::primitive_desc bwd_pd(
      dnnl::eltwise_backward::desc(alg, md, md, 0.f, 0.f), UserScratchpad(), eng, fwd_pd);
  bwd_ = dnnl::eltwise_backward(bwd_pd);
  bwd_scratch_ = ScratchMemory(bwd_pd, eng);
  dy_ = Unbound(md, eng);
  dx_ = Unbound(md, eng);
}

void GeluOp::Forward(dnnl::stream& s, const float* x, float* y) {
  Bind(x_, x);
  Bind(y_, y);
  fwd_.execute(s, {{DNNL_ARG_SRC, x_}, {DNNL_ARG_DST, y_}, {DNNL_ARG_SCRATCHPAD, fwd_scratch_}});
}

void GeluOp::Backward(dnnl::stream& s, const float* x, const float* dy, float* dx) {
  Bind(x_, x);
  Bind(dy_, dy);
  Bind(dx_, dx);
  bwd_.execute(s, {{DNNL_ARG_SRC, x_}, {DNNL_ARG_DIFF_DST, dy_}, {DNNL_ARG_DIFF_SRC, dx_},
                   {DNNL_ARG_SCRATCHPAD, bwd_scratch_}});
}

// ---------------------------------------------------------------- attention

void AttentionCore::Mm::Run(dnnl::stream& s, const float* a, const float* b, float* c) {
  Bind(src, a);
  Bind(wei, b);
  Bind(dst, c);
  prim.execute(s, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, wei}, {DNNL_ARG_DST, dst},
                   {DNNL_ARG_SCRATCHPAD, scratch}});
}

void AttentionCore::Init(dnnl::engine& eng, const AttentionShape& a, bool training) {
  a_ = a;
  const int64_t N = a.batch, h = a.heads, T = a.steps, F = a.dim, dh = a.head_dim();
  // Per-head views: [N, h, T, dh] slices of the [N*T, 3F] qkv buffer (and
  // their transposes), of the [N*T, F] ctx buffer, and the dense
  // [N, h, T, T] scores (and their transpose).
  auto qkv_md = Strided({N, h, T, dh}, {T * 3 * F, dh, 3 * F, 1});
  auto qkv_t_md = Strided({N, h, dh, T}, {T * 3 * F, dh, 1, 3 * F});
  auto s_md = Strided({N, h, T, T}, {h * T * T, T * T, T, 1});
  auto s_t_md = Strided({N, h, T, T}, {h * T * T, T * T, 1, T});
  auto ctx_md = Strided({N, h, T, dh}, {T * F, dh, F, 1});
  dnnl::primitive_attr scaled;
  scaled.set_output_scales(0, {1.f / std::sqrt(static_cast<float>(dh))});
  const dnnl::primitive_attr plain;
  auto make = [&](Mm& m, const char* what, const memory::desc& x, const memory::desc& w,
                  const memory::desc& y, const dnnl::primitive_attr& attr) {
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(x, w, y), UserScratchpad(attr), eng);
    impl_.push_back(std::string("attention ") + what + ": " + pd.impl_info_str());
    m.prim = dnnl::matmul(pd);
    m.scratch = ScratchMemory(pd, eng);
    m.src = Unbound(x, eng);
    m.wei = Unbound(w, eng);
    m.dst = Unbound(y, eng);
  };
  make(qk_, "Q.Kt", qkv_md, qkv_t_md, s_md, scaled);
  make(pv_, "P.V", s_md, qkv_md, ctx_md, plain);
  // Its own gradient is written out in Backward: oneDNN's forward only.
  const dnnl::softmax_forward::primitive_desc sm_pd(
      dnnl::softmax_forward::desc(dnnl::prop_kind::forward_inference, s_md, 3), UserScratchpad(), eng);
  impl_.push_back(std::string("attention softmax: ") + sm_pd.impl_info_str());
  softmax_ = dnnl::softmax_forward(sm_pd);
  softmax_scratch_ = ScratchMemory(sm_pd, eng);
  scores_ = Unbound(s_md, eng);
  if (!training) return;
  make(dp_, "dO.Vt", ctx_md, qkv_t_md, s_md, plain);
  make(dv_, "Pt.dO", s_t_md, ctx_md, qkv_md, plain);
  make(dq_, "dS.K", s_md, qkv_md, qkv_md, scaled);
  make(dk_, "dSt.Q", s_t_md, qkv_md, qkv_md, scaled);
}

void AttentionCore::Forward(dnnl::stream& s, const float* qkv, float* probs, float* ctx) {
  const int64_t T = a_.steps, F = a_.dim;
  qk_.Run(s, qkv, qkv + F, probs);  // S = Q·Kᵀ / sqrt(dh)
  // Row softmax over the visible steps; masked entries become exact zeros
  // (-inf before the softmax, so that they weigh nothing in its sums).
  const int64_t rows = a_.batch * a_.heads * T;
  constexpr float kMasked = -std::numeric_limits<float>::infinity();
  if (a_.causal) {
    s.wait();
    for (int64_t r = 0; r < rows; ++r) std::fill(probs + r * T + r % T + 1, probs + (r + 1) * T, kMasked);
  }
  Bind(scores_, probs);
  softmax_.execute(s, {{DNNL_ARG_SRC, scores_}, {DNNL_ARG_DST, scores_},
                       {DNNL_ARG_SCRATCHPAD, softmax_scratch_}});
  if (a_.causal) {
    s.wait();
    for (int64_t r = 0; r < rows; ++r) std::fill(probs + r * T + r % T + 1, probs + (r + 1) * T, 0.f);
  }
  pv_.Run(s, probs, qkv + 2 * F, ctx);  // O = P·V
}

void AttentionCore::Backward(dnnl::stream& s, const float* qkv, const float* probs,
                             const float* dctx, float* dqkv, float* dscores) {
  const int64_t T = a_.steps, F = a_.dim;
  dp_.Run(s, dctx, qkv + 2 * F, dscores);  // dP = dO·Vᵀ
  dv_.Run(s, probs, dctx, dqkv + 2 * F);   // dV = Pᵀ·dO
  s.wait();
  // Softmax backward: dS = P ⊙ (dP − Σ_j dP⊙P); masked entries have P = 0.
  for (int64_t r = 0; r < a_.batch * a_.heads * T; ++r) {
    float* __restrict drow = dscores + r * T;
    const float* __restrict prow = probs + r * T;
    float dot = 0.f;
    for (int64_t j = 0; j < T; ++j) dot += drow[j] * prow[j];
    for (int64_t j = 0; j < T; ++j) drow[j] = prow[j] * (drow[j] - dot);
  }
  dq_.Run(s, dscores, qkv + F, dqkv);  // dQ = dS·K / sqrt(dh)
  dk_.Run(s, dscores, qkv, dqkv + F);  // dK = dSᵀ·Q / sqrt(dh)
}

// ---------------------------------------------------------------- dropout

namespace {

inline uint64_t SplitMix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

std::atomic<bool> g_dropout_frozen{false};

}  // namespace

void DropoutMask(uint64_t seed, uint64_t step, float rate, int64_t n, float* mask) {
  const float keep = 1.f / (1.f - rate);
  // Compare 24-bit uniforms with the rate scaled to the same grid.
  const uint64_t threshold = static_cast<uint64_t>(static_cast<double>(rate) * (1 << 24));
  const uint64_t base = SplitMix64(seed ^ SplitMix64(step + 0x5EED));
  for (int64_t i = 0; i < n; ++i)
    mask[i] = (SplitMix64(base + static_cast<uint64_t>(i)) >> 40) < threshold ? 0.f : keep;
}

uint64_t HashString(const std::string& s) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (unsigned char ch : s) h = (h ^ ch) * 1099511628211ull;
  return h;
}

void SetDropoutMaskFrozenForTesting(bool frozen) { g_dropout_frozen.store(frozen); }
bool DropoutMaskFrozen() { return g_dropout_frozen.load(std::memory_order_relaxed); }

}  // namespace polis::nn::seq
