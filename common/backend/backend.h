// The backends a program was linked with: devices, executors and losses by
// device kind (docs/design/gpu.md). Two implementations of this header, one
// linked into each program:
//  - polis_backend_cpu (backend_cpu.cc): the CPU only; a CUDA request is
//    refused with one line naming the program to use instead;
//  - polis_backend_cuda (backend_cuda.cc, built with POLIS_WITH_CUDA): the
//    CPU and CUDA, linking cuDNN, cuBLAS and NCCL.
// polis-train links the first (no CUDA library loads in a CPU job's
// processes), polis-train-cuda the second; polis-run picks by the job's
// training.device. The training loop calls only this header: no #if.
#pragma once

#include <memory>

#include "common/comm/transport.h"
#include "common/device/device.h"
#include "common/nn/executor.h"
#include "common/optimizer.h"
#include "common/proto/job.pb.h"
#include "common/status.h"

namespace polis::backend {

// Whether this program can run `kind`.
bool Linked(device::Kind kind);

// The device of this process: the CPU, or the CUDA device a worker's index
// among the workers on its host maps to (device::LocalDeviceOrdinal; -1:
// the process's local rank).
StatusOr<std::unique_ptr<device::Device>> OpenDevice(device::Kind kind, int local_worker = -1);

// An executor on `dev` bound to params/grads (spans in dev's memory).
StatusOr<std::unique_ptr<nn::Executor>> MakeExecutor(device::Device& dev, const nn::Model& model, int64_t batch,
                                                     device::Span<float> params, device::Span<float> grads,
                                                     const nn::ExecutorOptions& options);

// The workers' all-reduce communicator for buffers in dev's memory: the
// transport's own (MPI) on the CPU, NCCL over the transport's workers on a
// CUDA device (one rank per GPU). Collective over the workers.
StatusOr<std::unique_ptr<comm::Communicator>> MakeWorkersCommunicator(device::Device& dev, comm::Transport& transport,
                                                                      int64_t max_count,
                                                                      const std::vector<int>& host_of_rank);

// The job's optimizer over n floats in dev's memory (Optimizer::Update):
// the host one on the CPU, CudaOptimizer's kernels on a CUDA device.
StatusOr<std::unique_ptr<Optimizer>> MakeOptimizer(device::Device& dev, const proto::OptimizerSpec& spec, int64_t n,
                                                   int64_t total_steps_hint = 0);

// The job's loss over n rows of k outputs on `dev`.
StatusOr<std::unique_ptr<nn::Loss>> MakeLoss(device::Device& dev, const proto::ModelSpec& spec, int64_t n, int64_t k);

}  // namespace polis::backend
