// TimeSeriesDataset: a CSV time series (bike demand, traffic, energy) turned
// into forecasting windows: `lookback` past steps of F features as input, the
// next `horizon` target values as output.
//
// Open does all the work once: parse, validate, clean by policy, derive
// calendar features, encode categoricals, split by time, standardise
// (fitted on the training split only) and index the windows. Gather is the
// per-step hot path: two memcpy's per window, no allocation, no logging.
// The schema and the policies are in docs/design/timeseries.md.
//
// Rules that keep evaluation honest:
//   * splits are by time (train < validation < test) and a window lies
//     wholly inside one split;
//   * a window's rows are consecutive in time: it never spans a gap;
//   * a forward-filled row may be an input but never a target;
//   * category vocabularies and mean/std come from training rows only.
//
// Immutable after Open: any number of threads may call the const methods.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/proto/job.pb.h"
#include "common/status.h"

namespace polis::data {

// What a trained model needs to transform new rows exactly as training did;
// store it in the model artifact (ToJson) next to the TimeSeriesSpec.
struct TimeSeriesStats {
  std::vector<std::string> feature_names;  // F names, in input order
  // Per feature: x' = (x - mean) / stddev. Features that are not
  // standardised (calendar, one-hot, embedding index, holiday) have 0 / 1.
  std::vector<double> mean;
  std::vector<double> stddev;
  double target_mean = 0;
  double target_stddev = 1;
  // Categories seen in the training split, per categorical feature in spec
  // order. Index 0 is "unknown"; categories[i] has index i + 1.
  struct Vocabulary {
    std::string column;
    std::vector<std::string> categories;
  };
  std::vector<Vocabulary> vocabularies;
  int64_t train_rows = 0;  // rows the statistics were fitted on

  std::string ToJson() const;
  static StatusOr<TimeSeriesStats> FromJson(std::string_view json);
};

class TimeSeriesDataset {
 public:
  // Every problem names the file and line ("hour.csv:1234: column 'temp':
  // 'abc' is not a number"). Under a FAIL policy the first problems are
  // returned as InvalidArgument; under DROP / FORWARD_FILL / KEEP_* they are
  // counted and summarised in report().
  static StatusOr<TimeSeriesDataset> Open(const proto::TimeSeriesSpec& spec);

  enum Split { kTrain = 0, kValidation = 1, kTest = 2 };

  int64_t size(Split s) const { return static_cast<int64_t>(windows_[s].size()); }
  int64_t lookback() const { return lookback_; }
  int64_t horizon() const { return horizon_; }
  int64_t num_features() const { return num_features_; }
  std::vector<int64_t> sample_shape() const { return {lookback_, num_features_}; }
  std::vector<std::string> feature_names() const { return stats_.feature_names; }

  // Writes windows indices[0..n) of split s (each in [0, size(s))) as
  // n x lookback x F standardised floats into x and their targets as
  // n x horizon standardised floats into y. An index out of range is a
  // caller bug and aborts.
  void Gather(Split s, const int64_t* indices, int64_t n, float* x, float* y) const;

  // Standardised target -> original units.
  double TargetToOriginal(double standardised) const {
    return standardised * stats_.target_stddev + stats_.target_mean;
  }

  // Error metrics in original units. MAPE skips zero actuals (mape_count says
  // how many it used; NaN when none); sMAPE counts a pair of zeros as 0.
  // Both are percentages. Everything is NaN when count is 0.
  struct Metrics {
    double mae, rmse, mape, smape;
    int64_t count;
    int64_t mape_count;
  };
  // Baselines over the same windows and horizon as size(s), original units;
  // limit >= 0: over the split's first `limit` windows only (those a
  // test_limit evaluates).
  // SeasonalNaive predicts the value `season` steps before each target (for
  // targets more than one season ahead, whole seasons back until the value
  // lies in the window's inputs); 1 <= season <= lookback, else aborts.
  Metrics SeasonalNaive(Split s, int64_t season = 168, int64_t limit = -1) const;
  // LastValue predicts the window's last input target for every horizon step.
  Metrics LastValue(Split s, int64_t limit = -1) const;
  static Metrics Score(const std::vector<double>& predicted, const std::vector<double>& actual);
  // Both baselines on split s as JSON: {"seasonal_naive_mae": …, "last_value_rmse": …}
  // (season: 168 steps, or the lookback if shorter).
  std::string BaselinesJson(Split s, int64_t limit = -1) const;
  // What a model artifact stores to serve raw rows: stats().ToJson() plus
  // the CSV's header ("header": [names]), so that clients need not repeat it.
  std::string PreprocessingJson() const;

  // Rows read, dropped, filled, gaps, duplicates, split ranges and sizes.
  std::string report() const { return report_; }
  const TimeSeriesStats& stats() const { return stats_; }
  const proto::TimeSeriesSpec& spec() const { return spec_; }

  // Times of window i of split s (seconds since 1970-01-01, naive UTC).
  struct WindowTimes {
    int64_t first_input, last_input, first_target, last_target;
  };
  WindowTimes window_times(Split s, int64_t i) const;
  // The split's time range [begin, end): every window of s lies inside it.
  std::pair<int64_t, int64_t> split_range(Split s) const { return split_range_[s]; }

  // Preprocesses raw rows (CSV fields under `header`, as lines of the
  // source file) exactly as training did: the job's row policies
  // (malformed rows, time order, duplicates, missing values, gaps up to
  // max_fill_steps) turn them into a series, whose last `lookback` steps
  // must be consecutive: lookback x F floats. Rows that give fewer steps, a
  // gap the policies leave as a break, or a row a FAIL policy refuses are
  // an error naming the row ("window row K: ...", K from 1).
  StatusOr<std::vector<float>> PreprocessWindow(
      const std::vector<std::string>& header,
      const std::vector<std::vector<std::string>>& rows) const;

 private:
  TimeSeriesDataset() = default;
  const float* row_x(int64_t row) const { return x_.data() + row * num_features_; }

  proto::TimeSeriesSpec spec_;
  int64_t lookback_ = 0;
  int64_t horizon_ = 0;
  int64_t num_features_ = 0;
  TimeSeriesStats stats_;
  std::vector<int64_t> time_;         // per row, strictly increasing
  std::vector<float> x_;              // rows x F, standardised
  std::vector<float> y_;              // per row, standardised target
  std::vector<double> target_raw_;    // per row, original units
  std::vector<int64_t> windows_[3];   // per split: first row of each window
  std::pair<int64_t, int64_t> split_range_[3];
  std::string report_;
};

// The same transform without the training data, for serving: `stats` as
// stored by training (TimeSeriesStats::FromJson), the job's spec and the
// column names of the rows; the rows go through the same row policies as
// the training file did, and the last `lookback` steps are the window.
//
// Create checks and binds the spec, statistics and header once (the
// registry keeps one per served version); Preprocess then costs only the
// rows. Messages about a row start "window row K: " (K from 1). Immutable:
// any number of threads may call Preprocess.
class WindowPreprocessor {
 public:
  static StatusOr<WindowPreprocessor> Create(const proto::TimeSeriesSpec& spec,
                                             const TimeSeriesStats& stats,
                                             const std::vector<std::string>& header);
  // lookback x features: the values one window preprocesses to.
  int64_t elements() const;
  // One window from CSV lines (one record each, no line end) into
  // elements() floats at `out`.
  Status Preprocess(const std::vector<std::string_view>& lines, float* out) const;
  // The same from rows already split into fields.
  Status Preprocess(const std::vector<std::vector<std::string>>& rows, float* out) const;

 private:
  struct Impl;
  explicit WindowPreprocessor(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const Impl> impl_;
};

// One window, preprocessing bound for this call alone (WindowPreprocessor).
StatusOr<std::vector<float>> PreprocessTimeSeriesWindow(
    const proto::TimeSeriesSpec& spec, const TimeSeriesStats& stats,
    const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows);

// Timestamps: naive (no zone, no DST) seconds since 1970-01-01 00:00:00.
// Format directives: %Y %m %d %H %M %S %y %F (= %Y-%m-%d) %T (= %H:%M:%S)
// %%; any other character matches itself. Returns a sentence on failure.
StatusOr<int64_t> ParseTimestamp(std::string_view text, std::string_view format);
// "2012-10-01 06:00:00"
std::string FormatTimestamp(int64_t seconds);

}  // namespace polis::data
