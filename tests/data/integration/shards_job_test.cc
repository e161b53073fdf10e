// Real jobs (mpirun, polis-run) trained from shards packed by polis-data:
// Fashion-MNIST to the IDX job's accuracy bar, an image folder made here
// (RGB PNG and JPEG, three classes) with augmentation, the model published
// from that folder served from the image files themselves, a worker's
// peak memory while it streams a dataset several times larger than the
// bound, and a CSV time series' windows training the CSV job's very model,
// served from raw rows.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <thread>

#include <google/protobuf/text_format.h>

#include "common/artifact/artifact.h"
#include "common/data/dataset.h"
#include "common/data/image_codec.h"
#include "common/data/shard_dataset.h"
#include "common/data/shard_format.h"
#include "common/data/timeseries.h"
#include "common/fs.h"
#include "common/http/http_client.h"
#include "registry/image_input.h"
#include "tests/integration/shell.h"
#include "tests/prereq.h"

namespace polis {
namespace {

using namespace polis::it;

// The IDX job's bar (tests/integration/train_integration_test.cc): 2 epochs
// on 6000 images.
constexpr double kAccuracyBar = 0.70;

std::string PolisData(const std::string& args) { return kBin + "/launch/polis-data " + args; }

// The seed job reading `dir` as SHARDS, with `extra` inside its dataset block.
std::string ShardsJobFile(const std::string& work, const std::string& dir, const std::string& extra = "",
                      const std::string& base = "fashion_cnn.pbtxt") {
  return JobVariant(work, "shards.pbtxt",
                    {{"format: IDX", "format: SHARDS " + extra}, {"dir: \"fashion-mnist\"", "dir: \"" + dir + "\""},
                     {"num_classes: 10", ""}},
                    base);
}

// A fresh temporary directory `work` per test, removed afterwards.
class ShardsJob : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/polis-it-XXXXXX";
    work = mkdtemp(tmpl);
  }
  void TearDown() override { std::filesystem::remove_all(work); }
  std::string work;
};

// An all-reduce classification job on a SHARDS dataset: `layers` and the
// inside of the dataset block after `format: SHARDS`.
void WriteAllReduceJob(const std::string& path, const std::string& name, const std::string& layers,
                       const std::string& dataset, const std::string& optimizer, const std::string& training) {
  std::ofstream(path) << "name: \"" << name << "\"\nmodel {\n" << layers << "  loss: SOFTMAX_CROSS_ENTROPY\n}\n"
                      << "dataset { format: SHARDS " << dataset << " }\n"
                      << "optimizer { type: ADAM " << optimizer << " }\n"
                      << "training { " << training << " }\n"
                      << "sync { mode: ALLREDUCE servers: 0 }\n"
                      << "registry { root: \"registry-root\" model_name: \"" << name << "\" }\n";
}

TEST_F(ShardsJob, FashionMnistPackVerifyTrainReachesTheIdxBar) {
  if (!HaveFashionMnist()) POLIS_MISSING_PREREQ() << "Fashion-MNIST is not installed (dataset-fashion-mnist)";
  // Progress lines every 0.05 s (the default, 5 s, outlasts this pack).
  ShellRun pack = Shell(PolisData("pack idx --dir /usr/share/datasets/fashion-mnist --train-limit 6000 "
                                  "--test-limit 2000 --records-per-shard 2500 --progress 0.05 --out " + work + "/fm"));
  ASSERT_EQ(pack.exit_code, 0) << pack.output;
  EXPECT_NE(pack.output.find("packed 6000 training records in 3 shards"), std::string::npos) << pack.output;
  const size_t line = pack.output.find("polis-data: train: ");
  ASSERT_NE(line, std::string::npos) << pack.output;
  const std::string progress = pack.output.substr(line, pack.output.find('\n', line) - line);
  EXPECT_NE(progress.find(" of 6000 records ("), std::string::npos) << progress;
  EXPECT_NE(progress.find("/s, ETA "), std::string::npos) << progress;
  ShellRun quiet = Shell(PolisData("pack idx --dir /usr/share/datasets/fashion-mnist --train-limit 3000 "
                                   "--test-limit 500 --progress 0 --out " + work + "/fm-quiet"));
  ASSERT_EQ(quiet.exit_code, 0) << quiet.output;
  EXPECT_EQ(quiet.output.find("records ("), std::string::npos) << quiet.output;
  ShellRun verify = Shell(PolisData("verify " + work + "/fm"));
  ASSERT_EQ(verify.exit_code, 0) << verify.output;
  EXPECT_NE(verify.output.find("all 8000 records in 4 shards"), std::string::npos) << verify.output;
  ShellRun inspect = Shell(PolisData("inspect " + work + "/fm"));
  ASSERT_EQ(inspect.exit_code, 0) << inspect.output;
  EXPECT_NE(inspect.output.find("1 x 28 x 28"), std::string::npos) << inspect.output;

  const std::string job = ShardsJobFile(work, work + "/fm");
  ShellRun r = Shell(PolisRun("--workers 2 --servers 1 --epochs 2 --registry " + work + "/registry --run-dir " +
                              work + "/run " + job));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto result = ReadJson(work + "/run/result.json");
  EXPECT_GT(result["test_accuracy"].get<double>(), kAccuracyBar) << result.dump();
  EXPECT_EQ(result["reloaded_test_accuracy"], result["test_accuracy"]);
  for (const auto& h : result["history"]) EXPECT_EQ(h["train_samples"], 6000);  // exactly once per epoch
}

// Three classes told apart by colour and layout, as RGB PNG and JPEG files
// of different sizes (20..24 x 24): DIR/CLASS/NNN.{png,jpg}.
void WriteShapePhotos(const std::string& dir) {
  const char* classes[] = {"red_bar", "green_square", "blue_dot"};
  uint64_t rng = 12345;
  auto noise = [&] { return static_cast<int>((rng = rng * 6364136223846793005ull + 1442695040888963407ull) >> 59); };
  for (int c = 0; c < 3; ++c) {
    std::filesystem::create_directories(dir + "/" + classes[c]);
    for (int i = 0; i < 60; ++i) {
      data::Pixels p;
      p.height = 20 + i % 5;
      p.width = 24;
      p.channels = 3;
      p.hwc.assign(static_cast<size_t>(p.height) * p.width * 3, 0);
      for (int y = 0; y < p.height; ++y)
        for (int x = 0; x < p.width; ++x) {
          const bool on = c == 0 ? (y > 8 && y < 13) : c == 1 ? (x > 6 && x < 18 && y > 4 && y < 16)
                                                             : ((x - 12) * (x - 12) + (y - 10) * (y - 10) < 16);
          for (int k = 0; k < 3; ++k)
            p.hwc[(static_cast<size_t>(y) * p.width + x) * 3 + k] =
                static_cast<uint8_t>(std::min(255, (on && k == c ? 200 : 40) + noise() * 3));
        }
      const bool jpeg = i % 2 == 1;
      auto bytes = data::EncodeImage(p, jpeg ? data::ImageEncoding::kJpeg : data::ImageEncoding::kPng, 92);
      ASSERT_TRUE(bytes.ok());
      std::ofstream(fmt::format("{}/{}/{:03d}.{}", dir, classes[c], i, jpeg ? "jpg" : "png"), std::ios::binary)
          << *bytes;
    }
  }
}

// A small CNN for the photos.
constexpr char kShapesCnn[] =
    "  layer { type: \"Conv2D\" activation: RELU conv2d_param { filters: 8 kernel_size: 3 padding: SAME } }\n"
    "  layer { type: \"MaxPool2D\" pool2d_param { pool_size: 2 } }\n"
    "  layer { type: \"Flatten\" }\n"
    "  layer { type: \"Dense\" dense_param { units: 3 } }\n";

// The photos packed to 16x16 and trained with augmentation.
TEST_F(ShardsJob, ImageFolderOfRgbPngAndJpegTrainsEndToEnd) {
  WriteShapePhotos(work + "/photos");
  ShellRun pack = Shell(PolisData("pack folder --train " + work + "/photos --size 16x16 --test-fraction 0.25 "
                                  "--encoding jpg --out " + work + "/ds"));
  ASSERT_EQ(pack.exit_code, 0) << pack.output;
  EXPECT_NE(pack.output.find("packed 135 training records"), std::string::npos) << pack.output;
  const std::string job = work + "/shapes.pbtxt";
  WriteAllReduceJob(job, "shapes", kShapesCnn,
                    "dir: \"" + work + "/ds\"\n"
                    "  augmentation { crop_padding: 1 horizontal_flip: true brightness: 0.05 contrast: 0.1 }",
                    "learning_rate: 0.01", "batch_size: 15 epochs: 4 seed: 3");
  ShellRun r = Shell(PolisRun("--workers 2 --registry " + work + "/registry --run-dir " + work + "/run " + job));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto result = ReadJson(work + "/run/result.json");
  EXPECT_GT(result["test_accuracy"].get<double>(), 0.9) << result.dump();
  for (const auto& h : result["history"]) EXPECT_EQ(h["train_samples"], 135);
  // The job names no classes: the published model takes the pack's folder
  // names, in label order (the sub-folders, sorted), and says so.
  auto art = ReadArtifactFile(result["artifact"].get<std::string>());
  ASSERT_TRUE(art.ok()) << art.status().ToString();
  EXPECT_EQ(std::vector<std::string>(art->header.class_names().begin(), art->header.class_names().end()),
            (std::vector<std::string>{"blue_dot", "green_square", "red_bar"}));
  EXPECT_EQ(art->header.output_description(), "probabilities of 3 classes: blue_dot, green_square, red_bar");
  EXPECT_EQ(art->header.input_description().rfind("3x16x16 colour (RGB) image", 0), 0u)
      << art->header.input_description();
}

// dataset.source COORDINATOR: the same job trains the same model as with
// LOCAL (one worker: every loss and accuracy equal to the last bit), with a
// validation split, augmentation and JPEG records; and with two workers and
// a parameter server every record is trained once per epoch.
TEST_F(ShardsJob, RecordsFromTheCoordinatorTrainTheSameModelAsLocalFiles) {
  WriteShapePhotos(work + "/photos");
  ShellRun pack = Shell(PolisData("pack folder --train " + work + "/photos --size 16x16 --test-fraction 0.25 "
                                  "--encoding jpg --out " + work + "/ds"));
  ASSERT_EQ(pack.exit_code, 0) << pack.output;
  auto train = [&](const std::string& name, const std::string& source, const std::string& flags) {
    const std::string job = work + "/" + name + ".pbtxt";
    WriteAllReduceJob(job, name, kShapesCnn,
                      "dir: \"" + work + "/ds\" source: " + source + " validation_fraction: 0.2\n"
                      "  augmentation { crop_padding: 1 horizontal_flip: true brightness: 0.05 }",
                      "learning_rate: 0.01", "batch_size: 12 epochs: 3 seed: 5");
    ShellRun r = Shell(PolisRun(flags + " --registry " + work + "/registry --run-dir " + work + "/" + name + " " + job));
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return ReadJson(work + "/" + name + "/result.json");
  };
  auto local = train("local", "LOCAL", "--workers 1");
  auto remote = train("remote", "COORDINATOR", "--workers 1");
  ASSERT_EQ(local["history"].size(), 3u) << local.dump();
  ASSERT_EQ(remote["history"].size(), 3u) << remote.dump();
  for (const char* key : {"train_loss", "train_accuracy", "validation_loss", "validation_accuracy"})
    for (size_t e = 0; e < 3; ++e) EXPECT_EQ(local["history"][e][key], remote["history"][e][key]) << key << " " << e;
  EXPECT_EQ(local["test_accuracy"], remote["test_accuracy"]);
  EXPECT_EQ(local["test_loss"], remote["test_loss"]);

  // Parameter servers and two workers, both asking the coordinator.
  const std::string job = work + "/ps.pbtxt";
  WriteAllReduceJob(job, "ps", kShapesCnn, "dir: \"" + work + "/ds\" source: COORDINATOR", "learning_rate: 0.01",
                    "batch_size: 15 epochs: 4 seed: 3");
  std::string text = *ReadFile(job);
  text.replace(text.find("mode: ALLREDUCE servers: 0"), 26, "mode: PARAMETER_SERVER servers: 1");
  std::ofstream(job) << text;
  ShellRun r = Shell(PolisRun("--workers 2 --servers 1 --registry " + work + "/registry --run-dir " + work + "/ps " + job));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto ps = ReadJson(work + "/ps/result.json");
  EXPECT_GT(ps["test_accuracy"].get<double>(), 0.9) << ps.dump();
  for (const auto& h : ps["history"]) EXPECT_EQ(h["train_samples"], 135);

  // Stopped by SIGTERM to the coordinator (as Slurm's time limit does) in
  // its second epoch, while record requests are in flight, then resumed:
  // the stop ends in order (a wait for records that never come would fail
  // it at POLIS_TIMEOUT_S), and the resumed run finishes the job. (The
  // interrupted epoch's row counts the samples trained after the resume.)
  const std::string stopped = work + "/ps-stopped";
  ShellRun first;
  std::thread run([&] {
    first = Shell("POLIS_TIMEOUT_S=60 POLIS_TEST_SLOW_WORKER=0:30 " +
                  PolisRun("--workers 2 --servers 1 --registry " + work + "/registry --run-dir " + stopped + " " + job));
  });
  int coordinator = -1;
  for (int i = 0; i < 1200 && coordinator < 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    auto rows = ReadFile(stopped + "/metrics.jsonl");
    if (rows.ok() && !rows->empty()) coordinator = ReadJson(stopped + "/coordinator.json").value("pid", -1);
  }
  if (coordinator > 0) kill(coordinator, SIGTERM);
  run.join();
  ASSERT_GT(coordinator, 0) << "no epoch finished:\n" << first.output;
  ASSERT_EQ(first.exit_code, 0) << first.output;
  EXPECT_NE(first.output.find("resume with"), std::string::npos) << first.output;
  ShellRun second = Shell(PolisRun("--resume " + stopped));
  ASSERT_EQ(second.exit_code, 0) << second.output;
  auto resumed = ReadJson(stopped + "/result.json");
  EXPECT_EQ(resumed["state"], "done") << resumed.dump();
  ASSERT_EQ(resumed["history"].size(), 4u) << resumed.dump();
  int whole = 0;
  for (const auto& h : resumed["history"]) {
    EXPECT_GT(h["train_samples"].get<int>(), 0) << resumed.dump();
    EXPECT_LE(h["train_samples"].get<int>(), 135) << resumed.dump();
    whole += h["train_samples"] == 135;
  }
  EXPECT_GE(whole, 3) << resumed.dump();
}

// polis-registry serve on ROOT, a free port; stopped with the object.
class RegistryProcess {
 public:
  explicit RegistryProcess(const std::string& root) {
    const std::string bin = kBin + "/registry/polis-registry", port_file = root + ".port";
    pid_ = fork();
    if (pid_ == 0) {
      execl(bin.c_str(), bin.c_str(), "serve", "--root", root.c_str(), "--listen", "127.0.0.1:0", "--port-file",
            port_file.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (pid_ > 0 && port_ == 0 && std::chrono::steady_clock::now() < deadline) {
      auto text = ReadFile(port_file);
      if (text.ok()) port_ = std::atoi(text->c_str());
      else std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  ~RegistryProcess() {
    if (pid_ <= 0) return;
    kill(pid_, SIGTERM);
    int status = 0;
    waitpid(pid_, &status, 0);
  }
  int port() const { return port_; }

 private:
  pid_t pid_ = -1;
  int port_ = 0;
};

std::vector<float> Logits(const http::HttpResult& r) {
  auto j = nlohmann::json::parse(r.body, nullptr, false);
  if (j.is_object() && j.contains("outputs"))
    for (const auto& o : j["outputs"])
      if (o["name"] == "logits") return o["data"].get<std::vector<float>>();
  ADD_FAILURE() << "no logits in " << r.body;
  return {};
}

// The photos packed to 16x16 PNG records, trained, published and served by
// polis-registry: the original files (PNG and JPEG, 20..24 x 24, resized by
// the server) sent as input 'image' get, bit for bit, the answer that the
// training pipeline's own floats for their records (the SHARDS dataset's
// evaluation Gather, with the job's scale and shift) get as FP32 'input'.
TEST_F(ShardsJob, PublishedImageModelIsServedFromTheOriginalFilesAsTrainingSawThem) {
  WriteShapePhotos(work + "/photos");
  ShellRun pack = Shell(PolisData("pack folder --train " + work + "/photos --size 16x16 --test-fraction 0.25 "
                                  "--encoding png --out " + work + "/ds"));
  ASSERT_EQ(pack.exit_code, 0) << pack.output;
  const std::string job = work + "/served.pbtxt";
  const std::string dataset = "dir: \"" + work + "/ds\" scale: 0.0078125 shift: -1";
  WriteAllReduceJob(job, "served", kShapesCnn, dataset, "learning_rate: 0.01", "batch_size: 15 epochs: 2 seed: 3");
  ShellRun r = Shell(PolisRun("--workers 1 --registry " + work + "/registry --run-dir " + work + "/run " + job));
  ASSERT_EQ(r.exit_code, 0) << r.output;

  // The first test records, as training's evaluation read them, and the
  // files they were packed from.
  auto manifest = data::ReadManifest(work + "/ds");
  ASSERT_TRUE(manifest.ok()) << manifest.status().ToString();
  auto index = data::ReadShardIndex(work + "/ds", manifest->test.at(0));
  ASSERT_TRUE(index.ok()) << index.status().ToString();
  ASSERT_GE(index->sources.size(), 8u);
  proto::DatasetSpec spec;
  ASSERT_TRUE(google::protobuf::TextFormat::ParseFromString("format: SHARDS " + dataset, &spec));
  spec.mutable_shards()->set_decode_threads(0);
  auto ds = data::OpenShardDataset(spec, 3);
  ASSERT_TRUE(ds.ok()) << ds.status().ToString();
  constexpr int64_t kRows = 8;
  const int64_t per_row = 3 * 16 * 16;
  std::vector<int64_t> idx(kRows);
  std::iota(idx.begin(), idx.end(), 0);
  std::vector<float> x(kRows * per_row), y(kRows);
  (*ds)->Gather(data::Part::kTest, idx.data(), kRows, x.data(), y.data());
  ASSERT_TRUE((*ds)->TakeError().ok());
  nlohmann::json files = nlohmann::json::array();
  int jpegs = 0;
  for (int64_t i = 0; i < kRows; ++i) {
    const std::string& source = index->sources[static_cast<size_t>(i)];
    jpegs += source.size() > 4 && source.substr(source.size() - 4) == ".jpg";
    auto bytes = ReadFile(source);
    ASSERT_TRUE(bytes.ok()) << bytes.status().ToString();
    files.push_back(registry::Base64Encode(*bytes));
  }
  EXPECT_GT(jpegs, 0) << "the first test records hold no JPEG file";

  RegistryProcess server(work + "/registry");
  ASSERT_GT(server.port(), 0) << "polis-registry serve did not start";
  http::HttpClient c("127.0.0.1", server.port());
  const nlohmann::json fp32 = {{"inputs", nlohmann::json::array({{{"name", "input"}, {"datatype", "FP32"},
                                                                   {"shape", {kRows, 3, 16, 16}}, {"data", x}}})}};
  auto want = c.Post("/v2/models/served/infer", fp32.dump());
  ASSERT_TRUE(want.ok()) << want.status().ToString();
  ASSERT_EQ(want->status, 200) << want->body;
  const nlohmann::json images = {{"inputs", nlohmann::json::array({{{"name", "image"}, {"datatype", "BYTES"},
                                                                     {"shape", {kRows}}, {"data", files}}})}};
  auto got = c.Post("/v2/models/served/infer", images.dump());
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  ASSERT_EQ(got->status, 200) << got->body;
  const std::vector<float> want_logits = Logits(*want);
  ASSERT_EQ(want_logits.size(), static_cast<size_t>(kRows * 3));
  EXPECT_EQ(Logits(*got), want_logits);

  // Metadata names the image input and its size; a bad file is one 400.
  auto meta = c.Get("/v2/models/served");
  ASSERT_TRUE(meta.ok());
  auto m = nlohmann::json::parse(meta->body, nullptr, false);
  EXPECT_EQ(m["parameters"]["image"]["height"], 16) << meta->body;
  EXPECT_EQ(m["parameters"]["image"]["channels"], 3) << meta->body;
  nlohmann::json bad = images;
  bad["inputs"][0]["data"][2] = registry::Base64Encode("not an image");
  auto refused = c.Post("/v2/models/served/infer", bad.dump());
  ASSERT_TRUE(refused.ok());
  EXPECT_EQ(refused->status, 400);
  EXPECT_NE(refused->body.find("input 'image' element 2: neither a PNG, a JPEG nor an .npy file"), std::string::npos)
      << refused->body;
}

// A job on an hourly series (lookback 8, horizon 2, four validation and
// four test days): dataset block `dataset`, model name `name`.
void WriteSeriesJob(const std::string& path, const std::string& name, const std::string& dataset) {
  std::ofstream(path) << "name: \"" << name << "\"\n"
                      << "model { layer { type: \"Flatten\" }\n"
                         "  layer { type: \"Dense\" activation: RELU dense_param { units: 16 } }\n"
                         "  layer { type: \"Dense\" dense_param { units: 2 } }\n  loss: MSE }\n"
                      << "dataset { " << dataset << " }\n"
                      << "optimizer { type: ADAM learning_rate: 0.01 }\n"
                      << "training { batch_size: 32 epochs: 2 seed: 11 }\n"
                      << "sync { mode: ALLREDUCE servers: 0 }\n"
                      << "registry { root: \"registry-root\" model_name: \"" << name << "\" }\n";
}

// polis-data pack csv: one worker trains the same model from the shards as
// from the CSV (every epoch's losses and the test metrics equal to the last
// bit), and so does it with the windows sent by the coordinator
// (dataset.source COORDINATOR); published, the shards-trained model is served from raw CSV rows
// with the CSV-trained model's predictions, its ONNX export writes the same
// preprocessing.json, and its lineage names the shards' manifest and
// indexes.
TEST_F(ShardsJob, TimeSeriesWindowsTrainTheCsvJobsModelAndServeRawRows) {
  std::string csv = "time,load,temp,weather\n";
  std::vector<std::string> rows;
  for (int i = 0; i < 24 * 21; ++i) {
    rows.push_back(fmt::format("{},{},{:.1f},{}", data::FormatTimestamp(1293840000 + i * 3600),
                               30 + (i % 24) * 2 + (i * 7) % 5, 4 + 0.3 * (i % 13), i % 5 == 0 ? "rain" : "clear"));
    csv += rows.back() + "\n";
  }
  std::ofstream(work + "/load.csv") << csv;
  const std::string series = "format: CSV timeseries { path: \"" + work + "/load.csv\" timestamp_column: \"time\" "
                             "target_column: \"load\" numeric_features: \"temp\" categorical_features { column: "
                             "\"weather\" } calendar_features { weekday: false month: false } lookback: 8 "
                             "horizon: 2 validation_start: \"2011-01-13\" test_start: \"2011-01-17\" }";
  WriteSeriesJob(work + "/csv.pbtxt", "load_csv", series);
  ShellRun pack = Shell(PolisData("pack csv --job " + work + "/csv.pbtxt --records-per-shard 100 --out " + work + "/ds"));
  ASSERT_EQ(pack.exit_code, 0) << pack.output;
  WriteSeriesJob(work + "/shards.pbtxt", "load_shards", "format: SHARDS dir: \"" + work + "/ds\"");
  auto train = [&](const std::string& name) {
    ShellRun r = Shell(PolisRun("--workers 1 --registry " + work + "/registry --run-dir " + work + "/" + name + " " +
                                work + "/" + name + ".pbtxt"));
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return ReadJson(work + "/" + name + "/result.json");
  };
  const auto from_csv = train("csv"), from_shards = train("shards");
  ASSERT_EQ(from_csv["history"].size(), 2u) << from_csv.dump();
  ASSERT_EQ(from_shards["history"].size(), 2u) << from_shards.dump();
  for (const char* key : {"train_loss", "val_loss", "val_mae", "val_rmse", "train_samples"})
    for (size_t e = 0; e < 2; ++e) {
      ASSERT_TRUE(from_csv["history"][e][key].is_number()) << key << " in " << from_csv["history"][e].dump();
      EXPECT_EQ(from_csv["history"][e][key], from_shards["history"][e][key]) << key << " epoch " << e;
    }
  for (const char* key : {"test_mae", "test_rmse", "test_loss", "seasonal_naive_mae", "last_value_mae"}) {
    ASSERT_TRUE(from_csv[key].is_number()) << key << " in " << from_csv.dump();
    EXPECT_EQ(from_csv[key], from_shards[key]) << key;
  }
  // The same windows from the coordinator's copy (dataset.source
  // COORDINATOR): the same model, to the last bit.
  WriteSeriesJob(work + "/remote.pbtxt", "load_remote", "format: SHARDS dir: \"" + work + "/ds\" source: COORDINATOR");
  const auto from_remote = train("remote");
  ASSERT_EQ(from_remote["history"].size(), 2u) << from_remote.dump();
  for (const char* key : {"train_loss", "val_loss", "val_mae", "train_samples"})
    for (size_t e = 0; e < 2; ++e) EXPECT_EQ(from_shards["history"][e][key], from_remote["history"][e][key]) << key;
  for (const char* key : {"test_mae", "test_rmse", "seasonal_naive_mae"}) EXPECT_EQ(from_shards[key], from_remote[key]) << key;

  auto art = ReadArtifactFile(from_shards["kept_artifact"].get<std::string>());
  ASSERT_TRUE(art.ok()) << art.status().ToString();
  EXPECT_EQ(art->header.job().dataset().format(), proto::DatasetSpec::SHARDS);
  EXPECT_EQ(art->header.job().dataset().timeseries().target_column(), "load");
  ASSERT_GE(art->header.lineage().dataset_files_size(), 2);
  EXPECT_EQ(art->header.lineage().dataset_files(0).path(), work + "/ds/dataset.json");
  EXPECT_EQ(art->header.lineage().dataset_files(1).path(), work + "/ds/train-000000.idx");
  // Its card says what it forecasts and from what, as the CSV-trained one's does.
  auto csv_art = ReadArtifactFile(from_csv["kept_artifact"].get<std::string>());
  ASSERT_TRUE(csv_art.ok()) << csv_art.status().ToString();
  EXPECT_EQ(art->header.output_description(), "next 2 values of load");
  EXPECT_EQ(art->header.output_description(), csv_art->header.output_description());
  EXPECT_EQ(art->header.input_description(), csv_art->header.input_description());

  // Two windows of raw rows (the CSV's header comes from the artifact).
  RegistryProcess server(work + "/registry");
  ASSERT_GT(server.port(), 0) << "polis-registry serve did not start";
  http::HttpClient c("127.0.0.1", server.port());
  const nlohmann::json windows = {std::vector<std::string>(rows.begin() + 300, rows.begin() + 308),
                                  std::vector<std::string>(rows.end() - 8, rows.end())};
  const nlohmann::json body = {{"inputs", nlohmann::json::array({{{"name", "rows"}, {"datatype", "BYTES"},
                                                                  {"shape", {2, 8}}, {"data", windows}}})}};
  std::vector<float> predictions[2];
  std::string answers;
  int k = 0;
  for (const char* model : {"load_csv", "load_shards"}) {
    auto r = c.Post(std::string("/v2/models/") + model + "/infer", body.dump());
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    ASSERT_EQ(r->status, 200) << model << ": " << r->body;
    answers += r->body + "\n";
    const auto answer = nlohmann::json::parse(r->body);  // named: a temporary's ["outputs"] would dangle
    for (const auto& o : answer["outputs"])
      if (o["name"] == "predictions") predictions[k] = o["data"].get<std::vector<float>>();
    ++k;
  }
  ASSERT_EQ(predictions[0].size(), 4u) << answers;
  EXPECT_EQ(predictions[0], predictions[1]);

  // The ONNX export writes the same preprocessing.json for both.
  std::string preprocessing[2];
  k = 0;
  for (const char* model : {"load_csv", "load_shards"}) {
    ShellRun onnx = Shell(kBin + "/registry/polis-registry export-onnx --root " + work + "/registry " + model);
    if (onnx.exit_code != 0 && onnx.output.find("without ONNX") != std::string::npos) return;  // not built with it
    ASSERT_EQ(onnx.exit_code, 0) << onnx.output;
    auto text = ReadFile(work + "/registry/" + model + "/1/preprocessing.json");
    ASSERT_TRUE(text.ok()) << model << ": " << text.status().ToString();
    preprocessing[k++] = *text;
  }
  EXPECT_EQ(preprocessing[0], preprocessing[1]);
}

int64_t VmHwmKiB(int pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::atoll(line.c_str() + 6);
  return -1;
}

// The bound the worker's peak resident memory (VmHWM) must stay under, and
// a dataset whose decoded images are over three times that: 9,600 RGB
// images of 96x96 (27 KiB each, 253 MiB decoded, as an in-memory loader
// would hold them). A worker of this job peaked at 63 MiB (MPI, oneDNN,
// the index, 128 prefetched records). The model pools first, so the test
// is about reading.
constexpr int64_t kBoundMiB = 80;

TEST_F(ShardsJob, WorkerPeakMemoryStaysUnderTheBoundOnALargerDataset) {
  if (!HaveFashionMnist()) POLIS_MISSING_PREREQ() << "Fashion-MNIST is not installed (dataset-fashion-mnist)";
  ShellRun pack = Shell(PolisData("pack idx --dir /usr/share/datasets/fashion-mnist --train-limit 2400 --copies 4 "
                                  "--test-limit 200 --size 96x96 --channels 3 --encoding jpg --out " + work + "/big"));
  ASSERT_EQ(pack.exit_code, 0) << pack.output;
  const int64_t records = 9600, decoded = records * 3 * 96 * 96;
  ASSERT_GT(decoded, 3 * kBoundMiB * (1 << 20));
  const std::string job = work + "/big.pbtxt";
  WriteAllReduceJob(job, "big",
                    "  layer { type: \"MaxPool2D\" pool2d_param { pool_size: 8 } }\n"
                    "  layer { type: \"Flatten\" }\n"
                    "  layer { type: \"Dense\" dense_param { units: 10 } }\n",
                    "dir: \"" + work + "/big\" shards { prefetch_records: 128 }", "learning_rate: 0.001",
                    "batch_size: 64 epochs: 1 seed: 3");
  const std::string run = work + "/run";
  std::thread watcher;
  int64_t peak_kib = -1;
  std::atomic<bool> done{false};
  watcher = std::thread([&] {
    // Rank 1 is the only worker (rank 0 the coordinator).
    int pid = -1;
    while (!done && pid <= 0) {
      pid = RankPids(run, 2)[1];
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    while (!done) {
      const int64_t k = VmHwmKiB(pid);
      if (k > 0) peak_kib = k;  // VmHWM only grows: the last reading is the peak so far
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  });
  ShellRun r = Shell(PolisRun("--workers 1 --registry " + work + "/registry --run-dir " + run + " " + job));
  done = true;
  watcher.join();
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto result = ReadJson(run + "/result.json");
  EXPECT_EQ(result["history"][0]["train_samples"], records);
  ASSERT_GT(peak_kib, 0) << "the worker's /proc/PID/status was never read";
  EXPECT_LT(peak_kib, kBoundMiB * 1024) << "worker VmHWM " << peak_kib / 1024 << " MiB; dataset decoded "
                                        << decoded / (1 << 20) << " MiB";
  std::printf("worker peak memory (VmHWM) %lld MiB; dataset %lld MiB decoded\n",
              static_cast<long long>(peak_kib / 1024), static_cast<long long>(decoded >> 20));
}

}  // namespace
}  // namespace polis
