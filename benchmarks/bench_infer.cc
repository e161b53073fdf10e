// polis-bench-infer: the in-process limit for serving a published model:
// the median time of one inference forward pass (the same nn::Network the
// registry's executors run, weights loaded from the registry root) for each
// batch size, with the rows per second it implies. benchmarks/serving.sh
// prints it beside the HTTP figures. With --csv (a forecaster's training
// CSV), it also times turning one window's raw CSV lines into the model's
// input, as the registry does for a raw-rows request (splitting the lines,
// the job's row policies, calendar features, one-hot, standardisation).
//
//   build/benchmarks/polis-bench-infer --root /tmp/reg-demo --model fashion_cnn
//       --batches 1,16,32 --threads 1 [--json] [--csv hour.csv]
#include <omp.h>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <random>

#include "common/artifact/artifact.h"
#include "common/data/csv.h"
#include "common/data/timeseries.h"
#include "common/fs.h"
#include "common/nn/model.h"

namespace {

double Median(std::vector<double> v) {
  std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
  return v[v.size() / 2];
}

// Median microseconds to preprocess one window of raw CSV lines (the
// `lookback` data lines of `csv` from data line `first`, 1 = the line after
// the header) with the artifact's spec, statistics and header; -1 (with a
// message) when the model is not a forecaster or the file is too short.
double TimeWindowPreprocessing(const polis::proto::ArtifactHeader& h, const std::string& csv,
                               int64_t first, int iters) {
  if (!h.job().dataset().has_timeseries()) {
    std::fprintf(stderr, "polis-bench-infer: --csv: the model is not a time-series forecaster\n");
    return -1;
  }
  const auto& spec = h.job().dataset().timeseries();
  auto stats = polis::data::TimeSeriesStats::FromJson(h.preprocessing_json());
  auto text = polis::ReadMaybeGzip(csv);
  if (!stats.ok() || !text.ok()) {
    std::fprintf(stderr, "polis-bench-infer: %s\n",
                 (!stats.ok() ? stats.status() : text.status()).ToString().c_str());
    return -1;
  }
  std::vector<std::string_view> lines;  // the header, then the window's lines
  std::string_view rest = *text;
  for (int64_t k = 0; !rest.empty() && static_cast<int64_t>(lines.size()) <= spec.lookback(); ++k) {
    const size_t nl = rest.find('\n');
    std::string_view line = rest.substr(0, nl);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (k == 0 || k >= first) lines.push_back(line);
    rest = nl == std::string_view::npos ? std::string_view() : rest.substr(nl + 1);
  }
  auto header = polis::data::SplitCsvLine(lines.front());
  if (!header.ok() || static_cast<int64_t>(lines.size()) != spec.lookback() + 1) {
    std::fprintf(stderr, "polis-bench-infer: %s: no header and %lld lines from data line %lld\n",
                 csv.c_str(), static_cast<long long>(spec.lookback()), static_cast<long long>(first));
    return -1;
  }
  lines.erase(lines.begin());
  auto pre = polis::data::WindowPreprocessor::Create(spec, *stats, *header);
  if (!pre.ok()) {
    std::fprintf(stderr, "polis-bench-infer: %s\n", pre.status().ToString().c_str());
    return -1;
  }
  std::vector<float> x(static_cast<size_t>(pre->elements()));
  std::vector<double> us;
  for (int i = 0; i < iters + 20; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    const polis::Status st = pre->Preprocess(lines, x.data());
    const auto t1 = std::chrono::steady_clock::now();
    if (!st.ok()) {
      std::fprintf(stderr, "polis-bench-infer: %s\n", st.ToString().c_str());
      return -1;
    }
    if (i >= 20) us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
  }
  return Median(std::move(us));
}

}  // namespace

int main(int argc, char** argv) {
  std::string root = "/tmp/reg-demo", model_name = "fashion_cnn";
  int64_t version = 0;
  std::vector<int64_t> batches{1, 2, 4, 8, 16, 32, 64};
  int threads = 1, iters = 300;
  bool as_json = false;
  std::string csv;
  int64_t csv_line = 1;
  std::string precision = "fp32";
  CLI::App app{"polis-bench-infer: inference forward time of a published model, per batch size"};
  app.add_option("--root", root, "registry root")->capture_default_str();
  app.add_option("--model", model_name, "model name")->capture_default_str();
  app.add_option("--version", version, "version (0: the latest)")->capture_default_str();
  app.add_option("--batches", batches, "batch sizes")->delimiter(',');
  app.add_option("--threads", threads, "oneDNN (OpenMP) threads")->capture_default_str();
  app.add_option("--iters", iters, "timed forward passes per batch size")->capture_default_str();
  app.add_flag("--json", as_json, "one JSON line per batch size");
  app.add_option("--precision", precision, "fp32, or bf16 (as a model served with \"precision\": \"bf16\")")
      ->check(CLI::IsMember({"fp32", "bf16"}))
      ->capture_default_str();
  app.add_option("--csv", csv,
                 "a forecaster's CSV: also time preprocessing one window of its raw lines");
  app.add_option("--csv-line", csv_line, "the window's first data line (1: after the header)")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  omp_set_num_threads(threads);

  if (version == 0) {
    auto versions = polis::ListVersions(root, model_name);
    if (!versions.ok() || versions->empty()) {
      std::fprintf(stderr, "polis-bench-infer: no versions of '%s' under %s\n", model_name.c_str(),
                   root.c_str());
      return 2;
    }
    version = versions->back();
  }
  auto artifact = polis::LoadVersion(root, model_name, version);
  if (!artifact.ok()) {
    std::fprintf(stderr, "%s\n", artifact.status().ToString().c_str());
    return 2;
  }
  const auto& h = artifact->header;
  polis::nn::Shape in_shape(h.input_shape().begin(), h.input_shape().end());
  auto model = polis::nn::Model::Build(h.job().model(), in_shape);
  if (!model.ok()) {
    std::fprintf(stderr, "%s\n", model.status().ToString().c_str());
    return 2;
  }
  const int64_t in = polis::nn::ShapeElements(model->input_shape());
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(0.f, 1.f);
  if (!as_json)
    std::printf("%-6s %12s %12s %12s\n", "batch", "median_us", "us_per_row", "rows_per_s");
  for (int64_t b : batches) {
    polis::nn::Network net(*model, b, artifact->weights.data(), nullptr, false, false,
                           precision == "bf16");
    net.FreezeParams();  // as the registry's executors do
    for (int64_t i = 0; i < b * in; ++i) net.input()[i] = u(rng);
    for (int i = 0; i < 20; ++i) net.Forward();
    std::vector<double> us;
    us.reserve(iters);
    for (int i = 0; i < iters; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      net.Forward();
      (void)net.output();
      us.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
    }
    const double med = Median(std::move(us));
    if (as_json) {
      std::printf("%s\n", nlohmann::json{{"model", model_name}, {"version", version}, {"batch", b},
                                         {"threads", threads}, {"median_us", med},
                                         {"rows_per_s", b * 1e6 / med}}
                              .dump()
                              .c_str());
    } else {
      std::printf("%-6lld %12.1f %12.1f %12.0f\n", static_cast<long long>(b), med, med / b,
                  b * 1e6 / med);
    }
  }
  if (!csv.empty()) {
    const double pre_us = TimeWindowPreprocessing(h, csv, csv_line, iters);
    if (pre_us < 0) return 2;
    if (as_json) {
      std::printf("%s\n", nlohmann::json{{"model", model_name}, {"version", version},
                                         {"csv_line", csv_line},
                                         {"preprocess_window_median_us", pre_us}}
                              .dump()
                              .c_str());
    } else {
      std::printf("preprocess one window of raw CSV lines from data line %lld: %.1f us (median)\n",
                  static_cast<long long>(csv_line), pre_us);
    }
  }
  std::printf("reproduce: build/benchmarks/polis-bench-infer --root %s --model %s --version %lld "
              "--threads %d%s%s%s\n", root.c_str(), model_name.c_str(), static_cast<long long>(version),
              threads, csv.empty() ? "" : " --csv ", csv.c_str(),
              csv.empty() ? "" : fmt::format(" --csv-line {}", csv_line).c_str());
  return 0;
}
