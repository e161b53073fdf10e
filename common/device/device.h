// Devices a network runs on, with no CUDA in this header (docs/design/gpu.md,
// "One training loop, two devices"): a device kind, memory spaces, spans
// that carry their space (host-vs-device is never implicit), owned buffers,
// streams and events. The CPU device's streams and events complete at once;
// the CUDA device (common/device/cuda/) wraps the runtime's.
//
// Thread-safety: a Device may be shared; a Stream or Event is used by one
// thread at a time.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "common/status.h"

namespace polis::device {

enum class Kind { kCpu, kCuda };
// FP32: fp32 arithmetic. TF32: fp32 storage, TF32 tensor-core products
// (CUDA only). BF16: fp32 master weights and storage, bf16 products with
// fp32 accumulation.
enum class Precision { kFp32, kTf32, kBf16 };
// kHost: pageable host memory; kPinned: page-locked host memory a device can
// copy from asynchronously (plain host memory on the CPU device); kDevice:
// the device's own memory (host memory on the CPU device).
enum class Space { kHost, kPinned, kDevice };

const char* KindName(Kind k);            // "CPU", "CUDA"
const char* PrecisionName(Precision p);  // "FP32", "TF32", "BF16"
const char* SpaceName(Space s);          // "host", "pinned host", "device"

// `size` elements at `data`, in memory space `space`.
template <typename T>
struct Span {
  T* data = nullptr;
  int64_t size = 0;
  Space space = Space::kHost;

  Span<T> sub(int64_t offset, int64_t n) const { return {data + offset, n, space}; }
  operator Span<const T>() const { return {data, size, space}; }  // NOLINT: like T* -> const T*
};

// Host memory the CPU can read and write directly.
template <typename T>
Span<T> HostSpan(T* data, int64_t size) {
  return {data, size, Space::kHost};
}

class Stream {
 public:
  virtual ~Stream() = default;
  // Until everything enqueued so far has run; a device error as Internal.
  virtual Status Synchronize() = 0;
  // cudaStream_t on CUDA, nullptr on the CPU.
  virtual void* native() const = 0;
};

class Event {
 public:
  virtual ~Event() = default;
  // Marks the point `stream` has reached.
  virtual Status Record(Stream& stream) = 0;
  // Work enqueued on `stream` after this waits for the recorded point (no
  // host wait).
  virtual Status MakeWait(Stream& stream) = 0;
  // The host waits for the recorded point.
  virtual Status Synchronize() = 0;
  // cudaEvent_t on CUDA, nullptr on the CPU.
  virtual void* native() const = 0;
};

// Owned memory of one space, freed by the device that allocated it.
class Buffer {
 public:
  Buffer() = default;
  Buffer(float* data, int64_t size, Space space, std::function<void(float*)> free)
      : data_(data), size_(size), space_(space), free_(std::move(free)) {}
  ~Buffer() { Reset(); }
  Buffer(Buffer&& o) noexcept { *this = std::move(o); }
  Buffer& operator=(Buffer&& o) noexcept {
    if (this != &o) {
      Reset();
      data_ = o.data_, size_ = o.size_, space_ = o.space_, free_ = std::move(o.free_);
      o.data_ = nullptr, o.size_ = 0, o.free_ = nullptr;
    }
    return *this;
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  Span<float> span() const { return {data_, size_, space_}; }
  float* data() const { return data_; }
  int64_t size() const { return size_; }

 private:
  void Reset() {
    if (data_ && free_) free_(data_);
    data_ = nullptr;
  }
  float* data_ = nullptr;
  int64_t size_ = 0;
  Space space_ = Space::kHost;
  std::function<void(float*)> free_;
};

class Device {
 public:
  virtual ~Device() = default;
  virtual Kind kind() const = 0;
  virtual int ordinal() const = 0;
  // "CPU" or "CUDA device 0 (NVIDIA H100 80GB HBM3)".
  virtual std::string Describe() const = 0;
  // `floats` floats of `space`, zeroed.
  virtual StatusOr<Buffer> Allocate(int64_t floats, Space space) = 0;
  virtual StatusOr<std::unique_ptr<Stream>> NewStream() = 0;
  virtual StatusOr<std::unique_ptr<Event>> NewEvent() = 0;
  // Enqueues dst <- src on `stream` (sizes must match; any pair of spaces).
  // A copy from kHost memory may complete before it returns.
  virtual Status Copy(Span<float> dst, Span<const float> src, Stream& stream) = 0;
  // Enqueues dst <- 0 on `stream`.
  virtual Status Zero(Span<float> dst, Stream& stream) = 0;
  // Page-locks existing host memory so copies from and to it run
  // asynchronously (a no-op on the CPU); Unpin before it is freed.
  virtual Status Pin(float* data, int64_t floats) = 0;
  virtual Status Unpin(float* data) = 0;
  // Makes this device the calling thread's current one (CUDA keeps one per
  // thread; a thread that launches work for the device calls it first).
  virtual Status MakeCurrent() = 0;
  // The stream the device's executors, losses and optimizers use unless
  // given another.
  virtual Stream& stream() = 0;
};

// The CPU device (oneDNN runs on it); always available.
std::unique_ptr<Device> CpuDevice();

// Which GPU a worker uses, among the `visible` devices (the CUDA runtime
// already renumbers those CUDA_VISIBLE_DEVICES lists from 0): its index
// among the workers on its host, `local_worker` (comm::Transport::
// LocalWorkerIndex; the coordinator and servers share hosts with workers
// but use no GPU). When that is not known (-1), the process's local rank:
// OMPI_COMM_WORLD_LOCAL_RANK or SLURM_LOCALID (0 when neither is set). More
// workers on a host than devices is refused: NCCL cannot run two ranks on
// one GPU. `getenv` is a parameter for tests.
StatusOr<int> LocalDeviceOrdinal(int visible, int local_worker,
                                 const std::function<const char*(const char*)>& getenv);

}  // namespace polis::device
