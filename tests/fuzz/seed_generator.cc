// Writes the binary seeds of tests/fuzz/corpus/ with the project's own
// encoders, so the fuzzers start from files Polis really writes:
//   fuzz_seed_generator <corpus-dir>     (e.g. tests/fuzz/corpus)
// Each file is <harness>/seed-<what>, prefixed with the harness's mode byte.
// Text seeds (CSV, JSON requests, job specs, HTTP) are kept as written.
#include <cstdio>
#include <filesystem>
#include <string>

#include "common/artifact/artifact.h"
#include "common/checkpoint.h"
#include "common/comm/wire_checks.h"
#include "common/data/timeseries.h"
#include "common/fs.h"
#include "tests/fuzz/fuzz_util.h"

namespace {

using namespace polis;

void Put(const std::string& root, const std::string& harness, const std::string& name, char mode,
         std::string_view bytes) {
  std::filesystem::create_directories(root + "/" + harness);
  std::string out(1, mode);
  out += bytes;
  const std::string path = root + "/" + harness + "/seed-" + name;
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f || std::fwrite(out.data(), 1, out.size(), f) != out.size() || std::fclose(f) != 0) {
    std::fprintf(stderr, "cannot write %s\n", path.c_str());
    std::exit(1);
  }
}

std::string Be32(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
          static_cast<char>(v)};
}

void Idx(const std::string& root) {
  std::string labels = std::string("\0\0\x08\x01", 4) + Be32(5) + std::string("\x03\x01\x09\x00\x07", 5);
  std::string images = std::string("\0\0\x08\x03", 4) + Be32(2) + Be32(3) + Be32(3);
  for (int i = 0; i < 18; ++i) images.push_back(static_cast<char>(i * 14));
  Put(root, "idx", "labels-raw", 0, labels);
  Put(root, "idx", "images-raw", 0, images);
  Put(root, "idx", "labels-gzip-of-rest", 1, labels);
  Put(root, "idx", "images-gzip-of-rest", 1, images);
  Put(root, "idx", "labels-gzip-file", 0, fuzz::Gzip(labels));
}

proto::ArtifactHeader Header(const std::string& stats_json) {
  proto::ArtifactHeader h;
  h.add_input_shape(2);
  h.add_input_shape(3);
  h.add_output_shape(2);
  auto* t = h.add_tensor();
  t->set_name("dense_0/weights");
  t->add_shape(2);
  t->add_shape(3);
  t->set_offset(0);
  t->set_count(6);
  auto* b = h.add_tensor();
  b->set_name("dense_0/bias");
  b->add_shape(2);
  b->set_offset(6);
  b->set_count(2);
  h.set_parameter_count(8);
  auto* m = h.add_metric();
  m->set_name("test_accuracy");
  m->set_value(0.875);
  h.mutable_lineage()->set_job_file("jobs/fuzz.pbtxt");
  h.mutable_lineage()->set_created_at("2026-01-01T00:00:00Z");
  if (!stats_json.empty()) h.set_preprocessing_json(stats_json);
  return h;
}

void Artifact(const std::string& root, const std::string& stats_json) {
  ModelArtifact a;
  a.header = Header("");
  a.weights = {0.5f, -1.25f, 2.0f, 0.0f, 1e-3f, -7.5f, 0.25f, -0.25f};
  Put(root, "artifact", "dense", 0, EncodeArtifact(a));
  Put(root, "artifact", "dense-restamped", 1, EncodeArtifact(a));
  a.header = Header(stats_json);
  Put(root, "artifact", "timeseries-restamped", 1, EncodeArtifact(a));
}

void Checkpoint(const std::string& root) {
  const std::string dir = std::filesystem::temp_directory_path() / "polis-fuzz-seeds";
  std::filesystem::create_directories(dir);
  CheckpointManifest m;
  m.step = 120;
  m.epoch = 1;
  m.workers = 2;
  m.servers = 2;
  m.parameter_count = 8;
  m.job_sha256 = Sha256Hex("job");
  m.job_text = "name: \"fuzz\"";
  m.model_sha256 = Sha256Hex("model");
  m.consumed = {{0, 64}, {128, 192}};
  for (int s = 0; s < 2; ++s) {
    ShardFile f;
    f.server = s;
    f.begin = 4 * s;
    f.end = 4 * s + 4;
    f.step = 120;
    f.optimizer_steps = 120;
    f.params = {0.5f, -1.0f, 2.0f, 0.25f};
    f.state = {{"m", {0.1f, 0.2f, 0.3f, 0.4f}}, {"v", {1e-4f, 2e-4f, 3e-4f, 4e-4f}}};
    const std::string file = "server-" + std::to_string(s) + ".shard";
    if (!WriteShardFile(dir + "/" + file, f, m.job_sha256).ok()) std::exit(1);
    m.shards.push_back({s, f.begin, f.end, file, Sha256File(dir + "/" + file).value()});
  }
  if (!WriteManifest(dir, m).ok()) std::exit(1);
  const std::string manifest = ReadFile(dir + "/manifest.json").value();
  const std::string shard = ReadFile(dir + "/server-1.shard").value();
  Put(root, "checkpoint", "manifest", 0, manifest);
  Put(root, "checkpoint", "manifest-restamped", 1, manifest);
  Put(root, "checkpoint", "shard", 2, shard);
  Put(root, "checkpoint", "shard-restamped", 3, shard);
  std::filesystem::remove_all(dir);
}

void Control(const std::string& root) {
  auto put = [&](const std::string& name, const proto::ControlMessage& msg) {
    Put(root, "control", name, 0, msg.SerializeAsString());
  };
  proto::ControlMessage m;
  m.mutable_shard_request()->set_epoch(1);
  put("shard-request", m);
  m.Clear();
  auto* g = m.mutable_shard_grant();
  g->set_epoch(1);
  g->set_begin(256);
  g->set_end(512);
  put("shard-grant", m);
  m.Clear();
  auto* p = m.mutable_progress();
  p->set_epoch(0);
  p->set_step(40);
  p->set_samples(640);
  p->set_loss(0.7);
  p->set_compute_seconds(1.5);
  put("progress", m);
  m.Clear();
  auto* r = m.mutable_epoch_report();
  r->set_epoch(2);
  r->set_train_samples(1000);
  r->set_train_correct(900);
  r->mutable_eval()->set_samples(200);
  r->mutable_eval()->set_correct(150);
  r->set_params_sha256(Sha256Hex("params"));
  put("epoch-report", m);
  m.Clear();
  auto* f = m.mutable_final_evaluation();
  f->mutable_test()->set_samples(4);
  f->mutable_test()->set_correct(3);
  for (int64_t v : {2, 0, 1, 1}) f->mutable_test()->add_confusion(v);
  f->set_params_sha256(Sha256Hex("params"));
  put("final-evaluation", m);
  m.Clear();
  m.mutable_epoch_verdict()->set_epoch(1);
  m.mutable_epoch_verdict()->set_stop(true);
  put("epoch-verdict", m);
  m.Clear();
  m.mutable_server_command()->set_kind(proto::ServerCommand::CHECKPOINT_AT);
  m.mutable_server_command()->set_step(300);
  put("server-command", m);
  m.Clear();
  auto* s = m.mutable_shard_saved();
  s->set_step(300);
  s->set_epoch(1);
  s->set_server(1);
  s->set_begin(2500);
  s->set_end(5000);
  s->set_path("server-1.shard");
  s->set_sha256(Sha256Hex("shard"));
  s->add_consumed(320);
  s->add_consumed(288);
  put("shard-saved", m);
  m.Clear();
  auto* st = m.mutable_server_stats();
  st->set_server(0);
  st->set_updates(300);
  st->set_key_begin(0);
  st->set_key_end(2500);
  st->add_waiting_for(4);
  put("server-stats", m);
  m.Clear();
  m.mutable_fatal_error()->set_message("rank 3: out of memory");
  put("fatal-error", m);
  const PushHeader push{40, 64, kPushEpochEnd, 1, 640};
  Put(root, "control", "push-header", 2, std::string_view(reinterpret_cast<const char*>(&push), sizeof push));
  const PullHeader pull{40, 128, kPullCheckpoint};
  Put(root, "control", "pull-header", 3, std::string_view(reinterpret_cast<const char*>(&pull), sizeof pull));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
    return 2;
  }
  const std::string root = argv[1];
  // The time-series stats come from opening the text seed, as training does.
  std::string stats_json;
  {
    proto::TimeSeriesSpec spec;
    spec.set_path(root + "/timeseries/seed-hourly.csv");
    spec.set_timestamp_column("ts");
    spec.set_target_column("cnt");
    spec.add_numeric_features("temp");
    spec.add_categorical_features()->set_column("weather");
    spec.mutable_calendar_features()->set_holiday_column("holiday");
    spec.set_lookback(3);
    spec.set_horizon(2);
    spec.set_validation_start("2012-01-02");
    spec.set_test_start("2012-01-03 00:00");
    // The seed starts with its mode byte; open a copy without it.
    const std::string text = ReadFile(spec.path()).value().substr(1);
    const std::string plain = std::filesystem::temp_directory_path() / "polis-fuzz-hourly.csv";
    if (!WriteFileAtomic(plain, text).ok()) return 1;
    spec.set_path(plain);
    auto ds = data::TimeSeriesDataset::Open(spec);
    if (!ds.ok()) {
      std::fprintf(stderr, "%s\n", ds.status().ToString().c_str());
      return 1;
    }
    stats_json = ds->stats().ToJson();
    std::filesystem::remove(plain);
    Put(root, "timeseries", "stats-json", static_cast<char>(0x80), stats_json);
  }
  Idx(root);
  Artifact(root, stats_json);
  Checkpoint(root);
  Control(root);
  std::printf("seeds written under %s\n", root.c_str());
  return 0;
}
