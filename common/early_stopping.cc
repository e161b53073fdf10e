#include "common/early_stopping.h"

#include <cmath>
#include <vector>

namespace polis {

EarlyStopping::EarlyStopping(const proto::TrainingSpec::EarlyStopping& spec)
    : metric_(spec.metric()), maximize_(spec.mode() == proto::TrainingSpec::EarlyStopping::MAX),
      patience_(spec.patience()), min_delta_(spec.min_delta()) {}

bool EarlyStopping::Observe(int epoch, double value) {
  const bool improved = !std::isnan(value) &&
                        (best_epoch_ == 0 || (maximize_ ? value > best_value_ + min_delta_
                                                        : value < best_value_ - min_delta_));
  if (improved) {
    best_epoch_ = epoch;
    best_value_ = value;
    bad_epochs_ = 0;
  } else {
    ++bad_epochs_;
  }
  return improved;
}

namespace {

std::vector<std::string> Metrics(bool regression, bool validation) {
  const std::string p = validation ? "val_" : "test_";
  std::vector<std::string> out = {"train_loss", p + "loss"};
  if (regression)
    for (const char* m : {"mae", "rmse", "mape", "smape"}) out.push_back(p + m);
  else
    out.push_back(p + "accuracy");
  return out;
}

}  // namespace

bool IsReportedMetric(const std::string& name, bool regression, bool validation) {
  for (const std::string& m : Metrics(regression, validation))
    if (m == name) return true;
  return false;
}

std::string ReportedMetrics(bool regression, bool validation) {
  std::string out;
  for (const std::string& m : Metrics(regression, validation)) out += (out.empty() ? "" : ", ") + m;
  return out;
}

}  // namespace polis
