// Optimizers applied to a flat range of parameters. The same kernels run on a
// parameter server (its key range) and, for all-reduce, on every worker (the
// whole buffer). State (moments, step count) belongs to the object and can
// be saved and restored for checkpoints. One thread at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/device/device.h"
#include "common/proto/job.pb.h"
#include "common/status.h"

namespace polis {

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  // One update of params[0, n) with grads[0, n) in host memory; n is fixed
  // at creation.
  virtual void Step(float* params, const float* grads) = 0;
  // The same update over spans on a device's stream, the form every device
  // shares: the host optimizers (MakeOptimizer) run it at once on memory
  // the host can read; the CUDA one (backend::MakeOptimizer for a CUDA
  // device) enqueues it on the stream over device memory. InvalidArgument
  // for memory the optimizer cannot reach.
  virtual Status Update(device::Span<float> params, device::Span<const float> grads, device::Stream& stream);
  virtual int64_t step_count() const = 0;
  virtual void set_step_count(int64_t t) = 0;
  // Learning rate the next Step will use (after schedule and warm-up).
  virtual double current_lr() const = 0;
  // Optimizer state as named flat vectors of n floats (for checkpoints).
  virtual std::vector<std::pair<std::string, std::vector<float>*>> State() = 0;
};

// Learning rate after `t` updates (t = 1 for the first), given the schedule.
// total_steps_hint is used by COSINE when the schedule gives no total.
double ScheduledLearningRate(const proto::OptimizerSpec& spec, int64_t t, int64_t total_steps_hint);

// Known types: ADAM, ADAMW, SGD. Errors name the field.
StatusOr<std::unique_ptr<Optimizer>> MakeOptimizer(const proto::OptimizerSpec& spec, int64_t n,
                                                   int64_t total_steps_hint = 0);
Status ValidateOptimizer(const proto::OptimizerSpec& spec);

// Adam (Kingma & Ba), in PyTorch's form:
//   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
//   p -= lr / (1-b1^t) * m / (sqrt(v / (1-b2^t)) + eps)
// With decoupled_decay (AdamW), p *= 1 - lr*wd first and wd is not added to g.
void AdamKernel(float* __restrict p, const float* __restrict g, float* __restrict m,
                float* __restrict v, int64_t n, float lr, float b1, float b2, float eps,
                int64_t t, float weight_decay, bool decoupled_decay);

}  // namespace polis
