// The CUDA device (device.h) over the CUDA runtime. Part of polis_nn_cuda;
// this header has no CUDA in it.
#pragma once

#include <memory>

#include "common/device/device.h"

namespace polis::device {

// A device::Event over a cudaEvent_t (passed as void*: no CUDA in this
// header) that someone else owns, e.g. a CudaNetwork's per-layer events;
// Reset points it at another.
class CudaEventView : public Event {
 public:
  explicit CudaEventView(void* event = nullptr) : e_(event) {}
  void Reset(void* event) { e_ = event; }
  Status Record(Stream& stream) override;
  Status MakeWait(Stream& stream) override;
  Status Synchronize() override;
  void* native() const override { return e_; }

 private:
  void* e_;
};

// Devices this process sees (0 without a driver or a GPU).
int CudaDeviceCount();
// Device `ordinal` (made current on this thread); FailedPrecondition naming
// why when there is none usable.
StatusOr<std::unique_ptr<Device>> OpenCudaDevice(int ordinal);

}  // namespace polis::device
