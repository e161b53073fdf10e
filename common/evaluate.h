// Evaluation of a model on a range of a dataset's part: summed loss and,
// for classification, correct predictions and a confusion matrix; for
// regression, error sums in the target's original units (MAE, RMSE, MAPE,
// sMAPE). Used by workers at epoch end (validation, or test) and once at
// the end (test), by the coordinator to verify a published artifact, and by
// `polis-train --evaluate`.
#pragma once

#include <functional>
#include <map>
#include <memory>

#include "common/data/dataset.h"
#include "common/device/device.h"
#include "common/nn/executor.h"
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

// Where an evaluator's forward passes run: by default the CPU, on the
// parameters it was given; a worker on a GPU gives its device and a factory
// of inference executors bound to the device's copy of the parameters
// (which the worker keeps current).
struct EvalDevice {
  device::Device* dev = nullptr;
  std::function<StatusOr<std::unique_ptr<nn::Executor>>(int64_t batch)> make;
};

// Inference executors by batch size, bound to one parameter buffer; builds
// each size once and reuses it.
class Evaluator {
 public:
  Evaluator(const nn::Model& model, const proto::ModelSpec& spec, const float* params, int64_t batch,
            EvalDevice device = {});
  // A failure of the device (an executor that cannot be built, a forward
  // that fails) stops the run; TakeError says why.
  EvalResult Run(const data::Dataset& ds, data::Part part, int64_t begin, int64_t end);
  // The first error of the runs since the last call, or OK.
  Status TakeError();

 private:
  StatusOr<nn::Executor*> NetFor(int64_t n);
  // The batch's outputs on the host (copied down from a device).
  StatusOr<const float*> Forward(nn::Executor& net);
  const nn::Model& model_;
  proto::ModelSpec spec_;
  float* params_;
  int64_t batch_;
  EvalDevice device_;
  std::map<int64_t, std::unique_ptr<nn::Executor>> nets_;
  std::vector<int64_t> indices_;
  std::vector<float> targets_, inputs_, outputs_;  // host staging for a device
  Status error_;
};

}  // namespace polis
