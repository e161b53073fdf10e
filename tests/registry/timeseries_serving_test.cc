// Serving a time-series forecaster from raw CSV rows: the server applies the
// artifact's TimeSeriesStats (PreprocessTimeSeriesWindow), runs the model and
// answers in the target's original units.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>

#include <fmt/ranges.h>

#include "common/data/timeseries.h"
#include "registry/image_input.h"
#include "registry/model_card.h"
#include "tests/registry/registry_test_util.h"

namespace polis::registry {
namespace {

using namespace testing;  // NOLINT

constexpr int64_t kLookback = 4;
constexpr char kHeaderLine[] = "time,temp,weather,demand";

// SequencePool (last step) -> Dense(1): a regression model on lookback x F
// windows.
constexpr char kForecaster[] = R"(
  loss: MSE
  layer { type: "SequencePool" }
  layer { type: "Dense" dense_param { units: 1 } }
)";

std::vector<std::string> Split(const std::string& line) {
  std::vector<std::string> out;
  size_t at = 0;
  while (true) {
    const size_t c = line.find(',', at);
    out.push_back(line.substr(at, c == std::string::npos ? std::string::npos : c - at));
    if (c == std::string::npos) break;
    at = c + 1;
  }
  return out;
}

class TimeSeriesServingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // 48 hourly rows.
    for (int i = 0; i < 48; ++i)
      lines_.push_back(fmt::format("2024-01-0{} {:02}:00:00,{:.1f},{},{:.2f}", 1 + i / 24, i % 24,
                                   10 + (i % 5) * 0.7, i % 3 == 0 ? "sun" : "rain",
                                   100 + 20 * std::sin(i / 3.0) + i));
    csv_ = data_.path() + "/series.csv";
    {
      std::ofstream f(csv_);
      f << kHeaderLine << "\n";
      for (const auto& l : lines_) f << l << "\n";
    }
    spec_.set_path(csv_);
    spec_.set_timestamp_column("time");
    spec_.set_target_column("demand");
    spec_.add_numeric_features("temp");
    spec_.add_categorical_features()->set_column("weather");
    spec_.mutable_calendar_features()->set_weekday(false);
    spec_.mutable_calendar_features()->set_month(false);
    spec_.set_lookback(kLookback);
    spec_.set_horizon(1);
    auto ds = data::TimeSeriesDataset::Open(spec_);
    ASSERT_TRUE(ds.ok()) << ds.status().ToString();
    stats_ = ds->stats();
    ASSERT_GT(ds->size(data::TimeSeriesDataset::kTrain), 0);
    ASSERT_NE(stats_.target_stddev, 1.0);  // un-standardising must matter

    const nn::Shape in = {ds->lookback(), ds->num_features()};
    art_ = MakeArtifact(kForecaster, in, 7);
    proto::DatasetSpec& d = *art_.header.mutable_job()->mutable_dataset();
    d.set_format(proto::DatasetSpec::CSV);
    *d.mutable_timeseries() = spec_;
    // "ts" records the training header next to the stats; "ts-plain" does not.
    json with_header = json::parse(stats_.ToJson());
    with_header["header"] = Split(kHeaderLine);
    art_.header.set_preprocessing_json(with_header.dump());
    ASSERT_EQ(Publish(root_.path(), "ts", art_), 1);
    ModelArtifact plain = art_;
    plain.header.set_preprocessing_json(stats_.ToJson());
    ASSERT_EQ(Publish(root_.path(), "ts-plain", plain), 1);
  }

  // Rows [first, first + n) of the file.
  std::vector<std::string> Rows(int first, int n = kLookback) const {
    return std::vector<std::string>(lines_.begin() + first, lines_.begin() + first + n);
  }

  // What the server should answer for one window: the same Network on
  // PreprocessTimeSeriesWindow's output, un-standardised.
  double Expected(const std::vector<std::string>& rows) const {
    std::vector<std::vector<std::string>> fields;
    for (const auto& r : rows) fields.push_back(Split(r));
    auto x = data::PreprocessTimeSeriesWindow(spec_, stats_, Split(kHeaderLine), fields);
    EXPECT_TRUE(x.ok()) << x.status().ToString();
    if (!x.ok()) return NAN;
    const std::vector<float> y = ReferenceLogits(art_, *x);
    return y[0] * stats_.target_stddev + stats_.target_mean;
  }

  static json RowsBody(const json& data, const json& shape, const json* header = nullptr) {
    json inputs = json::array({json{{"name", "rows"}, {"datatype", "BYTES"}, {"shape", shape},
                                    {"data", data}}});
    if (header)
      inputs.push_back(json{{"name", "header"}, {"datatype", "BYTES"},
                            {"shape", json::array({static_cast<int64_t>(header->size())})},
                            {"data", *header}});
    return json{{"inputs", inputs}};
  }

  TempDir data_, root_;
  std::string csv_;
  std::vector<std::string> lines_;
  proto::TimeSeriesSpec spec_;
  data::TimeSeriesStats stats_;
  ModelArtifact art_;
};

TEST_F(TimeSeriesServingTest, RawRowsGivePredictionsInOriginalUnits) {
  ServerHarness h(root_.path());
  HttpClient c = h.Client();

  // One window, header from the artifact.
  auto r = Call(c, "POST", "/v2/models/ts/infer", RowsBody(Rows(10), {kLookback}).dump());
  ASSERT_EQ(r.status, 200) << r.body;
  json j = ParseJson(r);
  ASSERT_EQ(j["outputs"].size(), 1u);
  EXPECT_EQ(j["outputs"][0]["name"], "predictions");
  EXPECT_EQ(j["outputs"][0]["shape"], json::array({1, 1}));
  std::vector<float> p = OutputData(j, "predictions");
  ASSERT_EQ(p.size(), 1u);
  EXPECT_NEAR(p[0], Expected(Rows(10)), 1e-4 * std::max(1.0, std::abs(Expected(Rows(10)))));

  // A batch of two windows, nested data, explicit header (one CSV line).
  const json header = json::array({kHeaderLine});
  json nested = json::array({Rows(3), Rows(30)});
  r = Call(c, "POST", "/v2/models/ts-plain/versions/1/infer",
           RowsBody(nested, {2, kLookback}, &header).dump());
  ASSERT_EQ(r.status, 200) << r.body;
  j = ParseJson(r);
  EXPECT_EQ(j["outputs"][0]["shape"], json::array({2, 1}));
  p = OutputData(j, "predictions");
  ASSERT_EQ(p.size(), 2u);
  EXPECT_NEAR(p[0], Expected(Rows(3)), 1e-4 * std::max(1.0, std::abs(Expected(Rows(3)))));
  EXPECT_NEAR(p[1], Expected(Rows(30)), 1e-4 * std::max(1.0, std::abs(Expected(Rows(30)))));

  // The float path still takes preprocessed windows and answers standardised.
  std::vector<std::vector<std::string>> fields;
  for (const auto& l : Rows(10)) fields.push_back(Split(l));
  auto x = data::PreprocessTimeSeriesWindow(spec_, stats_, Split(kHeaderLine), fields);
  ASSERT_TRUE(x.ok());
  nn::Shape sample(art_.header.input_shape().begin(), art_.header.input_shape().end());
  r = Call(c, "POST", "/v2/models/ts/infer", InferBody(*x, 1, sample).dump());
  ASSERT_EQ(r.status, 200) << r.body;
  p = OutputData(ParseJson(r), "predictions");
  ASSERT_EQ(p.size(), 1u);
  EXPECT_NEAR(p[0], ReferenceLogits(art_, *x)[0], 1e-4);

  // Metadata lists the raw-rows input.
  r = Call(c, "GET", "/v2/models/ts");
  ASSERT_EQ(r.status, 200) << r.body;
  j = ParseJson(r);
  bool found = false;
  for (const auto& in : j["inputs"])
    if (in["name"] == "rows") {
      found = true;
      EXPECT_EQ(in["datatype"], "BYTES");
      EXPECT_EQ(in["shape"], json::array({-1, kLookback}));
    }
  EXPECT_TRUE(found) << j.dump();
  const json& ts = j["parameters"]["timeseries"];
  EXPECT_EQ(ts["lookback"], kLookback);
  // Enough for a client to write rows and to read the FP32 path's answer in
  // the target's units.
  EXPECT_EQ(ts["timestamp_format"], "%Y-%m-%d %H:%M:%S");
  EXPECT_TRUE(ts["hour_column"].is_null());
  EXPECT_DOUBLE_EQ(ts["target_mean"].get<double>(), stats_.target_mean);
  EXPECT_DOUBLE_EQ(ts["target_stddev"].get<double>(), stats_.target_stddev);
  EXPECT_NEAR(p[0] * ts["target_stddev"].get<double>() + ts["target_mean"].get<double>(),
              Expected(Rows(10)), 1e-4 * std::max(1.0, std::abs(Expected(Rows(10)))));
}

// `polis-registry predict --csv`: the windows of a split of the training
// file, cut as training cut them, and the served model's outputs for them
// (what registry/tools/check_onnx.py compares an ONNX export with).
// Explaining a forecast asked with raw rows answers in the target's units,
// as infer does (attributions scaled with it, still summing to prediction -
// baseline), and names the input's features; the FP32 window answers
// standardised.
TEST_F(TimeSeriesServingTest, ExplanationsOfRawRowsAreInTheTargetsUnits) {
  ServerOptions o;
  o.allow_anonymous_explain = true;
  ServerHarness h(root_.path(), o);
  HttpClient c = h.Client();
  json body = RowsBody(Rows(10), {kLookback});
  body["parameters"] = {{"steps", 64}};
  auto r = Call(c, "POST", "/v2/models/ts/explain", body.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  const json j = ParseJson(r);
  EXPECT_EQ(j["units"], "target");
  EXPECT_EQ(j["feature_names"], json(stats_.feature_names));
  const json& e = j["explanations"][0];
  const double want = Expected(Rows(10));
  EXPECT_NEAR(e["prediction"].get<double>(), want, 1e-4 * std::max(1.0, std::abs(want)));
  double ig = 0;
  for (const auto& v : e["integrated_gradients"]["data"]) ig += v.get<double>();
  const double delta = e["convergence_delta"].get<double>();
  EXPECT_NEAR(ig - (e["prediction"].get<double>() - e["baseline_prediction"].get<double>()), delta,
              1e-3 * std::max(1.0, std::abs(want)));
  EXPECT_EQ(e["integrated_gradients"]["shape"], json::array({kLookback, static_cast<int64_t>(stats_.feature_names.size())}));

  // The same window as FP32: standardised, attributions smaller by stddev.
  std::vector<std::vector<std::string>> fields;
  for (const auto& l : Rows(10)) fields.push_back(Split(l));
  auto x = data::PreprocessTimeSeriesWindow(spec_, stats_, Split(kHeaderLine), fields);
  ASSERT_TRUE(x.ok());
  nn::Shape sample(art_.header.input_shape().begin(), art_.header.input_shape().end());
  json fp = InferBody(*x, 1, sample);
  fp["parameters"] = {{"steps", 64}};
  auto s = Call(c, "POST", "/v2/models/ts/explain", fp.dump());
  ASSERT_EQ(s.status, 200) << s.body;
  const json js = ParseJson(s);
  EXPECT_EQ(js["units"], "standardised");
  const json& es = js["explanations"][0];
  EXPECT_NEAR(es["prediction"].get<double>(), ReferenceLogits(art_, *x)[0], 1e-4);
  const double sd = stats_.target_stddev;
  for (size_t i = 0; i < es["saliency"]["data"].size(); i += 7)
    EXPECT_NEAR(e["saliency"]["data"][i].get<double>(), es["saliency"]["data"][i].get<double>() * sd,
                1e-3 * std::max(1.0, std::abs(e["saliency"]["data"][i].get<double>())))
        << i;
}

TEST_F(TimeSeriesServingTest, PredictCsvWritesASplitsWindowsAndTheirOutputs) {
  const std::string bin = std::string(POLIS_BINARY_DIR) + "/registry/polis-registry";
  const std::string out = data_.path() + "/out.f32", win = data_.path() + "/windows.f32",
                    times = data_.path() + "/times.txt";
  CtlRun run = Sh(bin + " predict --root " + root_.path() + " ts --csv " + csv_ + " --split train --batch 3 --out " +
                  out + " --windows-out " + win + " --times-out " + times);
  ASSERT_EQ(run.exit_code, 0) << run.out << run.err;
  auto ds = data::TimeSeriesDataset::Open(spec_);
  ASSERT_TRUE(ds.ok());
  const int64_t n = ds->size(data::TimeSeriesDataset::kTrain), per = kLookback * ds->num_features();
  const json summary = json::parse(run.out, nullptr, false);
  ASSERT_TRUE(summary.is_object()) << run.out;
  EXPECT_EQ(summary["windows"], n);
  EXPECT_EQ(summary["split"], "train");

  auto floats = [](const std::string& path) {
    auto bytes = ReadFile(path);
    EXPECT_TRUE(bytes.ok()) << path;
    std::vector<float> v(bytes.ok() ? bytes->size() / sizeof(float) : 0);
    if (!v.empty()) std::memcpy(v.data(), bytes->data(), v.size() * sizeof(float));
    return v;
  };
  const std::vector<float> xs = floats(win), ys = floats(out);
  ASSERT_EQ(static_cast<int64_t>(xs.size()), n * per);
  ASSERT_EQ(static_cast<int64_t>(ys.size()), n);
  std::vector<std::string> lines;
  {
    std::ifstream f(times);
    for (std::string l; std::getline(f, l);) lines.push_back(l);
  }
  ASSERT_EQ(static_cast<int64_t>(lines.size()), n);
  for (int64_t i = 0; i < n; ++i) {
    std::vector<float> x(per), y(1);
    ds->Gather(data::TimeSeriesDataset::kTrain, &i, 1, x.data(), y.data());
    EXPECT_TRUE(std::equal(x.begin(), x.end(), xs.begin() + i * per)) << "window " << i;
    EXPECT_NEAR(ys[i], ReferenceLogits(art_, x)[0], 1e-5) << "window " << i;
    EXPECT_EQ(lines[i], data::FormatTimestamp(ds->window_times(data::TimeSeriesDataset::kTrain, i).first_input));
  }

  // Refused, each with a sentence: an empty split, a file whose training
  // split gives other statistics, a model that is not a forecaster.
  run = Sh(bin + " predict --root " + root_.path() + " ts --csv " + csv_ + " --out " + out);
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_NE(run.err.find("the test split holds no windows"), std::string::npos) << run.err;
  const std::string other = data_.path() + "/other.csv";
  {
    std::ofstream f(other);
    f << kHeaderLine << "\n";
    for (const auto& l : lines_) f << l.substr(0, l.rfind(',')) << ",5\n";  // another demand
  }
  run = Sh(bin + " predict --root " + root_.path() + " ts --csv " + other + " --split train --out " + out);
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_NE(run.err.find("gives other statistics"), std::string::npos) << run.err;
  ASSERT_EQ(Publish(root_.path(), "cnn", MakeArtifact(kTinyCnn, kTinyInput, 3)), 1);
  run = Sh(bin + " predict --root " + root_.path() + " cnn --csv " + csv_ + " --out " + out);
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_NE(run.err.find("is not a time-series forecaster"), std::string::npos) << run.err;
}

TEST_F(TimeSeriesServingTest, BadRowsAreRefused) {
  // A version whose recorded header lacks a column the spec names.
  ModelArtifact bad_header = art_;
  json pj = json::parse(stats_.ToJson());
  pj["header"] = json::array({"time", "temp", "sky", "demand"});
  bad_header.header.set_preprocessing_json(pj.dump());
  ASSERT_EQ(Publish(root_.path(), "ts-bad-header", bad_header), 1);
  ServerHarness h(root_.path());
  HttpClient c = h.Client();

  // A malformed row: row 2 has a non-numeric temperature.
  std::vector<std::string> rows = Rows(10);
  std::vector<std::string> f = Split(rows[2]);
  f[1] = "warm";
  rows[2] = fmt::format("{}", fmt::join(f, ","));
  auto r = Call(c, "POST", "/v2/models/ts/infer", RowsBody(rows, {kLookback}).dump());
  EXPECT_EQ(r.status, 400) << r.body;
  std::string err = ParseJson(r).value("error", "");
  EXPECT_NE(err.find("input 'rows'"), std::string::npos) << err;
  EXPECT_NE(err.find("row 2"), std::string::npos) << err;
  EXPECT_NE(err.find("warm"), std::string::npos) << err;

  // A row with a field missing.
  rows = Rows(10);
  rows[1] = rows[1].substr(0, rows[1].rfind(','));
  r = Call(c, "POST", "/v2/models/ts/infer", RowsBody(rows, {kLookback}).dump());
  EXPECT_EQ(r.status, 400) << r.body;
  err = ParseJson(r).value("error", "");
  EXPECT_NE(err.find("row 1"), std::string::npos) << err;

  // The wrong number of rows per window.
  r = Call(c, "POST", "/v2/models/ts/infer", RowsBody(Rows(10, 3), {3}).dump());
  EXPECT_EQ(r.status, 400) << r.body;
  err = ParseJson(r).value("error", "");
  EXPECT_NE(err.find("input 'rows'"), std::string::npos) << err;
  EXPECT_NE(err.find("lookback = 4"), std::string::npos) << err;

  // No header given and none recorded.
  r = Call(c, "POST", "/v2/models/ts-plain/infer", RowsBody(Rows(10), {kLookback}).dump());
  EXPECT_EQ(r.status, 400) << r.body;
  err = ParseJson(r).value("error", "");
  EXPECT_NE(err.find("input 'header' is required"), std::string::npos) << err;

  // A recorded header that does not fit the spec: the reason, and the
  // request may still name its columns.
  r = Call(c, "POST", "/v2/models/ts-bad-header/infer", RowsBody(Rows(10), {kLookback}).dump());
  EXPECT_EQ(r.status, 400) << r.body;
  err = ParseJson(r).value("error", "");
  EXPECT_NE(err.find("as model 'ts-bad-header' version 1 records them"), std::string::npos) << err;
  EXPECT_NE(err.find("names column 'weather', which the header lacks"), std::string::npos) << err;
  const json header = json::array({kHeaderLine});
  r = Call(c, "POST", "/v2/models/ts-bad-header/infer", RowsBody(Rows(10), {kLookback}, &header).dump());
  EXPECT_EQ(r.status, 200) << r.body;

  // Not strings.
  r = Call(c, "POST", "/v2/models/ts/infer",
           RowsBody(json::array({1, 2, 3, 4}), {kLookback}).dump());
  EXPECT_EQ(r.status, 400) << r.body;
}

// A source with a repeated timestamp and a one-step gap, trained with
// duplicate_policy KEEP_FIRST and FORWARD_FILL: raw lines cut from that same
// file are served exactly as training preprocessed them.
TEST(TimeSeriesServingSkew, RowsCutFromTheTrainingFileAreServedAsTrained) {
  TempDir data, root;
  std::vector<std::string> lines;
  std::vector<int> hours;  // each line's hour since the start
  for (int i = 0; i < 48; ++i) {
    if (i == 21 || i == 33) continue;  // one-step gaps
    auto line = [&](double bump) {
      return fmt::format("2024-01-0{} {:02}:00:00,{:.1f},{},{:.2f}", 1 + i / 24, i % 24, 10 + (i % 5) * 0.7 + bump,
                         i % 3 == 0 ? "sun" : "rain", 100 + 20 * std::sin(i / 3.0) + i + bump);
    };
    lines.push_back(line(0));
    hours.push_back(i);
    if (i == 20 || i == 30) {  // the same hour again, other values: KEEP_FIRST drops these
      lines.push_back(line(7.5));
      hours.push_back(i);
    }
  }
  const std::string csv = data.path() + "/series.csv";
  {
    std::ofstream f(csv);
    f << kHeaderLine << "\n";
    for (const auto& l : lines) f << l << "\n";
  }
  proto::TimeSeriesSpec spec;
  spec.set_path(csv);
  spec.set_timestamp_column("time");
  spec.set_target_column("demand");
  spec.add_numeric_features("temp");
  spec.add_categorical_features()->set_column("weather");
  spec.mutable_calendar_features()->set_weekday(false);
  spec.mutable_calendar_features()->set_month(false);
  spec.set_lookback(kLookback);
  spec.set_horizon(1);
  spec.set_duplicate_policy(proto::TimeSeriesSpec::Duplicate::KEEP_FIRST);
  spec.set_missing_policy(proto::TimeSeriesSpec::Missing::FORWARD_FILL);
  spec.set_max_fill_steps(2);
  auto ds = data::TimeSeriesDataset::Open(spec);
  ASSERT_TRUE(ds.ok()) << ds.status().ToString();
  const int64_t F = ds->num_features();
  const std::vector<std::string> header = Split(kHeaderLine);
  auto hour_of = [&](int64_t t) { return (t - ds->window_times(data::TimeSeriesDataset::kTrain, 0).first_input) / 3600; };
  const int first_hour = static_cast<int>(hour_of(ds->window_times(data::TimeSeriesDataset::kTrain, 0).first_input));
  ASSERT_EQ(first_hour, 0);

  // Every training window that ends on a line of the file: the client sends
  // the file's lines from the last one at or before the window's first step.
  int checked = 0, with_duplicate = 0, with_gap = 0;
  std::vector<std::string> served_rows;
  std::vector<float> served_x;
  // Windows for polisctl: one holding a repeated hour and a gap, one a
  // repeated hour only (its last lookback lines make too few steps).
  std::vector<std::pair<int, std::vector<float>>> ctl_windows;  // last hour, window
  for (int64_t w = 0; w < ds->size(data::TimeSeriesDataset::kTrain); ++w) {
    const auto t = ds->window_times(data::TimeSeriesDataset::kTrain, w);
    const int first = static_cast<int>(hour_of(t.first_input)), last = static_cast<int>(hour_of(t.last_input));
    if (std::find(hours.begin(), hours.end(), last) == hours.end()) continue;  // ends on a filled step
    int from = first;
    while (std::find(hours.begin(), hours.end(), from) == hours.end()) --from;
    std::vector<std::vector<std::string>> fields;
    std::vector<std::string> rows;
    for (size_t i = 0; i < lines.size(); ++i)
      if (hours[i] >= from && hours[i] <= last) {
        fields.push_back(Split(lines[i]));
        rows.push_back(lines[i]);
      }
    std::vector<float> want(kLookback * F), y(1);
    ds->Gather(data::TimeSeriesDataset::kTrain, &w, 1, want.data(), y.data());
    auto got = data::PreprocessTimeSeriesWindow(spec, ds->stats(), header, fields);
    ASSERT_TRUE(got.ok()) << "window " << w << ": " << got.status().ToString();
    ASSERT_EQ(got->size(), want.size());
    for (size_t k = 0; k < want.size(); ++k) EXPECT_FLOAT_EQ((*got)[k], want[k]) << "window " << w << " value " << k;
    ++checked;
    const bool dup = (first <= 20 && 20 <= last) || (first <= 30 && 30 <= last);
    const bool gap = (first < 21 && 21 < last) || (first < 33 && 33 < last);
    with_duplicate += dup;
    with_gap += gap;
    if (dup && gap && served_rows.empty()) {
      served_rows = rows;
      served_x = want;
      ctl_windows.push_back({last, want});
    }
    if (dup && !gap && ctl_windows.size() == 1) ctl_windows.push_back({last, want});
  }
  EXPECT_GT(checked, 30);
  EXPECT_GT(with_duplicate, 0);
  EXPECT_GT(with_gap, 0);
  ASSERT_FALSE(served_rows.empty()) << "no window holds both a repeated hour and a gap";

  // Over HTTP: the server takes those raw lines (more lines than lookback).
  const nn::Shape in = {ds->lookback(), F};
  ModelArtifact art = MakeArtifact(kForecaster, in, 7);
  proto::DatasetSpec& d = *art.header.mutable_job()->mutable_dataset();
  d.set_format(proto::DatasetSpec::CSV);
  *d.mutable_timeseries() = spec;
  json stats = json::parse(ds->stats().ToJson());
  stats["header"] = header;
  art.header.set_preprocessing_json(stats.dump());
  ASSERT_EQ(Publish(root.path(), "skew", art), 1);
  ServerHarness h(root.path());
  HttpClient c = h.Client();
  json body = {{"inputs", json::array({json{{"name", "rows"}, {"datatype", "BYTES"},
                                            {"shape", json::array({static_cast<int64_t>(served_rows.size())})},
                                            {"data", served_rows}}})}};
  auto r = Call(c, "POST", "/v2/models/skew/infer", body.dump());
  ASSERT_EQ(r.status, 200) << r.body;
  std::vector<float> p = OutputData(ParseJson(r), "predictions");
  ASSERT_EQ(p.size(), 1u);
  const double want = ReferenceLogits(art, served_x)[0] * ds->stats().target_stddev + ds->stats().target_mean;
  EXPECT_NEAR(p[0], want, 1e-4 * std::max(1.0, std::abs(want)));

  // polisctl models predict --csv on a file that ends with such a window:
  // it picks the lines the window needs from the file's times (not always
  // lookback of them), over HTTP and on the root alike.
  ASSERT_EQ(ctl_windows.size(), 2u) << "no window holds a repeated hour without a gap";
  for (const auto& [last_hour, x] : ctl_windows) {
    const std::string upto = data.path() + fmt::format("/upto-{}.csv", last_hour);
    {
      std::ofstream f(upto);
      f << kHeaderLine << "\n";
      for (size_t i = 0; i < lines.size(); ++i)
        if (hours[i] <= last_hour) f << lines[i] << "\n";
    }
    const double expected = ReferenceLogits(art, x)[0] * ds->stats().target_stddev + ds->stats().target_mean;
    for (const std::string& where :
         {fmt::format("--registry http://127.0.0.1:{}", h.port()), "--root " + root.path()}) {
      CtlRun ctl = Sh(kPolisctl + " models " + where + " predict skew --json --csv " + upto);
      ASSERT_EQ(ctl.exit_code, 0) << where << ", window ending at hour " << last_hour << ": " << ctl.err;
      const json j = json::parse(ctl.out, nullptr, false);
      ASSERT_TRUE(j.is_object()) << ctl.out;
      std::vector<float> got = OutputData(j, "predictions");
      ASSERT_EQ(got.size(), 1u) << ctl.out;
      EXPECT_NEAR(got[0], expected, 1e-4 * std::max(1.0, std::abs(expected))) << where << " hour " << last_hour;
    }
  }

  // Under duplicate_policy FAIL the same lines are refused, naming the row.
  spec.set_duplicate_policy(proto::TimeSeriesSpec::Duplicate::FAIL);
  std::vector<std::vector<std::string>> fields;
  for (const auto& l : served_rows) fields.push_back(Split(l));
  auto refused = data::PreprocessTimeSeriesWindow(spec, ds->stats(), header, fields);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("repeats line"), std::string::npos) << refused.status().ToString();
}

// Rows and header as binary data (the binary tensor extension's BYTES
// encoding, which is how gRPC hands BYTES to the server) give the answer the
// JSON strings give.
TEST_F(TimeSeriesServingTest, RowsAsBinaryDataAnswerAsJsonStrings) {
  ServerHarness h(root_.path());
  HttpClient c = h.Client();
  const std::vector<std::string> rows = Rows(10);
  const std::string rows_bin = JoinBinaryBytes(rows), header_bin = JoinBinaryBytes({kHeaderLine});
  json head = {{"inputs", json::array({json{{"name", "rows"}, {"datatype", "BYTES"}, {"shape", {kLookback}},
                                            {"parameters", {{"binary_data_size", rows_bin.size()}}}},
                                       json{{"name", "header"}, {"datatype", "BYTES"}, {"shape", {1}},
                                            {"parameters", {{"binary_data_size", header_bin.size()}}}}})}};
  const std::string json_part = head.dump();
  auto r = Call(c, "POST", "/v2/models/ts-plain/infer", json_part + rows_bin + header_bin,
                {{"Inference-Header-Content-Length", std::to_string(json_part.size())}});
  ASSERT_EQ(r.status, 200) << r.body;
  std::vector<float> p = OutputData(ParseJson(r), "predictions");
  ASSERT_EQ(p.size(), 1u);
  EXPECT_NEAR(p[0], Expected(rows), 1e-4 * std::max(1.0, std::abs(Expected(rows))));

  // A length that runs past the data is refused naming the element.
  std::string cut = rows_bin.substr(0, rows_bin.size() - 3);
  head["inputs"][0]["parameters"]["binary_data_size"] = cut.size();
  head["inputs"].erase(1);
  const std::string bad_json = head.dump();
  r = Call(c, "POST", "/v2/models/ts/infer", bad_json + cut,
           {{"Inference-Header-Content-Length", std::to_string(bad_json.size())}});
  EXPECT_EQ(r.status, 400) << r.body;
  const std::string err = ParseJson(r).value("error", "");
  EXPECT_NE(err.find("input 'rows': binary data: element 3"), std::string::npos) << err;
}

// A forecaster has no image input: 'image' is refused in one line that says
// what the model takes, and its metadata does not list it.
TEST_F(TimeSeriesServingTest, ImageInputIsRefusedSayingWhatTheModelTakes) {
  ServerHarness h(root_.path());
  HttpClient c = h.Client();
  json body = {{"inputs", json::array({json{{"name", "image"}, {"datatype", "BYTES"}, {"shape", {1}},
                                            {"data", {Base64Encode("\x89PNG\r\n\x1a\n")}}}})}};
  auto r = Call(c, "POST", "/v2/models/ts/infer", body.dump());
  EXPECT_EQ(r.status, 400) << r.body;
  const std::string err = ParseJson(r).value("error", "");
  EXPECT_NE(err.find("input 'image' (PNG or JPEG files) is for image models; model 'ts' version 1 takes "
                     "'input' (FP32, shape [-1,4,"),
            std::string::npos)
      << err;
  EXPECT_NE(err.find("or 'rows' (BYTES CSV lines) with an optional 'header'"), std::string::npos) << err;
  EXPECT_EQ(err.find('\n'), std::string::npos) << err;
  r = Call(c, "GET", "/v2/models/ts");
  ASSERT_EQ(r.status, 200) << r.body;
  for (const auto& in : ParseJson(r)["inputs"]) EXPECT_NE(in["name"], "image") << in;
}

}  // namespace
}  // namespace polis::registry

namespace polis::registry {
namespace {

// A forecaster trained from shards of windows (format SHARDS, the packed spec
// in its job copy) is served from raw rows, and its card and metadata say so.
TEST_F(TimeSeriesServingTest, ShardsTrainedForecasterListsTheRawRowsInputsInCardAndMetadata) {
  ModelArtifact shards = art_;
  proto::DatasetSpec& d = *shards.header.mutable_job()->mutable_dataset();
  d.set_format(proto::DatasetSpec::SHARDS);
  d.set_dir("/data/bike-windows");
  ASSERT_EQ(Publish(root_.path(), "ts-shards", shards), 1);
  auto names = [](const json& tensors) {
    std::vector<std::string> out;
    for (const auto& t : tensors) out.push_back(t["name"].get<std::string>());
    return out;
  };
  const json card = ModelCard("ts-shards", 1, "", shards.header);
  EXPECT_EQ(names(card["inputs"]), (std::vector<std::string>{"input", "rows", "header"})) << card.dump();
  EXPECT_EQ(card["training_data"]["dir"], "/data/bike-windows");

  ServerHarness h(root_.path());
  HttpClient c = h.Client();
  auto r = Call(c, "GET", "/v2/models/ts-shards");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(names(ParseJson(r)["inputs"]), names(card["inputs"]));
  r = Call(c, "POST", "/v2/models/ts-shards/infer", RowsBody(Rows(10), {kLookback}).dump());
  ASSERT_EQ(r.status, 200) << r.body;
  std::vector<float> p = OutputData(ParseJson(r), "predictions");
  ASSERT_EQ(p.size(), 1u);
  EXPECT_NEAR(p[0], Expected(Rows(10)), 1e-4 * std::max(1.0, std::abs(Expected(Rows(10)))));
}

}  // namespace
}  // namespace polis::registry
