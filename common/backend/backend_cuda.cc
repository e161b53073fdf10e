// The CPU and CUDA backend (backend.h): linked into polis-train-cuda and the
// GPU tests; only in builds with POLIS_WITH_CUDA.
#include <cstdlib>

#include "common/backend/backend.h"
#include "common/comm/mpi_transport.h"
#include "common/comm/nccl_communicator.h"
#include "common/device/cuda/cuda_device.h"
#include "common/nn/cuda/cuda_executor.h"

namespace polis::backend {

bool Linked(device::Kind) { return true; }

StatusOr<std::unique_ptr<device::Device>> OpenDevice(device::Kind kind, int local_worker) {
  if (kind == device::Kind::kCpu) return device::CpuDevice();
  const int visible = device::CudaDeviceCount();
  if (visible == 0) return device::OpenCudaDevice(0);  // it says why there is none
  POLIS_ASSIGN_OR_RETURN(const int ordinal,
                         device::LocalDeviceOrdinal(visible, local_worker, [](const char* n) { return std::getenv(n); }));
  return device::OpenCudaDevice(ordinal);
}

StatusOr<std::unique_ptr<nn::Executor>> MakeExecutor(device::Device& dev, const nn::Model& model, int64_t batch,
                                                     device::Span<float> params, device::Span<float> grads,
                                                     const nn::ExecutorOptions& options) {
  if (dev.kind() == device::Kind::kCpu) return nn::MakeCpuExecutor(model, batch, params, grads, options);
  return nn::cuda::MakeCudaExecutor(dev, model, batch, params, grads, options);
}

StatusOr<std::unique_ptr<comm::Communicator>> MakeWorkersCommunicator(device::Device& dev, comm::Transport& transport,
                                                                      int64_t max_count,
                                                                      const std::vector<int>& host_of_rank) {
  if (dev.kind() == device::Kind::kCpu) return transport.WorkersCommunicator(max_count, host_of_rank);
  // NCCL finds the hosts and links itself: host_of_rank is not needed.
  POLIS_ASSIGN_OR_RETURN(MPI_Comm workers, comm::WorkersMpiComm(transport));
  POLIS_ASSIGN_OR_RETURN(std::unique_ptr<comm::NcclCommunicator> nccl,
                         comm::MakeNcclCommunicator(workers, dev.ordinal(), max_count));
  return std::unique_ptr<comm::Communicator>(std::move(nccl));
}

StatusOr<std::unique_ptr<Optimizer>> MakeOptimizer(device::Device& dev, const proto::OptimizerSpec& spec, int64_t n,
                                                   int64_t total_steps_hint) {
  if (dev.kind() == device::Kind::kCpu) return polis::MakeOptimizer(spec, n, total_steps_hint);
  return nn::cuda::MakeCudaOptimizer(spec, n, total_steps_hint);
}

StatusOr<std::unique_ptr<nn::Loss>> MakeLoss(device::Device& dev, const proto::ModelSpec& spec, int64_t n,
                                             int64_t k) {
  if (dev.kind() == device::Kind::kCpu) return nn::MakeCpuLoss(spec, n, k);
  return nn::cuda::MakeCudaLoss(spec, n, k);
}

}  // namespace polis::backend
