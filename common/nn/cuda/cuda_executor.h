// The CUDA executor and loss (common/nn/executor.h) over CudaNetwork and
// CudaLoss. No CUDA in this header.
#pragma once

#include <memory>

#include "common/device/device.h"
#include "common/nn/executor.h"

namespace polis::nn::cuda {

// params/grads: device spans on `dev` (a CUDA device); work is enqueued on
// dev.stream().
StatusOr<std::unique_ptr<Executor>> MakeCudaExecutor(device::Device& dev, const Model& model, int64_t batch,
                                                     device::Span<float> params, device::Span<float> grads,
                                                     const ExecutorOptions& options);
StatusOr<std::unique_ptr<Loss>> MakeCudaLoss(const proto::ModelSpec& spec, int64_t n, int64_t k);

}  // namespace polis::nn::cuda
