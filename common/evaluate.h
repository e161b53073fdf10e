// Test-set evaluation of a model on a range of an image dataset: summed loss
// and correct predictions. Used by workers at epoch end, by the coordinator
// to verify a published artifact, and by `polis-train --evaluate`.
#pragma once

#include <map>
#include <memory>

#include "common/data/image_dataset.h"
#include "common/nn/model.h"

namespace polis {

struct EvalResult {
  int64_t samples = 0;
  int64_t correct = 0;
  double loss_sum = 0;
  double accuracy() const { return samples ? static_cast<double>(correct) / samples : 0.0; }
  double loss() const { return samples ? loss_sum / samples : 0.0; }
};

// Inference networks by batch size, bound to one parameter buffer; builds
// each size once and reuses it.
class Evaluator {
 public:
  Evaluator(const nn::Model& model, const float* params, int64_t batch);
  EvalResult Run(const data::ImageDataset& ds, int64_t begin, int64_t end);

 private:
  nn::Network& NetFor(int64_t n);
  const nn::Model& model_;
  float* params_;
  int64_t batch_;
  std::map<int64_t, std::unique_ptr<nn::Network>> nets_;
  std::vector<int64_t> indices_;
  std::vector<int32_t> labels_;
};

}  // namespace polis
