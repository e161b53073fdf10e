// polis-registry: inspect, change and serve a model registry root.
//
//   polis-registry list     --root DIR [--json]
//   polis-registry publish  --root DIR [--model NAME] [--why TEXT] [--who NAME] ARTIFACT
//                           (the next version; checks as an HTTP upload does)
//   polis-registry show     --root DIR MODEL [VERSION|ALIAS]
//   polis-registry verify   --root DIR MODEL [VERSION|ALIAS]
//   polis-registry aliases  --root DIR MODEL            (aliases and their history, JSON)
//   polis-registry promote  --root DIR MODEL ALIAS VERSION [--why TEXT] [--who NAME]
//   polis-registry rollback --root DIR MODEL ALIAS [--why TEXT] [--who NAME]
//   polis-registry unalias  --root DIR MODEL ALIAS [--why TEXT] [--who NAME]
//   polis-registry delete   --root DIR MODEL VERSION [--force] [--why TEXT] [--who NAME]
//   polis-registry export-onnx --root DIR MODEL [VERSION]  (writes model.onnx beside the artifact, and
//                           preprocessing.json for a time-series forecaster)
//   polis-registry predict  --root DIR MODEL [VERSION|ALIAS] --idx-images FILE --out FILE
//                           [--idx-labels FILE] [--limit N] [--logits]
//                           (the served outputs of every image, raw float32, for other runtimes to compare)
//   polis-registry predict  --root DIR MODEL [VERSION|ALIAS] --csv FILE --out FILE
//                           [--split test|validation|train] [--limit N] [--windows-out FILE]
//                           [--times-out FILE]
//                           (a time-series forecaster on the windows of a split of its training CSV)
//   polis-registry serve    --root DIR --listen HOST:PORT [--threads N] [--tokens FILE]
//                           [--grpc-listen HOST:PORT [--grpc-port-file FILE]]
//                           [--tls-cert FILE --tls-key FILE [--plain-listen HOST:PORT
//                            [--plain-port-file FILE]]]
//                           [--allow-anonymous-explain] [--explain-* limits] ...
//
// A running server notices promote/rollback/unalias/delete made here within
// its poll interval and swaps without dropping a request.
// Exit codes: 0 ok, 1 a check or an operation failed, 2 bad flags.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <unistd.h>

#include "common/artifact/artifact.h"
#include "common/data/idx.h"
#include "common/data/timeseries.h"
#include "common/fs.h"
#include "common/job_spec.h"
#include "registry/aliases.h"
#include "registry/http.h"
#include "registry/onnx_export.h"
#include "registry/repository.h"
#include "registry/served_version.h"
#include "registry/server.h"
#include "registry/store.h"

namespace {

volatile std::sig_atomic_t g_stop = 0;
void OnSignal(int) { g_stop = 1; }

std::string DefaultWho() {
  const char* u = std::getenv("USER");
  char host[256] = "";
  gethostname(host, sizeof(host) - 1);
  return fmt::format("{}@{}", u && *u ? u : "unknown", host);
}

// `predict --csv`: the windows of one split of a time-series forecaster's
// training file, cut and standardised as training did, run through the
// served model. Writes the model's outputs (raw float32, windows x horizon,
// standardised as the FP32 input path returns them), optionally the windows
// (raw float32, windows x lookback x F) and the time of each window's first
// input step (one line each); returns the summary.
struct WindowFiles {
  std::string out, windows, times;
};
polis::StatusOr<nlohmann::json> PredictWindows(polis::registry::ServedVersion& sv, const std::string& csv,
                                               const std::string& split, int64_t limit, int64_t batch,
                                               const WindowFiles& files) {
  using polis::data::TimeSeriesDataset;
  if (!sv.timeseries())
    return polis::InvalidArgument("model '{}' version {} is not a time-series forecaster (no CSV dataset "
                                  "with preprocessing statistics); --csv needs one",
                                  sv.model_name(), sv.version());
  const TimeSeriesDataset::Split s = split == "train"        ? TimeSeriesDataset::kTrain
                                     : split == "validation" ? TimeSeriesDataset::kValidation
                                                             : TimeSeriesDataset::kTest;
  polis::proto::TimeSeriesSpec spec = sv.timeseries_spec();
  spec.set_path(csv);
  POLIS_ASSIGN_OR_RETURN(TimeSeriesDataset ds, TimeSeriesDataset::Open(spec));
  // The windows must be standardised with the statistics the model was
  // trained with: the file's training split must give the same ones.
  const polis::data::TimeSeriesStats& want = sv.timeseries_stats();
  if (ds.stats().ToJson() != want.ToJson())
    return polis::InvalidArgument("{}: its training split gives other statistics than model '{}' version {} "
                                  "was trained with (feature names, categories, mean or stddev differ); "
                                  "give the training file",
                                  csv, sv.model_name(), sv.version());
  int64_t n = ds.size(s);
  if (limit >= 0) n = std::min(n, limit);
  if (n == 0) return polis::InvalidArgument("{}: the {} split holds no windows", csv, split);
  const int64_t per_window = sv.input_elements(), k = sv.classes();
  std::string xs, ys, times;
  for (int64_t i = 0; i < n; ++i) times += polis::data::FormatTimestamp(ds.window_times(s, i).first_input) + "\n";
  for (int64_t at = 0; at < n; at += batch) {
    const int64_t rows = std::min(batch, n - at);
    std::vector<int64_t> idx(rows);
    for (int64_t i = 0; i < rows; ++i) idx[i] = at + i;
    std::vector<float> x(static_cast<size_t>(rows * per_window)), target(static_cast<size_t>(rows * ds.horizon()));
    ds.Gather(s, idx.data(), rows, x.data(), target.data());
    xs.append(reinterpret_cast<const char*>(x.data()), x.size() * sizeof(float));
    polis::registry::InferOutcome o = sv.InferSync(std::move(x), rows);
    if (!o.status.ok()) return o.status.WithContext(fmt::format("windows {}..{}", at, at + rows - 1));
    ys.append(reinterpret_cast<const char*>(o.logits.data()), o.logits.size() * sizeof(float));
  }
  POLIS_RETURN_IF_ERROR(polis::WriteFileAtomic(files.out, ys));
  if (!files.windows.empty()) POLIS_RETURN_IF_ERROR(polis::WriteFileAtomic(files.windows, xs));
  if (!files.times.empty()) POLIS_RETURN_IF_ERROR(polis::WriteFileAtomic(files.times, times));
  const auto first = ds.window_times(s, 0), last = ds.window_times(s, n - 1);
  return nlohmann::json{{"model", sv.model_name()},
                        {"version", sv.version()},
                        {"sha256", sv.sha256()},
                        {"precision", sv.options().precision},
                        {"split", split},
                        {"windows", n},
                        {"window_shape", sv.input_shape()},
                        {"outputs", k},
                        {"dtype", "float32"},
                        {"output", "predictions (standardised; x target_stddev + target_mean for the target's units)"},
                        {"first_target", polis::data::FormatTimestamp(first.first_target)},
                        {"last_target", polis::data::FormatTimestamp(last.first_target)},
                        {"out", files.out},
                        {"windows_out", files.windows},
                        {"times_out", files.times}};
}

}  // namespace

int main(int argc, char** argv) {
  namespace reg = polis::registry;
  CLI::App app{"polis-registry: inspect, change and serve a Polis model registry"};
  app.require_subcommand(1);
  std::string root = "registry-root", model, ref, alias, why, who = DefaultWho();
  int64_t version = 0;
  bool as_json = false, force = false;
  auto* list = app.add_subcommand("list", "models and their versions");
  auto* publish = app.add_subcommand(
      "publish", "publish a model artifact (e.g. a run's kept model.polis) as the model's next version");
  auto* show = app.add_subcommand("show", "metadata.json of a version (latest by default)");
  auto* verify = app.add_subcommand("verify", "re-read a version and check its checksum and shape");
  auto* aliases = app.add_subcommand("aliases", "a model's aliases and their history (JSON)");
  auto* promote = app.add_subcommand("promote", "point an alias at a version");
  auto* rollback = app.add_subcommand("rollback", "move an alias back to its previous version");
  auto* unalias = app.add_subcommand("unalias", "remove an alias");
  auto* del = app.add_subcommand("delete", "delete a version (refused while an alias names it)");
  auto* onnx = app.add_subcommand(
      "export-onnx", "write model.onnx (ONNX opset 13) beside a version's artifact (and preprocessing.json for a forecaster)");
  auto* predict = app.add_subcommand(
      "predict",
      "run a version over the images of an IDX file (or a forecaster over the windows of its CSV), as "
      "the server does, and write its outputs (raw little-endian float32, rows x outputs; probabilities "
      "for classifiers) to --out");
  auto* serve = app.add_subcommand("serve", "serve the models over HTTP (Open Inference Protocol v2)");
  for (auto* c : {list, publish, show, verify, aliases, promote, rollback, unalias, del, onnx, predict, serve})
    c->add_option("--root", root, "registry root")->capture_default_str();
  list->add_flag("--json", as_json, "print JSON");
  for (auto* c : {show, verify, onnx, predict}) {
    c->add_option("model", model, "model name")->required();
    c->add_option("version", ref, "version number, alias or 'latest' (default: latest)");
  }
  aliases->add_option("model", model, "model name")->required();
  for (auto* c : {promote, rollback, unalias}) {
    c->add_option("model", model, "model name")->required();
    c->add_option("alias", alias, "alias name (production, staging, ...)")->required();
  }
  promote->add_option("version", version, "version number")->required();
  del->add_option("model", model, "model name")->required();
  del->add_option("version", version, "version number")->required();
  del->add_flag("--force", force, "also remove the aliases that point at it");
  std::string artifact_path;
  publish->add_option("artifact", artifact_path, "model artifact file (model.polis)")->required();
  publish->add_option("--model", model, "model name (default: the artifact's registry.model_name or job name)");
  for (auto* c : {publish, promote, rollback, unalias, del}) {
    c->add_option("--why", why, "reason, kept in the alias history");
    c->add_option("--who", who, "who does it, kept in the alias history")->capture_default_str();
  }

  std::string idx_images, idx_labels, out_path;
  int64_t limit = -1, batch = 64;
  bool logits_out = false;
  std::string csv, split = "test", windows_out, times_out;
  auto* idx_opt = predict->add_option("--idx-images", idx_images,
                                      "IDX image file (gzip or raw), e.g. t10k-images-idx3-ubyte.gz");
  auto* csv_opt = predict->add_option("--csv", csv,
                                      "a time-series forecaster's training CSV: run the windows of --split");
  idx_opt->excludes(csv_opt);
  predict->add_option("--split", split, "with --csv: which split's windows")
      ->capture_default_str()->check(CLI::IsMember({"train", "validation", "test"}));
  predict->add_option("--windows-out", windows_out,
                      "with --csv: also write the windows (raw float32, windows x lookback x features)");
  predict->add_option("--times-out", times_out,
                      "with --csv: also write each window's first input time, one line per window");
  predict->add_option("--idx-labels", idx_labels, "IDX label file: also report the accuracy");
  predict->add_option("--out", out_path, "where to write the outputs (raw float32)")->required();
  predict->add_option("--limit", limit, "only the first N images (default: all)");
  predict->add_option("--batch", batch, "rows per forward pass")->capture_default_str()->check(CLI::Range(1, 4096));
  predict->add_flag("--logits", logits_out, "write logits instead of probabilities (classifiers)");
  std::string predict_precision;
  predict->add_option("--precision", predict_precision,
                      "fp32 or bf16 (default: the model's config.json, as the server would)")
      ->check(CLI::IsMember({"fp32", "bf16"}));

  reg::ServerOptions so;
  std::string listen = "127.0.0.1:8000";
  serve->add_option("--listen", listen, "HOST:PORT (port 0: any free port)")->capture_default_str();
  serve->add_option("--threads", so.threads, "HTTP I/O threads")->capture_default_str();
  serve->add_option("--busy-poll-us", so.busy_poll_us,
                    "an idle HTTP I/O thread polls its connections this long before it sleeps "
                    "(lower latency, more CPU; 0: sleeps at once)")
      ->capture_default_str()->check(CLI::Range(0, 1000000));
  serve->add_option("--tokens", so.tokens_file, "token file (JSON); without it nothing can be written");
  serve->add_option("--max-batch", so.batching.max_batch_size, "default max batch size per model")->capture_default_str();
  serve->add_option("--max-queue-delay-us", so.batching.max_queue_delay_us,
                    "default max time a request waits for others to batch with")->capture_default_str();
  serve->add_option("--max-queue-rows", so.batching.max_queue_rows, "rows queued per version before 503")->capture_default_str();
  serve->add_option("--compute-threads", so.batching.compute_threads,
                    "default OpenMP threads per instance of a loaded version")->capture_default_str();
  serve->add_option("--instances", so.batching.instances,
                    "default instances per loaded version: each an inference thread with its own "
                    "networks; with as many as --threads (2 or more, or 1 when the process may run on "
                    "one CPU only), each HTTP I/O thread runs its own batches")
      ->capture_default_str()->check(CLI::Range(1, 64));
  serve->add_option("--precision", so.batching.precision,
                    "default precision per model: fp32, or bf16 (Conv2D, Dense and LSTM layers in "
                    "bfloat16; needs AVX512_BF16)")
      ->capture_default_str()->check(CLI::IsMember({"fp32", "bf16"}));
  serve->add_option("--max-body-bytes", so.max_body_bytes, "request body limit (413)")->capture_default_str();
  serve->add_option("--max-upload-bytes", so.max_upload_bytes, "artifact upload limit (413)")->capture_default_str();
  serve->add_option("--max-tensor-elements", so.max_tensor_elements, "elements per input tensor (413)")->capture_default_str();
  serve->add_option("--read-timeout-ms", so.read_timeout_ms, "a request must arrive within this")->capture_default_str();
  serve->add_option("--idle-timeout-ms", so.idle_timeout_ms, "keep-alive idle limit")->capture_default_str();
  serve->add_option("--poll-ms", so.poll_interval_ms, "how often to look for changes on disk (0: never)")->capture_default_str();
  serve->add_option("--max-unpinned-versions", so.max_unpinned_versions,
                    "explicitly requested, non-aliased versions kept loaded per model")->capture_default_str();
  serve->add_flag("--allow-anonymous-explain", so.allow_anonymous_explain,
                  "let callers without a token ask for explanations (off: they need a token with "
                  "scope explain or admin)");
  serve->add_option("--explain-threads", so.explain.threads,
                    "explanation workers (low priority, one OpenMP thread each)")->capture_default_str();
  serve->add_option("--explain-queue", so.explain.max_queue,
                    "explanation requests waiting or running before 429")->capture_default_str();
  serve->add_option("--explain-max-row-steps", so.explain.max_row_steps,
                    "rows x steps allowed in one explanation request (400 beyond)")->capture_default_str();
  serve->add_option("--explain-timeout-ms", so.explain.timeout_ms,
                    "an explanation stops (503) once this much time has passed since it arrived")
      ->capture_default_str();
  serve->add_option("--explain-nice", so.explain.nice,
                    "niceness of the explanation workers (0..19; inference runs at the process's)")
      ->capture_default_str();
  serve->add_option("--explain-default-steps", so.explain_default_steps,
                    "integrated-gradients steps when a request gives none")->capture_default_str();
  std::string port_file;
  serve->add_option("--port-file", port_file, "write the bound port here once listening");
  std::string grpc_listen, grpc_port_file;
  serve->add_option("--grpc-listen", grpc_listen,
                    "also serve OIP v2 over gRPC on HOST:PORT (port 0: any free port; default: off)");
  serve->add_option("--grpc-port-file", grpc_port_file,
                    "write the bound gRPC port here once listening (before --port-file is written)");
  serve->add_option("--tls-cert", so.tls_cert_file,
                    "PEM certificate (or chain, the server's first): --listen speaks HTTPS and "
                    "--grpc-listen TLS (with --tls-key)");
  serve->add_option("--tls-key", so.tls_key_file, "PEM private key of --tls-cert");
  std::string plain_listen, plain_port_file;
  serve->add_option("--plain-listen", plain_listen,
                    "with TLS: also serve plain HTTP on HOST:PORT for reads, inference and metrics; "
                    "writes there are refused with 403 (port 0: any free port)");
  serve->add_option("--plain-port-file", plain_port_file,
                    "write the bound plain-HTTP port here once listening (before --port-file is written)");
  CLI11_PARSE(app, argc, argv);

  auto fail = [](const polis::Status& st) {
    std::fprintf(stderr, "polis-registry: %s\n", st.ToString().c_str());
    return 1;
  };
  auto print = [](const nlohmann::json& j) {
    std::printf("%s\n", j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    return 0;
  };
  auto resolve = [&]() -> polis::StatusOr<int64_t> {
    if (ref.empty() || ref == "0") return int64_t{0};
    return reg::ResolveVersionRef(root, model, ref);
  };
  const reg::Actor actor{who, why};
  auto change_json = [&](const reg::AliasChange& c) {
    nlohmann::json events = nlohmann::json::array();
    for (const auto& e : c.events) events.push_back(reg::AliasEventJson(e));
    return nlohmann::json{{"changed", c.changed()}, {"events", events},
                          {"aliases", reg::AliasTableJson(c.table)["aliases"]}};
  };

  if (*list) {
    auto models = reg::ListModels(root);
    if (!models.ok()) return fail(models.status());
    nlohmann::json out = nlohmann::json::object();
    for (const auto& m : *models) {
      auto versions = polis::ListVersions(root, m);
      if (!versions.ok()) return fail(versions.status());
      out[m] = *versions;
      if (!as_json) {
        std::string vs;
        for (int64_t v : *versions) vs += (vs.empty() ? "" : ", ") + std::to_string(v);
        auto table = reg::ReadAliases(root, m);
        std::string as;
        if (table.ok())
          for (const auto& [a, v] : table->aliases) as += fmt::format("{}{}={}", as.empty() ? "" : ", ", a, v);
        else
          as = "(unreadable: " + table.status().message() + ")";
        std::printf("%-32s versions: %s%s%s\n", m.c_str(), vs.c_str(), as.empty() ? "" : "  aliases: ",
                    as.c_str());
      }
    }
    if (as_json) std::printf("%s\n", out.dump(2).c_str());
    return 0;
  }
  if (*publish) {
    auto bytes = polis::ReadFile(artifact_path);
    if (!bytes.ok()) return fail(bytes.status());
    if (model.empty()) {
      auto a = polis::DecodeArtifact(*bytes, artifact_path);
      if (!a.ok()) return fail(a.status());
      model = polis::PublishedModelName(a->header.job());
    }
    reg::RepositoryOptions ro;
    ro.root = root;
    ro.poll_interval_ms = 0;
    reg::Repository repo(ro, nullptr);
    auto pub = repo.Publish(model, *bytes, actor);
    if (!pub.ok()) return fail(pub.status().WithContext(artifact_path));
    return print({{"model", pub->model}, {"version", pub->version}, {"dir", pub->dir}, {"sha256", pub->sha256}});
  }
  if (*show || *verify) {
    auto v = resolve();
    if (!v.ok()) return fail(v.status());
    auto r = *show ? reg::ReadMetadata(root, model, *v) : reg::VerifyVersion(root, model, *v);
    if (!r.ok()) return fail(r.status());
    return print(*r);
  }
  if (*onnx) {
    auto v = resolve();
    if (!v.ok()) return fail(v.status());
    auto path = reg::ExportOnnxFile(root, model, *v);
    if (!path.ok()) return fail(path.status());
    std::printf("%s\n", path->c_str());
    return 0;
  }
  if (*predict) {
    auto v = resolve();
    if (!v.ok()) return fail(v.status());
    int64_t version = *v;
    if (version == 0) {
      auto versions = polis::ListVersions(root, model);
      if (!versions.ok()) return fail(versions.status());
      if (versions->empty()) return fail(polis::NotFound("model '{}' has no versions", model));
      version = versions->back();
    }
    reg::BatchingOptions bo;
    if (predict_precision.empty()) {
      auto config = reg::ReadModelConfig(root, model, bo);
      if (!config.ok()) return fail(config.status());
      predict_precision = config->precision;
    }
    bo.max_batch_size = batch;
    bo.max_queue_rows = batch;
    bo.max_queue_delay_us = 0;
    bo.precision = predict_precision;
    auto sv = reg::ServedVersion::Load(root, model, version, bo, nullptr);
    if (!sv.ok()) return fail(sv.status());
    if (!csv.empty()) {
      auto summary = PredictWindows(**sv, csv, split, limit, batch, {out_path, windows_out, times_out});
      if (!summary.ok()) return fail(summary.status());
      return print(*summary);
    }
    if (idx_images.empty()) {
      std::fprintf(stderr, "polis-registry: predict needs --idx-images or --csv\n");
      return 2;
    }
    auto images = polis::data::ReadIdx(idx_images);
    if (!images.ok()) return fail(images.status());
    int64_t per_image = 1;
    for (size_t i = 1; i < images->dims.size(); ++i) per_image *= images->dims[i];
    if (per_image != (*sv)->input_elements())
      return fail(polis::InvalidArgument("{}: an image has {} values, model '{}' version {} takes {}",
                                         idx_images, per_image, model, version, (*sv)->input_elements()));
    int64_t n = images->dims[0];
    if (limit >= 0) n = std::min(n, limit);
    const int64_t k = (*sv)->classes();
    const bool probabilities = (*sv)->classifier() && !logits_out;
    std::string bytes;
    bytes.reserve(static_cast<size_t>(n * k) * sizeof(float));
    std::vector<int64_t> predicted;
    for (int64_t at = 0; at < n; at += batch) {
      const int64_t rows = std::min(batch, n - at);
      // Pixels are preprocessed exactly as an integer (UINT8) request is.
      std::vector<float> x(static_cast<size_t>(rows * per_image));
      const uint8_t* px = images->data.data() + at * per_image;
      for (size_t i = 0; i < x.size(); ++i)
        x[i] = static_cast<float>(static_cast<double>(px[i])) * (*sv)->input_scale() + (*sv)->input_shift();
      reg::InferOutcome o = (*sv)->InferSync(std::move(x), rows);
      if (!o.status.ok()) return fail(o.status.WithContext(fmt::format("images {}..{}", at, at + rows - 1)));
      const std::vector<float> y = probabilities ? reg::Softmax(o.logits, rows, k) : o.logits;
      bytes.append(reinterpret_cast<const char*>(y.data()), y.size() * sizeof(float));
      for (int64_t r = 0; r < rows; ++r)
        predicted.push_back(std::max_element(o.logits.begin() + r * k, o.logits.begin() + (r + 1) * k) -
                            (o.logits.begin() + r * k));
    }
    if (polis::Status st = polis::WriteFileAtomic(out_path, bytes); !st.ok()) return fail(st);
    nlohmann::json summary = {{"model", model},          {"version", version},
                              {"sha256", (*sv)->sha256()}, {"images", n},
                              {"outputs", k},            {"dtype", "float32"},
                              {"output", probabilities ? "probabilities" : ((*sv)->classifier() ? "logits" : "predictions")},
                              {"out", out_path},         {"input_scale", (*sv)->input_scale()},
                              {"input_shift", (*sv)->input_shift()},
                              {"precision", (*sv)->options().precision}};
    if (!idx_labels.empty()) {
      auto labels = polis::data::ReadIdx(idx_labels);
      if (!labels.ok()) return fail(labels.status());
      if (static_cast<int64_t>(labels->data.size()) < n)
        return fail(polis::InvalidArgument("{} holds {} labels, fewer than the {} images", idx_labels,
                                           labels->data.size(), n));
      int64_t correct = 0;
      for (int64_t i = 0; i < n; ++i) correct += predicted[i] == labels->data[i];
      summary["accuracy"] = n > 0 ? static_cast<double>(correct) / n : 0.0;
    }
    return print(summary);
  }
  if (*aliases) {
    auto t = reg::ReadAliases(root, model);
    if (!t.ok()) return fail(t.status());
    return print(reg::AliasTableJson(*t));
  }
  if (*promote || *rollback || *unalias || *del) {
    auto c = *promote    ? reg::SetAlias(root, model, alias, version, actor)
             : *rollback ? reg::RollbackAlias(root, model, alias, actor)
             : *unalias  ? reg::RemoveAlias(root, model, alias, actor)
                         : reg::DeleteVersion(root, model, version, force, actor);
    if (!c.ok()) return fail(c.status());
    return print(change_json(*c));
  }

  // serve
  auto hp = reg::ParseHostPort(listen);
  if (!hp.ok()) return fail(hp.status());
  so.root = root;
  so.host = hp->first;
  so.port = hp->second;
  // A port of its own (gRPC, plain HTTP): HOST:PORT, and a port file that needs it.
  auto second_port = [&](const std::string& text, const std::string& file, const char* flag,
                         const char* file_flag, std::string* host, int* port) -> int {
    if (text.empty()) {
      if (file.empty()) return 0;
      std::fprintf(stderr, "polis-registry: %s needs %s\n", file_flag, flag);
      return 2;
    }
    auto parsed = reg::ParseHostPort(text);
    if (!parsed.ok()) return fail(parsed.status());
    *host = parsed->first;
    *port = parsed->second;
    return 0;
  };
  if (int rc = second_port(grpc_listen, grpc_port_file, "--grpc-listen", "--grpc-port-file", &so.grpc_host,
                           &so.grpc_port))
    return rc;
  if (so.tls_cert_file.empty() != so.tls_key_file.empty()) {
    std::fprintf(stderr, "polis-registry: --tls-cert and --tls-key go together\n");
    return 2;
  }
  if (!plain_listen.empty() && so.tls_cert_file.empty()) {
    std::fprintf(stderr, "polis-registry: --plain-listen needs --tls-cert and --tls-key (without TLS "
                         "--listen is plain HTTP already)\n");
    return 2;
  }
  if (int rc = second_port(plain_listen, plain_port_file, "--plain-listen", "--plain-port-file",
                           &so.plain_host, &so.plain_port))
    return rc;
  reg::RegistryServer server(so);
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  std::signal(SIGPIPE, SIG_IGN);
  if (polis::Status st = server.Start(); !st.ok()) return fail(st);
  const bool tls = !so.tls_cert_file.empty();
  std::printf("polis-registry serving %s on %s://%s:%d\n", root.c_str(), tls ? "https" : "http",
              so.host.c_str(), server.port());
  if (server.plain_port() > 0)
    std::printf("polis-registry: plain HTTP (no writes) on http://%s:%d\n", so.plain_host.c_str(),
                server.plain_port());
  if (server.grpc_port() > 0)
    std::printf("polis-registry: OIP v2 gRPC%s on %s:%d\n", tls ? " (TLS)" : "", so.grpc_host.c_str(),
                server.grpc_port());
  std::fflush(stdout);
  // The port files, gRPC's and the plain port's before the main one's
  // (whoever waits for --port-file finds the others written).
  for (const auto& [file, port] : {std::pair{grpc_port_file, server.grpc_port()},
                                   std::pair{plain_port_file, server.plain_port()},
                                   std::pair{port_file, server.port()}}) {
    if (file.empty()) continue;
    if (polis::Status st = polis::WriteFileAtomic(file, std::to_string(port) + "\n"); !st.ok()) return fail(st);
  }
  while (!g_stop) usleep(100 * 1000);
  std::printf("polis-registry: stopping\n");
  server.Stop();
  return 0;
}
