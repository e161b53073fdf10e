// polis-bench-train: single-process training throughput of a job's model
// (forward + backward + Adam) on its real training data, batches taken
// consecutively from a seeded permutation and gathered before timing, like
// benchmarks/torch_seed_cnn.py. Prints one JSON line with --json.
//
//   OMP_NUM_THREADS=1 build/benchmarks/polis-bench-train --batch 32 --threads 1 --json
//
// --dp-clip C: DP-SGD step cost (docs/design/privacy.md): blocks of normal
// steps and of DP steps (Network::BackwardClipped with clip norm C, noise
// σ = 1.0 drawn per step, then the same Adam step) alternate on the same
// batches; medians per kind and their ratio are reported.
#include <omp.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "common/data/image_dataset.h"
#include "common/data/shard_plan.h"
#include "common/job_spec.h"
#include "common/optimizer.h"
#include "common/privacy/noise.h"

int main(int argc, char** argv) {
  std::string job_path = std::string(POLIS_SOURCE_DIR) + "/jobs/fashion_cnn.pbtxt";
  int batch = 32, threads = 1, steps = 200, warmup = 20, repeats = 5;
  bool as_json = false;
  double dp_clip = 0;
  CLI::App app{"polis-bench-train: training-step throughput of one worker"};
  app.add_option("--job", job_path, "job spec (model and dataset)")->capture_default_str();
  app.add_option("--batch", batch)->capture_default_str();
  app.add_option("--threads", threads)->capture_default_str();
  app.add_option("--steps", steps, "timed steps")->capture_default_str();
  app.add_option("--warmup", warmup)->capture_default_str();
  app.add_option("--repeats", repeats, "timed blocks; the median block rate is reported")->capture_default_str();
  app.add_flag("--json", as_json);
  app.add_option("--dp-clip", dp_clip, "compare DP-SGD steps with this clip norm against normal ones")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (repeats < 1 || steps < repeats) {
    std::fprintf(stderr, "polis-bench-train: --steps must be >= --repeats >= 1\n");
    return 2;
  }
  omp_set_num_threads(threads);

  auto job = polis::LoadJobFile(job_path);
  if (!job.ok()) { std::fprintf(stderr, "%s\n", job.status().ToString().c_str()); return 2; }
  auto model = polis::CheckJob(*job);
  if (!model.ok()) { std::fprintf(stderr, "%s\n", model.status().ToString().c_str()); return 2; }
  const auto& ds = job->spec.dataset();
  auto paths = polis::ResolveDataset(ds);
  auto train = polis::data::ImageDataset::Open(paths.train_images, paths.train_labels,
                                               ds.num_classes(), ds.scale(), ds.shift(), 0);
  if (!train.ok()) { std::fprintf(stderr, "%s\n", train.status().ToString().c_str()); return 2; }

  const int64_t P = model->parameter_count(), K = polis::nn::ShapeElements(model->output_shape());
  std::vector<float> params(P), grads(P);
  model->InitParams(params.data(), 1234);
  auto opt = polis::MakeOptimizer(job->spec.optimizer(), P);
  polis::nn::Network net(*model, batch, params.data(), grads.data(), true);

  // Pre-gather every batch the run will use (data loading is not timed).
  const int total = warmup + steps;
  const int64_t in = polis::nn::ShapeElements(model->input_shape());
  auto perm = polis::data::EpochPermutation(1234, 0, train->size());
  const int64_t distinct = std::min<int64_t>(total, train->size() / batch);
  std::vector<float> images(distinct * batch * in);
  std::vector<int32_t> labels(distinct * batch);
  for (int64_t b = 0; b < distinct; ++b)
    train->Gather(perm.data() + b * batch, batch, images.data() + b * batch * in, labels.data() + b * batch);

  double last_loss = 0;
  auto step = [&](int s) {
    int64_t b = s % distinct;
    std::copy_n(images.data() + b * batch * in, batch * in, net.input());
    net.Forward();
    auto st = polis::nn::SoftmaxCrossEntropy(net.output(), labels.data() + b * batch, batch, K,
                                             net.output_diff(), 1.0f / batch);
    net.Backward();
    (*opt)->Step(params.data(), grads.data());
    last_loss = st.loss_sum / batch;
  };
  if (dp_clip > 0) {
    const polis::privacy::Key256 key = polis::privacy::KeyFromNumber("bench", 1234);
    std::vector<float> norms(batch);
    auto dp_step = [&](int s) {
      int64_t b = s % distinct;
      std::copy_n(images.data() + b * batch * in, batch * in, net.input());
      net.Forward();
      polis::nn::SoftmaxCrossEntropy(net.output(), labels.data() + b * batch, batch, K, net.output_diff(), 1.0f);
      net.BackwardClipped(static_cast<float>(dp_clip), norms.data());
      polis::privacy::AddGaussianNoise(key, s, 0, polis::privacy::NoiseStddev(1.0, dp_clip), 0, grads.data(), P);
      for (auto& g : grads) g *= 1.0f / batch;
      (*opt)->Step(params.data(), grads.data());
    };
    for (int s = 0; s < warmup; ++s) step(s), dp_step(s);
    std::vector<double> normal_ms, dp_ms;
    const int per_block = steps / repeats;
    int s = warmup;
    for (int r = 0; r < repeats; ++r) {
      for (int kind = 0; kind < 2; ++kind) {
        const int first = s;
        auto t0 = std::chrono::steady_clock::now();
        for (int i = 0; i < per_block; ++i) kind == 0 ? step(first + i) : dp_step(first + i);
        const double ms = 1000 * std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / per_block;
        (kind == 0 ? normal_ms : dp_ms).push_back(ms);
      }
      s += per_block;
    }
    auto median = [](std::vector<double> v) {
      std::sort(v.begin(), v.end());
      return v[v.size() / 2];
    };
    const double n_ms = median(normal_ms), d_ms = median(dp_ms);
    nlohmann::json out = {{"impl", "polis"}, {"batch", batch}, {"threads", threads}, {"dp_clip", dp_clip},
                          {"normal_step_ms_median", n_ms}, {"dp_step_ms_median", d_ms},
                          {"dp_over_normal", d_ms / n_ms}, {"normal_block_ms", normal_ms}, {"dp_block_ms", dp_ms}};
    if (as_json) std::printf("%s\n", out.dump().c_str());
    else std::printf("batch %d, %d thread(s): normal step %.3f ms, DP step %.3f ms (medians of %d blocks), DP/normal %.2fx\n",
                     batch, threads, n_ms, d_ms, repeats, d_ms / n_ms);
    return 0;
  }
  for (int s = 0; s < warmup; ++s) step(s);
  std::vector<double> rates;
  const int per_block = steps / repeats;
  int s = warmup;
  for (int r = 0; r < repeats; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < per_block; ++i) step(s++);
    double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    rates.push_back(per_block * batch / sec);
  }
  std::vector<double> sorted = rates;
  std::sort(sorted.begin(), sorted.end());
  double median = sorted[sorted.size() / 2];
  nlohmann::json out = {{"impl", "polis"}, {"batch", batch}, {"threads", threads},
                        {"images_per_second", median}, {"block_rates", rates},
                        {"step_ms_median", 1000.0 * batch / median},
                        {"gflops", median * 16.4e-3}, {"final_loss", last_loss},
                        {"kernels", net.ImplInfo()}};
  if (as_json) std::printf("%s\n", out.dump().c_str());
  else std::printf("batch %d, %d thread(s): %.0f images/s (median of %d blocks), %.1f GFLOP/s\n",
                   batch, threads, median, repeats, median * 16.4e-3);
  return 0;
}
