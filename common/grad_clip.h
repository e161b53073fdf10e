// Gradient clipping by global L2 norm (training.clip_grad_norm), with the
// semantics of torch.nn.utils.clip_grad_norm_: the gradient is multiplied by
// min(1, max_norm / (norm + 1e-6)), where norm spans every parameter.
// Split in parts because the norm may be the sum of partial squared norms
// from several parameter servers (docs/design/clip-grad-norm.md). Pure
// functions, no allocation.
#pragma once

#include <cstdint>

namespace polis {

// Sum of squares of g[0, n), accumulated in double.
double SquaredNorm(const float* g, int64_t n);
// min(1, max_norm / (norm + 1e-6)): 1 leaves the gradient as it is.
float ClipCoefficient(double norm, double max_norm);
// g[0, n) *= coefficient, unless it is 1.
void ScaleGradient(float* g, int64_t n, float coefficient);
// All three on one buffer that holds the whole gradient; returns the norm
// before clipping.
double ClipByGlobalNorm(float* g, int64_t n, double max_norm);

}  // namespace polis
