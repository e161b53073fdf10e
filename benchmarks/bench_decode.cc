// Records read and decoded per second from a SHARDS dataset through the
// same Dataset::Gather a worker uses (pread, CRC-32, libpng/libjpeg-turbo
// decode, float conversion), in a seeded random order, on one core
// (decode_threads 0) unless --threads says otherwise.
// benchmarks/data_pipeline.sh runs it beside the PyTorch DataLoader peer.
#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdio>
#include <numeric>
#include <random>

#include "common/data/dataset.h"

int main(int argc, char** argv) {
  std::string dir;
  int threads = 0, batch = 64;
  int64_t limit = 0;
  CLI::App app{"polis-bench-decode: SHARDS records decoded per second"};
  app.add_option("--dir", dir, "dataset directory (polis-data pack --out)")->required();
  app.add_option("--threads", threads, "decode threads (0: the calling thread only)")->capture_default_str();
  app.add_option("--batch", batch, "records per Gather")->capture_default_str();
  app.add_option("--limit", limit, "first N training records (0 = all)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  polis::proto::DatasetSpec d;
  d.set_format(polis::proto::DatasetSpec::SHARDS);
  d.set_dir(dir);
  d.set_train_limit(limit);
  d.mutable_shards()->set_decode_threads(threads);
  auto ds = polis::data::OpenDataset(d, 1);
  if (!ds.ok()) {
    std::fprintf(stderr, "polis-bench-decode: %s\n", ds.status().message().c_str());
    return 1;
  }
  const int64_t n = (*ds)->size(polis::data::Part::kTrain);
  int64_t elements = 1;
  for (int64_t s : (*ds)->sample_shape()) elements *= s;
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), std::mt19937_64(7));
  std::vector<float> x(static_cast<size_t>(batch * elements)), y(static_cast<size_t>(batch));
  double checksum = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t at = 0; at < n; at += batch) {
    const int64_t m = std::min<int64_t>(batch, n - at);
    if (threads > 0 && at + m < n)
      (*ds)->Prefetch(polis::data::Part::kTrain, order.data() + at + m, std::min<int64_t>(batch, n - at - m));
    (*ds)->Gather(polis::data::Part::kTrain, order.data() + at, m, x.data(), y.data());
    if (auto st = (*ds)->TakeError(); !st.ok()) {
      std::fprintf(stderr, "polis-bench-decode: %s\n", st.message().c_str());
      return 1;
    }
    checksum += x[0] + y[0];
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("records %lld seconds %.3f records_per_second %.1f checksum %.3f\n", static_cast<long long>(n), s,
              static_cast<double>(n) / s, checksum);
  return 0;
}
