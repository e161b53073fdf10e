// Executor: one executable network on one device, the interface the training
// loop, the evaluator and DP-SGD drive whatever the device (docs/design/gpu.md).
// The CPU executor wraps nn::Network (oneDNN); the CUDA one wraps
// nn::cuda::CudaNetwork (cuDNN/cuBLAS). Both are built from the same Model
// and bound to flat parameter and gradient buffers in the device's memory,
// in the canonical layout, so an artifact does not depend on the device that
// trained it. Backends are picked by common/backend/backend.h.
//
// Loss: the job's loss on the same device.
//
// Thread-compatible: one thread drives an executor at a time.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/device/device.h"
#include "common/nn/model.h"
#include "common/proto/job.pb.h"
#include "common/status.h"

namespace polis::nn {

// Called as soon as layer i's gradients are final (last layer first). On a
// device with asynchronous streams `done` is an event recorded after them:
// a synchroniser makes its own stream wait on it (Event::MakeWait) rather
// than the host; on the CPU it is null (the gradients are final already).
using LayerDone = std::function<void(int layer, device::Event* done)>;

class Executor {
 public:
  virtual ~Executor() = default;
  virtual device::Kind kind() const = 0;
  virtual int64_t batch() const = 0;
  // batch × input elements, plain (NCHW / [N, T, F]); fill before Forward.
  virtual device::Span<float> input() = 0;
  // before_layer(i), when given, runs on this thread before layer i is
  // enqueued (a synchroniser waits there for layer i's parameters).
  virtual Status Forward(const std::function<void(int)>& before_layer = nullptr) = 0;
  // batch × output elements, plain; valid once the stream reaches it.
  virtual device::Span<const float> output() = 0;
  // batch × output elements: fill with d(loss)/d(output), then Backward.
  virtual device::Span<float> output_diff() = 0;
  virtual Status Backward(const LayerDone& on_layer_done = nullptr) = 0;
  // Data errors found while running (an Embedding id outside [0, vocab) on
  // the GPU): InvalidArgument naming layer and position, once; OK otherwise.
  virtual Status TakeDataError() { return Status::Ok(); }
  // What runs each layer (oneDNN implementation names, or cuDNN algorithms).
  virtual std::vector<std::string> ImplInfo() const = 0;
};

struct ExecutorOptions {
  bool training = true;          // false: inference only (no gradients)
  bool want_input_grad = false;  // also d(loss)/d(input) (saliency, tests)
  device::Precision precision = device::Precision::kFp32;
};

// The CPU executor (oneDNN). params/grads: host spans of the model's
// parameter count (grads may be empty when !options.training).
StatusOr<std::unique_ptr<Executor>> MakeCpuExecutor(const Model& model, int64_t batch, device::Span<float> params,
                                                    device::Span<float> grads, const ExecutorOptions& options);

// The job's loss (nn::ComputeLoss) over an executor's output on its device.
class Loss {
 public:
  virtual ~Loss() = default;
  // Enqueues on `stream`: d(loss)/d(out) * grad_scale into dout (when not
  // empty) and the statistics. y: n labels (as floats) or n × k targets, in
  // the same memory space as out.
  virtual Status Compute(device::Span<const float> out, device::Span<const float> y, device::Span<float> dout,
                         float grad_scale, device::Stream& stream) = 0;
  // Waits for `stream`; the last Compute's statistics.
  virtual StatusOr<LossStats> Read(device::Stream& stream) = 0;
};

// The CPU loss: computes at once (n rows of k outputs).
std::unique_ptr<Loss> MakeCpuLoss(const proto::ModelSpec& spec, int64_t n, int64_t k);

// "" when every layer of `model` runs on `kind`, else "layer 'name' (Type):
// why" for the first that does not (LayerRegistry::WhyNot).
std::string UnsupportedLayer(device::Kind kind, const Model& model);

}  // namespace polis::nn
