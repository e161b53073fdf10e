// Evaluation of a model on a range of a dataset's part: summed loss and,
// for classification, correct predictions and a confusion matrix; for
// regression, error sums in the target's original units (MAE, RMSE, MAPE,
// sMAPE). Used by workers at epoch end (validation, or test) and once at
// the end (test), by the coordinator to verify a published artifact, and by
// `polis-train --evaluate`.
#pragma once

#include <map>
#include <memory>

#include "common/data/dataset.h"
#include "common/nn/model.h"
#include "common/proto/control.pb.h"

namespace polis {

struct EvalResult {
  int64_t samples = 0;
  int64_t correct = 0;
  double loss_sum = 0;
  // Regression, original units, over samples × horizon values.
  int64_t values = 0;
  double abs_error_sum = 0, sq_error_sum = 0, ape_sum = 0, sape_sum = 0;
  int64_t ape_count = 0;
  // Classification: classes x classes counts, row = true class, column =
  // predicted (the highest logit, the lowest class on a tie); empty for
  // regression.
  std::vector<int64_t> confusion;

  double accuracy() const { return samples ? static_cast<double>(correct) / samples : 0.0; }
  double loss() const { return samples ? loss_sum / samples : 0.0; }
  double mae() const { return values ? abs_error_sum / values : 0.0; }
  double rmse() const;
  double mape() const { return ape_count ? 100.0 * ape_sum / ape_count : 0.0; }
  double smape() const { return values ? 100.0 * sape_sum / values : 0.0; }
  void Add(const EvalResult& o);
  // Per class: correct / samples of that true class (0 for a class with no
  // samples); empty without a confusion matrix.
  std::vector<double> PerClassAccuracy() const;
};

// EvalResult <-> the sums a worker sends (control.proto EvalSums);
// with_confusion: include the confusion matrix.
void ToSums(const EvalResult& r, bool with_confusion, proto::EvalSums* out);
EvalResult FromSums(const proto::EvalSums& s);

// Inference networks by batch size, bound to one parameter buffer; builds
// each size once and reuses it.
class Evaluator {
 public:
  Evaluator(const nn::Model& model, const proto::ModelSpec& spec, const float* params, int64_t batch);
  EvalResult Run(const data::Dataset& ds, data::Part part, int64_t begin, int64_t end);

 private:
  nn::Network& NetFor(int64_t n);
  const nn::Model& model_;
  proto::ModelSpec spec_;
  float* params_;
  int64_t batch_;
  std::map<int64_t, std::unique_ptr<nn::Network>> nets_;
  std::vector<int64_t> indices_;
  std::vector<float> targets_;
};

}  // namespace polis
