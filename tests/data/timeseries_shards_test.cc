// Shards of a CSV time series' windows (`polis-data pack csv`,
// PackTimeSeries; docs/datasets.md): every record equal, bit for bit, to
// the window TimeSeriesDataset::Gather makes, in every split; verify
// naming a flipped byte; Python's tarfile + numpy reading a record; the
// SHARDS dataset on them a regression dataset with the CSV's statistics;
// and the job check refusing settings that do not apply.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>

#include <google/protobuf/util/message_differencer.h>

#include "common/data/dataset.h"
#include "common/data/pack.h"
#include "common/data/shard_format.h"
#include "common/data/timeseries.h"
#include "common/fs.h"
#include "common/job_spec.h"
#include "tests/data/record_server_thread.h"
#include "tests/integration/shell.h"

namespace polis::data {
namespace {

namespace fs = std::filesystem;
using TS = TimeSeriesDataset;

// A shell command's exit code and output (stdout and stderr).
std::string RunShell(const std::string& cmd, int* code) {
  const it::ShellRun r = it::Shell(cmd);
  *code = r.exit_code;
  return r.output;
}

std::string Hex(const float* v, int64_t n) {
  std::string out;
  const auto* b = reinterpret_cast<const unsigned char*>(v);
  for (int64_t i = 0; i < n * 4; ++i) out += fmt::format("{:02x}", b[i]);
  return out;
}

class TimeSeriesShards : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/polis-tsshards-XXXXXX";
    dir_ = mkdtemp(tmpl);
    // 20 days of hours from 2011-01-01 (480 rows less a 2-hour gap that
    // FORWARD_FILL fills): a numeric feature, a categorical one, and a
    // target with a daily cycle.
    std::string csv = "time,load,temp,weather\n";
    const int64_t start = 1293840000;
    for (int i = 0; i < 480; ++i) {
      if (i == 100 || i == 101) continue;
      const char* w = i % 7 == 0 ? "rain" : i % 11 == 0 ? "snow" : "clear";
      csv += fmt::format("{},{},{:.2f},{}\n", FormatTimestamp(start + i * 3600), 20 + (i % 24) * 3 + i % 5,
                         5 + 0.1 * (i % 37), w);
    }
    ASSERT_TRUE(WriteFileAtomic(dir_ + "/load.csv", csv).ok());
    job_text_ = fmt::format(
        "name: \"load\"\n"
        "model {{ layer {{ type: \"Flatten\" }} layer {{ type: \"Dense\" dense_param {{ units: 3 }} }} loss: MSE }}\n"
        "dataset {{ format: CSV timeseries {{ path: \"{}/load.csv\" timestamp_column: \"time\" target_column: "
        "\"load\" numeric_features: \"temp\" categorical_features {{ column: \"weather\" }} calendar_features {{ "
        "hour: true weekday: false month: false }} lookback: 12 horizon: 3 validation_start: \"2011-01-14\" "
        "test_start: \"2011-01-17\" missing_policy: FORWARD_FILL }} }}\n"
        "sync {{ mode: ALLREDUCE servers: 0 }}\n",
        dir_);
    ASSERT_TRUE(WriteFileAtomic(dir_ + "/job.pbtxt", job_text_).ok());
    auto job = ParseJobText(job_text_, dir_ + "/job.pbtxt");
    ASSERT_TRUE(job.ok()) << job.status().ToString();
    job_ = job->spec;
  }
  void TearDown() override { fs::remove_all(dir_); }

  StatusOr<PackSummary> Pack(const std::string& out) {
    PackOptions o;
    o.out = out;
    o.records_per_shard = 50;
    return PackTimeSeries(job_, o);
  }
  proto::DatasetSpec Shards(const std::string& out, int threads) {
    proto::DatasetSpec d;
    d.set_format(proto::DatasetSpec::SHARDS);
    d.set_dir(out);
    d.mutable_shards()->set_decode_threads(threads);
    d.mutable_shards()->set_prefetch_records(16);
    return d;
  }

  std::string dir_, job_text_;
  proto::JobSpec job_;
};

TEST_F(TimeSeriesShards, EveryRecordIsTheCsvWindowBitForBitInEverySplit) {
  auto ts = TS::Open(job_.dataset().timeseries());
  ASSERT_TRUE(ts.ok()) << ts.status().ToString();
  ASSERT_GT(ts->size(TS::kValidation), 0);
  auto sum = Pack(dir_ + "/ds");
  ASSERT_TRUE(sum.ok()) << sum.status().ToString();
  EXPECT_EQ(sum->train, ts->size(TS::kTrain));
  EXPECT_EQ(sum->validation, ts->size(TS::kValidation));
  EXPECT_EQ(sum->test, ts->size(TS::kTest));
  EXPECT_GT(sum->train_shards, 1);
  // What the reader did (here: hours 100 and 101 missing, forward-filled)
  // travels with the shards.
  ASSERT_NE(ts->report().find("gaps in time: 1"), std::string::npos) << ts->report();
  EXPECT_EQ(sum->report, ts->report());
  auto manifest = ReadManifest(dir_ + "/ds");
  ASSERT_TRUE(manifest.ok()) << manifest.status().ToString();
  EXPECT_EQ(manifest->report, ts->report());

  const int64_t L = ts->lookback(), F = ts->num_features(), H = ts->horizon();
  for (int threads : {0, 2}) {
    auto ds = OpenDataset(Shards(dir_ + "/ds", threads), 1);
    ASSERT_TRUE(ds.ok()) << ds.status().ToString();
    EXPECT_EQ((*ds)->task(), Task::kRegression);
    EXPECT_EQ((*ds)->sample_shape(), (std::vector<int64_t>{L, F}));
    EXPECT_EQ((*ds)->target_width(), H);
    EXPECT_EQ((*ds)->TargetToOriginal(0.5), ts->TargetToOriginal(0.5));
    EXPECT_EQ((*ds)->PreprocessingJson(), ts->PreprocessingJson());
    EXPECT_EQ((*ds)->Baselines().dump(), nlohmann::json::parse(ts->BaselinesJson(TS::kTest)).dump());
    EXPECT_NE((*ds)->Report().find("\npacked from: " + ts->report()), std::string::npos) << (*ds)->Report();
    ASSERT_NE((*ds)->timeseries_spec(), nullptr);
    EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(*(*ds)->timeseries_spec(), ts->spec()));
    const std::pair<Part, TS::Split> parts[] = {
        {Part::kTrain, TS::kTrain}, {Part::kValidation, TS::kValidation}, {Part::kTest, TS::kTest}};
    for (const auto& [p, s] : parts) {
      const int64_t n = ts->size(s);
      ASSERT_EQ((*ds)->size(p), n);
      // In a shuffled order with prefetch, as training reads them.
      std::vector<int64_t> idx(static_cast<size_t>(n));
      std::iota(idx.begin(), idx.end(), int64_t{0});
      for (int64_t i = 0; i < n; ++i) std::swap(idx[static_cast<size_t>(i)], idx[static_cast<size_t>((i * 37) % n)]);
      std::vector<float> x(static_cast<size_t>(n * L * F)), y(static_cast<size_t>(n * H));
      std::vector<float> wx(x.size()), wy(y.size());
      (*ds)->Prefetch(p, idx.data(), n);
      (*ds)->Gather(p, idx.data(), n, x.data(), y.data());
      ASSERT_TRUE((*ds)->TakeError().ok());
      ts->Gather(s, idx.data(), n, wx.data(), wy.data());
      EXPECT_EQ(std::memcmp(x.data(), wx.data(), x.size() * 4), 0) << "split " << static_cast<int>(s);
      EXPECT_EQ(std::memcmp(y.data(), wy.data(), y.size() * 4), 0) << "split " << static_cast<int>(s);
    }
  }
  // A job's train_limit applies to the training windows only.
  auto limited_spec = Shards(dir_ + "/ds", 0);
  limited_spec.set_train_limit(7);
  auto limited = OpenDataset(limited_spec, 1);
  ASSERT_TRUE(limited.ok()) << limited.status().ToString();
  EXPECT_EQ((*limited)->size(Part::kTrain), 7);
  EXPECT_EQ((*limited)->size(Part::kValidation), ts->size(TS::kValidation));
  EXPECT_FALSE((*limited)->Baselines().empty());
  // A test_limit: the CSV's baselines are scored on the windows kept; the
  // pack scored them all, so the shards give none.
  auto test_limited_spec = Shards(dir_ + "/ds", 0);
  test_limited_spec.set_test_limit(5);
  auto test_limited = OpenDataset(test_limited_spec, 1);
  ASSERT_TRUE(test_limited.ok()) << test_limited.status().ToString();
  EXPECT_EQ((*test_limited)->size(Part::kTest), 5);
  EXPECT_TRUE((*test_limited)->Baselines().empty()) << (*test_limited)->Baselines().dump();
  proto::DatasetSpec csv_limited = job_.dataset();
  csv_limited.set_test_limit(5);
  auto csv = OpenDataset(csv_limited, 1);
  ASSERT_TRUE(csv.ok()) << csv.status().ToString();
  EXPECT_EQ((*csv)->Baselines().dump(), nlohmann::json::parse(ts->BaselinesJson(TS::kTest, 5)).dump());
  EXPECT_NE((*csv)->Baselines().dump(), nlohmann::json::parse(ts->BaselinesJson(TS::kTest)).dump());
  // Packing over a dataset is refused.
  EXPECT_EQ(Pack(dir_ + "/ds").status().code(), Code::kAlreadyExists);
}

TEST_F(TimeSeriesShards, VerifyPassesAndNamesAFlippedByteWithShardAndOffset) {
  ASSERT_TRUE(Pack(dir_ + "/ds").ok());
  auto m = ReadManifest(dir_ + "/ds");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  const int64_t total = m->records(m->train) + m->records(m->validation) + m->records(m->test);
  VerifyResult good = VerifyShards(dir_ + "/ds");
  EXPECT_TRUE(good.problems.empty()) << good.problems[0];
  EXPECT_EQ(good.records, total);

  int code = 0;
  std::string out = RunShell(std::string(POLIS_BINARY_DIR) + "/launch/polis-data verify " + dir_ + "/ds", &code);
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find(fmt::format("all {} records", total)), std::string::npos) << out;
  EXPECT_NE(out.find("npy headers, shapes, finite values"), std::string::npos) << out;

  // One byte of record 3's target in the second training shard.
  auto ix = ReadShardIndex(dir_ + "/ds", m->train[1]);
  ASSERT_TRUE(ix.ok());
  const ShardRecord& r = ix->records[3];
  const std::string tar = dir_ + "/ds/" + m->train[1].tar;
  {
    std::fstream f(tar, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(r.offset + r.target_at + 100);
    char c = 0;
    f.read(&c, 1);
    c ^= 0x10;
    f.seekp(r.offset + r.target_at + 100);
    f.write(&c, 1);
  }
  VerifyResult bad = VerifyShards(dir_ + "/ds");
  ASSERT_EQ(bad.problems.size(), 1u);
  EXPECT_NE(bad.problems[0].find(fmt::format("'{}' offset {}", tar, r.offset)), std::string::npos) << bad.problems[0];
  EXPECT_NE(bad.problems[0].find("CRC-32"), std::string::npos) << bad.problems[0];
  out = RunShell(std::string(POLIS_BINARY_DIR) + "/launch/polis-data verify " + dir_ + "/ds", &code);
  EXPECT_EQ(code, 1) << out;
  EXPECT_NE(out.find(m->train[1].tar), std::string::npos) << out;

  // Training from it under FAIL stops with the same line.
  auto ds = OpenDataset(Shards(dir_ + "/ds", 0), 1);
  ASSERT_TRUE(ds.ok());
  const int64_t i = 50 + 3;  // the part's record: 50 in the first shard
  std::vector<float> x(static_cast<size_t>(12 * m->features.size())), y(3);
  (*ds)->Gather(Part::kTrain, &i, 1, x.data(), y.data());
  Status st = (*ds)->TakeError();
  EXPECT_EQ(st.code(), Code::kDataLoss);
  EXPECT_NE(st.message().find(fmt::format("offset {}", r.offset)), std::string::npos) << st.message();
}

TEST_F(TimeSeriesShards, PythonTarfileAndNumpyReadARecordAsItIs) {
  ASSERT_TRUE(Pack(dir_ + "/ds").ok());
  auto ts = TS::Open(job_.dataset().timeseries());
  ASSERT_TRUE(ts.ok());
  const int64_t i = 55;  // second shard, record 5
  std::vector<float> x(static_cast<size_t>(ts->lookback() * ts->num_features())), y(static_cast<size_t>(ts->horizon()));
  ts->Gather(TS::kTrain, &i, 1, x.data(), y.data());
  const std::string py =
      "import sys, tarfile, numpy as np, io\n"
      "t = tarfile.open(sys.argv[1])\n"
      "names = t.getnames()\n"
      "assert names[:4] == ['000000050.input.npy', '000000050.target.npy', '000000051.input.npy', "
      "'000000051.target.npy'], names[:4]\n"
      "x = np.load(io.BytesIO(t.extractfile('000000055.input.npy').read()))\n"
      "y = np.load(io.BytesIO(t.extractfile('000000055.target.npy').read()))\n"
      "print(x.dtype, x.shape, y.dtype, y.shape)\n"
      "print(x.tobytes().hex())\n"
      "print(y.tobytes().hex())\n";
  ASSERT_TRUE(WriteFileAtomic(dir_ + "/read.py", py).ok());
  int code = 0;
  const std::string out = RunShell("/usr/bin/python3 " + dir_ + "/read.py " + dir_ + "/ds/train-000001.tar", &code);
  ASSERT_EQ(code, 0) << out;
  EXPECT_EQ(out, fmt::format("float32 ({}, {}) float32 ({},)\n{}\n{}\n", ts->lookback(), ts->num_features(),
                             ts->horizon(), Hex(x.data(), static_cast<int64_t>(x.size())),
                             Hex(y.data(), static_cast<int64_t>(y.size()))));
}

TEST_F(TimeSeriesShards, PolisDataPacksAJobsCsvAndInspectDescribesIt) {
  int code = 0;
  std::string out = RunShell(std::string(POLIS_BINARY_DIR) + "/launch/polis-data pack csv --job " + dir_ +
                            "/job.pbtxt --records-per-shard 100 --out " + dir_ + "/ds",
                        &code);
  ASSERT_EQ(code, 0) << out;
  auto ts = TS::Open(job_.dataset().timeseries());
  ASSERT_TRUE(ts.ok());
  EXPECT_NE(out.find("polis-data:   gaps in time: 1 "), std::string::npos) << out;
  EXPECT_NE(out.find(fmt::format("packed {} training, {} validation and {} test windows", ts->size(TS::kTrain),
                                 ts->size(TS::kValidation), ts->size(TS::kTest))),
            std::string::npos)
      << out;
  out = RunShell(std::string(POLIS_BINARY_DIR) + "/launch/polis-data inspect " + dir_ + "/ds", &code);
  ASSERT_EQ(code, 0) << out;
  EXPECT_NE(out.find(fmt::format("lookback 12 x {} features, horizon 3", ts->num_features())), std::string::npos)
      << out;
  EXPECT_NE(out.find("load, temp, weather=<unknown>, weather=clear"), std::string::npos) << out;
  EXPECT_NE(out.find(fmt::format("validation {} windows", ts->size(TS::kValidation))), std::string::npos) << out;
  EXPECT_NE(out.find("\nread      time series '" + dir_ + "/load.csv'"), std::string::npos) << out;
  EXPECT_NE(out.find("            gaps in time: 1 "), std::string::npos) << out;
  // A job that is not a CSV time series: one line.
  ASSERT_TRUE(WriteFileAtomic(dir_ + "/idx.pbtxt",
                              "name: \"i\" model { layer { type: \"Dense\" dense_param { units: 10 } } } "
                              "dataset { format: IDX dir: \"fashion-mnist\" }")
                  .ok());
  out = RunShell(std::string(POLIS_BINARY_DIR) + "/launch/polis-data pack csv --job " + dir_ + "/idx.pbtxt --out " +
                dir_ + "/ds2",
            &code);
  EXPECT_EQ(code, 1) << out;
  EXPECT_NE(out.find("not a CSV time series"), std::string::npos) << out;
}

// polis-train --check on a SHARDS job over windows: the model is built on
// (lookback, features) and the horizon; settings that do not apply are
// refused, each named.
// dataset.source COORDINATOR: a worker's windows come from the
// coordinator's copy and are the ones its own copy would give, bit for
// bit, in every part, with the statistics, baselines and spec the worker
// would have read from the manifest.
TEST_F(TimeSeriesShards, WindowsFromTheCoordinatorAreTheLocalWindowsBitForBit) {
  ASSERT_TRUE(Pack(dir_ + "/ds").ok());
  for (int threads : {0, 2}) {
    auto spec = Shards(dir_ + "/ds", threads);
    spec.set_source(proto::DatasetSpec::COORDINATOR);
    CoordinatorThread server(spec);
    auto remote = server.OpenRemote(spec);
    ASSERT_TRUE(remote.ok()) << remote.status().ToString();
    const Dataset& local = server.local();
    const Dataset& r = **remote;
    EXPECT_TRUE(r.files().empty());  // nothing read on this rank
    EXPECT_EQ(r.task(), Task::kRegression);
    EXPECT_EQ(r.sample_shape(), local.sample_shape());
    EXPECT_EQ(r.target_width(), local.target_width());
    EXPECT_EQ(r.TargetToOriginal(0.5), local.TargetToOriginal(0.5));
    EXPECT_EQ(r.PreprocessingJson(), local.PreprocessingJson());
    EXPECT_EQ(r.Baselines().dump(), local.Baselines().dump());
    ASSERT_NE(r.timeseries_spec(), nullptr);
    EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(*r.timeseries_spec(), *local.timeseries_spec()));
    const int64_t e = local.sample_shape()[0] * local.sample_shape()[1], h = local.target_width();
    for (Part p : {Part::kTrain, Part::kValidation, Part::kTest}) {
      const int64_t n = local.size(p);
      ASSERT_EQ(r.size(p), n);
      std::vector<int64_t> idx(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) idx[static_cast<size_t>(i)] = (i * 37 + 5) % n;
      std::vector<float> xl(static_cast<size_t>(n * e)), yl(static_cast<size_t>(n * h)), xr(xl.size()), yr(yl.size());
      // Batches of 8 with the rest prefetched, as the worker's loop does.
      for (int64_t b = 0; b < n; b += 8) {
        const int64_t m = std::min<int64_t>(8, n - b);
        local.Gather(p, idx.data() + b, m, xl.data() + b * e, yl.data() + b * h);
        r.Gather(p, idx.data() + b, m, xr.data() + b * e, yr.data() + b * h);
        r.Prefetch(p, idx.data() + b + m, n - b - m);
      }
      ASSERT_TRUE(r.TakeError().ok());
      EXPECT_EQ(std::memcmp(xl.data(), xr.data(), xl.size() * 4), 0) << "part " << static_cast<int>(p);
      EXPECT_EQ(std::memcmp(yl.data(), yr.data(), yl.size() * 4), 0) << "part " << static_cast<int>(p);
    }
    EXPECT_GT(server.requests(), 0);
  }
}

TEST_F(TimeSeriesShards, JobCheckRefusesSettingsThatDoNotApplyToWindows) {
  ASSERT_TRUE(Pack(dir_ + "/ds").ok());
  auto job = [&](const std::string& extra, int units = 3, const std::string& loss = "MSE") {
    return ParseJobText(fmt::format("name: \"t\" model {{ layer {{ type: \"Flatten\" }} layer {{ type: \"Dense\" "
                                    "dense_param {{ units: {} }} }} loss: {} }} dataset {{ format: SHARDS dir: "
                                    "\"{}/ds\" {} }} sync {{ mode: ALLREDUCE servers: 0 }}",
                                    units, loss, dir_, extra),
                        "t.pbtxt");
  };
  auto good = job("");
  ASSERT_TRUE(good.ok()) << good.status().ToString();
  auto model = CheckJob(*good);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  EXPECT_EQ(model->input_shape()[0], 12);
  auto from_coordinator = job("source: COORDINATOR");
  ASSERT_TRUE(from_coordinator.ok()) << from_coordinator.status().ToString();
  EXPECT_TRUE(CheckJob(*from_coordinator).ok());
  auto check = [&](const StatusOr<LoadedJob>& j, const std::string& want) {
    ASSERT_TRUE(j.ok()) << j.status().ToString();
    auto r = CheckJob(*j);
    ASSERT_FALSE(r.ok()) << want;
    EXPECT_NE(r.status().message().find(want), std::string::npos) << r.status().message();
  };
  check(job("augmentation { horizontal_flip: true }"), "field 'dataset.augmentation'");
  check(job("validation_fraction: 0.1"), "field 'dataset.validation_fraction'");
  check(job("validation_size: 10"), "field 'dataset.validation_size'");
  check(job("scale: 1"), "field 'dataset.scale'");
  check(job("shift: 0.5"), "field 'dataset.shift'");
  check(job("class_names: \"a\" class_names: \"b\""), "field 'dataset.class_names'");
  check(job("", 3, "SOFTMAX_CROSS_ENTROPY"), "field 'model.loss'");
  check(job("", 2), "a forecast horizon of 3");
}

}  // namespace
}  // namespace polis::data
