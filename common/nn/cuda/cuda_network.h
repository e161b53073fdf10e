// The CUDA backend: an executable of an nn::Model on one GPU, bound to flat
// parameter and gradient buffers in device memory, plus the loss and the
// optimizers as device kernels. It mirrors nn::Network (common/nn/model.h):
// same Model, same canonical parameter layout (OIHW convolutions, (out, in)
// dense, PyTorch's LSTM/GRU and attention layouts of seq_layers.cc), so a
// model trained here and saved is the same artifact, byte format for byte
// format, as one trained on the CPU. See docs/design/gpu.md.
//
// Who runs what:
//  - convolution, max-pooling, the ReLU layer, the attention softmax and
//    LSTM/GRU: cuDNN;
//  - dense layers, every projection and the attention products: cuBLAS
//    (cublasGemmEx with the precision's compute type);
//  - layer norm, GELU, dropout, embedding, positional encoding, pooling over
//    time, residuals, loss and optimizers: kernels.cu.
//
// Create() does all setup (descriptors, algorithm choice, every buffer, one
// cudaMalloc each); Forward/Backward only enqueue work on the stream.
// Thread-compatible: one host thread drives a CudaNetwork at a time.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/nn/model.h"
#include "common/proto/job.pb.h"
#include "common/status.h"

namespace polis::nn::cuda {

// FP32: exact fp32 arithmetic (no tensor cores). TF32: fp32 storage, TF32
// tensor-core products. BF16: fp32 storage and master weights, bf16
// tensor-core products with fp32 accumulation (cuBLAS *_FAST_16BF);
// cuDNN convolutions and RNNs run TF32 in this mode (docs/design/gpu.md).
enum class Precision { kFp32, kTf32, kBf16 };
const char* PrecisionName(Precision p);
// "fp32", "tf32", "bf16"; anything else is InvalidArgument.
StatusOr<Precision> ParsePrecision(const std::string& name);

struct CudaOptions {
  Precision precision = Precision::kFp32;
  // Work is enqueued here; nullptr: the network creates (and owns) a
  // non-blocking stream of its own.
  cudaStream_t stream = nullptr;
  // Also compute d(loss)/d(input) (d_input_diff); tests and saliency only.
  bool want_input_grad = false;
  // The device to use (cudaSetDevice is called in Create).
  int device = 0;
};

class CudaNetwork {
 public:
  // d_params / d_grads: device buffers of model.parameter_count() floats
  // (d_grads may be null when !training). Errors: FailedPrecondition without
  // a usable device; Unimplemented naming the layer for a layer type with no
  // CUDA implementation; cuDNN/cuBLAS refusals as Internal.
  static StatusOr<std::unique_ptr<CudaNetwork>> Create(const Model& model, int64_t batch,
                                                       float* d_params, float* d_grads,
                                                       bool training,
                                                       const CudaOptions& options = {});
  ~CudaNetwork();
  CudaNetwork(const CudaNetwork&) = delete;
  CudaNetwork& operator=(const CudaNetwork&) = delete;

  int64_t batch() const;
  cudaStream_t stream() const;
  // batch × input elements, plain (NCHW / [N, T, F]); fill before Forward.
  float* d_input();
  // before_layer(i), when given, runs on this thread before layer i is
  // enqueued (a replica makes the stream wait there for layer i's
  // parameters to be uploaded).
  Status Forward(const std::function<void(int)>& before_layer = nullptr);
  // batch × output elements, plain; valid once the stream reaches it.
  const float* d_output() const;
  // batch × output elements: fill with d(loss)/d(output), then Backward.
  float* d_output_diff();
  // Enqueues backward, last layer first. After layer i's gradients are
  // enqueued, an event is recorded (layer_done_event(i)) and
  // on_layer_done(i) is called on this thread: a synchroniser waits on the
  // event (cudaStreamWaitEvent on its own stream), never on the host.
  Status Backward(const std::function<void(int)>& on_layer_done = nullptr);
  cudaEvent_t layer_done_event(int layer) const;
  // Only with options.want_input_grad.
  const float* d_input_diff() const;
  // Data errors found on the device (an Embedding id outside [0, vocab)):
  // waits for the stream; InvalidArgument naming layer, sample and step, or
  // OK. The flag is cleared.
  Status TakeDataError();
  // What each layer runs ("layer 0 Conv2D: cuDNN fwd algo 1 FMA, ...").
  std::vector<std::string> ImplInfo() const;

 private:
  struct Impl;
  explicit CudaNetwork(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Layer types of the LayerRegistry with a CUDA implementation (all of them
// today); CudaNetwork::Create refuses a model with any other.
std::vector<std::string> CudaLayerTypes();

// The job's loss on the device (nn::ComputeLoss's math, in double per row).
class CudaLoss {
 public:
  static StatusOr<std::unique_ptr<CudaLoss>> Create(const proto::ModelSpec& spec, int64_t n,
                                                    int64_t k);
  // Enqueues: d(loss)/d(out) * grad_scale into d_dout (may be null) and the
  // statistics. d_y: n labels (as floats) or n × k targets, on the device.
  Status Compute(const float* d_out, const float* d_y, float* d_dout, float grad_scale,
                 cudaStream_t stream);
  // Waits for `stream` and returns the last Compute's statistics.
  StatusOr<LossStats> Read(cudaStream_t stream);

 private:
  CudaLoss() = default;
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

// The optimizers of common/optimizer.h (same schedule, same per-element
// arithmetic) over a flat device range of n floats; state on the device.
class CudaOptimizer {
 public:
  static StatusOr<std::unique_ptr<CudaOptimizer>> Create(const proto::OptimizerSpec& spec,
                                                         int64_t n, int64_t total_steps_hint = 0);
  Status Step(float* d_params, const float* d_grads, cudaStream_t stream);
  int64_t step_count() const;
  void set_step_count(int64_t t);
  double current_lr() const;
  // Device state vectors of n floats ("m", "v" or "velocity"), for checkpoints.
  std::vector<std::pair<std::string, float*>> DeviceState();

 private:
  CudaOptimizer() = default;
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace polis::nn::cuda
