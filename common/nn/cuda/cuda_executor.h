// The CUDA executor and loss (common/nn/executor.h) over CudaNetwork and
// CudaLoss. No CUDA in this header.
#pragma once

#include <memory>

#include "common/device/device.h"
#include "common/nn/executor.h"
#include "common/optimizer.h"

namespace polis::nn::cuda {

// params/grads: device spans on `dev` (a CUDA device); work is enqueued on
// dev.stream().
StatusOr<std::unique_ptr<Executor>> MakeCudaExecutor(device::Device& dev, const Model& model, int64_t batch,
                                                     device::Span<float> params, device::Span<float> grads,
                                                     const ExecutorOptions& options);
StatusOr<std::unique_ptr<Loss>> MakeCudaLoss(const proto::ModelSpec& spec, int64_t n, int64_t k);
// polis::Optimizer over CudaOptimizer: Update enqueues the kernels on the
// given stream over device spans. Step (host pointers) stages through the
// device and waits. State() downloads the moments into host vectors and
// set_step_count uploads whatever those vectors hold (a checkpoint
// restore writes them, then sets the step count).
StatusOr<std::unique_ptr<Optimizer>> MakeCudaOptimizer(const proto::OptimizerSpec& spec, int64_t n,
                                                       int64_t total_steps_hint);

}  // namespace polis::nn::cuda
