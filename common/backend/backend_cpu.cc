// The CPU-only backend (backend.h): linked into polis-train and the tests.
#include "common/backend/backend.h"

namespace polis::backend {

namespace {

Status NoCuda() {
  return FailedPrecondition(
      "this program has no CUDA backend: run polis-train-cuda (built beside polis-train when Polis is built "
      "with POLIS_WITH_CUDA=ON), or set training.device.kind: CPU");
}

}  // namespace

bool Linked(device::Kind kind) { return kind == device::Kind::kCpu; }

StatusOr<std::unique_ptr<device::Device>> OpenDevice(device::Kind kind, int) {
  if (kind != device::Kind::kCpu) return NoCuda();
  return device::CpuDevice();
}

StatusOr<std::unique_ptr<nn::Executor>> MakeExecutor(device::Device& dev, const nn::Model& model, int64_t batch,
                                                     device::Span<float> params, device::Span<float> grads,
                                                     const nn::ExecutorOptions& options) {
  if (dev.kind() != device::Kind::kCpu) return NoCuda();
  return nn::MakeCpuExecutor(model, batch, params, grads, options);
}

StatusOr<std::unique_ptr<comm::Communicator>> MakeWorkersCommunicator(device::Device& dev, comm::Transport& transport,
                                                                      int64_t max_count,
                                                                      const std::vector<int>& host_of_rank) {
  if (dev.kind() != device::Kind::kCpu) return NoCuda();
  return transport.WorkersCommunicator(max_count, host_of_rank);
}

StatusOr<std::unique_ptr<Optimizer>> MakeOptimizer(device::Device& dev, const proto::OptimizerSpec& spec, int64_t n,
                                                   int64_t total_steps_hint) {
  if (dev.kind() != device::Kind::kCpu) return NoCuda();
  return polis::MakeOptimizer(spec, n, total_steps_hint);
}

StatusOr<std::unique_ptr<nn::Loss>> MakeLoss(device::Device& dev, const proto::ModelSpec& spec, int64_t n,
                                             int64_t k) {
  if (dev.kind() != device::Kind::kCpu) return NoCuda();
  return nn::MakeCpuLoss(spec, n, k);
}

}  // namespace polis::backend
