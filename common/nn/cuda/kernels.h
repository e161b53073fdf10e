// The CUDA backend's own kernels: elementwise ops, reductions, layer
// normalisation, GELU, dropout masks, embedding, sequence pooling, the
// losses and the optimizers. Everything cuDNN or cuBLAS does better
// (convolution, pooling, ReLU layers, softmax, RNNs, every matrix product)
// is done there instead (cuda_layers.cc).
//
// Each launcher enqueues on `s` and returns cudaGetLastError() (a bad launch
// configuration); buffers are device pointers in plain row-major layout.
// Deliberately free of project headers so nvcc compiles only this and
// kernels.cu. Thread-safety: reentrant.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace polis::nn::cuda::k {

// ---- elementwise
// y[r, c] += b[c] (b may be null), then ReLU when relu.
cudaError_t BiasAct(float* y, const float* b, int64_t rows, int64_t cols, bool relu, cudaStream_t s);
// d[i] *= (y[i] > 0): the gradient of a ReLU, from its output.
cudaError_t ReluGrad(const float* y, float* d, int64_t n, cudaStream_t s);
// y = a + b ⊙ m (m may be null: y = a + b).
cudaError_t AddMul(const float* a, const float* b, const float* m, float* y, int64_t n, cudaStream_t s);
// y = a ⊙ m (m may be null: a copy).
cudaError_t Mul(const float* a, const float* m, float* y, int64_t n, cudaStream_t s);
// y += x.
cudaError_t Add(float* y, const float* x, int64_t n, cudaStream_t s);
// y[b, i] = x[b, i] + p[i], i < n.
cudaError_t AddBroadcast(const float* x, const float* p, float* y, int64_t batch, int64_t n,
                         cudaStream_t s);

// ---- reductions
// out[c] = Σ_r x[r, c], deterministic (fixed order), with `scratch` of
// ColumnSumScratch(rows, cols) floats.
int64_t ColumnSumScratch(int64_t rows, int64_t cols);
cudaError_t ColumnSum(const float* x, int64_t rows, int64_t cols, float* out, float* scratch,
                      cudaStream_t s);

// ---- GELU (erf form or tanh approximation, as oneDNN's eltwise_gelu_*)
cudaError_t Gelu(const float* x, float* y, int64_t n, bool tanh_approx, cudaStream_t s);
cudaError_t GeluGrad(const float* x, const float* dy, float* dx, int64_t n, bool tanh_approx,
                     cudaStream_t s);

// ---- layer normalisation over the last dimension of [rows, f]
// Saves mean and 1/sqrt(var + eps) per row for backward (biased variance).
cudaError_t LayerNormFwd(const float* x, const float* gain, const float* bias, float* y,
                         float* mean, float* rstd, int64_t rows, int64_t f, float eps,
                         cudaStream_t s);
// Writes dx and, into prod, dy ⊙ x̂ (whose column sums are d gain).
cudaError_t LayerNormBwd(const float* x, const float* dy, const float* gain, const float* mean,
                         const float* rstd, float* dx, float* prod, int64_t rows, int64_t f,
                         cudaStream_t s);

// ---- attention
// scores[r, j] = -inf for j > r % steps (r over batch*heads*steps rows).
cudaError_t CausalMask(float* scores, int64_t rows, int64_t steps, cudaStream_t s);

// ---- dropout: the same mask as seq::DropoutMask (common/nn/seq_kernels.cc)
// for `base` = SplitMix64(seed ^ SplitMix64(step + 0x5EED)).
cudaError_t DropoutMask(uint64_t base, uint64_t threshold, float keep, int64_t n, float* mask,
                        cudaStream_t s);

// ---- embedding; ids are floats holding integers in [0, vocab)
// On a bad id the row is zeroed and *bad (set to LLONG_MAX by the caller)
// is lowered to the lowest offending position.
cudaError_t EmbeddingFwd(const float* ids, const float* table, float* y, int64_t count,
                         int64_t vocab, int64_t dim, long long* bad, cudaStream_t s);
// g (zeroed by the caller) += dy rows at their ids (atomic adds).
cudaError_t EmbeddingBwd(const float* ids, const float* dy, float* g, int64_t count, int64_t vocab,
                         int64_t dim, cudaStream_t s);

// ---- sequence pooling over [batch, steps, f]
cudaError_t SeqPoolFwd(const float* x, float* y, int64_t batch, int64_t steps, int64_t f, bool mean,
                       cudaStream_t s);
// Writes every entry of dx (zeros before the last step for LAST).
cudaError_t SeqPoolBwd(const float* dy, float* dx, int64_t batch, int64_t steps, int64_t f,
                       bool mean, cudaStream_t s);

// ---- 2-D zero padding for asymmetric SAME convolutions (cuDNN pads symmetrically)
// xp[p, top + h, left + w] = x[p, h, w] for planes p; the border of xp is left as is.
cudaError_t Pad2D(const float* x, float* xp, int64_t planes, int64_t h, int64_t w, int64_t top,
                  int64_t left, int64_t hp, int64_t wp, cudaStream_t s);
// dx[p, h, w] = dxp[p, top + h, left + w].
cudaError_t Crop2D(const float* dxp, float* dx, int64_t planes, int64_t h, int64_t w, int64_t top,
                   int64_t left, int64_t hp, int64_t wp, cudaStream_t s);

// ---- losses (nn::ComputeLoss's math). stats[0] receives the summed loss,
// stats[1] the count of correct argmaxes (classification), both as doubles.
// `row_scratch` holds 2n doubles (classification) or n*k (regression).
enum class LossKind { kSoftmaxCrossEntropy = 0, kMse = 1, kMae = 2, kHuber = 3 };
cudaError_t Loss(LossKind kind, const float* out, const float* y, int64_t n, int64_t k,
                 float huber_delta, float* dout, float grad_scale, double* row_scratch,
                 double* stats, cudaStream_t s);

// ---- optimizers (common/optimizer.cc's math, without FMA contraction)
cudaError_t AdamStep(float* p, const float* g, float* m, float* v, int64_t n, float b1, float b2,
                     float eps, float step, float inv_sqrt_bc2, float l2, float shrink,
                     cudaStream_t s);
cudaError_t SgdStep(float* p, const float* g, float* vel, int64_t n, float lr, float mu, float wd,
                    bool nesterov, cudaStream_t s);

// ---- 16-bit wire formats (round to nearest even)
cudaError_t FloatToBf16(const float* x, void* y, int64_t n, cudaStream_t s);
cudaError_t Bf16ToFloat(const void* x, float* y, int64_t n, cudaStream_t s);
cudaError_t FloatToHalf(const float* x, void* y, int64_t n, cudaStream_t s);
cudaError_t HalfToFloat(const void* x, float* y, int64_t n, cudaStream_t s);

// Host and device: the mixer of seq::DropoutMask.
inline uint64_t SplitMix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

}  // namespace polis::nn::cuda::k
