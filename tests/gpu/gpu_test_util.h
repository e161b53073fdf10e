// Helpers of the GPU tests (tests/gpu/): the skip-without-a-device guard,
// host <-> device copies, and the error measure the bounds are stated in.
//
// Every GPU test starts with POLIS_REQUIRE_GPU(): on a machine without a
// usable CUDA device it reports itself SKIPPED with the reason (ctest then
// counts it as skipped, never as passed).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "common/nn/cuda/cuda_network.h"
#include "common/nn/cuda/cuda_util.h"

#define POLIS_REQUIRE_GPU()                                                     \
  do {                                                                          \
    std::string _polis_why;                                                     \
    if (!::polis::nn::cuda::DeviceAvailable(&_polis_why))                       \
      GTEST_SKIP() << "no CUDA device: " << _polis_why;                         \
  } while (0)

#define POLIS_ASSERT_OK(expr)                                                   \
  do {                                                                          \
    ::polis::Status _polis_st = (expr);                                         \
    ASSERT_TRUE(_polis_st.ok()) << #expr << " -> " << _polis_st.ToString();     \
  } while (0)

namespace polis::gpu_test {

using nn::cuda::DeviceArray;
using nn::cuda::Precision;

// Normwise relative error, in double: max |got - want| / max |want| (the
// denominator floored at 1e-12, so two zero vectors compare equal).
inline double RelErr(const std::vector<float>& got, const std::vector<float>& want) {
  double diff = 0, scale = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    diff = std::max(diff, std::abs(static_cast<double>(got[i]) - static_cast<double>(want[i])));
    scale = std::max(scale, std::abs(static_cast<double>(want[i])));
  }
  if (got.size() != want.size()) return INFINITY;
  return diff / std::max(scale, 1e-12);
}

// The bounds per precision that each CUDA layer must meet against the CPU
// backend (forward output, parameter gradients, input gradient).
inline double Bound(Precision p) {
  switch (p) {
    case Precision::kFp32: return 1e-4;
    case Precision::kTf32: return 5e-3;
    case Precision::kBf16: return 3e-2;
  }
  return 0;
}

// Copies ordered on `s` (the network's stream, which is non-blocking and so
// not ordered with plain cudaMemcpy), then waits for it.
inline std::vector<float> FromDevice(const float* d, int64_t n, cudaStream_t s = nullptr) {
  std::vector<float> h(n);
  if (n > 0) {
    EXPECT_EQ(cudaMemcpyAsync(h.data(), d, sizeof(float) * n, cudaMemcpyDeviceToHost, s), cudaSuccess);
  }
  EXPECT_EQ(cudaStreamSynchronize(s), cudaSuccess);
  return h;
}

inline void ToDevice(const std::vector<float>& h, float* d, cudaStream_t s = nullptr) {
  if (!h.empty()) {
    EXPECT_EQ(cudaMemcpyAsync(d, h.data(), sizeof(float) * h.size(), cudaMemcpyHostToDevice, s),
              cudaSuccess);
  }
  EXPECT_EQ(cudaStreamSynchronize(s), cudaSuccess);
}

}  // namespace polis::gpu_test
