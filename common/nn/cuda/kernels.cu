// The CUDA backend's own kernels; see kernels.h for what each computes.
// Grid-stride loops over plain row-major buffers; every reduction runs in a
// fixed order so that a step is bit-reproducible on one GPU.
#include "common/nn/cuda/kernels.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <climits>
#include <cmath>

namespace polis::nn::cuda::k {

namespace {

constexpr int kBlock = 256;

int Blocks(int64_t n) {
  int64_t b = (n + kBlock - 1) / kBlock;
  if (b < 1) b = 1;
  return static_cast<int>(b > 8192 ? 8192 : b);
}

#define POLIS_GRID_LOOP(i, n)                                                         \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(blockDim.x) * gridDim.x)

__device__ inline uint64_t DevSplitMix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

__device__ inline float WarpSum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__global__ void BiasActKernel(float* y, const float* b, int64_t rows, int64_t cols, bool relu) {
  POLIS_GRID_LOOP(i, rows * cols) {
    float v = y[i];
    if (b) v += b[i % cols];
    y[i] = relu ? fmaxf(v, 0.f) : v;
  }
}

__global__ void ReluGradKernel(const float* y, float* d, int64_t n) {
  POLIS_GRID_LOOP(i, n) if (!(y[i] > 0.f)) d[i] = 0.f;
}

__global__ void AddMulKernel(const float* a, const float* b, const float* m, float* y, int64_t n) {
  POLIS_GRID_LOOP(i, n) y[i] = m ? a[i] + b[i] * m[i] : a[i] + b[i];
}

__global__ void MulKernel(const float* a, const float* m, float* y, int64_t n) {
  POLIS_GRID_LOOP(i, n) y[i] = m ? a[i] * m[i] : a[i];
}

__global__ void AddKernel(float* y, const float* x, int64_t n) {
  POLIS_GRID_LOOP(i, n) y[i] += x[i];
}

__global__ void AddBroadcastKernel(const float* x, const float* p, float* y, int64_t batch, int64_t n) {
  POLIS_GRID_LOOP(i, batch * n) y[i] = x[i] + p[i % n];
}

constexpr int kColChunk = 256;  // rows per partial sum

// Block (32, 8): column c = blockIdx.x * 32 + tx, rows of chunk blockIdx.y.
__global__ void ColumnPartialKernel(const float* x, int64_t rows, int64_t cols, float* out) {
  __shared__ float acc[8][33];
  const int64_t c = blockIdx.x * 32 + threadIdx.x;
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * kColChunk;
  const int64_t r1 = min(rows, r0 + kColChunk);
  float s = 0.f;
  if (c < cols)
    for (int64_t r = r0 + threadIdx.y; r < r1; r += 8) s += x[r * cols + c];
  acc[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && c < cols) {
    float t = 0.f;
    for (int j = 0; j < 8; ++j) t += acc[j][threadIdx.x];
    out[blockIdx.y * cols + c] = t;
  }
}

__global__ void ColumnFinishKernel(const float* partial, int64_t chunks, int64_t cols, float* out) {
  POLIS_GRID_LOOP(c, cols) {
    float t = 0.f;
    for (int64_t j = 0; j < chunks; ++j) t += partial[j * cols + c];
    out[c] = t;
  }
}

__global__ void GeluKernel(const float* x, float* y, int64_t n, bool tanh_approx) {
  POLIS_GRID_LOOP(i, n) {
    const float v = x[i];
    if (tanh_approx) {
      const float u = 0.7978845608028654f * (v + 0.044715f * v * v * v);
      y[i] = 0.5f * v * (1.f + tanhf(u));
    } else {
      y[i] = 0.5f * v * (1.f + erff(v * 0.7071067811865476f));
    }
  }
}

__global__ void GeluGradKernel(const float* x, const float* dy, float* dx, int64_t n, bool tanh_approx) {
  POLIS_GRID_LOOP(i, n) {
    const float v = x[i];
    float g;
    if (tanh_approx) {
      const float u = 0.7978845608028654f * (v + 0.044715f * v * v * v);
      const float t = tanhf(u);
      g = 0.5f * (1.f + t) +
          0.5f * v * (1.f - t * t) * 0.7978845608028654f * (1.f + 3.f * 0.044715f * v * v);
    } else {
      g = 0.5f * (1.f + erff(v * 0.7071067811865476f)) +
          v * 0.3989422804014327f * expf(-0.5f * v * v);
    }
    dx[i] = dy[i] * g;
  }
}

// One warp per row.
__global__ void LayerNormFwdKernel(const float* x, const float* gain, const float* bias, float* y,
                                   float* mean, float* rstd, int64_t rows, int64_t f, float eps) {
  const int64_t warp = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (warp >= rows) return;
  const float* xr = x + warp * f;
  float s = 0.f;
  for (int64_t j = lane; j < f; j += 32) s += xr[j];
  const float mu = WarpSum(s) / static_cast<float>(f);
  float q = 0.f;
  for (int64_t j = lane; j < f; j += 32) {
    const float d = xr[j] - mu;
    q += d * d;
  }
  const float var = WarpSum(q) / static_cast<float>(f);
  const float r = rsqrtf(var + eps);
  float* yr = y + warp * f;
  for (int64_t j = lane; j < f; j += 32) yr[j] = (xr[j] - mu) * r * gain[j] + bias[j];
  if (lane == 0) {
    mean[warp] = mu;
    rstd[warp] = r;
  }
}

__global__ void LayerNormBwdKernel(const float* x, const float* dy, const float* gain,
                                   const float* mean, const float* rstd, float* dx, float* prod,
                                   int64_t rows, int64_t f) {
  const int64_t warp = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (warp >= rows) return;
  const float mu = mean[warp], r = rstd[warp];
  const float* xr = x + warp * f;
  const float* dyr = dy + warp * f;
  float a = 0.f, b = 0.f;
  for (int64_t j = lane; j < f; j += 32) {
    const float xh = (xr[j] - mu) * r;
    const float dxh = dyr[j] * gain[j];
    a += dxh;
    b += dxh * xh;
    prod[warp * f + j] = dyr[j] * xh;
  }
  a = WarpSum(a) / static_cast<float>(f);
  b = WarpSum(b) / static_cast<float>(f);
  float* dxr = dx + warp * f;
  for (int64_t j = lane; j < f; j += 32) {
    const float xh = (xr[j] - mu) * r;
    dxr[j] = r * (dyr[j] * gain[j] - a - xh * b);
  }
}

__global__ void CausalMaskKernel(float* scores, int64_t rows, int64_t steps) {
  POLIS_GRID_LOOP(i, rows * steps) {
    const int64_t r = i / steps, j = i % steps;
    if (j > r % steps) scores[i] = -INFINITY;
  }
}

__global__ void DropoutMaskKernel(uint64_t base, uint64_t threshold, float keep, int64_t n, float* mask) {
  POLIS_GRID_LOOP(i, n) {
    mask[i] = (DevSplitMix64(base + static_cast<uint64_t>(i)) >> 40) < threshold ? 0.f : keep;
  }
}

__device__ inline bool ValidId(float id, int64_t vocab) {
  return id >= 0.f && id < static_cast<float>(vocab) && id == floorf(id);
}

__global__ void EmbeddingFwdKernel(const float* ids, const float* table, float* y, int64_t count,
                                   int64_t vocab, int64_t dim, long long* bad) {
  POLIS_GRID_LOOP(e, count * dim) {
    const int64_t i = e / dim, j = e % dim;
    const float id = ids[i];
    if (ValidId(id, vocab)) {
      y[e] = table[static_cast<int64_t>(id) * dim + j];
    } else {
      y[e] = 0.f;
      if (j == 0) atomicMin(bad, static_cast<long long>(i));
    }
  }
}

__global__ void EmbeddingBwdKernel(const float* ids, const float* dy, float* g, int64_t count,
                                   int64_t vocab, int64_t dim) {
  POLIS_GRID_LOOP(e, count * dim) {
    const int64_t i = e / dim, j = e % dim;
    const float id = ids[i];
    if (ValidId(id, vocab)) atomicAdd(g + static_cast<int64_t>(id) * dim + j, dy[e]);
  }
}

__global__ void SeqPoolFwdKernel(const float* x, float* y, int64_t batch, int64_t steps, int64_t f,
                                 bool mean) {
  POLIS_GRID_LOOP(e, batch * f) {
    const int64_t b = e / f, j = e % f;
    const float* xb = x + b * steps * f;
    if (!mean) {
      y[e] = xb[(steps - 1) * f + j];
      continue;
    }
    float s = 0.f;
    for (int64_t t = 0; t < steps; ++t) s += xb[t * f + j];
    y[e] = s * (1.f / static_cast<float>(steps));
  }
}

__global__ void SeqPoolBwdKernel(const float* dy, float* dx, int64_t batch, int64_t steps, int64_t f,
                                 bool mean) {
  POLIS_GRID_LOOP(e, batch * steps * f) {
    const int64_t b = e / (steps * f), t = (e / f) % steps, j = e % f;
    const float d = dy[b * f + j];
    dx[e] = mean ? d * (1.f / static_cast<float>(steps)) : (t == steps - 1 ? d : 0.f);
  }
}

__global__ void Pad2DKernel(const float* x, float* xp, int64_t planes, int64_t h, int64_t w,
                            int64_t top, int64_t left, int64_t hp, int64_t wp) {
  POLIS_GRID_LOOP(e, planes * h * w) {
    const int64_t p = e / (h * w), r = (e / w) % h, c = e % w;
    xp[(p * hp + top + r) * wp + left + c] = x[e];
  }
}

__global__ void Crop2DKernel(const float* dxp, float* dx, int64_t planes, int64_t h, int64_t w,
                             int64_t top, int64_t left, int64_t hp, int64_t wp) {
  POLIS_GRID_LOOP(e, planes * h * w) {
    const int64_t p = e / (h * w), r = (e / w) % h, c = e % w;
    dx[e] = dxp[(p * hp + top + r) * wp + left + c];
  }
}

// Per row, in double as nn::SoftmaxCrossEntropy; scratch[i] = loss,
// scratch[n + i] = correct.
__global__ void SoftmaxXentKernel(const float* logits, const float* y, int64_t n, int64_t k,
                                  float* dout, float grad_scale, double* scratch) {
  POLIS_GRID_LOOP(i, n) {
    const float* row = logits + i * k;
    int64_t arg = 0;
    float mx = row[0];
    for (int64_t j = 1; j < k; ++j)
      if (row[j] > mx) {
        mx = row[j];
        arg = j;
      }
    double sum = 0;
    for (int64_t j = 0; j < k; ++j) sum += exp(static_cast<double>(row[j] - mx));
    const double log_sum = log(sum);
    const int64_t label = static_cast<int64_t>(y[i]);
    const bool ok = label >= 0 && label < k;
    scratch[i] = ok ? log_sum - static_cast<double>(row[label] - mx) : NAN;
    scratch[n + i] = (ok && arg == label) ? 1.0 : 0.0;
    if (dout) {
      for (int64_t j = 0; j < k; ++j) {
        const double p = exp(static_cast<double>(row[j] - mx) - log_sum);
        dout[i * k + j] = static_cast<float>((p - (j == label ? 1.0 : 0.0)) * grad_scale);
      }
    }
  }
}

__global__ void RegressionLossKernel(int kind, const float* out, const float* y, int64_t n, int64_t k,
                                     double delta, float* dout, float grad_scale, double* scratch) {
  const double inv_k = 1.0 / static_cast<double>(k);
  POLIS_GRID_LOOP(i, n * k) {
    const double e = static_cast<double>(out[i]) - y[i];
    double loss, grad;
    if (kind == static_cast<int>(LossKind::kMae)) {
      loss = fabs(e);
      grad = e > 0 ? 1.0 : e < 0 ? -1.0 : 0.0;
    } else if (kind == static_cast<int>(LossKind::kHuber)) {
      if (fabs(e) <= delta) {
        loss = 0.5 * e * e;
        grad = e;
      } else {
        loss = delta * (fabs(e) - 0.5 * delta);
        grad = e > 0 ? delta : -delta;
      }
    } else {
      loss = e * e;
      grad = 2.0 * e;
    }
    scratch[i] = loss * inv_k;
    if (dout) dout[i] = static_cast<float>(grad * inv_k * grad_scale);
  }
}

// One block: stats[0] = Σ a[0, m), stats[1] = Σ b[0, m) (b may be null).
__global__ void SumKernel(const double* a, const double* b, int64_t m, double* stats) {
  __shared__ double sa[kBlock], sb[kBlock];
  double ta = 0, tb = 0;
  for (int64_t i = threadIdx.x; i < m; i += blockDim.x) {
    ta += a[i];
    if (b) tb += b[i];
  }
  sa[threadIdx.x] = ta;
  sb[threadIdx.x] = tb;
  __syncthreads();
  for (int o = blockDim.x / 2; o > 0; o >>= 1) {
    if (threadIdx.x < o) {
      sa[threadIdx.x] += sa[threadIdx.x + o];
      sb[threadIdx.x] += sb[threadIdx.x + o];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    stats[0] = sa[0];
    stats[1] = sb[0];
  }
}

// The explicit _rn intrinsics keep nvcc from contracting into FMAs, so the
// result equals common/optimizer.cc's (compiled without FMA) bit for bit.
__global__ void AdamKernel(float* p, const float* g, float* m, float* v, int64_t n, float b1,
                           float b2, float eps, float step, float inv_sqrt_bc2, float l2,
                           float shrink, float c1, float c2) {
  POLIS_GRID_LOOP(i, n) {
    const float gi = __fadd_rn(g[i], __fmul_rn(l2, p[i]));
    const float mi = __fadd_rn(__fmul_rn(b1, m[i]), __fmul_rn(c1, gi));
    const float vi = __fadd_rn(__fmul_rn(b2, v[i]), __fmul_rn(__fmul_rn(c2, gi), gi));
    m[i] = mi;
    v[i] = vi;
    const float denom = __fadd_rn(__fmul_rn(__fsqrt_rn(vi), inv_sqrt_bc2), eps);
    p[i] = __fsub_rn(__fmul_rn(p[i], shrink), __fdiv_rn(__fmul_rn(step, mi), denom));
  }
}

__global__ void SgdKernel(float* p, const float* g, float* vel, int64_t n, float lr, float mu,
                          float wd, bool nesterov) {
  POLIS_GRID_LOOP(i, n) {
    const float gi = __fadd_rn(g[i], __fmul_rn(wd, p[i]));
    const float vi = __fadd_rn(__fmul_rn(mu, vel[i]), gi);
    vel[i] = vi;
    const float upd = nesterov ? __fadd_rn(gi, __fmul_rn(mu, vi)) : vi;
    p[i] = __fsub_rn(p[i], __fmul_rn(lr, upd));
  }
}

__global__ void F2Bf16Kernel(const float* x, __nv_bfloat16* y, int64_t n) {
  POLIS_GRID_LOOP(i, n) y[i] = __float2bfloat16_rn(x[i]);
}
__global__ void Bf162FKernel(const __nv_bfloat16* x, float* y, int64_t n) {
  POLIS_GRID_LOOP(i, n) y[i] = __bfloat162float(x[i]);
}
__global__ void F2HalfKernel(const float* x, __half* y, int64_t n) {
  POLIS_GRID_LOOP(i, n) y[i] = __float2half_rn(x[i]);
}
__global__ void Half2FKernel(const __half* x, float* y, int64_t n) {
  POLIS_GRID_LOOP(i, n) y[i] = __half2float(x[i]);
}

}  // namespace

#define POLIS_LAUNCH(kernel, n, s, ...)                         \
  do {                                                          \
    if ((n) > 0) kernel<<<Blocks(n), kBlock, 0, s>>>(__VA_ARGS__); \
    return cudaGetLastError();                                  \
  } while (0)

cudaError_t BiasAct(float* y, const float* b, int64_t rows, int64_t cols, bool relu, cudaStream_t s) {
  POLIS_LAUNCH(BiasActKernel, rows * cols, s, y, b, rows, cols, relu);
}
cudaError_t ReluGrad(const float* y, float* d, int64_t n, cudaStream_t s) {
  POLIS_LAUNCH(ReluGradKernel, n, s, y, d, n);
}
cudaError_t AddMul(const float* a, const float* b, const float* m, float* y, int64_t n, cudaStream_t s) {
  POLIS_LAUNCH(AddMulKernel, n, s, a, b, m, y, n);
}
cudaError_t Mul(const float* a, const float* m, float* y, int64_t n, cudaStream_t s) {
  POLIS_LAUNCH(MulKernel, n, s, a, m, y, n);
}
cudaError_t Add(float* y, const float* x, int64_t n, cudaStream_t s) {
  POLIS_LAUNCH(AddKernel, n, s, y, x, n);
}
cudaError_t AddBroadcast(const float* x, const float* p, float* y, int64_t batch, int64_t n,
                         cudaStream_t s) {
  POLIS_LAUNCH(AddBroadcastKernel, batch * n, s, x, p, y, batch, n);
}

int64_t ColumnSumScratch(int64_t rows, int64_t cols) {
  const int64_t chunks = (rows + kColChunk - 1) / kColChunk;
  return chunks > 1 ? chunks * cols : 0;
}

cudaError_t ColumnSum(const float* x, int64_t rows, int64_t cols, float* out, float* scratch,
                      cudaStream_t s) {
  if (cols <= 0) return cudaGetLastError();
  if (rows <= 0) return cudaMemsetAsync(out, 0, sizeof(float) * cols, s);
  const int64_t chunks = (rows + kColChunk - 1) / kColChunk;
  dim3 grid(static_cast<unsigned>((cols + 31) / 32), static_cast<unsigned>(chunks));
  ColumnPartialKernel<<<grid, dim3(32, 8), 0, s>>>(x, rows, cols, chunks > 1 ? scratch : out);
  if (chunks > 1) ColumnFinishKernel<<<Blocks(cols), kBlock, 0, s>>>(scratch, chunks, cols, out);
  return cudaGetLastError();
}

cudaError_t Gelu(const float* x, float* y, int64_t n, bool tanh_approx, cudaStream_t s) {
  POLIS_LAUNCH(GeluKernel, n, s, x, y, n, tanh_approx);
}
cudaError_t GeluGrad(const float* x, const float* dy, float* dx, int64_t n, bool tanh_approx,
                     cudaStream_t s) {
  POLIS_LAUNCH(GeluGradKernel, n, s, x, dy, dx, n, tanh_approx);
}

cudaError_t LayerNormFwd(const float* x, const float* gain, const float* bias, float* y,
                         float* mean, float* rstd, int64_t rows, int64_t f, float eps,
                         cudaStream_t s) {
  if (rows > 0)
    LayerNormFwdKernel<<<static_cast<unsigned>((rows * 32 + kBlock - 1) / kBlock), kBlock, 0, s>>>(
        x, gain, bias, y, mean, rstd, rows, f, eps);
  return cudaGetLastError();
}
cudaError_t LayerNormBwd(const float* x, const float* dy, const float* gain, const float* mean,
                         const float* rstd, float* dx, float* prod, int64_t rows, int64_t f,
                         cudaStream_t s) {
  if (rows > 0)
    LayerNormBwdKernel<<<static_cast<unsigned>((rows * 32 + kBlock - 1) / kBlock), kBlock, 0, s>>>(
        x, dy, gain, mean, rstd, dx, prod, rows, f);
  return cudaGetLastError();
}

cudaError_t CausalMask(float* scores, int64_t rows, int64_t steps, cudaStream_t s) {
  POLIS_LAUNCH(CausalMaskKernel, rows * steps, s, scores, rows, steps);
}

cudaError_t DropoutMask(uint64_t base, uint64_t threshold, float keep, int64_t n, float* mask,
                        cudaStream_t s) {
  POLIS_LAUNCH(DropoutMaskKernel, n, s, base, threshold, keep, n, mask);
}

cudaError_t EmbeddingFwd(const float* ids, const float* table, float* y, int64_t count,
                         int64_t vocab, int64_t dim, long long* bad, cudaStream_t s) {
  POLIS_LAUNCH(EmbeddingFwdKernel, count * dim, s, ids, table, y, count, vocab, dim, bad);
}
cudaError_t EmbeddingBwd(const float* ids, const float* dy, float* g, int64_t count, int64_t vocab,
                         int64_t dim, cudaStream_t s) {
  POLIS_LAUNCH(EmbeddingBwdKernel, count * dim, s, ids, dy, g, count, vocab, dim);
}

cudaError_t SeqPoolFwd(const float* x, float* y, int64_t batch, int64_t steps, int64_t f, bool mean,
                       cudaStream_t s) {
  POLIS_LAUNCH(SeqPoolFwdKernel, batch * f, s, x, y, batch, steps, f, mean);
}
cudaError_t SeqPoolBwd(const float* dy, float* dx, int64_t batch, int64_t steps, int64_t f,
                       bool mean, cudaStream_t s) {
  POLIS_LAUNCH(SeqPoolBwdKernel, batch * steps * f, s, dy, dx, batch, steps, f, mean);
}

cudaError_t Pad2D(const float* x, float* xp, int64_t planes, int64_t h, int64_t w, int64_t top,
                  int64_t left, int64_t hp, int64_t wp, cudaStream_t s) {
  POLIS_LAUNCH(Pad2DKernel, planes * h * w, s, x, xp, planes, h, w, top, left, hp, wp);
}
cudaError_t Crop2D(const float* dxp, float* dx, int64_t planes, int64_t h, int64_t w, int64_t top,
                   int64_t left, int64_t hp, int64_t wp, cudaStream_t s) {
  POLIS_LAUNCH(Crop2DKernel, planes * h * w, s, dxp, dx, planes, h, w, top, left, hp, wp);
}

cudaError_t Loss(LossKind kind, const float* out, const float* y, int64_t n, int64_t k,
                 float huber_delta, float* dout, float grad_scale, double* row_scratch,
                 double* stats, cudaStream_t s) {
  if (kind == LossKind::kSoftmaxCrossEntropy) {
    if (n > 0)
      SoftmaxXentKernel<<<Blocks(n), kBlock, 0, s>>>(out, y, n, k, dout, grad_scale, row_scratch);
    SumKernel<<<1, kBlock, 0, s>>>(row_scratch, row_scratch + n, n, stats);
  } else {
    if (n * k > 0)
      RegressionLossKernel<<<Blocks(n * k), kBlock, 0, s>>>(static_cast<int>(kind), out, y, n, k,
                                                            huber_delta, dout, grad_scale,
                                                            row_scratch);
    SumKernel<<<1, kBlock, 0, s>>>(row_scratch, nullptr, n * k, stats);
  }
  return cudaGetLastError();
}

cudaError_t AdamStep(float* p, const float* g, float* m, float* v, int64_t n, float b1, float b2,
                     float eps, float step, float inv_sqrt_bc2, float l2, float shrink,
                     cudaStream_t s) {
  const float c1 = 1.0f - b1, c2 = 1.0f - b2;
  POLIS_LAUNCH(AdamKernel, n, s, p, g, m, v, n, b1, b2, eps, step, inv_sqrt_bc2, l2, shrink, c1, c2);
}
cudaError_t SgdStep(float* p, const float* g, float* vel, int64_t n, float lr, float mu, float wd,
                    bool nesterov, cudaStream_t s) {
  POLIS_LAUNCH(SgdKernel, n, s, p, g, vel, n, lr, mu, wd, nesterov);
}

cudaError_t FloatToBf16(const float* x, void* y, int64_t n, cudaStream_t s) {
  POLIS_LAUNCH(F2Bf16Kernel, n, s, x, static_cast<__nv_bfloat16*>(y), n);
}
cudaError_t Bf16ToFloat(const void* x, float* y, int64_t n, cudaStream_t s) {
  POLIS_LAUNCH(Bf162FKernel, n, s, static_cast<const __nv_bfloat16*>(x), y, n);
}
cudaError_t FloatToHalf(const float* x, void* y, int64_t n, cudaStream_t s) {
  POLIS_LAUNCH(F2HalfKernel, n, s, x, static_cast<__half*>(y), n);
}
cudaError_t HalfToFloat(const void* x, float* y, int64_t n, cudaStream_t s) {
  POLIS_LAUNCH(Half2FKernel, n, s, static_cast<const __half*>(x), y, n);
}

}  // namespace polis::nn::cuda::k
