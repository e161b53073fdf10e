// Boundary wrappers for the CUDA libraries (STYLE.md habit 4): each foreign
// call is checked once, where it is made, and a failure becomes a Status
// naming the library, its code and message, the expression and file:line.
// Also DeviceArray, an owning cudaMalloc'd buffer sized once at setup.
//
// Internal to the CUDA backend (common/nn/cuda/, common/comm/nccl_*).
// Thread-safety: macros and values only; a DeviceArray belongs to one owner.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>

#include <cstdint>
#include <string>
#include <utility>

#include "common/status.h"

namespace polis::nn::cuda {

Status CudaStatus(cudaError_t e, const char* expr, const char* file, int line);
Status CudnnStatus(cudnnStatus_t e, const char* expr, const char* file, int line);
Status CublasStatus(cublasStatus_t e, const char* expr, const char* file, int line);

// True when a CUDA device is usable; otherwise *why says what was found
// ("cudaGetDeviceCount: no CUDA-capable device is detected").
bool DeviceAvailable(std::string* why = nullptr);

// An owning device buffer of `count` T, allocated once (plain cudaMalloc).
template <typename T>
class DeviceArray {
 public:
  DeviceArray() = default;
  ~DeviceArray() { Reset(); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  DeviceArray(DeviceArray&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)), count_(o.count_) {}
  DeviceArray& operator=(DeviceArray&& o) noexcept {
    if (this != &o) {
      Reset();
      ptr_ = std::exchange(o.ptr_, nullptr);
      count_ = o.count_;
    }
    return *this;
  }
  // Frees any previous buffer; count 0 leaves it empty. Contents undefined.
  Status Allocate(int64_t count) {
    Reset();
    count_ = count;
    if (count <= 0) return Status::Ok();
    cudaError_t e = cudaMalloc(reinterpret_cast<void**>(&ptr_), sizeof(T) * static_cast<size_t>(count));
    if (e != cudaSuccess) {
      ptr_ = nullptr;
      return CudaStatus(e, "cudaMalloc", __FILE__, __LINE__)
          .WithContext(fmt::format("allocating {} bytes", sizeof(T) * count));
    }
    return Status::Ok();
  }
  // Allocate, then zero every byte (synchronously: setup only).
  Status AllocateZeroed(int64_t count) {
    POLIS_RETURN_IF_ERROR(Allocate(count));
    if (count > 0) {
      cudaError_t e = cudaMemset(ptr_, 0, sizeof(T) * count);
      if (e != cudaSuccess) return CudaStatus(e, "cudaMemset", __FILE__, __LINE__);
    }
    return Status::Ok();
  }
  void Reset() {
    if (ptr_) cudaFree(ptr_);
    ptr_ = nullptr;
    count_ = 0;
  }
  T* get() const { return ptr_; }
  int64_t size() const { return count_; }

 private:
  T* ptr_ = nullptr;
  int64_t count_ = 0;
};

}  // namespace polis::nn::cuda

#define POLIS_CUDA_CHECK(expr)                                                        \
  do {                                                                                \
    cudaError_t _polis_e = (expr);                                                    \
    if (_polis_e != cudaSuccess)                                                      \
      return ::polis::nn::cuda::CudaStatus(_polis_e, #expr, __FILE__, __LINE__);      \
  } while (0)
#define POLIS_CUDNN_CHECK(expr)                                                       \
  do {                                                                                \
    cudnnStatus_t _polis_e = (expr);                                                  \
    if (_polis_e != CUDNN_STATUS_SUCCESS)                                             \
      return ::polis::nn::cuda::CudnnStatus(_polis_e, #expr, __FILE__, __LINE__);     \
  } while (0)
#define POLIS_CUBLAS_CHECK(expr)                                                      \
  do {                                                                                \
    cublasStatus_t _polis_e = (expr);                                                 \
    if (_polis_e != CUBLAS_STATUS_SUCCESS)                                            \
      return ::polis::nn::cuda::CublasStatus(_polis_e, #expr, __FILE__, __LINE__);    \
  } while (0)
// After a kernel launch: a bad launch configuration is reported here.
#define POLIS_CUDA_CHECK_LAUNCH() POLIS_CUDA_CHECK(cudaGetLastError())
