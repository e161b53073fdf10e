// NcclCommunicator (nccl_communicator.h): NCCL collectives with deadlines.
#include "common/comm/nccl_communicator.h"

#include <nccl.h>

#include <string>

#include "common/comm/mpi_util.h"
#include "common/env.h"
#include "common/log.h"
#include "common/nn/cuda/cuda_util.h"
#include "common/nn/cuda/kernels.h"

namespace polis::comm {

namespace {

namespace k = nn::cuda::k;

Status NcclStatus(ncclResult_t r, const char* expr, const char* file, int line) {
  const std::string what = fmt::format("NCCL {} ({}): {} in {} at {}:{}", ncclGetErrorString(r),
                                       static_cast<int>(r), ncclGetLastError(nullptr), expr, file, line);
  switch (r) {
    case ncclInvalidArgument:
    case ncclInvalidUsage:
      return InvalidArgument("{}", what);
    case ncclRemoteError:
    case ncclSystemError:
      return RemoteError("{}", what);
    default:
      return InternalError("{}", what);
  }
}

#define POLIS_NCCL_CHECK(expr)                                                      \
  do {                                                                              \
    ncclResult_t _polis_r = (expr);                                                 \
    if (_polis_r != ncclSuccess && _polis_r != ncclInProgress)                      \
      return NcclStatus(_polis_r, #expr, __FILE__, __LINE__);                       \
  } while (0)

class NcclComm final : public NcclCommunicator {
 public:
  ~NcclComm() override {
    if (comm_) {
      if (broken_) ncclCommAbort(comm_);
      else ncclCommDestroy(comm_);
    }
    if (stream_) cudaStreamDestroy(stream_);
    if (mpi_ != MPI_COMM_NULL) MPI_Comm_free(&mpi_);
  }

  Status Init(MPI_Comm comm, int device, int64_t max_count) {
    POLIS_MPI_CHECK(MPI_Comm_dup(comm, &mpi_));
    POLIS_MPI_CHECK(MPI_Comm_rank(mpi_, &rank_));
    POLIS_MPI_CHECK(MPI_Comm_size(mpi_, &size_));
    device_ = device;
    POLIS_CUDA_CHECK(cudaSetDevice(device));
    int lo = 0, hi = 0;
    POLIS_CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&lo, &hi));
    POLIS_CUDA_CHECK(cudaStreamCreateWithPriority(&stream_, cudaStreamNonBlocking, hi));
    ncclUniqueId id;
    if (rank_ == 0) POLIS_NCCL_CHECK(ncclGetUniqueId(&id));
    POLIS_MPI_CHECK(MPI_Bcast(&id, sizeof(id), MPI_BYTE, 0, mpi_));
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    POLIS_NCCL_CHECK(ncclCommInitRankConfig(&comm_, size_, id, rank_, &config));
    POLIS_RETURN_IF_ERROR(WaitNccl("ncclCommInitRankConfig"));
    POLIS_RETURN_IF_ERROR(wire_.Allocate(std::max<int64_t>(max_count, 1)));
    POLIS_RETURN_IF_ERROR(one_.AllocateZeroed(1));
    POLIS_LOG(kInfo, kNet, "NCCL communicator: rank {} of {} on device {}, NCCL {}", rank_, size_,
              device_, NCCL_VERSION_CODE);
    return Status::Ok();
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  int device() const override { return device_; }
  cudaStream_t stream() const override { return stream_; }
  AllreduceAlgorithm Choose(int64_t, WireType) const override { return AllreduceAlgorithm::kRing; }

  Status WaitFor(cudaEvent_t ready) override {
    POLIS_CUDA_CHECK(cudaStreamWaitEvent(stream_, ready, 0));
    return Status::Ok();
  }

  Status Allreduce(float* data, int64_t count, const AllreduceOptions& options) override {
    POLIS_RETURN_IF_ERROR(Usable());
    if (count == 0) return Status::Ok();
    if (options.wire == WireType::kFloat32) {
      POLIS_NCCL_CHECK(ncclAllReduce(data, data, count, ncclFloat32, ncclSum, comm_, stream_));
      return Wait("allreduce");
    }
    if (count > wire_.size()) {
      POLIS_LOG(kWarn, kNet, "NCCL all-reduce of {} floats exceeds the preallocated {}; growing",
                count, wire_.size());
      POLIS_CUDA_CHECK(cudaStreamSynchronize(stream_));
      POLIS_RETURN_IF_ERROR(wire_.Allocate(count));
    }
    const bool bf16 = options.wire == WireType::kBFloat16;
    void* w = wire_.get();
    POLIS_CUDA_CHECK(bf16 ? k::FloatToBf16(data, w, count, stream_) : k::FloatToHalf(data, w, count, stream_));
    POLIS_NCCL_CHECK(ncclAllReduce(w, w, count, bf16 ? ncclBfloat16 : ncclFloat16, ncclSum, comm_, stream_));
    POLIS_CUDA_CHECK(bf16 ? k::Bf16ToFloat(w, data, count, stream_) : k::HalfToFloat(w, data, count, stream_));
    return Wait(bf16 ? "allreduce (bf16 wire)" : "allreduce (fp16 wire)");
  }

  Status Broadcast(void* data, int64_t bytes, int root) override {
    POLIS_RETURN_IF_ERROR(Usable());
    if (root < 0 || root >= size_) return InvalidArgument("broadcast root {} of {} ranks", root, size_);
    if (bytes == 0) return Status::Ok();
    POLIS_NCCL_CHECK(ncclBroadcast(data, data, bytes, ncclUint8, root, comm_, stream_));
    return Wait("broadcast");
  }

  Status Allgather(const void* send, void* recv, int64_t bytes_per_rank) override {
    POLIS_RETURN_IF_ERROR(Usable());
    if (bytes_per_rank == 0) return Status::Ok();
    POLIS_NCCL_CHECK(ncclAllGather(send, recv, bytes_per_rank, ncclUint8, comm_, stream_));
    return Wait("allgather");
  }

  Status Barrier() override {
    POLIS_RETURN_IF_ERROR(Usable());
    POLIS_NCCL_CHECK(ncclAllReduce(one_.get(), one_.get(), 1, ncclFloat32, ncclSum, comm_, stream_));
    return Wait("barrier");
  }

 private:
  Status Usable() const {
    if (broken_)
      return FailedPrecondition("the NCCL communicator failed earlier (timeout or remote error)");
    return Status::Ok();
  }

  // Until the non-blocking communicator leaves ncclInProgress.
  Status WaitNccl(const char* what) {
    const auto deadline = DeadlineFromNow();
    Backoff backoff;
    while (true) {
      ncclResult_t st = ncclInProgress;
      POLIS_NCCL_CHECK(ncclCommGetAsyncError(comm_, &st));
      if (st == ncclSuccess) return Status::Ok();
      if (st != ncclInProgress) return Fail(NcclStatus(st, what, __FILE__, __LINE__));
      if (Clock::now() > deadline) return Abort(what);
      backoff.Pause();
    }
  }

  // Until the stream has run the call, checking NCCL's asynchronous errors.
  Status Wait(const char* what) {
    const auto deadline = DeadlineFromNow();
    Backoff backoff;
    while (true) {
      ncclResult_t st = ncclInProgress;
      POLIS_NCCL_CHECK(ncclCommGetAsyncError(comm_, &st));
      if (st != ncclSuccess && st != ncclInProgress)
        return Fail(NcclStatus(st, what, __FILE__, __LINE__));
      if (st == ncclSuccess) {
        cudaError_t q = cudaStreamQuery(stream_);
        if (q == cudaSuccess) return Status::Ok();
        if (q != cudaErrorNotReady)
          return Fail(nn::cuda::CudaStatus(q, "cudaStreamQuery", __FILE__, __LINE__).WithContext(what));
      }
      if (Clock::now() > deadline) return Abort(what);
      backoff.Pause();
    }
  }

  Status Fail(Status st) {
    broken_ = true;
    ncclCommAbort(comm_);
    comm_ = nullptr;
    return st;
  }

  Status Abort(const char* what) {
    broken_ = true;
    ncclCommAbort(comm_);
    comm_ = nullptr;
    return Timeout("NCCL {} did not complete within POLIS_TIMEOUT_S = {} s on rank {} of {} "
                   "(NCCL does not say which peer is missing); communicator aborted",
                   what, env::TimeoutSeconds(), rank_, size_);
  }

  MPI_Comm mpi_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1, device_ = 0;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  bool broken_ = false;
  nn::cuda::DeviceArray<uint16_t> wire_;
  nn::cuda::DeviceArray<float> one_;
};

}  // namespace

StatusOr<int> LocalDevice(MPI_Comm comm) {
  MPI_Comm local;
  POLIS_MPI_CHECK(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &local));
  int local_rank = 0;
  const int rc = MPI_Comm_rank(local, &local_rank);
  MPI_Comm_free(&local);
  POLIS_MPI_CHECK(rc);
  int count = 0;
  POLIS_CUDA_CHECK(cudaGetDeviceCount(&count));
  if (count <= 0) return FailedPrecondition("no CUDA device on this node for local rank {}", local_rank);
  return local_rank % count;
}

StatusOr<std::unique_ptr<NcclCommunicator>> MakeNcclCommunicator(MPI_Comm comm, int device,
                                                                 int64_t max_count) {
  auto c = std::make_unique<NcclComm>();
  POLIS_RETURN_IF_ERROR(c->Init(comm, device, max_count));
  return std::unique_ptr<NcclCommunicator>(std::move(c));
}

}  // namespace polis::comm
