#include "common/grad_clip.h"

#include <algorithm>
#include <cmath>

namespace polis {

double SquaredNorm(const float* g, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(g[i]) * g[i];
  return s;
}

float ClipCoefficient(double norm, double max_norm) {
  return static_cast<float>(std::min(1.0, max_norm / (norm + 1e-6)));
}

void ScaleGradient(float* g, int64_t n, float coefficient) {
  if (coefficient == 1.0f) return;
  for (int64_t i = 0; i < n; ++i) g[i] *= coefficient;
}

double ClipByGlobalNorm(float* g, int64_t n, double max_norm) {
  const double norm = std::sqrt(SquaredNorm(g, n));
  ScaleGradient(g, n, ClipCoefficient(norm, max_norm));
  return norm;
}

}  // namespace polis
