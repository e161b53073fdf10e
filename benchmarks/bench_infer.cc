// polis-bench-infer: the in-process limit for serving a published model:
// the median time of one inference forward pass (the same nn::Network the
// registry's executors run, weights loaded from the registry root) for each
// batch size, with the rows per second it implies. benchmarks/serving.sh
// prints it beside the HTTP figures.
//
//   build/benchmarks/polis-bench-infer --root /tmp/reg-demo --model fashion_cnn
//       --batches 1,16,32 --threads 1 [--json]
#include <omp.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <random>

#include "common/artifact/artifact.h"
#include "common/nn/model.h"

int main(int argc, char** argv) {
  std::string root = "/tmp/reg-demo", model_name = "fashion_cnn";
  int64_t version = 0;
  std::vector<int64_t> batches{1, 2, 4, 8, 16, 32, 64};
  int threads = 1, iters = 300;
  bool as_json = false;
  CLI::App app{"polis-bench-infer: inference forward time of a published model, per batch size"};
  app.add_option("--root", root, "registry root")->capture_default_str();
  app.add_option("--model", model_name, "model name")->capture_default_str();
  app.add_option("--version", version, "version (0: the latest)")->capture_default_str();
  app.add_option("--batches", batches, "batch sizes")->delimiter(',');
  app.add_option("--threads", threads, "oneDNN (OpenMP) threads")->capture_default_str();
  app.add_option("--iters", iters, "timed forward passes per batch size")->capture_default_str();
  app.add_flag("--json", as_json, "one JSON line per batch size");
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
    polis::nn::Network net(*model, b, artifact->weights.data(), nullptr, false);
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
    std::nth_element(us.begin(), us.begin() + us.size() / 2, us.end());
    const double med = us[us.size() / 2];
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
  std::printf("reproduce: build/benchmarks/polis-bench-infer --root %s --model %s --version %lld "
              "--threads %d\n", root.c_str(), model_name.c_str(), static_cast<long long>(version),
              threads);
  return 0;
}
