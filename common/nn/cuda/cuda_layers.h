// Internal to the CUDA backend: one CudaLayer per LayerRegistry type, the
// per-network library handles they share, and the building blocks the
// composite layers reuse (Linear, LayerNorm, attention), the device twins of
// common/nn/seq_kernels.h.
//
// Contract (as LayerExec in layer.h): Init does all setup and allocation;
// Forward reads src and writes dst; Backward reads the bound diff_dst (and
// may overwrite it), overwrites the layer's parameter gradients and, when
// need_diff_src, writes diff_src. Buffers are device, plain row-major.
// Thread-compatible; everything is enqueued on Gpu::stream.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "common/nn/cuda/cuda_network.h"
#include "common/nn/cuda/cuda_util.h"
#include "common/nn/model.h"

namespace polis::nn::cuda {

// Library state of one network: handles bound to its stream, the math
// settings of its precision, and one cuDNN workspace shared by all layers
// (safe: one stream runs them in order).
struct Gpu {
  cudaStream_t stream = nullptr;
  cudnnHandle_t cudnn = nullptr;
  cublasHandle_t cublas = nullptr;
  Precision precision = Precision::kFp32;
  cublasComputeType_t gemm_compute = CUBLAS_COMPUTE_32F;
  cudnnMathType_t cudnn_math = CUDNN_FMA_MATH;
  size_t workspace_bytes = 0;  // the largest any layer asked for in Init
  DeviceArray<char> workspace;
  // An Embedding data error: lowest bad position (LLONG_MAX: none).
  DeviceArray<long long> bad_id;
  void NeedWorkspace(size_t bytes) { workspace_bytes = std::max(workspace_bytes, bytes); }
};

struct CudaLayerContext {
  const LayerInfo* info = nullptr;
  int index = 0;
  int64_t batch = 0;
  bool training = true;
  bool need_diff_src = true;
  const float* src = nullptr;  // batch × in_shape, plain
  float* params = nullptr;     // this layer's first parameter
  float* grads = nullptr;      // this layer's first gradient (null: inference)
  Gpu* gpu = nullptr;
};

class CudaLayer {
 public:
  virtual ~CudaLayer() = default;
  virtual Status Init(const CudaLayerContext& c) = 0;
  virtual Status Forward() = 0;
  virtual Status Backward() = 0;
  // Called once, last layer first, before the first Backward.
  virtual void BindDiffDst(float* diff_dst) { diff_dst_ = diff_dst; }
  float* dst() const { return dst_; }
  float* diff_src() const { return diff_src_; }
  const std::string& impl() const { return impl_; }

 protected:
  float* dst_ = nullptr;
  float* diff_src_ = nullptr;
  float* diff_dst_ = nullptr;
  std::string impl_;
};

// Unimplemented (naming the type and listing CudaLayerTypes()) for a type
// with no CUDA implementation.
StatusOr<std::unique_ptr<CudaLayer>> MakeCudaLayer(const std::string& type);

// C[M,N] = alpha · op(A)[M,K] · op(B)[K,N] + beta · C, all row-major with
// leading dimensions lda, ldb, ldc (cuBLAS is column-major: the operands
// are swapped, which transposes the product).
Status RowGemm(const Gpu& g, bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha,
               const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
               int64_t ldc);
// The same over `count` independent problems given by device pointer arrays.
Status RowGemmBatched(const Gpu& g, bool ta, bool tb, int64_t m, int64_t n, int64_t k,
                      float alpha, const float* const* a, int64_t lda, const float* const* b,
                      int64_t ldb, float beta, float* const* c, int64_t ldc, int64_t count);

// y[rows,out] = x[rows,in] · Wᵀ + b (W canonical (out, in)), optional ReLU.
// Backward: dW = dyᵀ·x, db = Σ_rows dy (overwritten), dx = dy·W (if dx).
class Linear {
 public:
  Status Init(Gpu* g, int64_t rows, int64_t in, int64_t out, bool training);
  Status Forward(const float* x, const float* w, const float* b, float* y, bool relu);
  Status Backward(const float* x, const float* w, const float* dy, float* dx, float* dw,
                  float* db);

 private:
  Gpu* g_ = nullptr;
  int64_t rows_ = 0, in_ = 0, out_ = 0;
  DeviceArray<float> scratch_;
};

// Layer normalisation over the last dimension of [rows, f].
class LayerNormOp {
 public:
  Status Init(Gpu* g, int64_t rows, int64_t f, float eps, bool training);
  Status Forward(const float* x, const float* gain, const float* bias, float* y);
  // Always writes dx; dgain and dbias are overwritten.
  Status Backward(const float* x, const float* dy, const float* gain, float* dx, float* dgain,
                  float* dbias);

 private:
  Gpu* g_ = nullptr;
  int64_t rows_ = 0, f_ = 0;
  float eps_ = 1e-5f;
  DeviceArray<float> mean_, rstd_, prod_, scratch_;
};

// Self-attention over [batch*steps, dim]: in-projection (cuBLAS), per-head
// Q·Kᵀ and P·V as batched cuBLAS products on strided views of the qkv
// buffer (pointer arrays built once), cuDNN softmax, out-projection.
// Parameters w[0..3] = qkv weights, qkv bias, out weights, out bias.
class AttentionBlock {
 public:
  Status Init(Gpu* g, int64_t batch, int64_t steps, int64_t dim, int64_t heads, bool causal,
              bool training);
  ~AttentionBlock();
  Status Forward(const float* x, float* const* w, float* y);
  // dx is always written.
  Status Backward(const float* x, float* const* w, const float* dy, float* dx, float* const* gw);

 private:
  Gpu* g_ = nullptr;
  int64_t n_ = 0, t_ = 0, f_ = 0, h_ = 0;
  bool causal_ = false;
  float scale_ = 1.f;
  Linear in_proj_, out_proj_;
  DeviceArray<float> qkv_, scores_, probs_, ctx_, dctx_, dqkv_, dscores_;
  // Per (sample, head) pointers: q, k, v, dq, dk, dv, scores, probs,
  // dscores, ctx, dctx — each n*h entries.
  DeviceArray<float*> ptrs_;
  cudnnTensorDescriptor_t sm_desc_ = nullptr;
  float* const* P(int which) const { return ptrs_.get() + which * n_ * h_; }
};

}  // namespace polis::nn::cuda
