// CSV time series (common/data/timeseries.h, common/data/csv.h): the
// training side (TimeSeriesDataset::Open over a small fixed TimeSeriesSpec,
// then everything a role does with the result) and the serving side (rows
// split one line at a time by SplitCsvLine, preprocessed by
// PreprocessTimeSeriesWindow with stats from the artifact's JSON, and the
// same lines through WindowPreprocessor, which must agree).
//
// Input: one mode byte, then the text. Mode bits 0-1 missing_policy, 2-3
// duplicate_policy, 4 malformed_policy, 5 the categorical encoding, 6 split
// by months instead of explicit starts, 7 the text is stats JSON
// (TimeSeriesStats::FromJson, the artifact's preprocessing_json) applied to
// a fixed valid window instead of a CSV file.
#include <google/protobuf/text_format.h>

#include <algorithm>
#include <cmath>

#include "common/data/csv.h"
#include "common/data/timeseries.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

using polis::proto::TimeSeriesSpec;

constexpr char kSpec[] = R"pb(
  timestamp_column: "ts"
  frequency_seconds: 3600
  target_column: "cnt"
  numeric_features: "temp"
  categorical_features { column: "weather" }
  calendar_features { holiday_column: "holiday" }
  lookback: 3
  horizon: 2
)pb";

TimeSeriesSpec MakeSpec(uint8_t mode, const std::string& path) {
  TimeSeriesSpec spec;
  POLIS_FUZZ_CHECK(google::protobuf::TextFormat::ParseFromString(kSpec, &spec));
  spec.set_path(path);
  spec.set_missing_policy(static_cast<TimeSeriesSpec::Missing::Policy>((mode & 3) % 3));
  spec.set_duplicate_policy(static_cast<TimeSeriesSpec::Duplicate::Policy>((mode >> 2 & 3) % 3));
  spec.set_malformed_policy(static_cast<TimeSeriesSpec::Malformed::Policy>(mode >> 4 & 1));
  spec.mutable_categorical_features(0)->set_encoding(
      static_cast<TimeSeriesSpec::Categorical::Encoding>(mode >> 5 & 1));
  if (mode & 64) {
    spec.set_validation_months(1);
    spec.set_test_months(1);
  } else {
    spec.set_validation_start("2012-01-02");
    spec.set_test_start("2012-01-03 00:00");
  }
  return spec;
}

// What the roles do with an opened dataset; none of it may fail.
void UseDataset(const polis::data::TimeSeriesDataset& ds) {
  using polis::data::TimeSeriesDataset;
  const int64_t lookback = ds.lookback(), horizon = ds.horizon(), f = ds.num_features();
  for (int s = 0; s < 3; ++s) {
    const auto split = static_cast<TimeSeriesDataset::Split>(s);
    const int64_t n = ds.size(split);
    if (n == 0) continue;
    const int64_t idx[2] = {0, n - 1};
    std::vector<float> x(static_cast<size_t>(2 * lookback * f)), y(static_cast<size_t>(2 * horizon));
    ds.Gather(split, idx, 2, x.data(), y.data());
    for (float v : x) POLIS_FUZZ_CHECK(std::isfinite(v));
    for (float v : y) POLIS_FUZZ_CHECK(std::isfinite(v));
    const auto t = ds.window_times(split, n - 1);
    POLIS_FUZZ_CHECK(t.first_input <= t.last_input && t.last_input < t.first_target &&
                     t.first_target <= t.last_target);
    ds.SeasonalNaive(split, lookback);
    ds.LastValue(split);
  }
  auto back = polis::data::TimeSeriesStats::FromJson(ds.stats().ToJson());
  POLIS_FUZZ_CHECK(back.ok() && back->feature_names == ds.stats().feature_names);
}

// The serving path: the first lookback lines after the header, one at a time.
void ServeRows(const TimeSeriesSpec& spec, const polis::data::TimeSeriesStats& stats,
               std::string_view text) {
  std::vector<std::string_view> lines;
  while (!text.empty() && lines.size() < static_cast<size_t>(spec.lookback()) + 1) {
    const size_t nl = text.find('\n');
    lines.push_back(text.substr(0, nl));
    text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
  }
  if (lines.empty()) return;
  auto header = polis::data::SplitCsvLine(lines[0]);
  if (!header.ok()) return;
  std::vector<std::vector<std::string>> rows;
  for (size_t i = 1; i < lines.size(); ++i) {
    auto fields = polis::data::SplitCsvLine(lines[i]);
    if (!fields.ok()) return;
    rows.push_back(std::move(fields).value());
  }
  auto x = polis::data::PreprocessTimeSeriesWindow(spec, stats, *header, rows);
  if (x.ok()) {
    POLIS_FUZZ_CHECK(x->size() == static_cast<size_t>(spec.lookback()) * stats.feature_names.size());
  }
  // The registry's path (the lines themselves, clean windows without the
  // row policies' copies) must give the same floats or the same message.
  auto pre = polis::data::WindowPreprocessor::Create(spec, stats, *header);
  POLIS_FUZZ_CHECK(pre.ok() || !x.ok());
  if (!pre.ok()) return;
  std::vector<float> y(static_cast<size_t>(pre->elements()));
  const polis::Status st = pre->Preprocess(std::vector<std::string_view>(lines.begin() + 1, lines.end()), y.data());
  POLIS_FUZZ_CHECK(st.ok() == x.ok());
  if (x.ok()) {
    POLIS_FUZZ_CHECK(y == *x);
  } else {
    POLIS_FUZZ_CHECK(st.message() == x.status().message());
  }
}

constexpr char kWindow[] =
    "ts,cnt,temp,weather,holiday\n"
    "2012-01-01 00:00:00,16,0.24,clear,0\n"
    "2012-01-01 01:00:00,40,0.22,mist,0\n"
    "2012-01-01 02:00:00,32,0.22,clear,1\n";

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace polis;
  if (size < 1) return 0;
  const uint8_t mode = data[0];
  const std::string_view text = fuzz::AsView(data + 1, size - 1);
  if (mode & 128) {
    const TimeSeriesSpec spec = MakeSpec(mode, "unused.csv");
    auto stats = data::TimeSeriesStats::FromJson(text);
    if (stats.ok()) ServeRows(spec, *stats, kWindow);
    return 0;
  }
  const std::string path = fuzz::WriteScratch("series.csv", text);
  const TimeSeriesSpec spec = MakeSpec(mode, path);
  auto ds = data::TimeSeriesDataset::Open(spec);
  if (!ds.ok()) return 0;
  UseDataset(*ds);
  ServeRows(spec, ds->stats(), text);
  return 0;
}
