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
//
// --precision bf16: Conv2D and Dense compute in bfloat16 (fp32 master
// weights; docs/design/cpu-bf16.md).
//
// --epochs N: instead of timing steps, trains N epochs over the job's whole
// training set (the job's optimizer and seed, full batches of --batch in a
// per-epoch permutation) and prints the test accuracy after each epoch,
// evaluated in fp32.
#include <omp.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <nlohmann/json.hpp>

#include "common/data/image_dataset.h"
#include "common/data/shard_plan.h"
#include "common/job_spec.h"
#include "common/optimizer.h"
#include "common/privacy/noise.h"

namespace {

// Percentage of the test set that an fp32 inference Network over `params`
// classifies correctly (batches of up to 500, the last one smaller).
double TestAccuracy(const polis::nn::Model& model, const polis::data::ImageDataset& test,
                    float* params) {
  const int64_t n = test.size();
  const int64_t K = polis::nn::ShapeElements(model.output_shape());
  std::vector<int64_t> idx(std::min<int64_t>(500, n));
  std::vector<int32_t> labels(idx.size());
  int64_t correct = 0;
  std::unique_ptr<polis::nn::Network> net, tail;
  for (int64_t at = 0; at < n;) {
    const int64_t b = std::min<int64_t>(idx.size(), n - at);
    auto& slot = b == static_cast<int64_t>(idx.size()) ? net : tail;
    if (!slot) slot = std::make_unique<polis::nn::Network>(model, b, params, nullptr, false);
    for (int64_t i = 0; i < b; ++i) idx[i] = at + i;
    test.Gather(idx.data(), b, slot->input(), labels.data());
    slot->Forward();
    correct += polis::nn::SoftmaxCrossEntropy(slot->output(), labels.data(), b, K, nullptr, 1.f).correct;
    at += b;
  }
  return 100.0 * correct / n;
}

// --epochs: the job's optimizer over every full batch of each epoch's
// permutation of the training set; test accuracy after each epoch.
int TrainEpochs(const polis::LoadedJob& job, const polis::nn::Model& model,
                const polis::data::ImageDataset& train, const polis::data::DatasetPaths& paths,
                int batch, int epochs, bool bf16, int threads, bool as_json) {
  const auto& ds = job.spec.dataset();
  auto test = polis::data::ImageDataset::Open(paths.test_images, paths.test_labels, ds.num_classes(),
                                              ds.scale(), ds.shift(), 0);
  if (!test.ok()) { std::fprintf(stderr, "%s\n", test.status().ToString().c_str()); return 2; }
  const uint64_t seed = job.spec.training().seed();
  const int64_t P = model.parameter_count(), K = polis::nn::ShapeElements(model.output_shape());
  std::vector<float> params(P), grads(P);
  model.InitParams(params.data(), seed);
  auto opt = polis::MakeOptimizer(job.spec.optimizer(), P, epochs * (train.size() / batch));
  if (!opt.ok()) { std::fprintf(stderr, "%s\n", opt.status().ToString().c_str()); return 2; }
  polis::nn::Network net(model, batch, params.data(), grads.data(), true, false, bf16);
  std::vector<int32_t> labels(batch);
  nlohmann::json per_epoch = nlohmann::json::array();
  double accuracy = 0, seconds = 0;
  for (int e = 0; e < epochs; ++e) {
    auto perm = polis::data::EpochPermutation(seed, e, train.size());
    const int64_t steps = train.size() / batch;
    double loss_sum = 0;
    auto t0 = std::chrono::steady_clock::now();
    for (int64_t b = 0; b < steps; ++b) {
      train.Gather(perm.data() + b * batch, batch, net.input(), labels.data());
      net.Forward();
      loss_sum += polis::nn::SoftmaxCrossEntropy(net.output(), labels.data(), batch, K,
                                                 net.output_diff(), 1.0f / batch).loss_sum;
      net.Backward();
      (*opt)->Step(params.data(), grads.data());
    }
    const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    seconds += sec;
    accuracy = TestAccuracy(model, *test, params.data());
    const double loss = loss_sum / (steps * batch);
    per_epoch.push_back({{"epoch", e + 1}, {"train_loss", loss}, {"test_accuracy", accuracy}, {"seconds", sec}});
    if (!as_json)
      std::printf("epoch %d: train loss %.4f, test accuracy %.2f%%, %.1f s\n", e + 1, loss, accuracy, sec);
  }
  nlohmann::json out = {{"impl", "polis"}, {"batch", batch}, {"threads", threads},
                        {"precision", bf16 ? "bf16" : "fp32"}, {"epochs", epochs}, {"seed", seed},
                        {"test_accuracy", accuracy}, {"train_seconds", seconds},
                        {"per_epoch", per_epoch}, {"kernels", net.ImplInfo()}};
  if (as_json) std::printf("%s\n", out.dump().c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string job_path = std::string(POLIS_SOURCE_DIR) + "/jobs/fashion_cnn.pbtxt";
  int batch = 32, threads = 1, steps = 200, warmup = 20, repeats = 5;
  bool as_json = false;
  double dp_clip = 0;
  std::string precision = "fp32";
  int epochs = 0;
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
  app.add_option("--precision", precision, "fp32, or bf16: Conv2D and Dense in bfloat16")
      ->check(CLI::IsMember({"fp32", "bf16"}))
      ->capture_default_str();
  app.add_option("--epochs", epochs, "train this many epochs and print test accuracy instead of timing steps")
      ->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);
  const bool bf16 = precision == "bf16";
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
  if (epochs > 0) return TrainEpochs(*job, *model, *train, paths, batch, epochs, bf16, threads, as_json);
  polis::nn::Network net(*model, batch, params.data(), grads.data(), true, false, bf16);

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
    nlohmann::json out = {{"impl", "polis"}, {"batch", batch}, {"threads", threads}, {"precision", precision},
                          {"dp_clip", dp_clip},
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
                        {"precision", precision}, {"images_per_second", median}, {"block_rates", rates},
                        {"step_ms_median", 1000.0 * batch / median},
                        {"gflops", median * 16.4e-3}, {"final_loss", last_loss},
                        {"kernels", net.ImplInfo()}};
  if (as_json) std::printf("%s\n", out.dump().c_str());
  else std::printf("batch %d, %d thread(s), %s: %.0f images/s (median of %d blocks), %.1f GFLOP/s\n",
                   batch, threads, precision.c_str(), median, repeats, median * 16.4e-3);
  return 0;
}
