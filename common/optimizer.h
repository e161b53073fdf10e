// Optimizers applied to a flat range of parameters. The same kernels run on a
// parameter server (its key range) and, for all-reduce, on every worker (the
// whole buffer). State (moments) belongs to the object; one thread at a time.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/proto/job.pb.h"
#include "common/status.h"

namespace polis {

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  // params[i] -= update(grads[i]) for i in [0, n); n is fixed at creation.
  virtual void Step(float* params, const float* grads) = 0;
  virtual int64_t step_count() const = 0;
  // Optimizer state as named flat vectors (for checkpoints).
  virtual std::vector<std::pair<std::string, std::vector<float>*>> State() = 0;
};

// Known types: ADAM, SGD. Errors name the field.
StatusOr<std::unique_ptr<Optimizer>> MakeOptimizer(const proto::OptimizerSpec& spec, int64_t n);

// Adam (Kingma & Ba), in PyTorch's form:
//   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
//   p -= lr / (1-b1^t) * m / (sqrt(v / (1-b2^t)) + eps)
void AdamKernel(float* __restrict p, const float* __restrict g, float* __restrict m,
                float* __restrict v, int64_t n, float lr, float b1, float b2, float eps,
                int64_t t, float weight_decay);

}  // namespace polis
