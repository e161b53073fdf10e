// The CUDA layers, one per LayerRegistry type (layers.cc, seq_layers.cc),
// and the shared blocks of cuda_layers.h. Each keeps the CPU backend's
// canonical parameter layout; where a library wants another layout (cuDNN's
// RNN weight space) the layer copies in before forward and out after
// backward, on the stream.
#include "common/nn/cuda/cuda_layers.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <functional>
#include <map>

#include "common/nn/cuda/kernels.h"
#include "common/nn/seq_kernels.h"

namespace polis::nn::cuda {

namespace {

const float kOne = 1.f, kZero = 0.f;

// Views of one layer's parameters (or gradients) in Infer's order.
std::vector<float*> Views(const LayerInfo& info, float* base) {
  std::vector<float*> v;
  for (const ParamTensor& p : info.params)
    v.push_back(base ? base + (p.offset - info.param_offset) : nullptr);
  return v;
}

Status Set4d(cudnnTensorDescriptor_t d, int64_t n, int64_t c, int64_t h, int64_t w) {
  POLIS_CUDNN_CHECK(cudnnSetTensor4dDescriptor(d, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT,
                                               static_cast<int>(n), static_cast<int>(c),
                                               static_cast<int>(h), static_cast<int>(w)));
  return Status::Ok();
}

// Owns cuDNN tensor descriptors; destroyed with the layer.
struct TensorDescs {
  std::vector<cudnnTensorDescriptor_t> all;
  ~TensorDescs() {
    for (auto d : all) cudnnDestroyTensorDescriptor(d);
  }
  StatusOr<cudnnTensorDescriptor_t> New() {
    cudnnTensorDescriptor_t d;
    POLIS_CUDNN_CHECK(cudnnCreateTensorDescriptor(&d));
    all.push_back(d);
    return d;
  }
};

uint64_t MaskBase(uint64_t seed, uint64_t step) {
  return k::SplitMix64(seed ^ k::SplitMix64(step + 0x5EED));
}

// Inverted-dropout mask for `step`, the same bits as seq::DropoutMask.
Status FillMask(uint64_t seed, uint64_t step, float rate, int64_t n, float* mask, cudaStream_t s) {
  const uint64_t threshold = static_cast<uint64_t>(static_cast<double>(rate) * (1 << 24));
  POLIS_CUDA_CHECK(k::DropoutMask(MaskBase(seed, step), threshold, 1.f / (1.f - rate), n, mask, s));
  return Status::Ok();
}

uint64_t DropoutSeed(const proto::LayerSpec& spec, uint64_t seed) {
  return seed ^ seq::HashString(spec.name() + "/" + spec.type());
}

const char* MathName(cudnnMathType_t m) {
  switch (m) {
    case CUDNN_FMA_MATH: return "FMA";
    case CUDNN_DEFAULT_MATH: return "default";
    case CUDNN_TENSOR_OP_MATH: return "tensor-op";
    default: return "tensor-op-conv";
  }
}

// The first algorithm that succeeded and fits in `limit` bytes.
template <typename Perf>
int PickAlgo(const Perf* perf, int count, size_t limit) {
  for (int i = 0; i < count; ++i)
    if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].memory <= limit) return i;
  return -1;
}

constexpr size_t kConvWorkspaceLimit = size_t{1} << 30;

// ---------------------------------------------------------------- Conv2D

// cuDNN convolution (cross-correlation, OIHW filters, bias by
// cudnnAddTensor, fused ReLU by a kernel). cuDNN pads symmetrically; an
// asymmetric SAME padding pads the input explicitly and crops its gradient.
// The CUDA Conv2D and Dense fuse ReLU only.
Status FusedActivationSupported(const LayerInfo& l) {
  if (l.spec.activation() == proto::NONE || l.spec.activation() == proto::RELU) return Status::Ok();
  return Unimplemented("layer '{}' ({}): activation {} has no CUDA implementation (RELU and NONE do)",
                       l.name, l.type, proto::Activation_Name(l.spec.activation()));
}

class ConvLayer : public CudaLayer {
 public:
  ~ConvLayer() override {
    if (wdesc_) cudnnDestroyFilterDescriptor(wdesc_);
    if (conv_) cudnnDestroyConvolutionDescriptor(conv_);
  }
  Status Init(const CudaLayerContext& c) override {
    g_ = c.gpu;
    const auto& spec = c.info->spec;
    const auto& p = spec.conv2d_param();
    const Shape& in = c.info->in_shape;
    const Shape& out = c.info->out_shape;
    n_ = c.batch;
    ic_ = in[0];
    h_ = in[1];
    w_ = in[2];
    oc_ = out[0];
    const int64_t k = p.kernel_size(), stride = p.stride();
    SamePadding ph, pw;  // VALID: none
    if (p.padding() == proto::Conv2DParam::SAME) {
      ph = SamePaddingOf(h_, k, stride);
      pw = SamePaddingOf(w_, k, stride);
    }
    // cuDNN pads each axis symmetrically; uneven padding is made explicitly.
    padded_ = ph.before != ph.after || pw.before != pw.after;
    int64_t pad_h = ph.before, pad_w = pw.before;
    hp_ = h_;
    wp_ = w_;
    if (padded_) {
      top_ = ph.before;
      left_ = pw.before;
      hp_ = h_ + ph.before + ph.after;
      wp_ = w_ + pw.before + pw.after;
      pad_h = pad_w = 0;
      POLIS_RETURN_IF_ERROR(xp_.AllocateZeroed(n_ * ic_ * hp_ * wp_));
    }
    POLIS_RETURN_IF_ERROR(FusedActivationSupported(*c.info));
    relu_ = spec.activation() == proto::RELU;
    need_dx_ = c.training && c.need_diff_src;
    training_ = c.training;
    src_ = c.src;
    w_ptr_ = c.params;
    b_ptr_ = c.params + oc_ * ic_ * k * k;
    gw_ = c.grads;
    gb_ = c.grads ? c.grads + oc_ * ic_ * k * k : nullptr;

    POLIS_ASSIGN_OR_RETURN(x_desc_, descs_.New());
    POLIS_ASSIGN_OR_RETURN(y_desc_, descs_.New());
    POLIS_ASSIGN_OR_RETURN(b_desc_, descs_.New());
    POLIS_RETURN_IF_ERROR(Set4d(x_desc_, n_, ic_, hp_, wp_));
    POLIS_RETURN_IF_ERROR(Set4d(y_desc_, n_, oc_, out[1], out[2]));
    POLIS_RETURN_IF_ERROR(Set4d(b_desc_, 1, oc_, 1, 1));
    POLIS_CUDNN_CHECK(cudnnCreateFilterDescriptor(&wdesc_));
    POLIS_CUDNN_CHECK(cudnnSetFilter4dDescriptor(wdesc_, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW,
                                                 static_cast<int>(oc_), static_cast<int>(ic_),
                                                 static_cast<int>(k), static_cast<int>(k)));
    POLIS_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&conv_));
    POLIS_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(
        conv_, static_cast<int>(pad_h), static_cast<int>(pad_w), static_cast<int>(stride),
        static_cast<int>(stride), 1, 1, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    POLIS_CUDNN_CHECK(cudnnSetConvolutionMathType(conv_, g_->cudnn_math));
    int dims[4];
    POLIS_CUDNN_CHECK(cudnnGetConvolution2dForwardOutputDim(conv_, x_desc_, wdesc_, &dims[0],
                                                            &dims[1], &dims[2], &dims[3]));
    if (dims[0] != n_ || dims[1] != oc_ || dims[2] != out[1] || dims[3] != out[2])
      return InternalError("cuDNN convolution output {}x{}x{}x{} differs from the model's {}", dims[0],
                           dims[1], dims[2], dims[3], ShapeString(out));
    POLIS_RETURN_IF_ERROR(y_.Allocate(n_ * ShapeElements(out)));
    dst_ = y_.get();
    rows_ = n_ * ShapeElements(out);

    auto& h = g_->cudnn;
    // Algorithms by cuDNN's heuristics. FP32 forces FMA math on whatever
    // algorithm is chosen (no TF32); TF32/BF16 take the math type cuDNN
    // reports for it.
    const bool strict = g_->precision == Precision::kFp32;
    {
      cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
      int got = 0;
      POLIS_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(
          h, x_desc_, wdesc_, conv_, y_desc_, CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &got, perf));
      int i = PickAlgo(perf, got, kConvWorkspaceLimit);
      if (i < 0) return InternalError("cuDNN offers no forward convolution algorithm");
      fwd_algo_ = perf[i].algo;
      fwd_math_ = strict ? CUDNN_FMA_MATH : perf[i].mathType;
    }
    size_t bytes = 0;
    POLIS_CUDNN_CHECK(cudnnSetConvolutionMathType(conv_, fwd_math_));
    POLIS_CUDNN_CHECK(cudnnGetConvolutionForwardWorkspaceSize(h, x_desc_, wdesc_, conv_, y_desc_,
                                                              fwd_algo_, &bytes));
    g_->NeedWorkspace(bytes);
    impl_ = fmt::format("cuDNN conv fwd algo {} ({})", static_cast<int>(fwd_algo_), MathName(fwd_math_));
    if (!training_) return Status::Ok();
    {
      cudnnConvolutionBwdFilterAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
      int got = 0;
      POLIS_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(
          h, x_desc_, y_desc_, conv_, wdesc_, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &got, perf));
      int i = PickAlgo(perf, got, kConvWorkspaceLimit);
      if (i < 0) return InternalError("cuDNN offers no backward-filter convolution algorithm");
      bwf_algo_ = perf[i].algo;
      bwf_math_ = strict ? CUDNN_FMA_MATH : perf[i].mathType;
      POLIS_CUDNN_CHECK(cudnnSetConvolutionMathType(conv_, bwf_math_));
      POLIS_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterWorkspaceSize(h, x_desc_, y_desc_, conv_,
                                                                       wdesc_, bwf_algo_, &bytes));
      g_->NeedWorkspace(bytes);
      impl_ += fmt::format(", bwd filter algo {} ({})", static_cast<int>(bwf_algo_), MathName(bwf_math_));
    }
    if (need_dx_) {
      cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
      int got = 0;
      POLIS_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(
          h, wdesc_, y_desc_, conv_, x_desc_, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &got, perf));
      int i = PickAlgo(perf, got, kConvWorkspaceLimit);
      if (i < 0) return InternalError("cuDNN offers no backward-data convolution algorithm");
      bwd_algo_ = perf[i].algo;
      bwd_math_ = strict ? CUDNN_FMA_MATH : perf[i].mathType;
      POLIS_CUDNN_CHECK(cudnnSetConvolutionMathType(conv_, bwd_math_));
      POLIS_CUDNN_CHECK(cudnnGetConvolutionBackwardDataWorkspaceSize(h, wdesc_, y_desc_, conv_,
                                                                     x_desc_, bwd_algo_, &bytes));
      g_->NeedWorkspace(bytes);
      impl_ += fmt::format(", bwd data algo {} ({})", static_cast<int>(bwd_algo_), MathName(bwd_math_));
      POLIS_RETURN_IF_ERROR(dx_.Allocate(n_ * ic_ * h_ * w_));
      if (padded_) POLIS_RETURN_IF_ERROR(dxp_.Allocate(n_ * ic_ * hp_ * wp_));
      diff_src_ = dx_.get();
    }
    if (padded_) impl_ += ", explicit asymmetric padding";
    return Status::Ok();
  }

  Status Forward() override {
    auto s = g_->stream;
    const float* x = src_;
    if (padded_) {
      POLIS_CUDA_CHECK(k::Pad2D(src_, xp_.get(), n_ * ic_, h_, w_, top_, left_, hp_, wp_, s));
      x = xp_.get();
    }
    POLIS_CUDNN_CHECK(cudnnSetConvolutionMathType(conv_, fwd_math_));
    POLIS_CUDNN_CHECK(cudnnConvolutionForward(g_->cudnn, &kOne, x_desc_, x, wdesc_, w_ptr_, conv_,
                                              fwd_algo_, g_->workspace.get(), g_->workspace_bytes,
                                              &kZero, y_desc_, dst_));
    POLIS_CUDNN_CHECK(cudnnAddTensor(g_->cudnn, &kOne, b_desc_, b_ptr_, &kOne, y_desc_, dst_));
    if (relu_) POLIS_CUDA_CHECK(k::BiasAct(dst_, nullptr, rows_, 1, true, s));
    return Status::Ok();
  }

  Status Backward() override {
    auto s = g_->stream;
    if (relu_) POLIS_CUDA_CHECK(k::ReluGrad(dst_, diff_dst_, rows_, s));
    const float* x = padded_ ? xp_.get() : src_;
    POLIS_CUDNN_CHECK(cudnnConvolutionBackwardBias(g_->cudnn, &kOne, y_desc_, diff_dst_, &kZero,
                                                   b_desc_, gb_));
    POLIS_CUDNN_CHECK(cudnnSetConvolutionMathType(conv_, bwf_math_));
    POLIS_CUDNN_CHECK(cudnnConvolutionBackwardFilter(
        g_->cudnn, &kOne, x_desc_, x, y_desc_, diff_dst_, conv_, bwf_algo_, g_->workspace.get(),
        g_->workspace_bytes, &kZero, wdesc_, gw_));
    if (!need_dx_) return Status::Ok();
    POLIS_CUDNN_CHECK(cudnnSetConvolutionMathType(conv_, bwd_math_));
    float* dx = padded_ ? dxp_.get() : dx_.get();
    POLIS_CUDNN_CHECK(cudnnConvolutionBackwardData(
        g_->cudnn, &kOne, wdesc_, w_ptr_, y_desc_, diff_dst_, conv_, bwd_algo_,
        g_->workspace.get(), g_->workspace_bytes, &kZero, x_desc_, dx));
    if (padded_)
      POLIS_CUDA_CHECK(k::Crop2D(dxp_.get(), dx_.get(), n_ * ic_, h_, w_, top_, left_, hp_, wp_, s));
    return Status::Ok();
  }

 private:
  Gpu* g_ = nullptr;
  int64_t n_ = 0, ic_ = 0, h_ = 0, w_ = 0, oc_ = 0, hp_ = 0, wp_ = 0, top_ = 0, left_ = 0, rows_ = 0;
  bool padded_ = false, relu_ = false, need_dx_ = false, training_ = false;
  const float* src_ = nullptr;
  const float* w_ptr_ = nullptr;
  const float* b_ptr_ = nullptr;
  float* gw_ = nullptr;
  float* gb_ = nullptr;
  TensorDescs descs_;
  cudnnTensorDescriptor_t x_desc_ = nullptr, y_desc_ = nullptr, b_desc_ = nullptr;
  cudnnFilterDescriptor_t wdesc_ = nullptr;
  cudnnConvolutionDescriptor_t conv_ = nullptr;
  cudnnConvolutionFwdAlgo_t fwd_algo_{};
  cudnnConvolutionBwdFilterAlgo_t bwf_algo_{};
  cudnnConvolutionBwdDataAlgo_t bwd_algo_{};
  cudnnMathType_t fwd_math_ = CUDNN_FMA_MATH, bwf_math_ = CUDNN_FMA_MATH, bwd_math_ = CUDNN_FMA_MATH;
  DeviceArray<float> y_, dx_, xp_, dxp_;
};

// ---------------------------------------------------------------- MaxPool2D

class MaxPoolLayer : public CudaLayer {
 public:
  ~MaxPoolLayer() override {
    if (pool_) cudnnDestroyPoolingDescriptor(pool_);
  }
  Status Init(const CudaLayerContext& c) override {
    g_ = c.gpu;
    src_ = c.src;
    const auto& p = c.info->spec.pool2d_param();
    const int64_t kk = p.pool_size(), stride = p.has_stride() ? p.stride() : kk;
    const Shape& in = c.info->in_shape;
    const Shape& out = c.info->out_shape;
    POLIS_ASSIGN_OR_RETURN(x_desc_, descs_.New());
    POLIS_ASSIGN_OR_RETURN(y_desc_, descs_.New());
    POLIS_RETURN_IF_ERROR(Set4d(x_desc_, c.batch, in[0], in[1], in[2]));
    POLIS_RETURN_IF_ERROR(Set4d(y_desc_, c.batch, out[0], out[1], out[2]));
    POLIS_CUDNN_CHECK(cudnnCreatePoolingDescriptor(&pool_));
    // The deterministic max: ties go to one fixed position, as on the CPU.
    POLIS_CUDNN_CHECK(cudnnSetPooling2dDescriptor(
        pool_, CUDNN_POOLING_MAX_DETERMINISTIC, CUDNN_NOT_PROPAGATE_NAN, static_cast<int>(kk),
        static_cast<int>(kk), 0, 0, static_cast<int>(stride), static_cast<int>(stride)));
    POLIS_RETURN_IF_ERROR(y_.Allocate(c.batch * ShapeElements(out)));
    dst_ = y_.get();
    impl_ = "cuDNN max pooling";
    if (c.training && c.need_diff_src) {
      POLIS_RETURN_IF_ERROR(dx_.Allocate(c.batch * ShapeElements(in)));
      diff_src_ = dx_.get();
    }
    return Status::Ok();
  }
  Status Forward() override {
    POLIS_CUDNN_CHECK(
        cudnnPoolingForward(g_->cudnn, pool_, &kOne, x_desc_, src_, &kZero, y_desc_, dst_));
    return Status::Ok();
  }
  Status Backward() override {
    if (!diff_src_) return Status::Ok();
    POLIS_CUDNN_CHECK(cudnnPoolingBackward(g_->cudnn, pool_, &kOne, y_desc_, dst_, y_desc_,
                                           diff_dst_, x_desc_, src_, &kZero, x_desc_, diff_src_));
    return Status::Ok();
  }

 private:
  Gpu* g_ = nullptr;
  const float* src_ = nullptr;
  TensorDescs descs_;
  cudnnTensorDescriptor_t x_desc_ = nullptr, y_desc_ = nullptr;
  cudnnPoolingDescriptor_t pool_ = nullptr;
  DeviceArray<float> y_, dx_;
};

// ---------------------------------------------------------------- ReLU

class ReluLayer : public CudaLayer {
 public:
  ~ReluLayer() override {
    if (act_) cudnnDestroyActivationDescriptor(act_);
  }
  Status Init(const CudaLayerContext& c) override {
    g_ = c.gpu;
    src_ = c.src;
    const int64_t n = c.batch * ShapeElements(c.info->in_shape);
    POLIS_ASSIGN_OR_RETURN(desc_, descs_.New());
    POLIS_RETURN_IF_ERROR(Set4d(desc_, c.batch, ShapeElements(c.info->in_shape), 1, 1));
    POLIS_CUDNN_CHECK(cudnnCreateActivationDescriptor(&act_));
    POLIS_CUDNN_CHECK(
        cudnnSetActivationDescriptor(act_, CUDNN_ACTIVATION_RELU, CUDNN_NOT_PROPAGATE_NAN, 0.0));
    POLIS_RETURN_IF_ERROR(y_.Allocate(n));
    dst_ = y_.get();
    impl_ = "cuDNN activation";
    if (c.training && c.need_diff_src) {
      POLIS_RETURN_IF_ERROR(dx_.Allocate(n));
      diff_src_ = dx_.get();
    }
    return Status::Ok();
  }
  Status Forward() override {
    POLIS_CUDNN_CHECK(cudnnActivationForward(g_->cudnn, act_, &kOne, desc_, src_, &kZero, desc_, dst_));
    return Status::Ok();
  }
  Status Backward() override {
    if (!diff_src_) return Status::Ok();
    POLIS_CUDNN_CHECK(cudnnActivationBackward(g_->cudnn, act_, &kOne, desc_, dst_, desc_, diff_dst_,
                                              desc_, src_, &kZero, desc_, diff_src_));
    return Status::Ok();
  }

 private:
  Gpu* g_ = nullptr;
  const float* src_ = nullptr;
  TensorDescs descs_;
  cudnnTensorDescriptor_t desc_ = nullptr;
  cudnnActivationDescriptor_t act_ = nullptr;
  DeviceArray<float> y_, dx_;
};

// ---------------------------------------------------------------- Dense

class DenseLayer : public CudaLayer {
 public:
  Status Init(const CudaLayerContext& c) override {
    g_ = c.gpu;
    src_ = c.src;
    in_ = c.info->in_shape[0];
    out_ = c.info->out_shape[0];
    rows_ = c.batch;
    POLIS_RETURN_IF_ERROR(FusedActivationSupported(*c.info));
    relu_ = c.info->spec.activation() == proto::RELU;
    w_ = c.params;
    b_ = c.params + out_ * in_;
    gw_ = c.grads;
    gb_ = c.grads ? c.grads + out_ * in_ : nullptr;
    POLIS_RETURN_IF_ERROR(lin_.Init(g_, rows_, in_, out_, c.training));
    POLIS_RETURN_IF_ERROR(y_.Allocate(rows_ * out_));
    dst_ = y_.get();
    impl_ = "cuBLAS GEMM";
    if (c.training && c.need_diff_src) {
      POLIS_RETURN_IF_ERROR(dx_.Allocate(rows_ * in_));
      diff_src_ = dx_.get();
    }
    return Status::Ok();
  }
  Status Forward() override { return lin_.Forward(src_, w_, b_, dst_, relu_); }
  Status Backward() override {
    if (relu_) POLIS_CUDA_CHECK(k::ReluGrad(dst_, diff_dst_, rows_ * out_, g_->stream));
    return lin_.Backward(src_, w_, diff_dst_, diff_src_, gw_, gb_);
  }

 private:
  Gpu* g_ = nullptr;
  const float* src_ = nullptr;
  int64_t in_ = 0, out_ = 0, rows_ = 0;
  bool relu_ = false;
  const float* w_ = nullptr;
  const float* b_ = nullptr;
  float* gw_ = nullptr;
  float* gb_ = nullptr;
  Linear lin_;
  DeviceArray<float> y_, dx_;
};

// ---------------------------------------------------------------- Flatten

// Activations are plain NCHW on the GPU, so Flatten is a view: no copy.
class FlattenLayer : public CudaLayer {
 public:
  Status Init(const CudaLayerContext& c) override {
    dst_ = const_cast<float*>(c.src);
    need_dx_ = c.training && c.need_diff_src;
    impl_ = "view";
    return Status::Ok();
  }
  void BindDiffDst(float* d) override {
    diff_dst_ = d;
    if (need_dx_) diff_src_ = d;
  }
  Status Forward() override { return Status::Ok(); }
  Status Backward() override { return Status::Ok(); }

 private:
  bool need_dx_ = false;
};

// ---------------------------------------------------------------- Embedding

class EmbeddingLayer : public CudaLayer {
 public:
  Status Init(const CudaLayerContext& c) override {
    g_ = c.gpu;
    src_ = c.src;
    count_ = c.batch * c.info->in_shape[0];
    vocab_ = c.info->spec.embedding_param().vocab();
    dim_ = c.info->spec.embedding_param().dim();
    table_ = c.params;
    gt_ = c.grads;
    POLIS_RETURN_IF_ERROR(y_.Allocate(count_ * dim_));
    dst_ = y_.get();
    impl_ = "own gather / atomic scatter-add kernels";
    if (c.training && c.need_diff_src) {
      POLIS_RETURN_IF_ERROR(dx_.AllocateZeroed(count_));  // ids are not differentiable
      diff_src_ = dx_.get();
    }
    return Status::Ok();
  }
  Status Forward() override {
    POLIS_CUDA_CHECK(k::EmbeddingFwd(src_, table_, dst_, count_, vocab_, dim_, g_->bad_id.get(),
                                     g_->stream));
    return Status::Ok();
  }
  Status Backward() override {
    POLIS_CUDA_CHECK(cudaMemsetAsync(gt_, 0, sizeof(float) * vocab_ * dim_, g_->stream));
    POLIS_CUDA_CHECK(k::EmbeddingBwd(src_, diff_dst_, gt_, count_, vocab_, dim_, g_->stream));
    return Status::Ok();
  }

 private:
  Gpu* g_ = nullptr;
  const float* src_ = nullptr;
  int64_t count_ = 0, vocab_ = 0, dim_ = 0;
  const float* table_ = nullptr;
  float* gt_ = nullptr;
  DeviceArray<float> y_, dx_;
};

// ---------------------------------------------------------------- LSTM, GRU

// cuDNN's multi-layer RNN (v8 API) on batch-major [N, T, F] data, so no
// transposes. cuDNN's per-gate matrices are PyTorch's: LSTM gates (i, f,
// g, o) and GRU gates (r, z, n) with the reset gate applied to W_hn h +
// b_hn, and two biases (bias_ih, bias_hh) — exactly seq_layers.cc's
// canonical layout. Each [H, in] gate block is copied into cuDNN's weight
// space before forward, and each gradient block out after backward.
class RecurrentLayer : public CudaLayer {
 public:
  explicit RecurrentLayer(bool gru) : gru_(gru) {}
  ~RecurrentLayer() override {
    if (rnn_) cudnnDestroyRNNDescriptor(rnn_);
    if (drop_) cudnnDestroyDropoutDescriptor(drop_);
    if (x_desc_) cudnnDestroyRNNDataDescriptor(x_desc_);
    if (y_desc_) cudnnDestroyRNNDataDescriptor(y_desc_);
  }
  Status Init(const CudaLayerContext& c) override {
    g_ = c.gpu;
    src_ = c.src;
    training_ = c.training;
    const auto& p = c.info->spec.recurrent_param();
    const int64_t H = p.hidden_size(), L = p.num_layers(), T = c.info->in_shape[0],
                  I = c.info->in_shape[1], N = c.batch, G = gru_ ? 3 : 4;
    n_ = N;
    t_ = T;
    h_ = H;
    seq_out_ = p.return_sequences();
    params_ = c.params;
    grads_ = c.grads;
    auto& h = g_->cudnn;
    POLIS_CUDNN_CHECK(cudnnCreateDropoutDescriptor(&drop_));
    size_t state_bytes = 0;
    POLIS_CUDNN_CHECK(cudnnDropoutGetStatesSize(h, &state_bytes));
    POLIS_RETURN_IF_ERROR(drop_states_.Allocate(static_cast<int64_t>(state_bytes)));
    POLIS_CUDNN_CHECK(cudnnSetDropoutDescriptor(drop_, h, 0.f, drop_states_.get(), state_bytes, 0));
    POLIS_CUDNN_CHECK(cudnnCreateRNNDescriptor(&rnn_));
    POLIS_CUDNN_CHECK(cudnnSetRNNDescriptor_v8(
        rnn_, CUDNN_RNN_ALGO_STANDARD, gru_ ? CUDNN_GRU : CUDNN_LSTM, CUDNN_RNN_DOUBLE_BIAS,
        CUDNN_UNIDIRECTIONAL, CUDNN_LINEAR_INPUT, CUDNN_DATA_FLOAT, CUDNN_DATA_FLOAT,
        g_->cudnn_math, static_cast<int32_t>(I), static_cast<int32_t>(H),
        static_cast<int32_t>(H), static_cast<int32_t>(L), drop_, CUDNN_RNN_PADDED_IO_DISABLED));
    std::vector<int> lens(N, static_cast<int>(T));
    POLIS_RETURN_IF_ERROR(dev_lens_.Allocate(N));
    POLIS_CUDA_CHECK(cudaMemcpy(dev_lens_.get(), lens.data(), sizeof(int) * N, cudaMemcpyHostToDevice));
    POLIS_CUDNN_CHECK(cudnnCreateRNNDataDescriptor(&x_desc_));
    POLIS_CUDNN_CHECK(cudnnCreateRNNDataDescriptor(&y_desc_));
    POLIS_CUDNN_CHECK(cudnnSetRNNDataDescriptor(x_desc_, CUDNN_DATA_FLOAT,
                                                CUDNN_RNN_DATA_LAYOUT_BATCH_MAJOR_UNPACKED,
                                                static_cast<int>(T), static_cast<int>(N),
                                                static_cast<int>(I), lens.data(), nullptr));
    POLIS_CUDNN_CHECK(cudnnSetRNNDataDescriptor(y_desc_, CUDNN_DATA_FLOAT,
                                                CUDNN_RNN_DATA_LAYOUT_BATCH_MAJOR_UNPACKED,
                                                static_cast<int>(T), static_cast<int>(N),
                                                static_cast<int>(H), lens.data(), nullptr));
    POLIS_ASSIGN_OR_RETURN(h_desc_, descs_.New());
    int hd[3] = {static_cast<int>(L), static_cast<int>(N), static_cast<int>(H)};
    int hs[3] = {static_cast<int>(N * H), static_cast<int>(H), 1};
    POLIS_CUDNN_CHECK(cudnnSetTensorNdDescriptor(h_desc_, CUDNN_DATA_FLOAT, 3, hd, hs));

    POLIS_CUDNN_CHECK(cudnnGetRNNWeightSpaceSize(h, rnn_, &w_bytes_));
    POLIS_RETURN_IF_ERROR(wspace_.AllocateZeroed(static_cast<int64_t>(w_bytes_)));
    size_t work = 0;
    POLIS_CUDNN_CHECK(cudnnGetRNNTempSpaceSizes(
        h, rnn_, training_ ? CUDNN_FWD_MODE_TRAINING : CUDNN_FWD_MODE_INFERENCE, x_desc_, &work,
        &reserve_bytes_));
    g_->NeedWorkspace(work);
    POLIS_RETURN_IF_ERROR(reserve_.Allocate(static_cast<int64_t>(reserve_bytes_)));

    // Where each canonical gate block lives in cuDNN's weight space.
    POLIS_ASSIGN_OR_RETURN(cudnnTensorDescriptor_t m_desc, descs_.New());
    POLIS_ASSIGN_OR_RETURN(cudnnTensorDescriptor_t b_desc, descs_.New());
    int64_t base = 0;
    for (int64_t l = 0; l < L; ++l) {
      const int64_t in = l == 0 ? I : H;
      const int64_t wih = base, whh = wih + G * H * in, bih = whh + G * H * H, bhh = bih + G * H;
      base = bhh + G * H;
      for (int64_t id = 0; id < 2 * G; ++id) {
        void* m_addr = nullptr;
        void* b_addr = nullptr;
        POLIS_CUDNN_CHECK(cudnnGetRNNWeightParams(h, rnn_, static_cast<int32_t>(l), w_bytes_,
                                                  wspace_.get(), static_cast<int32_t>(id), m_desc,
                                                  &m_addr, b_desc, &b_addr));
        const bool input_side = id < G;
        const int64_t gate = input_side ? id : id - G, cols = input_side ? in : H;
        POLIS_RETURN_IF_ERROR(CheckCount(m_desc, H * cols, l, id));
        POLIS_RETURN_IF_ERROR(CheckCount(b_desc, H, l, id));
        pieces_.push_back({(input_side ? wih : whh) + gate * H * cols, Offset(m_addr), H * cols});
        pieces_.push_back({(input_side ? bih : bhh) + gate * H, Offset(b_addr), H});
      }
    }
    if (base != c.info->param_count)
      return InternalError("{}: {} canonical parameters but the model lists {}", c.info->name, base,
                           c.info->param_count);
    POLIS_RETURN_IF_ERROR(y_.Allocate(N * T * H));
    if (seq_out_) {
      dst_ = y_.get();
    } else {
      POLIS_RETURN_IF_ERROR(last_.Allocate(N * H));
      dst_ = last_.get();
    }
    impl_ = fmt::format("cuDNN RNN v8 {} ({})", gru_ ? "GRU" : "LSTM", MathName(g_->cudnn_math));
    if (!training_) return Status::Ok();
    POLIS_RETURN_IF_ERROR(dwspace_.Allocate(static_cast<int64_t>(w_bytes_)));
    if (!seq_out_) POLIS_RETURN_IF_ERROR(dy_full_.Allocate(N * T * H));
    POLIS_RETURN_IF_ERROR(dx_.Allocate(N * T * I));  // cuDNN always writes dx
    if (c.need_diff_src) diff_src_ = dx_.get();
    return Status::Ok();
  }

  Status Forward() override {
    auto s = g_->stream;
    char* ws = wspace_.get();
    for (const Piece& p : pieces_)
      POLIS_CUDA_CHECK(cudaMemcpyAsync(ws + p.space_bytes, params_ + p.param, sizeof(float) * p.count,
                                       cudaMemcpyDeviceToDevice, s));
    POLIS_CUDNN_CHECK(cudnnRNNForward(
        g_->cudnn, rnn_, training_ ? CUDNN_FWD_MODE_TRAINING : CUDNN_FWD_MODE_INFERENCE,
        dev_lens_.get(), x_desc_, src_, y_desc_, y_.get(), h_desc_, nullptr, nullptr, h_desc_,
        nullptr, nullptr, w_bytes_, ws, g_->workspace_bytes, g_->workspace.get(), reserve_bytes_,
        reserve_.get()));
    if (!seq_out_) POLIS_CUDA_CHECK(k::SeqPoolFwd(y_.get(), dst_, n_, t_, h_, false, s));
    return Status::Ok();
  }

  Status Backward() override {
    auto s = g_->stream;
    const float* dy = diff_dst_;
    if (!seq_out_) {
      POLIS_CUDA_CHECK(k::SeqPoolBwd(diff_dst_, dy_full_.get(), n_, t_, h_, false, s));
      dy = dy_full_.get();
    }
    POLIS_CUDNN_CHECK(cudnnRNNBackwardData_v8(
        g_->cudnn, rnn_, dev_lens_.get(), y_desc_, y_.get(), dy, x_desc_, dx_.get(), h_desc_,
        nullptr, nullptr, nullptr, h_desc_, nullptr, nullptr, nullptr, w_bytes_, wspace_.get(),
        g_->workspace_bytes, g_->workspace.get(), reserve_bytes_, reserve_.get()));
    // Weight gradients accumulate (the only mode cuDNN offers): zero first.
    POLIS_CUDA_CHECK(cudaMemsetAsync(dwspace_.get(), 0, w_bytes_, s));
    POLIS_CUDNN_CHECK(cudnnRNNBackwardWeights_v8(
        g_->cudnn, rnn_, CUDNN_WGRAD_MODE_ADD, dev_lens_.get(), x_desc_, src_, h_desc_, nullptr,
        y_desc_, y_.get(), w_bytes_, dwspace_.get(), g_->workspace_bytes, g_->workspace.get(),
        reserve_bytes_, reserve_.get()));
    for (const Piece& p : pieces_)
      POLIS_CUDA_CHECK(cudaMemcpyAsync(grads_ + p.param, dwspace_.get() + p.space_bytes,
                                       sizeof(float) * p.count, cudaMemcpyDeviceToDevice, s));
    return Status::Ok();
  }

 private:
  struct Piece {
    int64_t param;        // floats into the layer's canonical parameters
    int64_t space_bytes;  // bytes into the weight space
    int64_t count;        // floats
  };
  int64_t Offset(const void* addr) const {
    return static_cast<const char*>(addr) - wspace_.get();
  }
  Status CheckCount(cudnnTensorDescriptor_t d, int64_t want, int64_t layer, int64_t id) const {
    cudnnDataType_t dt;
    int nb = 0, dims[8], strides[8];
    POLIS_CUDNN_CHECK(cudnnGetTensorNdDescriptor(d, 8, &dt, &nb, dims, strides));
    int64_t n = 1;
    for (int i = 0; i < nb; ++i) n *= dims[i];
    if (n != want)
      return InternalError("cuDNN RNN layer {} matrix {} holds {} floats, expected {}", layer, id, n,
                           want);
    return Status::Ok();
  }

  bool gru_;
  Gpu* g_ = nullptr;
  const float* src_ = nullptr;
  bool training_ = false, seq_out_ = false;
  int64_t n_ = 0, t_ = 0, h_ = 0;
  float* params_ = nullptr;
  float* grads_ = nullptr;
  cudnnRNNDescriptor_t rnn_ = nullptr;
  cudnnDropoutDescriptor_t drop_ = nullptr;
  cudnnRNNDataDescriptor_t x_desc_ = nullptr, y_desc_ = nullptr;
  TensorDescs descs_;
  cudnnTensorDescriptor_t h_desc_ = nullptr;
  size_t w_bytes_ = 0, reserve_bytes_ = 0;
  DeviceArray<char> wspace_, dwspace_, reserve_, drop_states_;
  DeviceArray<int> dev_lens_;
  DeviceArray<float> y_, last_, dy_full_, dx_;
  std::vector<Piece> pieces_;
};

// ---------------------------------------------------------------- Dropout

// Inverted dropout with seq::DropoutMask's masks (same seed, step and bits
// as the CPU). Inference: dst is src.
class DropoutLayer : public CudaLayer {
 public:
  Status Init(const CudaLayerContext& c) override {
    g_ = c.gpu;
    src_ = c.src;
    impl_ = "own kernels";
    if (!c.training) {
      dst_ = const_cast<float*>(c.src);
      return Status::Ok();
    }
    rate_ = c.info->spec.dropout_param().rate();
    seed_ = DropoutSeed(c.info->spec, c.info->spec.dropout_param().seed());
    n_ = c.batch * ShapeElements(c.info->in_shape);
    POLIS_RETURN_IF_ERROR(y_.Allocate(n_));
    dst_ = y_.get();
    if (rate_ > 0.f) POLIS_RETURN_IF_ERROR(mask_.Allocate(n_));
    if (c.need_diff_src) {
      POLIS_RETURN_IF_ERROR(dx_.Allocate(n_));
      diff_src_ = dx_.get();
    }
    return Status::Ok();
  }
  Status Forward() override {
    if (n_ == 0) return Status::Ok();
    if (rate_ > 0.f && (!seq::DropoutMaskFrozen() || step_ == 0))
      POLIS_RETURN_IF_ERROR(FillMask(seed_, step_++, rate_, n_, mask_.get(), g_->stream));
    POLIS_CUDA_CHECK(k::Mul(src_, mask_.get(), dst_, n_, g_->stream));
    return Status::Ok();
  }
  Status Backward() override {
    if (diff_src_) POLIS_CUDA_CHECK(k::Mul(diff_dst_, mask_.get(), diff_src_, n_, g_->stream));
    return Status::Ok();
  }

 private:
  Gpu* g_ = nullptr;
  const float* src_ = nullptr;
  float rate_ = 0.f;
  uint64_t seed_ = 0, step_ = 0;
  int64_t n_ = 0;
  DeviceArray<float> y_, mask_, dx_;
};

// ---------------------------------------------------------------- LayerNorm, GELU

class LayerNormLayer : public CudaLayer {
 public:
  Status Init(const CudaLayerContext& c) override {
    g_ = c.gpu;
    src_ = c.src;
    const int64_t f = c.info->in_shape.back();
    const int64_t n = c.batch * ShapeElements(c.info->in_shape);
    w_ = Views(*c.info, c.params);
    gr_ = Views(*c.info, c.grads);
    POLIS_RETURN_IF_ERROR(op_.Init(g_, n / f, f, c.info->spec.layer_norm_param().epsilon(), c.training));
    POLIS_RETURN_IF_ERROR(y_.Allocate(n));
    dst_ = y_.get();
    impl_ = "own kernels (warp per row)";
    if (c.training) {
      POLIS_RETURN_IF_ERROR(dx_.Allocate(n));  // written even for the first layer
      if (c.need_diff_src) diff_src_ = dx_.get();
    }
    return Status::Ok();
  }
  Status Forward() override { return op_.Forward(src_, w_[0], w_[1], dst_); }
  Status Backward() override {
    return op_.Backward(src_, diff_dst_, w_[0], dx_.get(), gr_[0], gr_[1]);
  }

 private:
  Gpu* g_ = nullptr;
  const float* src_ = nullptr;
  std::vector<float*> w_, gr_;
  LayerNormOp op_;
  DeviceArray<float> y_, dx_;
};

class GeluLayer : public CudaLayer {
 public:
  Status Init(const CudaLayerContext& c) override {
    g_ = c.gpu;
    src_ = c.src;
    n_ = c.batch * ShapeElements(c.info->in_shape);
    tanh_ = c.info->spec.gelu_param().approximation() == proto::GeluParam::TANH;
    POLIS_RETURN_IF_ERROR(y_.Allocate(n_));
    dst_ = y_.get();
    impl_ = tanh_ ? "own kernel (tanh)" : "own kernel (erf)";
    if (c.training && c.need_diff_src) {
      POLIS_RETURN_IF_ERROR(dx_.Allocate(n_));
      diff_src_ = dx_.get();
    }
    return Status::Ok();
  }
  Status Forward() override {
    POLIS_CUDA_CHECK(k::Gelu(src_, dst_, n_, tanh_, g_->stream));
    return Status::Ok();
  }
  Status Backward() override {
    if (diff_src_) POLIS_CUDA_CHECK(k::GeluGrad(src_, diff_dst_, diff_src_, n_, tanh_, g_->stream));
    return Status::Ok();
  }

 private:
  Gpu* g_ = nullptr;
  const float* src_ = nullptr;
  int64_t n_ = 0;
  bool tanh_ = false;
  DeviceArray<float> y_, dx_;
};

// ---------------------------------------------------------------- attention layers

class MhaLayer : public CudaLayer {
 public:
  Status Init(const CudaLayerContext& c) override {
    src_ = c.src;
    const auto& p = c.info->spec.attention_param();
    const int64_t n = c.batch * ShapeElements(c.info->in_shape);
    w_ = Views(*c.info, c.params);
    gr_ = Views(*c.info, c.grads);
    POLIS_RETURN_IF_ERROR(att_.Init(c.gpu, c.batch, c.info->in_shape[0], c.info->in_shape[1],
                                    p.num_heads(), p.causal(), c.training));
    POLIS_RETURN_IF_ERROR(y_.Allocate(n));
    dst_ = y_.get();
    impl_ = "cuBLAS projections and batched per-head GEMMs, cuDNN softmax";
    if (c.training && c.need_diff_src) {
      POLIS_RETURN_IF_ERROR(dx_.Allocate(n));
      diff_src_ = dx_.get();
    }
    return Status::Ok();
  }
  Status Forward() override { return att_.Forward(src_, w_.data(), dst_); }
  Status Backward() override {
    return att_.Backward(src_, w_.data(), diff_dst_, diff_src_, gr_.data());
  }

 private:
  const float* src_ = nullptr;
  std::vector<float*> w_, gr_;
  AttentionBlock att_;
  DeviceArray<float> y_, dx_;
};

// Pre-norm block, as TransformerExec: x1 = x + D1(MHA(LN1(x)));
// y = x1 + D2(FFN(LN2(x1))), FFN = Linear -> GELU (erf) -> Linear.
class TransformerLayer : public CudaLayer {
 public:
  enum { kLn1G, kLn1B, kQkvW, kQkvB, kOutW, kOutB, kLn2G, kLn2B, kF1W, kF1B, kF2W, kF2B };

  Status Init(const CudaLayerContext& c) override {
    g_ = c.gpu;
    src_ = c.src;
    const auto& p = c.info->spec.transformer_param();
    const int64_t T = c.info->in_shape[0];
    f_ = c.info->in_shape[1];
    ff_ = p.ff_dim();
    rows_ = c.batch * T;
    rate_ = c.training ? p.dropout() : 0.f;
    seed_ = DropoutSeed(c.info->spec, p.seed());
    w_ = Views(*c.info, c.params);
    gr_ = Views(*c.info, c.grads);
    POLIS_RETURN_IF_ERROR(ln1_.Init(g_, rows_, f_, p.epsilon(), c.training));
    POLIS_RETURN_IF_ERROR(ln2_.Init(g_, rows_, f_, p.epsilon(), c.training));
    POLIS_RETURN_IF_ERROR(att_.Init(g_, c.batch, T, f_, p.num_heads(), p.causal(), c.training));
    POLIS_RETURN_IF_ERROR(ffn1_.Init(g_, rows_, f_, ff_, c.training));
    POLIS_RETURN_IF_ERROR(ffn2_.Init(g_, rows_, ff_, f_, c.training));
    for (auto* b : {&a_, &att_out_, &x1_, &b_, &f_out_, &y_}) POLIS_RETURN_IF_ERROR(b->Allocate(rows_ * f_));
    for (auto* b : {&h_, &gl_}) POLIS_RETURN_IF_ERROR(b->Allocate(rows_ * ff_));
    if (rate_ > 0.f) {
      POLIS_RETURN_IF_ERROR(mask1_.Allocate(rows_ * f_));
      POLIS_RETURN_IF_ERROR(mask2_.Allocate(rows_ * f_));
    }
    dst_ = y_.get();
    impl_ = "own layer-norm/GELU/residual kernels, cuBLAS projections, cuDNN softmax";
    if (!c.training) return Status::Ok();
    for (auto* b : {&d_f_, &d_b_, &d_x1_, &d_a_, &d_x_}) POLIS_RETURN_IF_ERROR(b->Allocate(rows_ * f_));
    for (auto* b : {&d_g_, &d_h_}) POLIS_RETURN_IF_ERROR(b->Allocate(rows_ * ff_));
    if (c.need_diff_src) diff_src_ = d_x_.get();
    return Status::Ok();
  }

  Status Forward() override {
    auto s = g_->stream;
    const int64_t n = rows_ * f_;
    if (rate_ > 0.f && (!seq::DropoutMaskFrozen() || step_ == 0)) {
      POLIS_RETURN_IF_ERROR(FillMask(seed_ ^ 0x1, step_, rate_, n, mask1_.get(), s));
      POLIS_RETURN_IF_ERROR(FillMask(seed_ ^ 0x2, step_, rate_, n, mask2_.get(), s));
      ++step_;
    }
    POLIS_RETURN_IF_ERROR(ln1_.Forward(src_, w_[kLn1G], w_[kLn1B], a_.get()));
    POLIS_RETURN_IF_ERROR(att_.Forward(a_.get(), w_.data() + kQkvW, att_out_.get()));
    POLIS_CUDA_CHECK(k::AddMul(src_, att_out_.get(), mask1_.get(), x1_.get(), n, s));
    POLIS_RETURN_IF_ERROR(ln2_.Forward(x1_.get(), w_[kLn2G], w_[kLn2B], b_.get()));
    POLIS_RETURN_IF_ERROR(ffn1_.Forward(b_.get(), w_[kF1W], w_[kF1B], h_.get(), false));
    POLIS_CUDA_CHECK(k::Gelu(h_.get(), gl_.get(), rows_ * ff_, false, s));
    POLIS_RETURN_IF_ERROR(ffn2_.Forward(gl_.get(), w_[kF2W], w_[kF2B], f_out_.get(), false));
    POLIS_CUDA_CHECK(k::AddMul(x1_.get(), f_out_.get(), mask2_.get(), dst_, n, s));
    return Status::Ok();
  }

  Status Backward() override {
    auto s = g_->stream;
    const int64_t n = rows_ * f_;
    const float* dy = diff_dst_;
    POLIS_CUDA_CHECK(k::Mul(dy, mask2_.get(), d_f_.get(), n, s));
    POLIS_RETURN_IF_ERROR(
        ffn2_.Backward(gl_.get(), w_[kF2W], d_f_.get(), d_g_.get(), gr_[kF2W], gr_[kF2B]));
    POLIS_CUDA_CHECK(k::GeluGrad(h_.get(), d_g_.get(), d_h_.get(), rows_ * ff_, false, s));
    POLIS_RETURN_IF_ERROR(
        ffn1_.Backward(b_.get(), w_[kF1W], d_h_.get(), d_b_.get(), gr_[kF1W], gr_[kF1B]));
    POLIS_RETURN_IF_ERROR(
        ln2_.Backward(x1_.get(), d_b_.get(), w_[kLn2G], d_x1_.get(), gr_[kLn2G], gr_[kLn2B]));
    POLIS_CUDA_CHECK(k::Add(d_x1_.get(), dy, n, s));  // the residual path
    POLIS_CUDA_CHECK(k::Mul(d_x1_.get(), mask1_.get(), d_f_.get(), n, s));
    POLIS_RETURN_IF_ERROR(
        att_.Backward(a_.get(), w_.data() + kQkvW, d_f_.get(), d_a_.get(), gr_.data() + kQkvW));
    POLIS_RETURN_IF_ERROR(
        ln1_.Backward(src_, d_a_.get(), w_[kLn1G], d_x_.get(), gr_[kLn1G], gr_[kLn1B]));
    if (diff_src_) POLIS_CUDA_CHECK(k::Add(d_x_.get(), d_x1_.get(), n, s));
    return Status::Ok();
  }

 private:
  Gpu* g_ = nullptr;
  const float* src_ = nullptr;
  int64_t f_ = 0, ff_ = 0, rows_ = 0;
  float rate_ = 0.f;
  uint64_t seed_ = 0, step_ = 0;
  std::vector<float*> w_, gr_;
  LayerNormOp ln1_, ln2_;
  AttentionBlock att_;
  Linear ffn1_, ffn2_;
  DeviceArray<float> a_, att_out_, x1_, b_, h_, gl_, f_out_, y_, mask1_, mask2_;
  DeviceArray<float> d_f_, d_g_, d_h_, d_b_, d_x1_, d_a_, d_x_;
};

// ---------------------------------------------------------------- PositionalEncoding

class PositionalEncodingLayer : public CudaLayer {
 public:
  Status Init(const CudaLayerContext& c) override {
    g_ = c.gpu;
    src_ = c.src;
    batch_ = c.batch;
    const int64_t steps = c.info->in_shape[0], f = c.info->in_shape[1];
    n_ = steps * f;
    learned_ = c.info->spec.positional_encoding_param().kind() ==
               proto::PositionalEncodingParam::LEARNED;
    impl_ = "own kernels";
    if (learned_) {
      table_ptr_ = c.params;
      gt_ = c.grads;
      if (c.training) POLIS_RETURN_IF_ERROR(scratch_.Allocate(k::ColumnSumScratch(batch_, n_)));
    } else {
      // The CPU's table, computed the same way on the host.
      std::vector<float> table(n_);
      for (int64_t t = 0; t < steps; ++t)
        for (int64_t i = 0; i < f; ++i) {
          const double angle = t / std::pow(10000.0, static_cast<double>(i - i % 2) / f);
          table[t * f + i] = static_cast<float>(i % 2 == 0 ? std::sin(angle) : std::cos(angle));
        }
      POLIS_RETURN_IF_ERROR(table_.Allocate(n_));
      POLIS_CUDA_CHECK(cudaMemcpy(table_.get(), table.data(), sizeof(float) * n_, cudaMemcpyHostToDevice));
      table_ptr_ = table_.get();
    }
    POLIS_RETURN_IF_ERROR(y_.Allocate(batch_ * n_));
    dst_ = y_.get();
    if (c.training && c.need_diff_src) {
      POLIS_RETURN_IF_ERROR(dx_.Allocate(batch_ * n_));
      diff_src_ = dx_.get();
    }
    return Status::Ok();
  }
  Status Forward() override {
    POLIS_CUDA_CHECK(k::AddBroadcast(src_, table_ptr_, dst_, batch_, n_, g_->stream));
    return Status::Ok();
  }
  Status Backward() override {
    auto s = g_->stream;
    if (diff_src_)
      POLIS_CUDA_CHECK(cudaMemcpyAsync(diff_src_, diff_dst_, sizeof(float) * batch_ * n_,
                                       cudaMemcpyDeviceToDevice, s));
    if (learned_) POLIS_CUDA_CHECK(k::ColumnSum(diff_dst_, batch_, n_, gt_, scratch_.get(), s));
    return Status::Ok();
  }

 private:
  Gpu* g_ = nullptr;
  const float* src_ = nullptr;
  int64_t batch_ = 0, n_ = 0;
  bool learned_ = false;
  const float* table_ptr_ = nullptr;
  float* gt_ = nullptr;
  DeviceArray<float> table_, y_, dx_, scratch_;
};

// ---------------------------------------------------------------- SequencePool

class SequencePoolLayer : public CudaLayer {
 public:
  Status Init(const CudaLayerContext& c) override {
    g_ = c.gpu;
    src_ = c.src;
    batch_ = c.batch;
    steps_ = c.info->in_shape[0];
    f_ = c.info->in_shape[1];
    mean_ = c.info->spec.sequence_pool_param().mode() == proto::SequencePoolParam::MEAN;
    POLIS_RETURN_IF_ERROR(y_.Allocate(batch_ * f_));
    dst_ = y_.get();
    impl_ = "own kernels";
    if (c.training && c.need_diff_src) {
      POLIS_RETURN_IF_ERROR(dx_.Allocate(batch_ * steps_ * f_));
      diff_src_ = dx_.get();
    }
    return Status::Ok();
  }
  Status Forward() override {
    POLIS_CUDA_CHECK(k::SeqPoolFwd(src_, dst_, batch_, steps_, f_, mean_, g_->stream));
    return Status::Ok();
  }
  Status Backward() override {
    if (diff_src_)
      POLIS_CUDA_CHECK(k::SeqPoolBwd(diff_dst_, diff_src_, batch_, steps_, f_, mean_, g_->stream));
    return Status::Ok();
  }

 private:
  Gpu* g_ = nullptr;
  const float* src_ = nullptr;
  int64_t batch_ = 0, steps_ = 0, f_ = 0;
  bool mean_ = false;
  DeviceArray<float> y_, dx_;
};

using Factory = std::function<std::unique_ptr<CudaLayer>()>;

const std::map<std::string, Factory>& Factories() {
  static const auto* m = new std::map<std::string, Factory>{
      {"Conv2D", [] { return std::make_unique<ConvLayer>(); }},
      {"MaxPool2D", [] { return std::make_unique<MaxPoolLayer>(); }},
      {"Dense", [] { return std::make_unique<DenseLayer>(); }},
      {"ReLU", [] { return std::make_unique<ReluLayer>(); }},
      {"Flatten", [] { return std::make_unique<FlattenLayer>(); }},
      {"Embedding", [] { return std::make_unique<EmbeddingLayer>(); }},
      {"LSTM", [] { return std::make_unique<RecurrentLayer>(false); }},
      {"GRU", [] { return std::make_unique<RecurrentLayer>(true); }},
      {"Dropout", [] { return std::make_unique<DropoutLayer>(); }},
      {"LayerNorm", [] { return std::make_unique<LayerNormLayer>(); }},
      {"GELU", [] { return std::make_unique<GeluLayer>(); }},
      {"MultiHeadSelfAttention", [] { return std::make_unique<MhaLayer>(); }},
      {"TransformerEncoderBlock", [] { return std::make_unique<TransformerLayer>(); }},
      {"PositionalEncoding", [] { return std::make_unique<PositionalEncodingLayer>(); }},
      {"SequencePool", [] { return std::make_unique<SequencePoolLayer>(); }},
  };
  return *m;
}

}  // namespace

std::vector<std::string> CudaLayerTypes() {
  std::vector<std::string> names;
  for (const auto& [name, f] : Factories()) names.push_back(name);
  return names;
}

StatusOr<std::unique_ptr<CudaLayer>> MakeCudaLayer(const std::string& type) {
  auto it = Factories().find(type);
  if (it == Factories().end())
    return Unimplemented("layer type '{}' has no CUDA implementation; CUDA layer types: {}", type,
                         fmt::join(CudaLayerTypes(), ", "));
  return it->second();
}

// ---------------------------------------------------------------- GEMM

Status RowGemm(const Gpu& g, bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha,
               const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
               int64_t ldc) {
  POLIS_CUBLAS_CHECK(cublasGemmEx(g.cublas, tb ? CUBLAS_OP_T : CUBLAS_OP_N,
                                  ta ? CUBLAS_OP_T : CUBLAS_OP_N, static_cast<int>(n),
                                  static_cast<int>(m), static_cast<int>(k), &alpha, b, CUDA_R_32F,
                                  static_cast<int>(ldb), a, CUDA_R_32F, static_cast<int>(lda),
                                  &beta, c, CUDA_R_32F, static_cast<int>(ldc), g.gemm_compute,
                                  CUBLAS_GEMM_DEFAULT));
  return Status::Ok();
}

Status RowGemmBatched(const Gpu& g, bool ta, bool tb, int64_t m, int64_t n, int64_t k,
                      float alpha, const float* const* a, int64_t lda, const float* const* b,
                      int64_t ldb, float beta, float* const* c, int64_t ldc, int64_t count) {
  POLIS_CUBLAS_CHECK(cublasGemmBatchedEx(
      g.cublas, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N,
      static_cast<int>(n), static_cast<int>(m), static_cast<int>(k), &alpha,
      reinterpret_cast<const void* const*>(b), CUDA_R_32F, static_cast<int>(ldb),
      reinterpret_cast<const void* const*>(a), CUDA_R_32F, static_cast<int>(lda), &beta,
      reinterpret_cast<void* const*>(c), CUDA_R_32F, static_cast<int>(ldc),
      static_cast<int>(count), g.gemm_compute, CUBLAS_GEMM_DEFAULT));
  return Status::Ok();
}

// ---------------------------------------------------------------- Linear

Status Linear::Init(Gpu* g, int64_t rows, int64_t in, int64_t out, bool training) {
  g_ = g;
  rows_ = rows;
  in_ = in;
  out_ = out;
  if (training) POLIS_RETURN_IF_ERROR(scratch_.Allocate(k::ColumnSumScratch(rows, out)));
  return Status::Ok();
}

Status Linear::Forward(const float* x, const float* w, const float* b, float* y, bool relu) {
  POLIS_RETURN_IF_ERROR(RowGemm(*g_, false, true, rows_, out_, in_, 1.f, x, in_, w, in_, 0.f, y, out_));
  POLIS_CUDA_CHECK(k::BiasAct(y, b, rows_, out_, relu, g_->stream));
  return Status::Ok();
}

Status Linear::Backward(const float* x, const float* w, const float* dy, float* dx, float* dw,
                        float* db) {
  POLIS_RETURN_IF_ERROR(RowGemm(*g_, true, false, out_, in_, rows_, 1.f, dy, out_, x, in_, 0.f, dw, in_));
  POLIS_CUDA_CHECK(k::ColumnSum(dy, rows_, out_, db, scratch_.get(), g_->stream));
  if (dx)
    POLIS_RETURN_IF_ERROR(RowGemm(*g_, false, false, rows_, in_, out_, 1.f, dy, out_, w, in_, 0.f, dx, in_));
  return Status::Ok();
}

// ---------------------------------------------------------------- LayerNormOp

Status LayerNormOp::Init(Gpu* g, int64_t rows, int64_t f, float eps, bool training) {
  g_ = g;
  rows_ = rows;
  f_ = f;
  eps_ = eps;
  POLIS_RETURN_IF_ERROR(mean_.Allocate(rows));
  POLIS_RETURN_IF_ERROR(rstd_.Allocate(rows));
  if (!training) return Status::Ok();
  POLIS_RETURN_IF_ERROR(prod_.Allocate(rows * f));
  POLIS_RETURN_IF_ERROR(scratch_.Allocate(k::ColumnSumScratch(rows, f)));
  return Status::Ok();
}

Status LayerNormOp::Forward(const float* x, const float* gain, const float* bias, float* y) {
  POLIS_CUDA_CHECK(k::LayerNormFwd(x, gain, bias, y, mean_.get(), rstd_.get(), rows_, f_, eps_, g_->stream));
  return Status::Ok();
}

Status LayerNormOp::Backward(const float* x, const float* dy, const float* gain, float* dx,
                             float* dgain, float* dbias) {
  auto s = g_->stream;
  POLIS_CUDA_CHECK(k::LayerNormBwd(x, dy, gain, mean_.get(), rstd_.get(), dx, prod_.get(), rows_, f_, s));
  POLIS_CUDA_CHECK(k::ColumnSum(prod_.get(), rows_, f_, dgain, scratch_.get(), s));
  POLIS_CUDA_CHECK(k::ColumnSum(dy, rows_, f_, dbias, scratch_.get(), s));
  return Status::Ok();
}

// ---------------------------------------------------------------- AttentionBlock

namespace {
enum { kQ, kK, kV, kDQ, kDK, kDV, kScores, kProbs, kDScores, kCtx, kDCtx, kPtrKinds };
}

AttentionBlock::~AttentionBlock() {
  if (sm_desc_) cudnnDestroyTensorDescriptor(sm_desc_);
}

Status AttentionBlock::Init(Gpu* g, int64_t batch, int64_t steps, int64_t dim, int64_t heads,
                            bool causal, bool training) {
  g_ = g;
  n_ = batch;
  t_ = steps;
  f_ = dim;
  h_ = heads;
  causal_ = causal;
  const int64_t dh = dim / heads, rows = batch * steps;
  scale_ = 1.f / std::sqrt(static_cast<float>(dh));
  POLIS_RETURN_IF_ERROR(in_proj_.Init(g, rows, dim, 3 * dim, training));
  POLIS_RETURN_IF_ERROR(out_proj_.Init(g, rows, dim, dim, training));
  const int64_t probs = batch * heads * steps * steps;
  POLIS_RETURN_IF_ERROR(qkv_.Allocate(rows * 3 * dim));
  POLIS_RETURN_IF_ERROR(scores_.Allocate(probs));
  POLIS_RETURN_IF_ERROR(probs_.Allocate(probs));
  POLIS_RETURN_IF_ERROR(ctx_.Allocate(rows * dim));
  if (training) {
    POLIS_RETURN_IF_ERROR(dctx_.Allocate(rows * dim));
    POLIS_RETURN_IF_ERROR(dqkv_.Allocate(rows * 3 * dim));
    POLIS_RETURN_IF_ERROR(dscores_.Allocate(probs));
  }
  // Pointer arrays of the per-(sample, head) matrices, built once.
  const int64_t nh = batch * heads;
  std::vector<float*> host(kPtrKinds * nh);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t hh = 0; hh < heads; ++hh) {
      const int64_t i = b * heads + hh;
      const int64_t qoff = b * steps * 3 * dim + hh * dh;
      const int64_t soff = i * steps * steps;
      const int64_t coff = b * steps * dim + hh * dh;
      host[kQ * nh + i] = qkv_.get() + qoff;
      host[kK * nh + i] = qkv_.get() + qoff + dim;
      host[kV * nh + i] = qkv_.get() + qoff + 2 * dim;
      host[kDQ * nh + i] = dqkv_.get() ? dqkv_.get() + qoff : nullptr;
      host[kDK * nh + i] = dqkv_.get() ? dqkv_.get() + qoff + dim : nullptr;
      host[kDV * nh + i] = dqkv_.get() ? dqkv_.get() + qoff + 2 * dim : nullptr;
      host[kScores * nh + i] = scores_.get() + soff;
      host[kProbs * nh + i] = probs_.get() + soff;
      host[kDScores * nh + i] = dscores_.get() ? dscores_.get() + soff : nullptr;
      host[kCtx * nh + i] = ctx_.get() + coff;
      host[kDCtx * nh + i] = dctx_.get() ? dctx_.get() + coff : nullptr;
    }
  POLIS_RETURN_IF_ERROR(ptrs_.Allocate(static_cast<int64_t>(host.size())));
  POLIS_CUDA_CHECK(cudaMemcpy(ptrs_.get(), host.data(), sizeof(float*) * host.size(),
                              cudaMemcpyHostToDevice));
  POLIS_CUDNN_CHECK(cudnnCreateTensorDescriptor(&sm_desc_));
  POLIS_RETURN_IF_ERROR(Set4d(sm_desc_, nh * steps, steps, 1, 1));
  return Status::Ok();
}

Status AttentionBlock::Forward(const float* x, float* const* w, float* y) {
  const int64_t dh = f_ / h_, nh = n_ * h_, ld = 3 * f_;
  auto cp = [&](int which) { return const_cast<const float* const*>(P(which)); };
  POLIS_RETURN_IF_ERROR(in_proj_.Forward(x, w[0], w[1], qkv_.get(), false));
  // S = Q·Kᵀ / sqrt(dh)
  POLIS_RETURN_IF_ERROR(RowGemmBatched(*g_, false, true, t_, t_, dh, scale_, cp(kQ), ld, cp(kK), ld,
                                       0.f, P(kScores), t_, nh));
  if (causal_) POLIS_CUDA_CHECK(k::CausalMask(scores_.get(), nh * t_, t_, g_->stream));
  POLIS_CUDNN_CHECK(cudnnSoftmaxForward(g_->cudnn, CUDNN_SOFTMAX_ACCURATE, CUDNN_SOFTMAX_MODE_INSTANCE,
                                        &kOne, sm_desc_, scores_.get(), &kZero, sm_desc_,
                                        probs_.get()));
  // O = P·V
  POLIS_RETURN_IF_ERROR(RowGemmBatched(*g_, false, false, t_, dh, t_, 1.f, cp(kProbs), t_, cp(kV), ld,
                                       0.f, P(kCtx), f_, nh));
  return out_proj_.Forward(ctx_.get(), w[2], w[3], y, false);
}

Status AttentionBlock::Backward(const float* x, float* const* w, const float* dy, float* dx,
                                float* const* gw) {
  const int64_t dh = f_ / h_, nh = n_ * h_, ld = 3 * f_;
  auto cp = [&](int which) { return const_cast<const float* const*>(P(which)); };
  POLIS_RETURN_IF_ERROR(out_proj_.Backward(ctx_.get(), w[2], dy, dctx_.get(), gw[2], gw[3]));
  // dP = dO·Vᵀ; dV = Pᵀ·dO
  POLIS_RETURN_IF_ERROR(RowGemmBatched(*g_, false, true, t_, t_, dh, 1.f, cp(kDCtx), f_, cp(kV), ld,
                                       0.f, P(kDScores), t_, nh));
  POLIS_RETURN_IF_ERROR(RowGemmBatched(*g_, true, false, t_, dh, t_, 1.f, cp(kProbs), t_, cp(kDCtx),
                                       f_, 0.f, P(kDV), ld, nh));
  // dS = P ⊙ (dP − Σ dP⊙P), into the scores buffer; masked entries have P = 0.
  POLIS_CUDNN_CHECK(cudnnSoftmaxBackward(g_->cudnn, CUDNN_SOFTMAX_ACCURATE, CUDNN_SOFTMAX_MODE_INSTANCE,
                                         &kOne, sm_desc_, probs_.get(), sm_desc_, dscores_.get(),
                                         &kZero, sm_desc_, scores_.get()));
  // dQ = dS·K / sqrt(dh); dK = dSᵀ·Q / sqrt(dh)
  POLIS_RETURN_IF_ERROR(RowGemmBatched(*g_, false, false, t_, dh, t_, scale_, cp(kScores), t_, cp(kK),
                                       ld, 0.f, P(kDQ), ld, nh));
  POLIS_RETURN_IF_ERROR(RowGemmBatched(*g_, true, false, t_, dh, t_, scale_, cp(kScores), t_, cp(kQ),
                                       ld, 0.f, P(kDK), ld, nh));
  return in_proj_.Backward(x, w[0], dqkv_.get(), dx, gw[0], gw[1]);
}

}  // namespace polis::nn::cuda
