// DpStep: one DP-SGD step's local part on a worker (docs/design/privacy.md):
// draw this worker's part of the step's Poisson sample, run forward and the
// clipped backward (nn::Network::BackwardClipped) over it in chunks, and
// leave Σ_n min(1, C/‖g_n‖) g_n in the gradient buffer. The noise and the
// division by the expected batch happen once per global step after the
// sum over workers (AllReduceSync, or the parameter servers).
//
// Thread-safety: one training thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "common/data/dataset.h"
#include "common/nn/model.h"
#include "common/privacy/dp_plan.h"
#include "common/proto/job.pb.h"

namespace polis::worker {

class DpStep {
 public:
  // batch: training.batch_size (this worker's expected part of a step).
  DpStep(const nn::Model& model, const proto::ModelSpec& spec, const privacy::DpPlan& plan, int worker,
         int workers, int64_t batch, float* params, float* grads, bool bf16 = false);
  ~DpStep();

  struct Result {
    int64_t samples = 0;  // examples this worker drew for the step (may be 0)
    double loss_sum = 0;
    int64_t correct = 0;
  };
  // Step `step` (the job's global step count). `sampled` receives the
  // dataset indices drawn (for the test sample log).
  Result Run(int64_t step, const data::Dataset& ds, const std::function<void(int)>& before_layer,
             std::vector<int64_t>* sampled);
  // Rows per Network pass: the expected part plus four standard deviations,
  // so a step is almost always one pass.
  int64_t chunk() const { return chunk_; }

 private:
  const nn::Model& model_;
  const proto::ModelSpec& spec_;
  const privacy::DpPlan& plan_;
  const int worker_, workers_;
  const int64_t P_, K_, chunk_;
  float* grads_;
  std::unique_ptr<nn::Network> net_;
  std::vector<float> sum_;  // several passes' clipped sums (sized on first need)
  std::vector<float> targets_;
};

}  // namespace polis::worker
