// The early-stopping rule of training.early_stopping, and the choice of the
// best epoch for training.restore_best: an epoch improves on the best so far
// when its metric is lower (MIN) or higher (MAX) by more than min_delta (the
// first epoch always does); training stops once `patience` epochs in a row
// have not. The same rule as Keras' EarlyStopping and Lightning's. Used by
// the coordinator on its own thread.
#pragma once

#include <string>

#include "common/proto/job.pb.h"

namespace polis {

class EarlyStopping {
 public:
  explicit EarlyStopping(const proto::TrainingSpec::EarlyStopping& spec);

  // Epoch `epoch` (1-based) measured `value`; returns whether it is the new
  // best. A NaN never improves.
  bool Observe(int epoch, double value);
  bool ShouldStop() const { return bad_epochs_ >= patience_; }
  int best_epoch() const { return best_epoch_; }  // 0 before any epoch
  double best_value() const { return best_value_; }
  const std::string& metric() const { return metric_; }

 private:
  std::string metric_;
  bool maximize_;
  int patience_;
  double min_delta_;
  int best_epoch_ = 0, bad_epochs_ = 0;
  double best_value_ = 0;
};

// The per-epoch figures a job reports, by the names of its metrics.jsonl
// rows: val_* with a validation split, test_* without; *_accuracy for
// classifiers, *_mae / *_rmse / *_mape / *_smape for regression; *_loss for
// both; and train_loss.
bool IsReportedMetric(const std::string& name, bool regression, bool validation);
std::string ReportedMetrics(bool regression, bool validation);

}  // namespace polis
