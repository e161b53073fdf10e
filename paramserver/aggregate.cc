#include "paramserver/aggregate.h"

namespace polis::paramserver {

void AverageInOrder(const float* const* in, size_t k, int64_t n, float inv, float* out) {
  float* __restrict g = out;
  if (k == 1) {
    const float* __restrict a = in[0];
    for (int64_t i = 0; i < n; ++i) g[i] = a[i] * inv;
    return;
  }
  {
    const float* __restrict a = in[0];
    const float* __restrict b = in[1];
    if (k == 2) {
      for (int64_t i = 0; i < n; ++i) g[i] = (a[i] + b[i]) * inv;
      return;
    }
    for (int64_t i = 0; i < n; ++i) g[i] = a[i] + b[i];
  }
  for (size_t j = 2; j + 1 < k; ++j) {
    const float* __restrict a = in[j];
    for (int64_t i = 0; i < n; ++i) g[i] += a[i];
  }
  const float* __restrict a = in[k - 1];
  for (int64_t i = 0; i < n; ++i) g[i] = (g[i] + a[i]) * inv;
}

}  // namespace polis::paramserver
