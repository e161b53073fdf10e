// Kernels shared by the sequence layers (seq_layers.cc): small building
// blocks that work on plain row-major float buffers, so that a composite
// layer (TransformerEncoderBlock) is the same code as its parts.
//
//  - Linear, LayerNormOp, GeluOp: oneDNN matmul / layer normalisation /
//    eltwise primitives over [rows, features], created once in Init and
//    pointed at buffers per call (set_data_handle: no allocation).
//  - AttentionCore: scaled dot-product attention, oneDNN batched matmuls on
//    strided per-head views around oneDNN's softmax (forward) and a
//    hand-written softmax gradient.
//  - DropoutMask: counter-based inverted-dropout masks.
//
// See docs/design/sequence-layers.md. Thread-safety: an object is used by
// one thread; the free functions are reentrant.
#pragma once

#include <dnnl.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace polis::nn::seq {

// y[rows,out] = x[rows,in] · Wᵀ + b, W in the canonical (out, in) layout.
// Backward: dx = dy · W (when built with need_dx), dW = dyᵀ · x and
// db = Σ_rows dy, both overwritten (not accumulated).
class Linear {
 public:
  void Init(dnnl::engine& eng, int64_t rows, int64_t in, int64_t out, bool training,
            bool need_dx);
  void Forward(dnnl::stream& s, const float* x, const float* w, const float* b, float* y);
  void Backward(dnnl::stream& s, const float* x, const float* w, const float* dy, float* dx,
                float* dw, float* db);
  const std::vector<std::string>& impl() const { return impl_; }

 private:
  int64_t rows_ = 0, in_ = 0, out_ = 0;
  bool need_dx_ = false;
  dnnl::matmul fwd_, bwd_d_, bwd_w_;
  dnnl::memory x_, w_t_, b_, y_, dy_, w_, dx_, dy_t_, x_w_, dw_;
  dnnl::memory fwd_scratch_, bwd_d_scratch_, bwd_w_scratch_;
  std::vector<std::string> impl_;
};

// Layer normalisation over the last dimension of [rows, features], with a
// learned gain (scale) and bias (shift). Backward overwrites dgain/dbias and
// always writes dx.
class LayerNormOp {
 public:
  void Init(dnnl::engine& eng, int64_t rows, int64_t features, float epsilon, bool training);
  void Forward(dnnl::stream& s, const float* x, const float* gain, const float* bias, float* y);
  void Backward(dnnl::stream& s, const float* x, const float* dy, const float* gain,
                const float* bias, float* dx, float* dgain, float* dbias);
  const std::vector<std::string>& impl() const { return impl_; }

 private:
  dnnl::layer_normalization_forward fwd_;
  dnnl::layer_normalization_backward bwd_;
  dnnl::memory x_, y_, gain_, bias_, mean_, var_, dy_, dx_, dgain_, dbias_;
  dnnl::memory fwd_scratch_, bwd_scratch_;
  std::vector<std::string> impl_;
};

// GELU over `count` contiguous floats: erf form (exact) or tanh approximation.
class GeluOp {
 public:
  void Init(dnnl::engine& eng, int64_t count, bool tanh_approximation, bool training);
  void Forward(dnnl::stream& s, const float* x, float* y);
  void Backward(dnnl::stream& s, const float* x, const float* dy, float* dx);

 private:
  dnnl::eltwise_forward fwd_;
  dnnl::eltwise_backward bwd_;
  dnnl::memory x_, y_, dy_, dx_;
  dnnl::memory fwd_scratch_, bwd_scratch_;
};

// Scaled dot-product self-attention over heads. qkv holds, for each of the
// batch*steps rows, [q | k | v] (3*dim floats); head h uses columns
// [h*dh, (h+1)*dh) of each. The batched products run as oneDNN matmuls on
// strided per-head views (no copies); the softmax is oneDNN's (in place on
// the scores) and its gradient hand-written. probs is [batch, heads, steps, steps] (kept for backward;
// entries above the diagonal are 0 when causal); ctx is [batch*steps, dim]
// with the heads concatenated.
struct AttentionShape {
  int64_t batch = 0, steps = 0, dim = 0, heads = 1;
  bool causal = false;
  int64_t head_dim() const { return dim / heads; }
  int64_t prob_floats() const { return batch * heads * steps * steps; }
};

class AttentionCore {
 public:
  void Init(dnnl::engine& eng, const AttentionShape& a, bool training);
  void Forward(dnnl::stream& s, const float* qkv, float* probs, float* ctx);
  // Writes every entry of dqkv; dscores is prob_floats() of scratch.
  void Backward(dnnl::stream& s, const float* qkv, const float* probs, const float* dctx,
                float* dqkv, float* dscores);
  const std::vector<std::string>& impl() const { return impl_; }

 private:
  // One matmul with its own (unbound) operand views.
  struct Mm {
    dnnl::matmul prim;
    dnnl::memory src, wei, dst, scratch;
    void Run(dnnl::stream& s, const float* a, const float* b, float* c);
  };
  AttentionShape a_;
  Mm qk_, pv_, dp_, dv_, dq_, dk_;
  // Row softmax of the scores, in place (oneDNN's vectorised kernel).
  dnnl::softmax_forward softmax_;
  dnnl::memory scores_, softmax_scratch_;
  std::vector<std::string> impl_;
};

// Inverted-dropout mask for one step: mask[i] is 0 with probability `rate`
// and 1/(1-rate) otherwise, a pure function of (seed, step, i).
void DropoutMask(uint64_t seed, uint64_t step, float rate, int64_t n, float* mask);
uint64_t HashString(const std::string& s);

// Tests only: while frozen, Dropout layers keep the mask of their current
// step instead of drawing a new one per Forward, so that central differences
// see one function. Process-wide; default false.
void SetDropoutMaskFrozenForTesting(bool frozen);
bool DropoutMaskFrozen();

}  // namespace polis::nn::seq
