// The CUDA device (device.h) over the CUDA runtime. Part of polis_nn_cuda;
// this header has no CUDA in it.
#pragma once

#include <memory>

#include "common/device/device.h"

namespace polis::device {

// Devices this process sees (0 without a driver or a GPU).
int CudaDeviceCount();
// Device `ordinal` (made current on this thread); FailedPrecondition naming
// why when there is none usable.
StatusOr<std::unique_ptr<Device>> OpenCudaDevice(int ordinal);

}  // namespace polis::device
