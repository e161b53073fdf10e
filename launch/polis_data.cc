// polis-data: build, inspect and verify sharded datasets (dataset.format
// SHARDS, docs/datasets.md).
//
//   polis-data pack idx --dir fashion-mnist --out DIR        IDX files (MNIST family)
//   polis-data pack folder --train PHOTOS --size 32x32 --out DIR
//   polis-data pack csv --job JOB.textproto --out DIR        a time series' windows
//   polis-data inspect DIR [--records N]
//   polis-data verify DIR
//
// Exit codes: 0 done (verify: every record good), 1 a problem with the
// data (each on one line naming the file and byte offset), 2 bad arguments.
#include <CLI/CLI.hpp>
#include <fmt/ranges.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <string>

#include "common/data/dataset.h"
#include "common/data/pack.h"
#include "common/data/shard_format.h"
#include "common/env.h"
#include "common/job_spec.h"

namespace {

using namespace polis;
using namespace polis::data;

int Fail(const Status& st, int code = 1) {
  std::fprintf(stderr, "polis-data: %s\n", st.message().c_str());
  return code;
}

bool ParseSize(const std::string& s, int* h, int* w) {
  return std::sscanf(s.c_str(), "%dx%d", h, w) == 2 && *h > 0 && *w > 0 && *h <= 65535 && *w <= 65535;
}

// A time series' windows: shape, features, and windows per part.
int InspectWindows(const std::string& dir, const ShardManifest& m, int64_t show) {
  std::printf("dataset   %s (time-series windows)\nsource    %s\nwindows   lookback %lld x %zu features, horizon "
              "%lld\nfeatures  %s\n",
              dir.c_str(), m.source.c_str(), static_cast<long long>(m.lookback), m.features.size(),
              static_cast<long long>(m.horizon), fmt::format("{}", fmt::join(m.features, ", ")).c_str());
  const std::vector<std::string> report = ReportLines(m.report);
  for (size_t i = 0; i < report.size(); ++i) std::printf("%-9s %s\n", i == 0 ? "read" : "", report[i].c_str());
  const char* names[] = {"train", "validation", "test"};
  int k = 0;
  for (const auto* part : {&m.train, &m.validation, &m.test}) {
    const char* name = names[k++];
    int64_t bytes = 0, shown = 0;
    for (const auto& s : *part) {
      bytes += s.tar_bytes;
      if (shown >= show) continue;
      auto ix = ReadShardIndex(dir, s);
      if (!ix.ok()) return Fail(ix.status());
      for (const auto& r : ix->records)
        if (shown++ < show)
          std::printf("  %s %s  %s offset %lld, %u bytes (target at +%u), crc32 %08x\n", name,
                      MemberName(r.key, kWindowInputExt).c_str(), s.tar.c_str(), static_cast<long long>(r.offset),
                      r.size, r.target_at, r.crc32);
    }
    std::printf("%-10s %lld windows in %zu shards, %.1f MiB\n", name, static_cast<long long>(m.records(*part)),
                part->size(), static_cast<double>(bytes) / (1 << 20));
  }
  return 0;
}

int Inspect(const std::string& dir, int64_t show) {
  auto m = ReadManifest(dir);
  if (!m.ok()) return Fail(m.status());
  if (m->timeseries()) return InspectWindows(dir, *m, show);
  std::printf("dataset   %s\nsource    %s\nimages    %d x %d x %d (channels x height x width), %s\nclasses   %zu: %s\n",
              dir.c_str(), m->source.c_str(), m->channels, m->height, m->width, EncodingExtension(m->encoding),
              m->classes.size(), fmt::format("{}", fmt::join(m->classes, ", ")).c_str());
  for (int part = 0; part < 2; ++part) {
    const auto& shards = part == 0 ? m->train : m->test;
    int64_t bytes = 0;
    std::map<int32_t, int64_t> per_class;
    int64_t shown = 0;
    for (const auto& s : shards) {
      bytes += s.tar_bytes;
      auto ix = ReadShardIndex(dir, s);
      if (!ix.ok()) return Fail(ix.status());
      for (size_t i = 0; i < ix->records.size(); ++i) {
        const auto& r = ix->records[i];
        ++per_class[r.label];
        if (shown++ < show)
          std::printf("  %s %s  label %d (%s)  %s offset %lld, %u bytes, crc32 %08x%s\n", part == 0 ? "train" : "test",
                      MemberName(r.key, EncodingExtension(ix->encoding)).c_str(), r.label,
                      m->classes[static_cast<size_t>(r.label)].c_str(), s.tar.c_str(),
                      static_cast<long long>(r.offset), r.size, r.crc32,
                      i < ix->sources.size() && !ix->sources[i].empty() ? (", from " + ix->sources[i]).c_str() : "");
      }
    }
    std::string hist;
    for (const auto& [label, n] : per_class) hist += fmt::format("{}{}: {}", hist.empty() ? "" : ", ", m->classes[label], n);
    std::printf("%-9s %lld records in %zu shards, %.1f MiB; per class: %s\n", part == 0 ? "train" : "test",
                static_cast<long long>(m->records(part == 1)), shards.size(), static_cast<double>(bytes) / (1 << 20),
                hist.c_str());
  }
  return 0;
}

int Verify(const std::string& dir) {
  VerifyResult v = VerifyShards(dir);
  for (const auto& p : v.problems) std::printf("%s\n", p.c_str());
  if (!v.problems.empty()) {
    std::printf("polis-data verify: %zu%s problems in '%s' (%lld records in %lld shards checked)\n", v.problems.size(),
                v.problems.size() >= 100 ? "+" : "", dir.c_str(), static_cast<long long>(v.records),
                static_cast<long long>(v.shards));
    return 1;
  }
  auto m = ReadManifest(dir);
  std::printf("polis-data verify: all %lld records in %lld shards of '%s' are good (%s)\n",
              static_cast<long long>(v.records), static_cast<long long>(v.shards), dir.c_str(),
              m.ok() && m->timeseries() ? "checksums, npy headers, shapes, finite values" : "checksums, images, labels");
  return 0;
}

// "polis-data: train: 26000 of 60000 records (43%), 13012/s, ETA 3s" on
// stderr every `every` seconds of a part (none in its first `every`
// seconds: a quick pack prints nothing).
class ProgressLines {
 public:
  explicit ProgressLines(double every) : every_(every) {}
  void operator()(const char* part, int64_t done, int64_t total) {
    if (every_ <= 0) return;
    const auto now = std::chrono::steady_clock::now();
    if (part != part_) {
      part_ = part;
      start_ = last_ = now;
      return;
    }
    if (Seconds(now - last_) < every_) return;
    last_ = now;
    const double rate = done / std::max(Seconds(now - start_), 1e-9);
    std::fprintf(stderr, "polis-data: %s: %lld of %lld records (%.0f%%), %.0f/s, ETA %s\n", part,
                 static_cast<long long>(done), static_cast<long long>(total), 100.0 * done / std::max<int64_t>(total, 1),
                 rate, Eta(rate > 0 ? (total - done) / rate : 0).c_str());
  }

 private:
  static double Seconds(std::chrono::steady_clock::duration d) { return std::chrono::duration<double>(d).count(); }
  static std::string Eta(double s) {
    const int64_t t = static_cast<int64_t>(std::lround(s));
    return t >= 60 ? fmt::format("{}m{:02}s", t / 60, t % 60) : fmt::format("{}s", t);
  }
  double every_;
  std::string part_;
  std::chrono::steady_clock::time_point start_, last_;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"polis-data: pack image datasets and time-series windows into tar shards that Polis jobs stream (dataset.format SHARDS), "
               "inspect them and verify every record (docs/datasets.md)"};
  app.require_subcommand(1);
  PackOptions o;
  std::string size, encoding = "png", dir = "fashion-mnist", train_root, test_root, target;
  std::vector<std::string> classes;
  std::string train_images = "train-images-idx3-ubyte.gz", train_labels = "train-labels-idx1-ubyte.gz",
              test_images = "t10k-images-idx3-ubyte.gz", test_labels = "t10k-labels-idx1-ubyte.gz";
  int64_t show = 0;

  CLI::App* pack = app.add_subcommand("pack", "pack a dataset into shards");
  pack->require_subcommand(1);
  auto common = [&](CLI::App* c) {
    c->add_option("--out", o.out, "the dataset directory to write (must not hold a dataset yet)")->required();
    c->add_option("--encoding", encoding, "how records are stored: png (lossless), jpg, or npy (the pixels uncompressed: no decoding cost)")
        ->capture_default_str()->check(CLI::IsMember({"png", "jpg", "npy"}));
    c->add_option("--quality", o.jpeg_quality, "JPEG quality")->capture_default_str()->check(CLI::Range(1, 100));
    c->add_option("--records-per-shard", o.records_per_shard, "records in each tar shard")
        ->capture_default_str()->check(CLI::Range(int64_t{1}, int64_t{100000000}));
    c->add_option("--channels", o.channels, "1 (grey) or 3 (RGB); default: the source's (IDX 1, folders 3)")
        ->check(CLI::IsMember({1, 3}));
    c->add_option("--train-limit", o.train_limit, "pack only the first N training images (0 = all)")
        ->check(CLI::Range(int64_t{0}, int64_t{1} << 40));
    c->add_option("--test-limit", o.test_limit, "pack only the first N test images (0 = all)")
        ->check(CLI::Range(int64_t{0}, int64_t{1} << 40));
    c->add_option("--copies", o.copies,
                  "store each training image N times, copies after the first randomly cropped, flipped and "
                  "jittered (a larger dataset from a small one)")
        ->capture_default_str()->check(CLI::Range(1, 10000));
    c->add_option("--seed", o.seed, "seed of the copies' augmentation and of the record order")->capture_default_str();
  };
  double progress_every = 5;
  auto progress_option = [&](CLI::App* c) {
    c->add_option("--progress", progress_every,
                  "seconds between progress lines on stderr (records done, rate, ETA; 0: none)")
        ->capture_default_str()->check(CLI::Range(0.0, 86400.0));
  };
  CLI::App* idx = pack->add_subcommand("idx", "pack the four IDX files of an MNIST-style dataset");
  common(idx);
  progress_option(idx);
  idx->add_option("--dir", dir, "directory of the IDX files (\"fashion-mnist\": $POLIS_FASHION_MNIST_DIR)")
      ->capture_default_str();
  idx->add_option("--train-images", train_images, "file name in --dir")->capture_default_str();
  idx->add_option("--train-labels", train_labels, "file name in --dir")->capture_default_str();
  idx->add_option("--test-images", test_images, "file name in --dir")->capture_default_str();
  idx->add_option("--test-labels", test_labels, "file name in --dir")->capture_default_str();
  idx->add_option("--size", size, "resize to HxW (default: the files' size)");
  CLI::App* folder = pack->add_subcommand("folder", "pack a folder of class folders of PNG/JPEG images");
  common(folder);
  progress_option(folder);
  folder->add_option("--train", train_root, "folder of class folders: TRAIN/CLASS/*.png|jpg")->required();
  folder->add_option("--test", test_root, "a test folder with the same class folders (default: hold out "
                                          "--test-fraction of each class)");
  folder->add_option("--test-fraction", o.test_fraction, "share of each class held out for test without --test")
      ->capture_default_str()->check(CLI::Range(0.0, 0.9));
  folder->add_option("--classes", classes, "class folders, in label order (default: every sub-folder, sorted)")
      ->delimiter(',');
  folder->add_option("--size", size, "resize every image to HxW, e.g. 32x32")->required();
  folder->add_flag("--skip-bad", o.skip_bad, "leave out images that cannot be decoded (each named) instead of stopping");

  std::string job_file;
  CLI::App* csv = pack->add_subcommand("csv", "pack every window of a job's CSV time series (dataset.timeseries), "
                                              "made and standardised exactly as training makes them");
  csv->add_option("--job", job_file, "the job file (text proto) whose dataset.timeseries to pack")->required();
  csv->add_option("--out", o.out, "the dataset directory to write (must not hold a dataset yet)")->required();
  progress_option(csv);
  csv->add_option("--records-per-shard", o.records_per_shard, "windows in each tar shard")
      ->capture_default_str()->check(CLI::Range(int64_t{1}, int64_t{100000000}));

  CLI::App* inspect = app.add_subcommand("inspect", "describe a dataset: shape, classes, shards, records per class (time series: lookback, horizon, features, windows per part)");
  inspect->add_option("dir", target, "the dataset directory")->required();
  inspect->add_option("--records", show, "also list the first N records of each part")->check(CLI::Range(0, 1000000));
  CLI::App* verify = app.add_subcommand("verify", "read every record: checksums, tar headers, images and labels (time series: npy headers, shapes, finite values)");
  verify->add_option("dir", target, "the dataset directory")->required();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    std::fprintf(stderr, "polis-data: %s (see --help)\n", e.what());
    return 2;
  }
  o.encoding = encoding == "jpg"   ? ImageEncoding::kJpeg
               : encoding == "npy" ? ImageEncoding::kNpy
                                   : ImageEncoding::kPng;
  if (!size.empty() && !ParseSize(size, &o.height, &o.width))
    return Fail(InvalidArgument("--size '{}': expected HxW, e.g. 32x32", size), 2);
  o.warn = [](const std::string& line) { std::fprintf(stderr, "polis-data: %s\n", line.c_str()); };
  o.progress = ProgressLines(progress_every);

  if (*inspect) return Inspect(target, show);
  if (*verify) return Verify(target);
  StatusOr<PackSummary> sum = InvalidArgument("no pack source");
  if (*csv) {
    auto job = LoadJobFile(job_file);
    if (!job.ok()) return Fail(job.status(), 2);
    sum = PackTimeSeries(job->spec, o);
  } else if (*idx) {
    proto::DatasetSpec d;
    d.set_dir(dir);
    d.set_train_images(train_images);
    d.set_train_labels(train_labels);
    d.set_test_images(test_images);
    d.set_test_labels(test_labels);
    const DatasetPaths p = ResolveDataset(d);
    sum = PackIdx(p.train_images, p.train_labels, p.test_images, p.test_labels, o);
  } else {
    sum = PackFolder(train_root, test_root, classes, o);
  }
  if (!sum.ok()) return Fail(sum.status());
  for (const std::string& line : ReportLines(sum->report)) std::printf("polis-data: %s\n", line.c_str());
  std::printf("%s\n", sum->ToString(o.out).c_str());
  return 0;
}
