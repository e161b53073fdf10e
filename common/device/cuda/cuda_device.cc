#include "common/device/cuda/cuda_device.h"

#include <cuda_runtime_api.h>

#include <cstdlib>
#include <cstring>

#include "common/nn/cuda/cuda_util.h"

namespace polis::device {

namespace {

class CudaStream : public Stream {
 public:
  explicit CudaStream(cudaStream_t s) : s_(s) {}
  ~CudaStream() override {
    if (s_) cudaStreamDestroy(s_);
  }
  Status Synchronize() override {
    POLIS_CUDA_CHECK(cudaStreamSynchronize(s_));
    return Status::Ok();
  }
  void* native() const override { return s_; }

 private:
  cudaStream_t s_;
};

cudaStream_t Native(Stream& s) { return static_cast<cudaStream_t>(s.native()); }

cudaEvent_t Native(const Event& e) { return static_cast<cudaEvent_t>(e.native()); }

// An event this device created, destroyed with it.
class CudaEvent : public CudaEventView {
 public:
  explicit CudaEvent(cudaEvent_t e) : CudaEventView(e) {}
  ~CudaEvent() override {
    if (native()) cudaEventDestroy(Native(*this));
  }
};

class Cuda : public Device {
 public:
  Cuda(int ordinal, std::string name, cudaStream_t s) : ordinal_(ordinal), name_(std::move(name)), stream_(s) {}
  Kind kind() const override { return Kind::kCuda; }
  int ordinal() const override { return ordinal_; }
  std::string Describe() const override { return fmt::format("CUDA device {} ({})", ordinal_, name_); }

  StatusOr<Buffer> Allocate(int64_t floats, Space space) override {
    if (floats < 0) return InvalidArgument("cannot allocate {} floats", floats);
    const size_t bytes = sizeof(float) * static_cast<size_t>(floats);
    void* p = nullptr;
    if (bytes == 0) return Buffer(nullptr, 0, space, nullptr);
    POLIS_CUDA_CHECK(cudaSetDevice(ordinal_));
    switch (space) {
      case Space::kDevice:
        POLIS_CUDA_CHECK(cudaMalloc(&p, bytes));
        POLIS_CUDA_CHECK(cudaMemset(p, 0, bytes));
        return Buffer(static_cast<float*>(p), floats, space, [](float* q) { cudaFree(q); });
      case Space::kPinned:
        POLIS_CUDA_CHECK(cudaMallocHost(&p, bytes));
        std::memset(p, 0, bytes);
        return Buffer(static_cast<float*>(p), floats, space, [](float* q) { cudaFreeHost(q); });
      case Space::kHost:
        break;
    }
    p = std::calloc(static_cast<size_t>(floats), sizeof(float));
    if (!p) return FailedPrecondition("cannot allocate {} bytes of host memory", bytes);
    return Buffer(static_cast<float*>(p), floats, space, [](float* q) { std::free(q); });
  }

  StatusOr<std::unique_ptr<Stream>> NewStream() override {
    POLIS_CUDA_CHECK(cudaSetDevice(ordinal_));
    cudaStream_t s = nullptr;
    POLIS_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    return std::unique_ptr<Stream>(new CudaStream(s));
  }

  StatusOr<std::unique_ptr<Event>> NewEvent() override {
    POLIS_CUDA_CHECK(cudaSetDevice(ordinal_));
    cudaEvent_t e = nullptr;
    POLIS_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    return std::unique_ptr<Event>(new CudaEvent(e));
  }

  Status Copy(Span<float> dst, Span<const float> src, Stream& s) override {
    if (dst.size != src.size) return InvalidArgument("copy of {} floats into {}", src.size, dst.size);
    if (dst.size == 0) return Status::Ok();
    POLIS_CUDA_CHECK(
        cudaMemcpyAsync(dst.data, src.data, sizeof(float) * dst.size, cudaMemcpyDefault, Native(s)));
    return Status::Ok();
  }

  Status Zero(Span<float> dst, Stream& s) override {
    if (dst.size == 0) return Status::Ok();
    POLIS_CUDA_CHECK(cudaMemsetAsync(dst.data, 0, sizeof(float) * dst.size, Native(s)));
    return Status::Ok();
  }

  Status Pin(float* data, int64_t floats) override {
    if (floats == 0) return Status::Ok();
    POLIS_CUDA_CHECK(cudaHostRegister(data, sizeof(float) * floats, cudaHostRegisterDefault));
    return Status::Ok();
  }

  Status MakeCurrent() override {
    POLIS_CUDA_CHECK(cudaSetDevice(ordinal_));
    return Status::Ok();
  }

  Status Unpin(float* data) override {
    POLIS_CUDA_CHECK(cudaHostUnregister(data));
    return Status::Ok();
  }

  Stream& stream() override { return stream_; }

 private:
  const int ordinal_;
  const std::string name_;
  CudaStream stream_;
};

}  // namespace

Status CudaEventView::Record(Stream& s) {
  POLIS_CUDA_CHECK(cudaEventRecord(Native(*this), Native(s)));
  return Status::Ok();
}

Status CudaEventView::MakeWait(Stream& s) {
  POLIS_CUDA_CHECK(cudaStreamWaitEvent(Native(s), Native(*this), 0));
  return Status::Ok();
}

Status CudaEventView::Synchronize() {
  POLIS_CUDA_CHECK(cudaEventSynchronize(Native(*this)));
  return Status::Ok();
}

int CudaDeviceCount() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error of a machine without a driver
    return 0;
  }
  return n;
}

StatusOr<std::unique_ptr<Device>> OpenCudaDevice(int ordinal) {
  std::string why;
  if (!nn::cuda::DeviceAvailable(&why)) return FailedPrecondition("no usable CUDA device: {}", why);
  if (ordinal < 0 || ordinal >= CudaDeviceCount())
    return FailedPrecondition("CUDA device {} does not exist; this process sees {}", ordinal, CudaDeviceCount());
  POLIS_CUDA_CHECK(cudaSetDevice(ordinal));
  cudaDeviceProp prop{};
  POLIS_CUDA_CHECK(cudaGetDeviceProperties(&prop, ordinal));
  cudaStream_t s = nullptr;
  POLIS_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  return std::unique_ptr<Device>(new Cuda(ordinal, prop.name, s));
}

}  // namespace polis::device
